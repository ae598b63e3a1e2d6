"""What a name a client asks for may hold, whatever CA issues it (400 otherwise).

A CA copies subject values and subjectAltNames into the certificate verbatim, and every
relying party, log and database downstream reads them: a NUL ends a C string early
("good.example\\0.evil.example"), CR/LF splits a log line or a header, an IP SAN of 8 or
32 bytes is a network (a name constraint's syntax), not an address.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from cryptography import x509
from cryptography.x509.oid import NameOID

from est_gateway.errors import BadRequest

#: control characters (C0, DEL, C1), line and paragraph separators, lone surrogates
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
_COUNTRY_OIDS = frozenset({NameOID.COUNTRY_NAME, NameOID.JURISDICTION_COUNTRY_NAME})
_COUNTRY = re.compile(r"[A-Za-z]{2}\Z")
#: RFC 5280 §4.2.1.6: a URI SAN has a scheme and a scheme-specific part, no whitespace
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+\Z")
_MAILBOX = re.compile(r"[^@\s]+@[^@\s]+\Z")


def shown(value: str) -> str:
    """A value for a reason: escaped (no control character reaches a response) and short."""
    return value.encode("unicode_escape").decode("ascii")[:80]


def control_character(value: str) -> bool:
    """Whether ``value`` holds a character no name may hold (see the module docstring)."""
    return not value.isprintable() and any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in value)


def check_subject(name: x509.Name, what: str = "subject") -> None:
    """Every attribute value printable; a country two letters (ISO 3166 alpha-2)."""
    for attr in name:
        value = attr.value
        if not isinstance(value, str):
            continue      # a BIT STRING attribute (x500UniqueIdentifier): no text to check
        label = attr.rfc4514_attribute_name
        if control_character(value):
            raise BadRequest(f'{what} {label} "{shown(value)}" holds a control character')
        if attr.oid in _COUNTRY_OIDS and not _COUNTRY.match(value):
            raise BadRequest(f'{what} {label} "{shown(value)}" is not a two-letter country code')


def check_general_name(name: x509.GeneralName) -> None:
    """An email address, URI or directory name without control characters, a URI with a
    scheme, an IP address of 4 or 16 bytes. dNSName: limits.check_dns_name."""
    if isinstance(name, x509.RFC822Name | x509.UniformResourceIdentifier):
        kind = "email" if isinstance(name, x509.RFC822Name) else "URI"
        value = name.value
        if control_character(value):
            raise BadRequest(f'subjectAltName {kind} "{shown(value)}" holds a control character')
        syntax = _MAILBOX if kind == "email" else _URI
        if not syntax.match(value):
            raise BadRequest(f'subjectAltName {kind} "{shown(value)}" is not a valid '
                             + ("address (local-part@domain)" if kind == "email" else "URI (scheme:...)"))
    elif isinstance(name, x509.IPAddress):
        if not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise BadRequest("subjectAltName IP address must be 4 (IPv4) or 16 (IPv6) bytes; "
                             f"{name.value} is a network")
    elif isinstance(name, x509.DirectoryName):
        check_subject(name.value, "subjectAltName directory name")
