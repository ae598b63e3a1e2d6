"""EJBCA SOAP adapter (``type = "ejbca-soap"``): EjbcaWS through zeep.

Calls and types follow EJBCA's ``ws/EjbcaWS.java`` (Community since EJBCA 3.x; checked
against CE 7.10, 7.11 and 8.0): ``editUser`` + ``pkcs10Request`` to issue,
``checkRevokationStatus`` before renewals and ``getLastCAChain`` for ``cacerts``.
``certificateResponse.data`` and ``certificate.certificateData`` hold base64 *text* inside
an ``xs:base64Binary``, so they are decoded twice.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from zeep import Client, Settings

from est_gateway.plugin import (
    EnrollRequest,
    ESTError,
    Issued,
    Pending,
    RevocationStatus,
    Section,
    UpstreamError,
    UpstreamUnavailable,
    clip,
)
from est_gateway_ejbca.alias import AliasUpstream, EjbcaTarget
from est_gateway_ejbca.common import (
    REVOCATION_REASONS,
    EjbcaBackend,
    EjbcaOptions,
    Meaning,
    ca_missing,
    enrollment_refused,
    not_registered,
    renewed_unknown,
    unknown_ca_or_profile,
)
from est_gateway_ejbca.names import ejbca_alt_names, ejbca_dn, issuer_dn
from est_gateway_ejbca.soap.faults import invoke
from est_gateway_ejbca.soap.transport import UpstreamTransport

log = logging.getLogger(__name__)

NAMESPACE = "http://ws.protocol.core.ejbca.org/"
BINDING = f"{{{NAMESPACE}}}EjbcaWSServiceSoapBinding"
#: EndEntityConstants.STATUS_NEW
STATUS_NEW = 10
#: RFC 5280 reason code superseded (cesecore ``RevocationReasons.SUPERSEDED``)
SUPERSEDED = 4
#: access rules (AccessRulesConstants, StandardRules) every alias needs
ADMINISTRATOR = "/administrator"
CREATE_CERTIFICATE = "/ca_functionality/create_certificate"
#: and RA mode's, to add and edit end entities
RA_RULES = ("/ra_functionality/create_end_entity", "/ra_functionality/edit_end_entity")
#: and ``revoke_superseded``'s
REVOKE_RULE = "/ra_functionality/revoke_end_entity"


def bundled_wsdl() -> Path:
    """The WSDL shipped with the adapter (the EjbcaWS operations the gateway uses)."""
    return Path(str(resources.files("est_gateway_ejbca.soap") / "wsdl" / "ejbcaws.wsdl"))


class EjbcaSoapBackend(EjbcaBackend):
    """Issues through ``editUser`` + ``pkcs10Request`` (RA mode) or ``pkcs10Request`` alone.

    ``editUser`` under an approval profile leaves a waiting approval request at EJBCA
    (``WaitingForApprovalException``; ``APPROVAL_ALREADY_EXISTS`` while it is open): 202, and
    with ``approval_secret`` the device's repeat after the approval gets its certificate.
    """

    waits_for_approvals = True

    def __init__(self, name: str, options: EjbcaOptions, *, wsdl: str = "bundled") -> None:
        super().__init__(name, options)
        self.wsdl = wsdl
        self._local = threading.local()

    @classmethod
    def build(cls, name: str, common: EjbcaOptions, options: Section) -> EjbcaSoapBackend:
        wsdl = options.str("wsdl", "bundled")
        if isinstance(wsdl, str) and wsdl not in ("bundled", "server"):
            path = options.path_value("wsdl", must_exist=True)
            wsdl = str(path) if path is not None else wsdl
        return cls(name, common, wsdl=wsdl)

    def describe_state(self) -> dict[str, str]:
        return {**super().describe_state(), "WSDL": self._wsdl_location()}

    def _wsdl_location(self) -> str:
        if self.wsdl == "bundled":
            return str(bundled_wsdl())
        if self.wsdl == "server":
            return f"{self.upstream.url}?wsdl"
        return self.wsdl

    def _service(self, *, idempotent: bool) -> Any:
        """This thread's zeep service proxy, bound to the configured address."""
        local = self._local
        session = self.http.session()
        if getattr(local, "session", None) is not session:
            transport = UpstreamTransport(self.http)
            try:
                client = Client(self._wsdl_location(), transport=transport,  # type: ignore[no-untyped-call]
                                settings=Settings(strict=False))
            except ESTError:
                raise
            except Exception as exc:  # the WSDL is unreadable: an operator problem
                raise UpstreamError(f"cannot load the EjbcaWS WSDL: {type(exc).__name__}") from None
            local.service = client.create_service(BINDING, self.upstream.url)  # type: ignore[no-untyped-call]
            local.client, local.transport, local.session = client, transport, session
        local.transport.idempotent = idempotent
        return local.service

    def _call(self, operation: str, *args: Any, meaning: Meaning, idempotent: bool = False) -> Any:
        service = self._service(idempotent=idempotent)
        return invoke(self, lambda: getattr(service, operation)(*args), meaning)

    def _user(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Any:
        target = request.target
        self._service(idempotent=False)
        user_type = self._local.client.get_type(f"{{{NAMESPACE}}}userDataVOWS")
        return user_type(
            username=username, password=password, clearPwd=False,
            subjectDN=ejbca_dn(request.csr.subject),
            subjectAltName=ejbca_alt_names(request.csr), caName=target.ca,
            endEntityProfileName=target.end_entity_profile,
            certificateProfileName=target.certificate_profile,
            status=STATUS_NEW, tokenType="USERGENERATED",
            sendNotification=False, keyRecoverable=False,
        )

    # -- issuing --------------------------------------------------------------------------

    def submit(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Issued | Pending:
        """``editUser`` (add or overwrite, status NEW) then ``pkcs10Request``."""
        edited = self._call("editUser", self._user(request, username, password),
                            meaning=Meaning(not_found=unknown_ca_or_profile, pending_allowed=True))
        if isinstance(edited, Pending):
            return edited
        return _answered(self._pkcs10(request, username, password,
                                      Meaning(not_found=unknown_ca_or_profile, pending_allowed=True)))

    def collect(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Issued | Pending | None:
        """``pkcs10Request`` for the end entity an approved ``editUser`` created."""
        return self._pkcs10(request, username, password,
                            Meaning(not_found=None, login_refused_is_none=True, pending_allowed=True))

    def issue_registered(self, request: EnrollRequest[EjbcaTarget], username: str, code: str) -> Issued | Pending:
        """``pkcs10Request`` for an end entity registered in status NEW with ``code``."""
        return _answered(self._pkcs10(request, username, code,
                                      Meaning(not_found=not_registered, refused=enrollment_refused,
                                              pending_allowed=True)))

    def _pkcs10(self, request: EnrollRequest[EjbcaTarget], username: str, password: str,
                meaning: Meaning) -> Issued | Pending | None:
        csr_b64 = base64.b64encode(request.csr.public_bytes(Encoding.DER)).decode("ascii")
        response = self._call("pkcs10Request", username, password, csr_b64, None, "CERTIFICATE",
                              meaning=meaning)
        if response is None or isinstance(response, Pending):
            return response
        certificate = _double_base64_certificate(getattr(response, "data", None))
        try:
            chain = tuple(self.ca_certs(request.target))
        except ESTError:
            chain = ()  # the certificate is issued; the chain is optional in the EST answer
        return self.issued(request, certificate, chain)

    # -- lookups --------------------------------------------------------------------------

    def revocation_status(self, certificate: x509.Certificate, target: EjbcaTarget) -> RevocationStatus:
        """``checkRevokationStatus(issuerDN, serial_hex)``: empty = unknown, reason -1 = good."""
        status = self._call("checkRevokationStatus", issuer_dn(certificate.issuer),
                            f"{certificate.serial_number:X}", meaning=Meaning(not_found=None),
                            idempotent=True)
        if status is None:
            return RevocationStatus(known=False, revoked=False)
        reason = getattr(status, "reason", None)
        if not isinstance(reason, int):
            raise UpstreamError("the upstream CA answered a revocation status without a reason")
        if reason == -1:
            return RevocationStatus(known=True, revoked=False)
        return RevocationStatus(known=True, revoked=True,
                                reason=REVOCATION_REASONS.get(reason, str(reason)),
                                revoked_at=getattr(status, "revocationDate", None))

    def revoke_superseded(self, certificate: x509.Certificate) -> None:
        """``revokeCert(issuerDN, serial_hex, 4)`` (``RevokedCertInfo.REVOCATION_REASON_SUPERSEDED``);
        ``AlreadyRevokedException`` means it is done."""
        self._call("revokeCert", issuer_dn(certificate.issuer), f"{certificate.serial_number:X}",
                   SUPERSEDED, meaning=Meaning(not_found=renewed_unknown, already_revoked_is_done=True),
                   idempotent=True)

    def fetch_ca_chain(self, target: EjbcaTarget, alias: AliasUpstream) -> list[x509.Certificate]:
        """``getLastCAChain(caName)``: the CA first, root last."""
        found = self._call("getLastCAChain", target.ca, meaning=Meaning(not_found=ca_missing),
                           idempotent=True)
        if not found:
            raise UpstreamUnavailable("the CA has no certificate yet (waiting for its certificate)")
        return [_double_base64_certificate(getattr(c, "certificateData", None)) for c in found]

    def health(self) -> None:
        """Reachable, TLS trusted both ways, EjbcaWS enabled, and the gateway's role holding
        every access rule the configured aliases need (``getEjbcaVersion`` checks none):

        - ``isAuthorized`` of ``/administrator`` and ``/ca_functionality/create_certificate``,
          in RA mode ``/ra_functionality/create_end_entity`` and ``…/edit_end_entity``, and
          with ``revoke_superseded`` ``/ra_functionality/revoke_end_entity``;
        - ``getAvailableCAs`` lists each configured CA (``/ca/<id>``);
        - in RA mode ``getAuthorizedEndEntityProfiles`` lists each end entity profile (its
          ``create_end_entity`` rule) and ``isAuthorized`` of its ``edit_end_entity`` rule.

        It cannot prove what only an enrollment shows: that the certificate profile is
        allowed in the end entity profile, or the profile's DN rules.
        """
        version = self._call("getEjbcaVersion", meaning=Meaning(not_found=ca_missing), idempotent=True)
        if not isinstance(version, str) or not version.strip():
            raise UpstreamError("the upstream CA answered getEjbcaVersion without a version")
        if not self.targets:
            return
        ra = [t for t in self.targets if t.upstream.mode == "ra"]
        rules = [ADMINISTRATOR, CREATE_CERTIFICATE, *(RA_RULES if ra else ()),
                 *((REVOKE_RULE,) if self.options.revoke_superseded else ())]
        cas = self._names("getAvailableCAs")
        profiles = self._names("getAuthorizedEndEntityProfiles") if ra else {}
        missing = [r for r in rules if not self._authorized(r)]
        missing += [f"/ca/<id of {t.ca}>" for t in self.targets if t.ca not in cas]
        for target in ra:
            profile = profiles.get(target.end_entity_profile)
            if profile is None:
                missing.append(f"/endentityprofilesrules/<id of {target.end_entity_profile}>/create_end_entity")
            elif not self._authorized(f"/endentityprofilesrules/{profile}/edit_end_entity"):
                missing.append(f"/endentityprofilesrules/{profile}/edit_end_entity")
        if missing:
            unique = list(dict.fromkeys(missing))
            log.error("backend %s: the gateway's EJBCA role lacks the access rules %s", self.name,
                      ", ".join(unique))
            raise UpstreamError(f"the gateway's EJBCA role lacks {', '.join(unique)}")

    def _authorized(self, rule: str) -> bool:
        return self._call("isAuthorized", rule, meaning=Meaning(not_found=None), idempotent=True) is True

    def _names(self, operation: str) -> dict[str, int]:
        found = self._call(operation, meaning=Meaning(not_found=None), idempotent=True) or []
        return {str(getattr(n, "name", "")): int(getattr(n, "id", 0)) for n in found}

    def describe_upstream(self) -> str:
        """``getEjbcaVersion``; EjbcaWS always offers the CA chain (``getLastCAChain``)."""
        try:
            version = self._call("getEjbcaVersion", meaning=Meaning(not_found=ca_missing), idempotent=True)
        except ESTError as exc:
            version = f"unknown ({exc.detail})"
        return f"{clip(version, 80)}, CA download: offered (getLastCAChain), chain: {self.chain_source()}"

    def download_source(self) -> str:
        return "getLastCAChain"


def _answered(result: Issued | Pending | None) -> Issued | Pending:
    """``None`` only comes from a meaning that allows "not found"; callers that do not allow
    it never see one, but the type says so."""
    if result is None:
        raise UpstreamError("the upstream CA answered pkcs10Request without a certificate")
    return result


def _double_base64_certificate(data: object) -> x509.Certificate:
    """zeep decoded the ``xs:base64Binary`` once; EJBCA put base64 text inside it."""
    try:
        if not isinstance(data, (bytes, str)):
            raise TypeError("no certificate data")
        return x509.load_der_x509_certificate(base64.b64decode(data))
    except (TypeError, binascii.Error, ValueError):
        raise UpstreamError("the upstream CA returned an unreadable certificate") from None
