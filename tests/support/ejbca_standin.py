"""A stand-in EJBCA: its REST API, EjbcaWS and public web over real mutual TLS on 127.0.0.1.

It answers as EJBCA CE does (``version``: "8.0" by default; "7.11" has no ``/v1/ca``; "8.1"
and later reword the status message), each behaviour with a comment naming the
Keyfactor/ejbca-ce file and method it follows: end entities with status and password,
``pkcs10enroll`` creating or editing the end entity (and refusing when approvals are
enabled), ``certificaterequest``'s 400s, EJBCA's DN and altName keywords and DN
canonicalisation, a default CA's refusal of a second end entity with the same subject DN,
client mode, revocation status, the CA download of ``/v1/ca`` (``ca_resource=False``
models the 8.0 installations that report a 404 there), the public webdist ``certdist``,
approvals through EjbcaWS (an approver acts with :meth:`StandinEjbca.approve`), and the
access rules of the gateway's RA role (``denied``). Faults are injected with
:attr:`StandinEjbca.fault`. The TLS layer REQUIRES a client certificate from the
management CA, so the gateway's upstream credentials go through a real handshake.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, PrivateFormat, pkcs7
from cryptography.x509.oid import NameOID
from lxml import etree

from est_gateway.backends.local import authority
from est_gateway.config.reader import Problems, Section
from est_gateway.plugin import CABackend, ConfigError
from est_gateway.testing import target_problems
from est_gateway_ejbca.alias import AliasUpstream, EjbcaTarget, parse_target
from tests.support.pki import CA, NOW, rsa_key, write_pem

REST = "/ejbca/ejbca-rest-api"
WS = "/ejbca/ejbcaws/ejbcaws"
#: the public web's certificate distribution servlet (modules/ejbca-webdist-war, CertDistServlet)
WEBDIST = "/ejbca/publicweb/webdist/certdist"
NS = "http://ws.protocol.core.ejbca.org/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CA_NAME = "EST Sub CA"
#: what the tests' aliases ask of the stand-in EJBCA
TARGET = EjbcaTarget(ca=CA_NAME, certificate_profile="ENDUSER", end_entity_profile="EMPTY")
#: the same in EJBCA's client mode (the CSR's challengePassword is the enrollment code)
CLIENT = EjbcaTarget(ca=CA_NAME, certificate_profile="ENDUSER", end_entity_profile="EMPTY",
                     upstream=AliasUpstream(mode="client"))
CA_DN = "CN=EST Sub CA,O=Stand-in EJBCA"


def ejbca_target(ca: str = CA_NAME, certificate_profile: str = "ENDUSER", end_entity_profile: str = "EMPTY",
                 **upstream: str) -> EjbcaTarget:
    """The target an alias with these keys (and ``[aliases.est.upstream]`` keys) makes."""
    problems = Problems()
    settings = {"ca": ca, "certificate_profile": certificate_profile, "end_entity_profile": end_entity_profile,
                "upstream": upstream}
    section = Section(settings, "aliases.est", problems, Path.cwd())
    target = parse_target(section, allow_subject_dn=True)
    section.check_unknown()
    if problems.items:
        raise ConfigError(problems.items)
    return target


def alias_settings(target: EjbcaTarget) -> dict[str, Any]:
    """The ``[aliases.<name>]`` keys an operator writes for ``target`` (no ``ca_chain_file``)."""
    assert not target.upstream.ca_chain, "a chain comes from a file: use ejbca_target(ca_chain_file=...)"
    rule, upstream = target.upstream.username, {}
    for key, value, default in (("mode", target.upstream.mode, "ra"), ("username_from", rule.source, "CN"),
                                ("username_prefix", rule.prefix, ""), ("username_suffix", rule.suffix, ""),
                                ("ca_subject_dn", target.upstream.ca_subject_dn, None)):
        if value != default:
            upstream[key] = value
    return {"ca": target.ca, "certificate_profile": target.certificate_profile,
            "end_entity_profile": target.end_entity_profile, "upstream": upstream}


def check_target(backend: CABackend[Any], target: EjbcaTarget) -> list[str]:
    """What the configuration loader does for an alias of ``backend`` asking ``target``:
    the backend parses it (and then knows it, e.g. for its health check); the problems."""
    parsed, problems = target_problems(backend, alias_settings(target))
    assert problems or parsed == target, "the alias settings must make the target they came from"
    return problems


#: EndEntityConstants statuses and their texts (EndEntityConstants.getStatusText)
STATUS_NEW, STATUS_GENERATED = 10, 40
STATUS_TEXT = {10: "NEW", 11: "FAILED", 20: "INITIALIZED", 30: "INPROCESS", 40: "GENERATED",
               50: "REVOKED", 60: "HISTORICAL", 70: "KEYRECOVERY", 80: "WAITINGFORADDAPPROVAL"}

#: DN component names EJBCA reads in a DN string: cesecore ``CeSecoreNameStyle.DefaultLookUp``
#: (lower-cased keys; SN is serialNumber, E is emailAddress, T is title, DN is dnQualifier).
#: The stand-in refuses any other keyword (e.g. a dotted OID such as ``2.5.4.5``): EJBCA's
#: end entity handling (DnComponents/DNFieldExtractor) has no field for it.
EJBCA_DN_NAMES: dict[str, x509.ObjectIdentifier] = {
    "c": NameOID.COUNTRY_NAME, "o": NameOID.ORGANIZATION_NAME, "t": NameOID.TITLE,
    "ou": NameOID.ORGANIZATIONAL_UNIT_NAME, "cn": NameOID.COMMON_NAME, "l": NameOID.LOCALITY_NAME,
    "st": NameOID.STATE_OR_PROVINCE_NAME, "sn": NameOID.SERIAL_NUMBER, "serialnumber": NameOID.SERIAL_NUMBER,
    "street": NameOID.STREET_ADDRESS, "e": NameOID.EMAIL_ADDRESS, "emailaddress": NameOID.EMAIL_ADDRESS,
    "email": NameOID.EMAIL_ADDRESS, "gn": NameOID.GIVEN_NAME,
    "dc": NameOID.DOMAIN_COMPONENT, "uid": NameOID.USER_ID, "surname": NameOID.SURNAME,
    "givenname": NameOID.GIVEN_NAME, "initials": NameOID.INITIALS,
    "generation": NameOID.GENERATION_QUALIFIER, "dn": NameOID.DN_QUALIFIER,
    "pseudonym": NameOID.PSEUDONYM, "postalcode": NameOID.POSTAL_CODE,
    "businesscategory": NameOID.BUSINESS_CATEGORY, "name": x509.ObjectIdentifier("2.5.4.41"),
    "unstructuredname": x509.ObjectIdentifier("1.2.840.113549.1.9.2"),
    "organizationidentifier": x509.ObjectIdentifier("2.5.4.97"),
    "unstructuredaddress": x509.ObjectIdentifier("1.2.840.113549.1.9.8"),
    "telephonenumber": x509.ObjectIdentifier("2.5.4.20"),
    "jurisdictionlocality": x509.ObjectIdentifier("1.3.6.1.4.1.311.60.2.1.1"),
    "jurisdictionstate": x509.ObjectIdentifier("1.3.6.1.4.1.311.60.2.1.2"),
    "jurisdictioncountry": x509.ObjectIdentifier("1.3.6.1.4.1.311.60.2.1.3"),
}
#: subjectAltName keywords EJBCA reads (CertTools/DnComponents: DNSNAME, IPADDR, EMAIL ``rfc822name``,
#: URI ``uniformResourceIdentifier``, ``registeredID``); matched case-insensitively.
ALT_NAME_TYPES = {"dnsname": "dns", "ipaddress": "ip", "rfc822name": "email",
                  "uniformresourceidentifier": "uri", "uri": "uri", "registeredid": "rid"}


def _split_unescaped(text: str, separator: str) -> list[str]:
    """EJBCA's X509NameTokenizer: split on ``separator`` outside backslash escapes and quotes;
    each value is then unescaped and trimmed (``nextToken`` returns ``buf.trim()``: EJBCA
    loses leading and trailing spaces, escaped or not)."""
    parts, buf, escaped, quoted = [], [], False, False
    for ch in text:
        if escaped:
            buf.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == separator and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return [p for p in (s.strip() for s in parts) if p]


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_ejbca_dn(text: str) -> x509.Name:
    """A ``subjectDN`` as EJBCA reads it (most specific first, EJBCA's component names)."""
    attributes = []
    for part in _split_unescaped(text, ","):
        keyword, sep, value = part.partition("=")
        oid = EJBCA_DN_NAMES.get(keyword.strip().lower())
        if not sep or oid is None:
            raise Fault(400, f"Subject DN component '{keyword.strip()}' is not a DN field of the end "
                        "entity profile", "UserDoesntFullfillEndEntityProfile")
        attributes.append(x509.NameAttribute(oid, _unescape(value.strip()).strip()))
    return x509.Name(list(reversed(attributes)))


#: the components' order and names in a DN as EJBCA stores and compares it:
#: com.keyfactor.util.certificate.DnComponents.dNObjectsForward (most specific first, C
#: last) with CeSecoreNameStyle.DefaultSymbols (SN = serialNumber, E = emailAddress)
BC_DN_ORDER = ("street", "pseudonym", "telephonenumber", "businesscategory", "postalcode",
               "unstructuredaddress", "unstructuredname", "e", "dn", "uid", "cn", "name", "sn",
               "givenname", "initials", "surname", "t", "ou", "organizationidentifier", "o", "l",
               "st", "dc", "c")
_BC_SYMBOL = {EJBCA_DN_NAMES[k]: k.upper() for k in BC_DN_ORDER}


def bc_dn(text: str) -> str:
    """``CertTools.stringToBCDNString`` (DnComponents): EJBCA's canonical form of a DN string,
    the form it hashes to a CA ID and compares issuer DNs in. Component names are read
    case-insensitively, dotted OIDs (``2.5.4.5=``) as the attribute they name; the result
    uses EJBCA's names (``SN=``, ``E=``) in its forward order. What it cannot read is kept
    as it came (and so matches nothing)."""
    parts: list[tuple[int, int, str]] = []
    for position, part in enumerate(_split_unescaped(text, ",")):
        keyword, sep, value = part.partition("=")
        key = keyword.strip().lower()
        try:
            oid = EJBCA_DN_NAMES.get(key) or x509.ObjectIdentifier(key)
        except ValueError:
            return text
        symbol = _BC_SYMBOL.get(oid)
        if not sep or symbol is None:
            return text
        parts.append((BC_DN_ORDER.index(symbol.lower()), position, f"{symbol}={value.strip()}"))
    return ",".join(text for _, _, text in sorted(parts))


def parse_ejbca_alt_names(text: str) -> list[x509.GeneralName]:
    """A ``subjectAltName`` as EJBCA reads it (``dNSName=a, iPAddress=192.0.2.1``)."""
    names: list[x509.GeneralName] = []
    for part in _split_unescaped(text, ","):
        keyword, _, value = part.partition("=")
        kind = ALT_NAME_TYPES.get(keyword.strip().lower())
        value = _unescape(value.strip())
        if kind == "dns":
            names.append(x509.DNSName(value))
        elif kind == "ip":
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        elif kind == "email":
            names.append(x509.RFC822Name(value))
        elif kind == "uri":
            names.append(x509.UniformResourceIdentifier(value))
        elif kind == "rid":
            names.append(x509.RegisteredID(x509.ObjectIdentifier(value)))
        else:
            raise Fault(400, f"Unknown subject alternative name component '{keyword.strip()}'",
                        "UserDoesntFullfillEndEntityProfile")
    return names


@dataclass
class EndEntity:
    username: str
    password: str
    subject_dn: str
    ca: str
    status: int = STATUS_NEW
    certificate_profile: str = "ENDUSER"
    end_entity_profile: str = "EMPTY"
    #: the end entity's DN and altNames as EJBCA keeps them; EJBCA issues with these, not
    #: with the CSR's (certificate profile default: no DN or extension override by the CSR)
    subject: x509.Name | None = None
    alt_names: list[x509.GeneralName] | None = None

    def name(self) -> x509.Name:
        return self.subject if self.subject is not None else parse_ejbca_dn(self.subject_dn)


#: ApprovalDataVO statuses and approval types (EJBCA ``ApprovalDataVO``)
WAITING, APPROVED, REJECTED, EXPIRED, EXECUTED, EXECUTION_DENIED = -1, 0, -2, -3, -5, -7
ADD_END_ENTITY, EDIT_END_ENTITY = 1, 2
APPROVAL_PROFILE = "EST approvals"


def java_hash(text: str) -> int:
    """``String.hashCode()``: how EJBCA derives an approval ID from the action's data."""
    h = 0
    for ch in text:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


@dataclass
class ApprovalRequest:
    """One row of EJBCA's ApprovalData: ``request_id`` is what ``WaitingForApprovalException``
    carries; ``approval_id`` = hash(type;username;approval profile) is what EJBCA checks
    for duplicates (``AddEndEntityApprovalRequest.generateApprovalId``)."""

    request_id: int
    approval_id: int
    approval_type: int
    end_entity: EndEntity
    status: int = WAITING


@dataclass
class Issuance:
    certificate: x509.Certificate
    username: str
    revoked_reason: int = -1


class Fault(Exception):
    """An EJBCA-side failure: HTTP status for REST, fault bean for SOAP."""

    def __init__(self, status: int, message: str, bean: str = "EjbcaException", code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.bean, self.code = status, message, bean, code


#: access rules (AccessRulesConstants, StandardRules) the RA administrator role needs
ADMINISTRATOR = "/administrator"
CREATE_END_ENTITY = "/ra_functionality/create_end_entity"
EDIT_END_ENTITY_RULE = "/ra_functionality/edit_end_entity"
CREATE_CERTIFICATE = "/ca_functionality/create_certificate"
REVOKE_END_ENTITY = "/ra_functionality/revoke_end_entity"
#: cesecore ``RevocationReasons``: database value → CLI/REST name
REASON_NAMES = {-1: "NOT_REVOKED", 0: "UNSPECIFIED", 1: "KEY_COMPROMISE", 2: "CA_COMPROMISE",
                3: "AFFILIATION_CHANGED", 4: "SUPERSEDED", 5: "CESSATION_OF_OPERATION",
                6: "CERTIFICATE_HOLD", 8: "REMOVE_FROM_CRL", 9: "PRIVILEGES_WITHDRAWN", 10: "AA_COMPROMISE"}
#: end entity profile IDs of the stand-in (EJBCA gives each profile a random int ID)
PROFILE_IDS = {"EMPTY": 1, "EST_DEVICES": 1785328532}


#: certificate profile IDs of the stand-in (EJBCA's fixed ENDUSER profile is 1; others random)
CERT_PROFILE_IDS = {"ENDUSER": 1, "STRICT": 1785328533}
#: the name the stand-in knows no profile by (a CA is unknown unless it is CA_NAME)
MISSING = "MISSING"


def versioned(version: str) -> str:
    """``GlobalConfiguration.EJBCA_VERSION`` as the REST status and getEjbcaVersion report it."""
    return f"EJBCA {version}.0 Community"


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass
class StandinEjbca:
    """The CA model plus fault switches; thread-safe enough for tests (one lock).

    ``version`` is the EJBCA CE release modelled: "7.11" has no ``/v1/ca`` (the CE build of
    7.x left out modules/ejbca-rest-ca), "8.0" and later have it; ``ca_resource=False``
    models the 8.0 installations that answer ``/v1/ca`` with RESTEasy's 404 (Keyfactor/ejbca-ce
    issue #520). "8.1" and later word the wrong-status message differently. ``approval``
    puts an approval profile on the CA for add/edit end entity. ``ca_serial`` adds a
    serialNumber to the CA's subject (EJBCA writes it ``SN=``). ``denied`` holds the access
    rules the gateway's RA role lacks (``/administrator``, ``/ca/<id>``, ...).
    """

    root: CA = field(default_factory=lambda: CA.create("Stand-in Root CA"))
    version: str = "8.0"
    ca_resource: bool = True
    approval: bool = False
    ca_serial: str | None = None
    fault: str | None = None
    hang_s: float = 4.0
    denied: set[str] = field(default_factory=set)
    end_entities: dict[str, EndEntity] = field(default_factory=dict)
    approvals: dict[int, ApprovalRequest] = field(default_factory=dict)
    issued: dict[tuple[str, str], Issuance] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.ca_key = rsa_key()
        attributes = [x509.NameAttribute(x509.NameOID.COMMON_NAME, CA_NAME)]
        if self.ca_serial is not None:
            attributes.append(x509.NameAttribute(x509.NameOID.SERIAL_NUMBER, self.ca_serial))
        attributes.append(x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Stand-in EJBCA"))
        self.ca_cert = authority.build_ca(x509.Name(attributes), self.ca_key, issuer=self.root.cert,
                                          issuer_key=self.root.key, days=365, now=NOW, path_length=0)

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.ca_cert, self.root.cert]

    @property
    def ca_dn(self) -> str:
        """The CA's subject DN as EJBCA keeps it (``CAInfo.getSubjectDN``: stringToBCDNString)."""
        return bc_dn(self.ca_cert.subject.rfc4514_string())

    @property
    def ca_id(self) -> int:
        """EJBCA's CA ID: the hash of the CA's subject DN (``CertTools.stringToBCDNString(dn).hashCode()``)."""
        return java_hash(self.ca_dn)

    @property
    def has_ca_resource(self) -> bool:
        return _release(self.version) >= (8, 0) and self.ca_resource

    def is_ca(self, dn: str) -> bool:
        """Whether ``dn`` names the CA: EJBCA compares canonical DNs (the CA ID is the hash of
        ``stringToBCDNString(dn)``: RaMasterApiSessionBean.getCertificateStatus,
        CaRestResource.getCertificateAsPem, CertDistServlet.getCertificateChain)."""
        return bc_dn(dn) == self.ca_dn

    # -- EJBCA behaviour --------------------------------------------------------------------

    def require(self, rule: str) -> None:
        """``AuthorizationSession.isAuthorized`` failing → ``AuthorizationDeniedException``
        (REST ExceptionHandler: 403; EjbcaWS: the AuthorizationDeniedException fault)."""
        if rule in self.denied:
            raise Fault(403, f"Administrator is not authorized to resource {rule}.",
                        "AuthorizationDeniedException")

    def admin(self) -> None:
        """``getAdmin(..., allowNonAdmins=false)``: the client certificate must belong to a role
        with ``/administrator`` (EjbcaRestHelperSessionBean.getAdmin, EjbcaWSHelperSession.getAdmin)."""
        self.require(ADMINISTRATOR)

    def add_or_edit(self, ee: EndEntity, *, single_transaction: bool = False) -> None:
        """EjbcaWS ``editUser`` (``EndEntityManagementSessionBean.changeUser``/``addUserFromWS``):
        add, or overwrite an existing end entity. ``single_transaction`` is REST
        ``pkcs10enroll``'s path (``CertificateRequestSessionBean.addOrEditUser``), which
        checks ``/ca/<id>`` and ``create_certificate`` first and turns "waiting for
        approval" into a refusal with nothing kept (see :meth:`_request_approval`)."""
        self.admin()
        if ee.ca != CA_NAME:
            raise Fault(404, f"CA with name {ee.ca} doesn't exist.", "CADoesntExistsException")
        if ee.end_entity_profile == MISSING:
            raise Fault(404, "End entity profile MISSING not found", "EjbcaException",
                        "EE_PROFILE_NOT_EXISTS")
        if single_transaction:
            self.require(f"/ca/{self.ca_id}")
            self.require(CREATE_CERTIFICATE)
        if ee.certificate_profile == "STRICT":
            raise Fault(422, "Wrong number of CN fields in Subject DN.",
                        "UserDoesntFullfillEndEntityProfile")
        exists = ee.username in self.end_entities
        self.require(EDIT_END_ENTITY_RULE if exists else CREATE_END_ENTITY)
        profile = PROFILE_IDS.get(ee.end_entity_profile, 0)
        self.require(f"/endentityprofilesrules/{profile}"
                     f"{'/edit_end_entity' if exists else '/create_end_entity'}")
        self.require(f"/ca/{self.ca_id}")
        ee.name()  # the DN must be one EJBCA can read
        if self.approval:
            self._request_approval(ee, keep=not single_transaction)
        with self.lock:
            self.end_entities[ee.username] = ee

    def _request_approval(self, ee: EndEntity, *, keep: bool) -> None:
        """EJBCA with an approval profile on add/edit end entity never changes the end entity
        itself (``EndEntityManagementSessionBean.addUser``/``changeUser``):
        ``ApprovalSessionBean.addApprovalRequest`` refuses a second request while a
        non-expired one with the same approval ID is waiting, approved or rejected
        (``ApprovalException`` ``APPROVAL_ALREADY_EXISTS``, ``approval.alreadyexists``), else
        stores one and the caller throws ``WaitingForApprovalException`` (``ra.approvalad``;
        ``ra.approvaledit`` has the same English text) with its request ID.

        Not ``keep``: ``CertificateRequestSessionBean.addOrEditUser`` catches the
        ``WaitingForApprovalException``, marks the transaction rollback-only (the approval
        request is not kept) and throws ``ApprovalException`` "Single transaction enrollment
        request rejected since approvals are enabled for this CA (<caId>) or Certificate
        Profile (<cpId>).", which ``CertificateRestResource.enrollPkcs10Certificate`` answers
        400 like every EjbcaException."""
        with self.lock:
            kind = EDIT_END_ENTITY if ee.username in self.end_entities else ADD_END_ENTITY
            approval_id = java_hash(f"{kind};{ee.username};{APPROVAL_PROFILE}")
            for existing in self.approvals.values():
                if existing.approval_id == approval_id and existing.status in (WAITING, APPROVED, REJECTED):
                    raise Fault(400, f"Approval request with approvalID {approval_id} already exists.",
                                "ApprovalException", "APPROVAL_ALREADY_EXISTS")
            if not keep:
                profile_id = CERT_PROFILE_IDS.get(ee.certificate_profile, 0)
                raise Fault(400, "Single transaction enrollment request rejected since approvals are "
                            f"enabled for this CA ({self.ca_id}) or Certificate Profile ({profile_id}).",
                            "ApprovalException")
            request_id = 1000 + len(self.approvals)
            self.approvals[request_id] = ApprovalRequest(request_id, approval_id, kind, ee)
        raise Fault(202, "Add Entity request has been added for approval by authorized administrators.",
                    "WaitingForApprovalException", str(request_id))

    def open_approvals(self, username: str) -> list[ApprovalRequest]:
        return [a for a in self.approvals.values()
                if a.end_entity.username == username and a.status == WAITING]

    def approve(self, request_id: int) -> None:
        """An approver approves: the add/edit is executed at once (status EXECUTED) with the
        end entity as requested, password included (``AddEndEntityApprovalRequest.execute``
        → ``addUserAfterApproval``)."""
        with self.lock:
            request = self.approvals[request_id]
            assert request.status == WAITING
            self.end_entities[request.end_entity.username] = request.end_entity
            request.status = EXECUTED

    def reject(self, request_id: int) -> None:
        """An approver rejects: an executable request becomes EXECUTIONDENIED and expires at
        once (``ApprovalData.reject``), so it no longer blocks a new request."""
        with self.lock:
            request = self.approvals[request_id]
            assert request.status == WAITING
            request.status = EXECUTION_DENIED

    def wrong_status(self, ee: EndEntity) -> str:
        """``authentication.wrongstatus`` (src/intresources/ejbcaresources.en.properties) with
        ``EndEntityConstants.getStatusText(status), status, username``: CE 8.0 "Got request
        with status {0} ({1}), NEW, FAILED or INPROCESS required: {2}.", reworded in 8.1 to
        "... ({1}). Status NEW, FAILED or INPROCESS required: {2}."."""
        head = f"Got request with status {STATUS_TEXT[ee.status]} ({ee.status})"
        if _release(self.version) >= (8, 1):
            return f"{head}. Status NEW, FAILED or INPROCESS required: {ee.username}."
        return f"{head}, NEW, FAILED or INPROCESS required: {ee.username}."

    def process(self, username: str, password: str, csr: x509.CertificateSigningRequest) -> x509.Certificate:
        """``SignSessionBean.createCertificateWS`` + ``EndEntityAuthenticationSessionBean.authenticateUser``
        with EJBCA's messages (ejbcaresources.en.properties):

        - no such end entity: ``NotFoundException("Wrong username or password")``
          (``ra.wrongusernameorpassword``; the same text either way, not to leak which);
        - status not NEW/FAILED/INPROCESS/KEYRECOVERY, checked *before* the password
          (``isAllowedToEnroll``): ``AuthStatusException`` ``authentication.wrongstatus``
          (:meth:`wrong_status`);
        - wrong password: ``AuthLoginException(LOGIN_ERROR)`` ``authentication.invalidpwd``
          "Got request for user with invalid password: <username>.".

        All three extend ``EjbcaException``; EjbcaWS turns the last two into an EjbcaException
        fault with ``USER_WRONG_STATUS``/``LOGIN_ERROR``. The certificate carries the end
        entity's DN and altNames.
        """
        self.admin()
        with self.lock:
            ee = self.end_entities.get(username)
            if ee is None:
                raise Fault(400, "Wrong username or password", "NotFoundException")
            if ee.status not in (10, 11, 30, 70):
                raise Fault(400, self.wrong_status(ee), "EjbcaException", "USER_WRONG_STATUS")
            if ee.password != password:
                raise Fault(400, f"Got request for user with invalid password: {username}.",
                            "EjbcaException", "LOGIN_ERROR")
        self.require(f"/ca/{self.ca_id}")
        self.require(CREATE_CERTIFICATE)
        with self.lock:
            subject = ee.name()
            for issuance in self.issued.values():
                if issuance.certificate.subject == subject and issuance.username != username:
                    raise Fault(400, f"User '{username}' is not allowed to use same subject DN as the "
                                f"user(s) {issuance.username} is/are using while issued by the same CA "
                                "(even if CN postfix is used). See setting for 'Enforce unique DN' in "
                                "the section Certification Authorities.", "EjbcaException",
                                "CERTIFICATE_WITH_THIS_SUBJECTDN_ALREADY_EXISTS_FOR_ANOTHER_USER")
            cert = authority.build_leaf(
                subject=subject, public_key=csr.public_key(),
                sans=ee.alt_names if ee.alt_names is not None else _sans(csr),
                issuer=self.ca_cert, issuer_key=self.ca_key,
                not_before=NOW - dt.timedelta(minutes=5), not_after=NOW + dt.timedelta(days=30),
                key_usage=["digitalSignature"], extended_key_usage=["clientAuth"],
                serial=authority.random_serial())
            self.issued[(self.ca_dn, f"{cert.serial_number:X}")] = Issuance(cert, username)
            ee.status = STATUS_GENERATED
            return cert

    def revoke(self, cert: x509.Certificate, reason: int = 1) -> None:
        found = self.lookup(cert.issuer.rfc4514_string(), f"{cert.serial_number:X}")
        assert found is not None
        found.revoked_reason = reason

    def revoke_by_api(self, issuer_dn: str, serial_hex: str, reason: int) -> None:
        """``EndEntityManagementSessionBean.revokeCert`` (EJBCA CE 8.0), what REST ``PUT .../revoke``
        and EjbcaWS ``revokeCert`` both reach: the ``/ra_functionality/revoke_end_entity``
        rule, the CA (``CADoesntExistsException``), the certificate (``ra.errorfindentitycert``:
        ``NoSuchEndEntityException``/``NotFoundException``), then ``AlreadyRevokedException``
        (``ra.errorrevocationexists``) for one revoked already (unless on hold)."""
        self.admin()
        self.require(REVOKE_END_ENTITY)
        if not self.is_ca(issuer_dn):
            raise Fault(404, f"CA with DN {issuer_dn} doesn't exist.", "CADoesntExistsException")
        self.require(f"/ca/{self.ca_id}")
        with self.lock:
            found = self.lookup(issuer_dn, serial_hex)
            if found is None:
                raise Fault(404, f"Could not find certificate with issuer DN '{issuer_dn}' and serial "
                            f"number '{serial_hex.lower()}'.", "NotFoundException")
            if found.revoked_reason not in (-1, 6, 8):
                raise Fault(409, f"Certificate with issuer DN '{issuer_dn}' and serial number "
                            f"'{serial_hex.lower()}' has previously been revoked. Revocation reason could "
                            "not be changed or is not allowed.", "AlreadyRevokedException")
            found.revoked_reason = reason

    def lookup(self, issuer_dn: str, serial_hex: str) -> Issuance | None:
        """``CertificateStoreSessionBean.getStatus(issuerDN, serno)``: by the canonical issuer DN
        (stringToBCDNString) and the serial number."""
        return self.issued.get((bc_dn(issuer_dn), serial_hex.upper().removeprefix("0X")))

    # -- REST (field names of EnrollCertificateRestRequest & co.) ----------------------------

    def rest(self, method: str, path: str, body: bytes, query: str = "") -> tuple[int, str, bytes]:
        """Faults as CE 8.0's ``ExceptionHandler`` renders them: ``ExceptionErrorRestResponse``
        ``{"error_code", "error_message"}``, or ``ExceptionInfoRestResponse`` with 202 for
        an unwrapped ``WaitingForApprovalException`` (none of the calls modelled here lets
        one out: enrollment wraps it, see :meth:`_request_approval`)."""
        try:
            if method == "PUT":
                return self._rest_put(path, parse_qs(query))
            return self._rest(method, path, json.loads(body) if body else {})
        except Fault as f:
            if f.status == 202:
                return _json(202, {"status_code": 202, "info_message": f.message,
                                   "link": f"/v1/approval/{f.code}"})
            return _json(f.status, {"error_code": f.status, "error_message": f.message})

    def _rest_put(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """CE 8.0 ``CertificateRestResource.revokeCertificate``: ``reason`` by its CLI name
        (``RevocationReasons.getFromCliValue``; unknown: 400 "Invalid revocation reason."),
        a hex serial, then ``revokeCert``; 200 with a ``RevokeStatusRestResponse`` whose
        ``message`` is "Successfully revoked". ``ExceptionHandler``: AlreadyRevoked 409,
        NotFound/CADoesntExist 404, WaitingForApproval 202."""
        m = re.fullmatch(r"/v1/certificate/([^/]+)/([^/]+)/revoke", path)
        if m is None:
            raise Fault(404, f"RESTEASY003210: Could not find resource for full path: {path}")
        self.admin()
        names = {name: value for value, name in REASON_NAMES.items()}
        reason = (query.get("reason") or [""])[0]
        if reason not in names:
            raise Fault(400, "Invalid revocation reason.")
        issuer, serial = unquote(m.group(1)), m.group(2)
        self.revoke_by_api(issuer, serial, names[reason])
        return _json(200, {"issuer_dn": issuer, "serial_number": serial, "revoked": True,
                           "revocation_reason": reason, "revocation_date": "2024-05-01T10:00:00Z",
                           "message": "Successfully revoked"})

    def _enroll_names(self, data: dict[str, Any]) -> None:
        """``EjbcaRestHelperSessionBean.convertToEndEntityInformation``: the CA, the certificate
        profile and the end entity profile by name (CADoesntExistsException,
        CertificateProfileDoesNotExistException, ``EndEntityProfileSessionBean.getEndEntityProfileId``'s
        EndEntityProfileNotFoundException), each answered 400 by enrollPkcs10Certificate."""
        if data["certificate_authority_name"] != CA_NAME:
            raise Fault(400, f'CA with name "{data["certificate_authority_name"]}" doesn\'t exist')
        if data["certificate_profile_name"] == MISSING:
            raise Fault(400, f'Certificate profile with name "{data["certificate_profile_name"]}" doesn\'t exist')
        if data["end_entity_profile_name"] == MISSING:
            raise Fault(400, f'End Entity Profile of name "{data["end_entity_profile_name"]}" was not found')

    def _rest(self, method: str, path: str, data: dict[str, Any]) -> tuple[int, str, bytes]:
        if method == "POST" and path == "/v1/certificate/pkcs10enroll":
            # CE 8.0 CertificateRestResource.enrollPkcs10Certificate → RaMasterApiSessionBean
            # .createCertificateRest → CertificateRequestSessionBean.processCertReq (addOrEditUser,
            # then the certificate, one transaction); EjbcaException (ApprovalException and
            # NotFoundException included), EndEntityProfileValidationException and
            # CesecoreException → 400 with the message; AuthorizationDeniedException → 403.
            self.admin()
            csr = x509.load_pem_x509_csr(data["certificate_request"].encode())
            try:
                self._enroll_names(data)
                self.add_or_edit(EndEntity(
                    username=data["username"], password=data["password"],
                    subject_dn=csr.subject.rfc4514_string(), subject=csr.subject,
                    ca=data["certificate_authority_name"],
                    certificate_profile=data["certificate_profile_name"],
                    end_entity_profile=data["end_entity_profile_name"]), single_transaction=True)
                cert = self.process(data["username"], data["password"], csr)
            except Fault as f:
                raise Fault(403 if f.status == 403 else 400, f.message, f.bean, f.code) from None
            return _json(201, self._cert_response(cert, bool(data.get("include_chain"))))
        if method == "POST" and path == "/v1/certificate/certificaterequest":
            # CE 8.0 CertificateRestResource.certificateRequest: raMasterApi.processCertificateRequest
            # (= createCertificateWS); every EjbcaException — NotFoundException, AuthLoginException,
            # AuthStatusException included — becomes 400 with the exception's message.
            if data.get("certificate_request_type", "PKCS10") != "PKCS10":
                raise Fault(400, "Invalid certificate request type")
            csr = x509.load_pem_x509_csr(data["certificate_request"].encode())
            try:
                cert = self.process(data["username"], data["password"], csr)
            except Fault as f:
                raise Fault(403 if f.status == 403 else 400, f.message, f.bean, f.code) from None
            return _json(201, self._cert_response(cert, bool(data.get("include_chain"))))
        m = re.fullmatch(r"/v1/certificate/([^/]+)/([^/]+)/revocationstatus", path)
        if method == "GET" and m:
            # CE 8.0 CertificateRestResource.revocationStatus: getAdmin(false); a serial that is not
            # hex (StringTools.getBigIntegerFromHexString) → 400; the CA must exist
            # (CADoesntExistsException "CA '<dn>' does not exist." → 404) and be one the
            # administrator may access; an unknown serial is a NotFoundException (404).
            self.admin()
            issuer, serial = unquote(m.group(1)), m.group(2)
            if not re.fullmatch(r"(0[xX])?[0-9a-fA-F]+", serial):
                raise Fault(400, "Invalid serial number format. Should be HEX encoded (optionally with "
                            "'0x' prefix) e.g. '0x10782a83eef170d4'")
            if not self.is_ca(issuer):
                raise Fault(404, f"CA '{issuer}' does not exist.")
            self.require(f"/ca/{self.ca_id}")
            found = self.lookup(issuer, serial)
            if found is None:
                raise Fault(404, f"Certificate with serial number '{serial}' and issuer DN '{issuer}' "
                            "was not found")
            answer: dict[str, Any] = {"issuer_dn": issuer, "serial_number": serial,
                                      "revoked": found.revoked_reason != -1,
                                      "revocation_reason": REASON_NAMES[found.revoked_reason]}
            if found.revoked_reason != -1:
                answer["revocation_date"] = "2024-05-01T10:00:00Z"
            return _json(200, answer)
        if method == "GET" and path == "/v1/certificate/status":
            # BaseRestResource.status: no authentication, no authorization
            return _json(200, {"status": "OK", "version": "1.0", "revision": versioned(self.version)})
        if self.has_ca_resource:  # modules/ejbca-rest-ca CaRestResource: CE 8.0 and later
            if method == "GET" and path == "/v1/ca":
                # CaRestResource.listCas: getAdmin(false), the CAs the administrator may access
                self.admin()
                listed = [] if f"/ca/{self.ca_id}" in self.denied else [
                    {"id": self.ca_id, "name": CA_NAME, "subject_dn": self.ca_dn,
                     "issuer_dn": bc_dn(self.root.cert.subject.rfc4514_string()),
                     "expiration_date": "2030-01-01T00:00:00Z"}]
                return _json(200, {"certificate_authorities": listed})
            m = re.fullmatch(r"/v1/ca/([^/]+)/certificate/download", path)
            if method == "GET" and m:
                # CaRestResource.getCertificateAsPem: getAdmin(false), stringToBCDNString(subjectDn),
                # getCertificateChain(admin, dn.hashCode()) (CADoesntExistsException → 404, /ca/<id>)
                self.admin()
                if not self.is_ca(unquote(m.group(1))):
                    raise Fault(404, "CA doesn't exist")
                self.require(f"/ca/{self.ca_id}")
                return 200, "application/octet-stream", authority.cert_pem(*self.chain)
        # RESTEasy's own answer for a path no resource serves (issue #520 for /v1/ca on 8.0)
        raise Fault(404, f"RESTEASY003210: Could not find resource for full path: {path}")

    def webdist(self, query: str) -> tuple[int, str, bytes]:
        """``CertDistServlet.doGet`` (modules/ejbca-webdist-war), no authentication (a public web
        token): ``cmd=cacert&issuer=<DN>`` without ``level`` is the CA's chain as a PEM
        PKCS#7 (``signSession.createPKCS7(cacert, includeChain=true)``). ``issuer`` is
        URL-decoded once more by the servlet and canonicalised (stringToBCDNString). An
        unknown CA, or any failure, is ``sendError(404, "Error getting CA certificates.")``;
        another command is 400."""
        params = parse_qs(query)
        command = (params.get("cmd") or [""])[0]
        issuer = params.get("issuer")
        if command.lower() != "cacert" or not issuer:
            return 400, "text/html", (b"<html><body>Commands=cacert | lastcert | listcerts | crl | deltacrl "
                                      b"| revoked &amp;&amp; issuer=&lt;issuerdn&gt;</body></html>")
        if not self.is_ca(unquote_plus(issuer[0])):
            return 404, "text/html", b"<html><body>Error getting CA certificates.</body></html>"
        # EJBCA's Base64.encode breaks the text into 64-character lines
        text = base64.b64encode(pkcs7.serialize_certificates(self.chain, Encoding.DER)).decode()
        lines = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
        return 200, "application/octet-stream", \
            f"-----BEGIN PKCS7-----\n{lines}\n-----END PKCS7-----\n".encode()

    def _cert_response(self, cert: x509.Certificate, include_chain: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {"certificate": _b64der(cert),
                                  "serial_number": f"{cert.serial_number:X}",
                                  "response_format": "DER"}
        if include_chain:
            answer["certificate_chain"] = [_b64der(c) for c in self.chain]
        return answer

    # -- EjbcaWS (document/literal, arg0..argN) ------------------------------------------------

    def soap(self, body: bytes) -> tuple[int, str, bytes]:
        """JAX-WS as EjbcaWS runs on it (modules/ejbca-ws, ``@WebService`` EjbcaWS,
        document/literal): a fault is HTTP 500 with the exception bean as the detail."""
        envelope = etree.fromstring(body)
        call = envelope.find(f"{{{SOAP_ENV}}}Body")[0]
        op = etree.QName(call).localname
        args = {child.tag: child for child in call}
        try:
            inner = self._soap(op, args)
        except Fault as f:
            return 500, "text/xml; charset=utf-8", _fault_envelope(f)
        return 200, "text/xml; charset=utf-8", _envelope(
            f'<ns2:{op}Response xmlns:ns2="{NS}">{inner}</ns2:{op}Response>')

    def _soap(self, op: str, args: dict[str, Any]) -> str:
        text = {k: (v.text or "") for k, v in args.items()}
        if op == "getEjbcaVersion":  # EjbcaWS.getEjbcaVersion: GlobalConfiguration.EJBCA_VERSION, no admin
            return f"<return>{versioned(self.version)}</return>"
        if op == "isAuthorized":  # EjbcaWS.isAuthorized: isAuthorizedNoLogging(admin, resource)
            return f"<return>{'false' if text['arg0'] in self.denied else 'true'}</return>"
        self.admin()
        if op == "editUser":
            # EjbcaWS.editUser: add or change the end entity; under approvals the
            # WaitingForApprovalException / ApprovalException reach the caller as faults
            user = {c.tag: (c.text or "") for c in args["arg0"]}
            assert user["status"] == "10" and user["tokenType"] == "USERGENERATED"
            assert user["clearPwd"] == "false"
            self.add_or_edit(EndEntity(
                username=user["username"], password=user["password"],
                subject_dn=user["subjectDN"], ca=user["caName"],
                alt_names=parse_ejbca_alt_names(user.get("subjectAltName", "")),
                certificate_profile=user["certificateProfileName"],
                end_entity_profile=user["endEntityProfileName"]))
            return ""
        if op == "pkcs10Request":
            # EjbcaWS.pkcs10Request → SignSessionBean.createCertificateWS (see process())
            assert text["arg4"] == "CERTIFICATE"
            csr = x509.load_der_x509_csr(base64.b64decode(text["arg2"]))
            cert = self.process(text["arg0"], text["arg1"], csr)
            return f"<return><data>{_double_b64(cert)}</data><responseType>CERTIFICATE</responseType></return>"
        if op == "checkRevokationStatus":
            # EjbcaWS.checkRevokationStatus: the CA by its canonical DN (verifyExistenceOfCA), then
            # the status; an unknown certificate is a null return
            if not self.is_ca(text["arg0"]):
                raise Fault(404, f"CA with DN {text['arg0']} doesn't exist.", "CADoesntExistsException")
            self.require(f"/ca/{self.ca_id}")
            found = self.lookup(text["arg0"], text["arg1"])
            if found is None:
                return ""  # JAX-WS leaves out a null return
            date = "<revocationDate>2024-05-01T10:00:00Z</revocationDate>" if found.revoked_reason != -1 else ""
            return (f"<return><certificateSN>{escape(text['arg1'])}</certificateSN><issuerDN>"
                    f"{escape(text['arg0'])}</issuerDN><reason>{found.revoked_reason}</reason>{date}</return>")
        if op == "revokeCert":  # EjbcaWS.revokeCert(issuerDN, certificateSN hex, int reason): void
            self.revoke_by_api(text["arg0"], text["arg1"], int(text["arg2"]))
            return ""
        if op == "getLastCAChain":
            # EjbcaWS.getLastCAChain(caName): the CA by name, /ca/<id>, the chain CA first, root last
            if text["arg0"] != CA_NAME:
                raise Fault(404, f"CA with name {text['arg0']} doesn't exist.", "CADoesntExistsException")
            self.require(f"/ca/{self.ca_id}")
            return "".join(f"<return><type>0</type><certificateData>{_double_b64(c)}</certificateData></return>"
                           for c in self.chain)
        if op == "getAuthorizedEndEntityProfiles":
            # EjbcaWS: the profiles the administrator may create end entities with
            return "".join(f"<return><id>{pid}</id><name>{escape(name)}</name></return>"
                           for name, pid in sorted(PROFILE_IDS.items())
                           if f"/endentityprofilesrules/{pid}/create_end_entity" not in self.denied)
        if op == "getAvailableCAs":  # EjbcaWS: raMasterApi.getAuthorizedCas
            if f"/ca/{self.ca_id}" in self.denied:
                return ""
            return f"<return><id>{self.ca_id}</id><name>{escape(CA_NAME)}</name></return>"
        raise Fault(500, f"the stand-in does not model operation {op}")


# -- the HTTPS server ------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body leave in two writes: with Nagle's algorithm on, the body waits
    # for the ACK of the head, which the client delays (40 ms on Linux): every keep-alive
    # call took ~48 ms. EJBCA's application server answers without such a stall.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        standin.calls.append({"method": self.command, "path": self.path, "body": body,
                              "peer": peer, "headers": dict(self.headers)})
        fault = standin.fault
        if fault == "hang":
            time.sleep(standin.hang_s)
        if fault == "500":
            return self._send(500, "text/html", b"<html><body>Internal Server Error</body></html>")
        if fault == "garbage":
            return self._send(200, "application/json", b"<html>this is not JSON")
        if fault == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "4000")
            self.end_headers()
            self.wfile.write(b'{"certificate": "MIIB')
            self.wfile.flush()
            self.close_connection = True
            return None
        if path.startswith(REST):
            query = self.path.split("?", 1)[1] if "?" in self.path else ""
            status, ctype, out = standin.rest(self.command, path[len(REST):], body, query)
        elif path == WS and self.command == "POST":
            status, ctype, out = standin.soap(body)
        elif path == WEBDIST and self.command == "GET":
            status, ctype, out = standin.webdist(self.path.split("?", 1)[1] if "?" in self.path else "")
        else:
            status, ctype, out = 404, "text/plain", b"not here"
        return self._send(status, ctype, out)

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandinEjbca


@dataclass
class UpstreamPKI:
    """Files an operator would have: the management CA, the RA client identity, the
    upstream's TLS identity, all written to ``folder``."""

    folder: Path
    management: CA = field(default_factory=lambda: CA.create("Stand-in ManagementCA"))

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        server_key = rsa_key()
        server = self.management.issue(server_key, cn="127.0.0.1", eku=("serverAuth",),
                                       sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        write_pem(self.folder / "upstream-server.pem", server)
        write_pem(self.folder / "upstream-server.key", server_key)
        self.client_key = rsa_key()
        self.client_cert = self.management.issue(self.client_key, cn="est-gateway RA")
        write_pem(self.ca_bundle, self.management.cert)
        write_pem(self.client_cert_file, self.client_cert)
        write_pem(self.client_key_file, self.client_key)

    @property
    def ca_bundle(self) -> Path:
        return self.folder / "upstream-ca.pem"

    @property
    def client_cert_file(self) -> Path:
        return self.folder / "ra-client.pem"

    @property
    def client_key_file(self) -> Path:
        return self.folder / "ra-client.key"

    def encrypted_key(self, passphrase: str) -> Path:
        """The RA client key again, encrypted with ``passphrase`` (mode 0600)."""
        path = self.folder / "ra-client-encrypted.key"
        path.write_bytes(self.client_key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(passphrase.encode())))
        path.chmod(0o600)
        return path

    def server_context(self, *, untrusted: bool = False) -> ssl.SSLContext:
        """TLS server context that requires a client certificate from the management CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if untrusted:  # a certificate from a CA the gateway does not trust
            other = CA.create("Somebody Else's CA")
            key = rsa_key()
            cert = other.issue(key, cn="127.0.0.1", eku=("serverAuth",),
                               sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            write_pem(self.folder / "untrusted.pem", cert)
            write_pem(self.folder / "untrusted.key", key)
            context.load_cert_chain(self.folder / "untrusted.pem", self.folder / "untrusted.key")
        else:
            context.load_cert_chain(self.folder / "upstream-server.pem", self.folder / "upstream-server.key")
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(self.ca_bundle))
        return context


class StandinServer:
    """Runs :class:`StandinEjbca` behind HTTPS with required client certificates (or, with
    another ``handler``, whatever that handler answers from ``standin``)."""

    def __init__(self, standin: StandinEjbca, context: ssl.SSLContext,
                 handler: type[BaseHTTPRequestHandler] = _Handler) -> None:
        self.standin = standin
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.standin = standin
        # A client that gave up (read timeout) leaves a handler writing to a closed socket:
        # expected, not worth socketserver's traceback on stderr.
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True,
                                                do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def rest_url(self) -> str:
        return f"https://127.0.0.1:{self.port}{REST}"

    @property
    def ws_url(self) -> str:
        return f"https://127.0.0.1:{self.port}{WS}"

    def __enter__(self) -> StandinServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _b64der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def _double_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(_b64der(cert).encode()).decode()


def _json(status: int, data: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(data).encode()


def _envelope(inner: str) -> bytes:
    return (f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>{inner}</soap:Body>'
            "</soap:Envelope>").encode()


def _fault_envelope(f: Fault) -> bytes:
    """A SOAP fault whose detail is the exception bean, as EJBCA's WSDL types them:
    ``WaitingForApprovalException{requestId, message}``, ``EjbcaException``-shaped beans
    ``{errorCode{internalErrorCode}, message}`` (ws/objects, cesecore ``ErrorCode``), others
    ``{message}``."""
    if f.bean == "WaitingForApprovalException":
        fields = f"<requestId>{escape(f.code)}</requestId><message>{escape(f.message)}</message>"
    elif f.code or f.bean in ("EjbcaException", "NotFoundException", "CADoesntExistsException"):
        fields = (f"<errorCode><internalErrorCode>{escape(f.code)}</internalErrorCode></errorCode>"
                  f"<message>{escape(f.message)}</message>")
    else:
        fields = f"<message>{escape(f.message)}</message>"
    return _envelope(f"<soap:Fault><faultcode>soap:Server</faultcode><faultstring>{escape(f.message)}"
                     f"</faultstring><detail><ns2:{f.bean} xmlns:ns2=\"{NS}\">{fields}</ns2:{f.bean}>"
                     "</detail></soap:Fault>")


# -- building adapters against the stand-in ---------------------------------------------------

def upstream_options(pki: UpstreamPKI, url: str, **more: Any) -> dict[str, Any]:
    """``[backends.<name>]`` settings pointing at the stand-in (short timeouts for tests)."""
    return {"url": url, "client_cert": str(pki.client_cert_file),
            "client_key": str(pki.client_key_file), "ca_bundle": str(pki.ca_bundle),
            "connect_timeout_s": 2, "read_timeout_s": 2, "retries": 1, "retry_backoff_s": 0.01,
            **more}


def make_backend(type_name: str, options: dict[str, Any], base_dir: Path) -> Any:
    """Build a backend through the entry-point registry, as the configuration loader does."""
    from est_gateway.backends.registry import BackendRegistry
    from est_gateway.config.reader import Problems, Section

    problems = Problems()
    cls = BackendRegistry().load(type_name)
    backend = cls.from_options("ejbca", Section({"type": type_name, **options}, "backends.ejbca",
                                                problems, base_dir))
    problems.raise_if_any()
    backend.start()
    return backend
