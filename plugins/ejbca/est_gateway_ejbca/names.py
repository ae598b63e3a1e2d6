"""DN and subjectAltName strings in EJBCA's own notation: ``editUser``'s subject, and the
issuer DNs both adapters send (revocation status, revocation).

EJBCA reads an end entity's ``subjectDN`` with cesecore's ``CeSecoreNameStyle`` names
(``SN`` is serialNumber, ``E`` emailAddress, ``T`` title, ``DN`` dnQualifier, ...) and its
``X509NameTokenizer`` (backslash escapes), and keeps the components in ``DnComponents``'
forward order. ``rfc4514_string()`` would write dotted OIDs for serialNumber and
emailAddress, which EJBCA's end entity handling has no field for. Only what EJBCA cannot
express is refused (400): other attribute types, multi-valued RDNs, binary values, values
with leading or trailing spaces (EJBCA's tokenizer trims them, escaped or not), and
subjectAltName types other than the ones below.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from est_gateway.plugin import BadRequest, requested_sans

_OID = x509.ObjectIdentifier
#: attribute type → EJBCA's name (``CeSecoreNameStyle.DefaultSymbols``, upper-cased as in
#: ``DnComponents``), listed in EJBCA's forward DN order (``DnComponents.dNObjectsForward``:
#: the most specific component first, C last)
DN_NAMES: dict[x509.ObjectIdentifier, str] = {
    _OID("1.3.6.1.4.1.311.60.2.1.3"): "JURISDICTIONCOUNTRY",
    _OID("1.3.6.1.4.1.311.60.2.1.2"): "JURISDICTIONSTATE",
    _OID("1.3.6.1.4.1.311.60.2.1.1"): "JURISDICTIONLOCALITY",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.PSEUDONYM: "PSEUDONYM",
    _OID("2.5.4.20"): "TELEPHONENUMBER",
    NameOID.BUSINESS_CATEGORY: "BUSINESSCATEGORY",
    NameOID.POSTAL_CODE: "POSTALCODE",
    _OID("1.2.840.113549.1.9.8"): "UNSTRUCTUREDADDRESS",
    _OID("1.2.840.113549.1.9.2"): "UNSTRUCTUREDNAME",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.DN_QUALIFIER: "DN",
    NameOID.USER_ID: "UID",
    NameOID.COMMON_NAME: "CN",
    _OID("2.5.4.41"): "NAME",
    NameOID.SERIAL_NUMBER: "SN",
    NameOID.GIVEN_NAME: "GIVENNAME",
    NameOID.INITIALS: "INITIALS",
    NameOID.SURNAME: "SURNAME",
    NameOID.GENERATION_QUALIFIER: "GENERATION",
    NameOID.TITLE: "T",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    _OID("2.5.4.97"): "ORGANIZATIONIDENTIFIER",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.COUNTRY_NAME: "C",
}
_ORDER = {oid: i for i, oid in enumerate(DN_NAMES)}
#: characters EJBCA's tokenizer (and RFC 4514) needs escaped inside a value
_SPECIAL = set('\\,+"=<>;')
#: upnName otherName (Microsoft), EJBCA's ``upn=``
UPN = _OID("1.3.6.1.4.1.311.20.2.3")


def escape(value: str) -> str:
    """Backslash-escape separators and a leading ``#`` (which would start a hex value)."""
    out = "".join(f"\\{ch}" if ch in _SPECIAL else ch for ch in value)
    return "\\" + out if out.startswith("#") else out


def ejbca_dn(name: x509.Name) -> str:
    """``name`` as EJBCA's ``subjectDN``: EJBCA's names, its order, its escaping."""
    parts: list[tuple[int, int, str]] = []
    for position, rdn in enumerate(reversed(list(name.rdns))):  # most specific first
        attributes = list(rdn)
        if len(attributes) != 1:
            raise BadRequest("the request subject has a multi-valued RDN (a+b), which EJBCA's end "
                             "entity DN cannot keep")
        attribute = attributes[0]
        keyword = DN_NAMES.get(attribute.oid)
        if keyword is None or not isinstance(attribute.value, str):
            label = attribute.oid._name if attribute.oid._name != "Unknown OID" else attribute.oid.dotted_string
            raise BadRequest(f"the request subject has attribute {label}, which EJBCA has no "
                             "DN field for")
        if attribute.value != attribute.value.strip():
            raise BadRequest(f"the request subject's {keyword} has leading or trailing spaces, which "
                             "EJBCA trims")
        parts.append((_ORDER[attribute.oid], position, f"{keyword}={escape(attribute.value)}"))
    return ",".join(text for _, _, text in sorted(parts))


def issuer_dn(name: x509.Name) -> str:
    """A CA's DN as EJBCA writes it (``CertTools.stringToBCDNString``: ``SN=`` for
    serialNumber, ``E=`` for emailAddress, its order), for the calls that name a CA by DN.
    EJBCA canonicalises what it receives (``2.5.4.5=`` becomes ``SN=``) before it hashes the
    DN to a CA ID; sending its own form keeps the DN in the gateway's requests and logs the
    one EJBCA shows. A DN EJBCA's names cannot express goes as RFC 4514."""
    try:
        return ejbca_dn(name)
    except BadRequest:
        return name.rfc4514_string()


def ejbca_alt_names(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR's SANs in EJBCA's notation, e.g. ``dNSName=a.example, iPAddress=192.0.2.1``."""
    parts = []
    for general in requested_sans(csr):
        if isinstance(general, x509.DNSName):
            parts.append(f"dNSName={escape(general.value)}")
        elif isinstance(general, x509.IPAddress):
            parts.append(f"iPAddress={general.value}")
        elif isinstance(general, x509.RFC822Name):
            parts.append(f"rfc822name={escape(general.value)}")
        elif isinstance(general, x509.UniformResourceIdentifier):
            parts.append(f"uniformResourceIdentifier={escape(general.value)}")
        elif isinstance(general, x509.RegisteredID):
            parts.append(f"registeredID={general.value.dotted_string}")
        else:
            raise BadRequest(f"subjectAltName type {type(general).__name__} cannot be passed to EJBCA")
    return ", ".join(parts) or None
