"""EJBCA REST adapter (``type = "ejbca-rest"``), EJBCA's Community REST API.

Endpoints and field names follow EJBCA CE 8.0 (``EnrollCertificateRestRequest``,
``CertificateRestResponse``, ``RevokeStatusRestResponse``) and the newer Keyfactor
ejbca-ce ``CertificateRequestRestRequest`` (``certificate_request_type``) and
``CaRestResource`` (``/v1/ca/{subject_dn}/certificate/download``, EJBCA 8.1 and later).

``cacerts_source = "auto"`` (default) downloads the chain where EJBCA offers it (8.1 and
later) and otherwise serves the chain learnt from enrollment answers (``include_chain``),
kept in the state folder; ``ca_chain_file`` on an alias wins over both.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

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
    EjbcaBackend,
    EjbcaOptions,
    Meaning,
    ca_missing,
    enrollment_refused,
    not_registered,
    renewed_unknown,
    unknown_ca_or_profile,
)
from est_gateway_ejbca.rest.faults import ResourceMissing, interpret

ENROLL = "/v1/certificate/pkcs10enroll"
CERTIFICATE_REQUEST = "/v1/certificate/certificaterequest"
log = logging.getLogger(__name__)

CA_LIST = "/v1/ca"
STATUS = "/v1/certificate/status"
CACERTS_SOURCES = ("auto", "download", "enrollment")
#: the issuer DN asked about when the health check knows no DN of the configured CA
PROBE_ISSUER = "CN=est-gateway authorization probe"


class EjbcaRestBackend(EjbcaBackend):
    """Issues through ``pkcs10enroll`` (RA mode) or ``certificaterequest`` (client mode)."""

    alias_subject_dn = True

    def __init__(self, name: str, options: EjbcaOptions, *, cacerts_source: str = "auto") -> None:
        super().__init__(name, options)
        self.cacerts_source = cacerts_source
        #: whether this EJBCA has the /v1/ca resource (None: not asked yet); per process
        self.download_offered: bool | None = None if cacerts_source != "enrollment" else False

    @classmethod
    def build(cls, name: str, common: EjbcaOptions, options: Section) -> EjbcaRestBackend:
        source = options.str("cacerts_source", "auto", choices=CACERTS_SOURCES)
        return cls(name, common, cacerts_source=source)

    def describe_upstream(self) -> str:
        """``GET /v1/certificate/status`` (its ``revision`` is EJBCA's version) and ``GET /v1/ca``."""
        try:
            data = self._call("GET", STATUS, Meaning(not_found=_no_rest_api), idempotent=True)
            version = clip(data.get("revision") or "EJBCA (no version reported)", 80)
        except ESTError as exc:
            return f"unknown ({exc.detail}), CA download: not asked, chain: {self.chain_source()}"
        if self.cacerts_source != "enrollment":
            try:
                self._call("GET", CA_LIST, Meaning(not_found=ca_missing, missing_is_quiet=True),
                           idempotent=True)
                self.download_offered = True
            except ResourceMissing:
                self.download_offered = False
            except ESTError:
                pass
        offered = {True: "offered (GET /v1/ca)", False: "not offered", None: "unknown"}[self.download_offered]
        if self.cacerts_source == "enrollment":
            offered = 'not used (cacerts_source = "enrollment")'
        return f"{version}, CA download: {offered}, chain: {self.chain_source()}"

    def download_source(self) -> str:
        learnt = f"enrollment responses (include_chain), kept in {self.options.state_dir}"
        if self.cacerts_source == "enrollment" or self.download_offered is False:
            return f"from {learnt}"
        if self.cacerts_source == "download":
            return "from the CA download"
        if self.download_offered:
            return "from the CA download"
        return f"from the CA download where offered, else {learnt}"

    def _call(self, method: str, path: str, meaning: Meaning, *, idempotent: bool,
              json: dict[str, Any] | None = None, raw: bool = False) -> Any:
        response = self.http.request(method, self.upstream.url + path, idempotent=idempotent,
                                     json=json, headers={"Accept": "application/json, */*"})
        return interpret(response, self, meaning, raw=raw)

    # -- issuing --------------------------------------------------------------------------

    def submit(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Issued | Pending:
        """``POST /v1/certificate/pkcs10enroll``: creates or edits the end entity, then issues."""
        target = request.target
        body = {
            "certificate_request": _csr_pem(request),
            "certificate_profile_name": target.certificate_profile,
            "end_entity_profile_name": target.end_entity_profile,
            "certificate_authority_name": target.ca,
            "username": username,
            "password": password,
            "include_chain": True,
        }
        meaning = Meaning(not_found=unknown_ca_or_profile, pending_allowed=True)
        return self._issued(request, self._call("POST", ENROLL, meaning, idempotent=False, json=body))

    def collect(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Issued | Pending | None:
        """``certificaterequest`` for the end entity an approved request created; EJBCA's
        400 "Wrong username or password" / "invalid password" / "status ... required" means
        there is none to collect (``None``)."""
        meaning = Meaning(not_found=None, login_refused_is_none=True, pending_allowed=True)
        data = self._certificate_request(request, username, password, meaning)
        return None if data is None else self._issued(request, data)

    def issue_registered(self, request: EnrollRequest[EjbcaTarget], username: str, code: str) -> Issued | Pending:
        """``POST /v1/certificate/certificaterequest`` for a pre-registered end entity."""
        meaning = Meaning(not_found=not_registered, refused=enrollment_refused, pending_allowed=True)
        return self._issued(request, self._certificate_request(request, username, code, meaning))

    def _certificate_request(self, request: EnrollRequest[EjbcaTarget], username: str, password: str,
                             meaning: Meaning) -> Any:
        body = {
            "certificate_request": _csr_pem(request),
            "certificate_request_type": "PKCS10",
            "username": username,
            "password": password,
            "include_chain": True,
            "certificate_authority_name": request.target.ca,
        }
        return self._call("POST", CERTIFICATE_REQUEST, meaning, idempotent=False, json=body)

    def _issued(self, request: EnrollRequest[EjbcaTarget], data: dict[str, Any] | Pending) -> Issued | Pending:
        if isinstance(data, Pending):
            return data
        return self._certificate(request, data)

    def _certificate(self, request: EnrollRequest[EjbcaTarget], data: dict[str, Any]) -> Issued:
        """A ``CertificateRestResponse``/``CertificateEnrollmentRestResponse`` → :class:`Issued`."""
        certificate = _der_certificate(data.get("certificate"))
        chain = data.get("certificate_chain") or []
        if not isinstance(chain, list):
            raise UpstreamError("the upstream CA returned an unreadable certificate_chain")
        return self.issued(request, certificate, tuple(_der_certificate(c) for c in chain))

    # -- lookups --------------------------------------------------------------------------

    def revocation_status(self, certificate: x509.Certificate, target: EjbcaTarget) -> RevocationStatus:
        """``GET /v1/certificate/{issuer_dn}/{serial_hex}/revocationstatus``; 404 = unknown."""
        issuer = quote(certificate.issuer.rfc4514_string(), safe="")
        path = f"/v1/certificate/{issuer}/{certificate.serial_number:X}/revocationstatus"
        data = self._call("GET", path, Meaning(not_found=None), idempotent=True)
        if data is None:
            return RevocationStatus(known=False, revoked=False)
        revoked = data.get("revoked")
        if not isinstance(revoked, bool):
            raise UpstreamError("the upstream CA answered a revocation status without \"revoked\"")
        if not revoked:
            return RevocationStatus(known=True, revoked=False)
        return RevocationStatus(known=True, revoked=True,
                                reason=str(data.get("revocation_reason") or "") or None,
                                revoked_at=_date(data.get("revocation_date")))

    def revoke_superseded(self, certificate: x509.Certificate) -> None:
        """``PUT /v1/certificate/{issuer_dn}/{serial_hex}/revoke?reason=SUPERSEDED`` (CE 8.0
        ``CertificateRestResource.revokeCertificate``): 200, or 409 when already revoked."""
        issuer = quote(certificate.issuer.rfc4514_string(), safe="")
        path = f"/v1/certificate/{issuer}/{certificate.serial_number:X}/revoke?reason=SUPERSEDED"
        self._call("PUT", path, Meaning(not_found=renewed_unknown, already_revoked_is_done=True), idempotent=True)

    def fetch_ca_chain(self, target: EjbcaTarget, alias: AliasUpstream) -> list[x509.Certificate]:
        """``GET /v1/ca/{subject_dn}/certificate/download`` (PEM, EJBCA 8.1 and later), or the
        chain learnt from enrollment where EJBCA has no ``/v1/ca`` resource (CE 8.0 and older)."""
        if self.download_offered is False:
            return self.learnt_chain(target)
        try:
            return self._download(target, alias)
        except ResourceMissing:
            if self.cacerts_source == "download":
                raise UpstreamError("this EJBCA offers no CA download (/v1/ca came with EJBCA 8.1); "
                                    'set cacerts_source = "auto" or ca_chain_file') from None
            self.download_offered = False
            log.info("backend %s: EJBCA has no /v1/ca resource (before 8.1): cacerts serves the "
                     "chain learnt from enrollment answers", self.name)
            return self.learnt_chain(target)

    def _download(self, target: EjbcaTarget, alias: AliasUpstream) -> list[x509.Certificate]:
        quiet = self.cacerts_source == "auto"
        subject_dn = alias.ca_subject_dn or self._ca_subject_dn(target.ca, quiet=quiet)
        path = f"{CA_LIST}/{quote(subject_dn, safe='')}/certificate/download"
        pem = self._call("GET", path, Meaning(not_found=ca_missing, missing_is_quiet=quiet),
                         idempotent=True, raw=True)
        self.download_offered = True
        try:
            chain = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise UpstreamError("the upstream CA returned an unreadable CA certificate chain") from None
        return chain

    def _ca_subject_dn(self, ca_name: str, *, quiet: bool = False) -> str:
        """The subject DN of CA ``ca_name`` from ``GET /v1/ca`` (EJBCA 8.1 and later)."""
        data = self._call("GET", CA_LIST, Meaning(not_found=ca_missing, missing_is_quiet=quiet),
                          idempotent=True)
        cas = data.get("certificate_authorities")
        for ca in cas if isinstance(cas, list) else []:
            if isinstance(ca, dict) and ca.get("name") == ca_name and ca.get("subject_dn"):
                return str(ca["subject_dn"])
        raise UpstreamError(f'the upstream CA lists no CA named "{ca_name}"')

    def health(self) -> None:
        """Reachable, TLS trusted both ways, REST enabled, and the gateway an RA administrator.

        ``GET /v1/certificate/status`` checks no authorization on CE 8.0, so health also asks
        ``revocationstatus`` of serial 0 at each configured CA: CE 8.0 answers it only after
        ``getAdmin`` (a role with ``/administrator``) and, for a CA it knows, access to that CA
        (``/ca/<id>``); "certificate/CA not found" (404) is the healthy answer, 403 means the
        role lacks a right. It cannot prove the rights to create/edit end entities or to the
        end entity profile: CE has no REST call that checks them without enrolling.
        """
        data = self._call("GET", STATUS, Meaning(not_found=_no_rest_api), idempotent=True)
        if data.get("status") != "OK":
            raise UpstreamUnavailable(f"the upstream CA reports status {clip(data.get('status'), 40)!r}")
        for issuer in self._health_issuers():
            path = f"/v1/certificate/{quote(issuer, safe='')}/0/revocationstatus"
            self._call("GET", path, Meaning(not_found=None), idempotent=True)

    def _health_issuers(self) -> list[str]:
        """A DN for each configured CA: ``ca_subject_dn``, else the learnt chain's CA."""
        issuers: list[str] = []
        for target in self.targets or []:
            alias = target.upstream
            chain = alias.ca_chain or self.learnt.get(target.ca)
            dn = alias.ca_subject_dn or (chain[0].subject.rfc4514_string() if chain else PROBE_ISSUER)
            if dn not in issuers:
                issuers.append(dn)
        return issuers or [PROBE_ISSUER]


def _no_rest_api(reason: str) -> UpstreamError:
    return UpstreamError(f"the upstream CA does not offer the REST certificate API: {reason}")


def _csr_pem(request: EnrollRequest[EjbcaTarget]) -> str:
    return request.csr.public_bytes(Encoding.PEM).decode("ascii")


def _der_certificate(value: object) -> x509.Certificate:
    """A certificate from a base64 DER string (Jackson's ``byte[]`` encoding)."""
    try:
        return x509.load_der_x509_certificate(base64.b64decode(str(value), validate=True))
    except (binascii.Error, ValueError):
        raise UpstreamError("the upstream CA returned an unreadable certificate") from None


def _date(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None
