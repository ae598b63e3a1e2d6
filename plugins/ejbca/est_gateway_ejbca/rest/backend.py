"""EJBCA REST adapter (``type = "ejbca-rest"``), EJBCA's Community REST API.

Endpoints and field names follow EJBCA CE 8.0 (``EnrollCertificateRestRequest``,
``CertificateRestResponse``, ``RevokeStatusRestResponse``, ``CaRestResource``'s
``/v1/ca/{subject_dn}/certificate/download``) and the newer Keyfactor ejbca-ce
``CertificateRequestRestRequest`` (``certificate_request_type``).

``cacerts_source = "auto"`` (default) downloads the chain where EJBCA offers ``/v1/ca``
(CE 8.0 and later); where it does not, a label with ``ca_subject_dn`` gets the chain from
EJBCA's public webdist (``certdist?cmd=cacert``), any other from the chain learnt from
enrollment answers (``include_chain``), kept in the state folder. ``ca_chain_file`` on an
alias wins over all.

EJBCA refuses ``pkcs10enroll`` while an approval profile covers the CA or the certificate
profile, keeping nothing; CE's REST API cannot create an end entity that waits for
approval, so this adapter never answers 202 (the SOAP adapter does).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from est_gateway.plugin import (
    BadRequest,
    EnrollRequest,
    ESTError,
    Issued,
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
    approvals_required,
    ca_missing,
    enrollment_refused,
    not_registered,
    renewed_unknown,
    unknown_ca_or_profile,
)
from est_gateway_ejbca.names import issuer_dn
from est_gateway_ejbca.rest.faults import ResourceMissing, interpret

ENROLL = "/v1/certificate/pkcs10enroll"
CERTIFICATE_REQUEST = "/v1/certificate/certificaterequest"
log = logging.getLogger(__name__)

CA_LIST = "/v1/ca"
STATUS = "/v1/certificate/status"
CACERTS_SOURCES = ("auto", "download", "webdist", "enrollment")
#: EJBCA's REST base and, next to it, the public web's certificate distribution servlet
REST_BASE = "/ejbca-rest-api"
WEBDIST = "/publicweb/webdist/certdist"
#: the issuer DN asked about when the health check knows no DN of the configured CA
PROBE_ISSUER = "CN=est-gateway authorization probe"


class EjbcaRestBackend(EjbcaBackend):
    """Issues through ``pkcs10enroll`` (RA mode) or ``certificaterequest`` (client mode)."""

    alias_subject_dn = True

    def __init__(self, name: str, options: EjbcaOptions, *, cacerts_source: str = "auto",
                 webdist_url: str | None = None) -> None:
        super().__init__(name, options)
        self.cacerts_source = cacerts_source
        #: EJBCA's public ``certdist`` servlet (default: next to ``url``'s ``/ejbca-rest-api``)
        self.webdist_url = webdist_url
        #: whether this EJBCA has the /v1/ca resource (None: not asked yet); per process
        self.download_offered: bool | None = None if cacerts_source in ("auto", "download") else False

    @classmethod
    def build(cls, name: str, common: EjbcaOptions, options: Section) -> EjbcaRestBackend:
        source = options.str("cacerts_source", "auto", choices=CACERTS_SOURCES)
        url = common.upstream.url if common.upstream is not None else ""
        derived = url[:-len(REST_BASE)] + WEBDIST if url.endswith(REST_BASE) else None
        return cls(name, common, cacerts_source=source, webdist_url=options.str("webdist_url", derived))

    def describe_upstream(self) -> str:
        """``GET /v1/certificate/status`` (its ``revision`` is EJBCA's version) and ``GET /v1/ca``."""
        try:
            data = self._call("GET", STATUS, Meaning(not_found=_no_rest_api), idempotent=True)
            version = clip(data.get("revision") or "EJBCA (no version reported)", 80)
        except ESTError as exc:
            return f"unknown ({exc.detail}), CA download: not asked, chain: {self.chain_source()}"
        if self.cacerts_source in ("auto", "download"):
            try:
                self._call("GET", CA_LIST, Meaning(not_found=ca_missing, missing_is_quiet=True),
                           idempotent=True)
                self.download_offered = True
            except ResourceMissing:
                self.download_offered = False
            except ESTError:
                pass
        offered = {True: "offered (GET /v1/ca)", False: "not offered", None: "unknown"}[self.download_offered]
        if self.cacerts_source in ("webdist", "enrollment"):
            offered = f'not used (cacerts_source = "{self.cacerts_source}")'
        return f"{version}, CA download: {offered}, chain: {self.chain_source()}"

    def download_source(self) -> str:
        learnt = f"enrollment responses (include_chain), kept in {self.options.state_dir}"
        named = sorted({t.upstream.ca_subject_dn for t in self.targets if t.upstream.ca_subject_dn})
        without = f"from {learnt}"
        if named and self.cacerts_source != "enrollment":
            without = (f"from the public webdist ({self.webdist_url}) for ca_subject_dn "
                       f"{', '.join(named)}, else from {learnt}")
        if self.cacerts_source == "download" or (self.cacerts_source == "auto" and self.download_offered):
            return "from the CA download"
        if self.cacerts_source == "auto" and self.download_offered is None:
            return f"from the CA download where offered, else {without.removeprefix('from ')}"
        return without

    def _call(self, method: str, path: str, meaning: Meaning, *, idempotent: bool,
              json: dict[str, Any] | None = None, raw: bool = False) -> Any:
        response = self.http.request(method, self.upstream.url + path, idempotent=idempotent,
                                     json=json, headers={"Accept": "application/json, */*"})
        return interpret(response, self, meaning, raw=raw)

    # -- issuing --------------------------------------------------------------------------

    def submit(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Issued:
        """``POST /v1/certificate/pkcs10enroll``: creates or edits the end entity, then issues
        (one transaction). Under an approval profile EJBCA refuses it (400, nothing kept):
        a 502 naming the way out, and an error line naming the CA and profiles."""
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
        meaning = Meaning(not_found=unknown_ca_or_profile,
                          approvals_refused=lambda reason: approvals_required(self.name, target, reason))
        return self._certificate(request, self._call("POST", ENROLL, meaning, idempotent=False, json=body))

    def issue_registered(self, request: EnrollRequest[EjbcaTarget], username: str, code: str) -> Issued:
        """``POST /v1/certificate/certificaterequest`` for a pre-registered end entity
        (``processCertificateRequest`` adds or edits nothing, so no approval applies)."""
        meaning = Meaning(not_found=not_registered, refused=enrollment_refused)
        return self._certificate(request, self._certificate_request(request, username, code, meaning))

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
        issuer = quote(issuer_dn(certificate.issuer), safe="")
        path = f"/v1/certificate/{issuer}/{certificate.serial_number:X}/revocationstatus"
        try:
            data = self._call("GET", path, Meaning(not_found=None), idempotent=True)
        except BadRequest as exc:  # e.g. "Invalid serial number format": the query was the gateway's
            raise UpstreamError(f"the upstream CA refused the revocation status query: {exc.detail}") from None
        if data is None:  # 404: EJBCA knows no such certificate, or no such CA
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
        issuer = quote(issuer_dn(certificate.issuer), safe="")
        path = f"/v1/certificate/{issuer}/{certificate.serial_number:X}/revoke?reason=SUPERSEDED"
        self._call("PUT", path, Meaning(not_found=renewed_unknown, already_revoked_is_done=True), idempotent=True)

    def fetch_ca_chain(self, target: EjbcaTarget, alias: AliasUpstream) -> list[x509.Certificate]:
        """``GET /v1/ca/{subject_dn}/certificate/download`` (PEM, CE 8.0 and later); where EJBCA
        has no ``/v1/ca`` resource (CE 7.x, or an 8.0 answering it 404), the public webdist
        for a label with ``ca_subject_dn``, else the chain learnt from enrollment."""
        if self.download_offered is not False:
            try:
                return self._download(target, alias)
            except ResourceMissing:
                if self.cacerts_source == "download":
                    raise UpstreamError("this EJBCA offers no CA download (/v1/ca: CE 8.0 and later, "
                                        'REST Certificate Management enabled); set cacerts_source = '
                                        '"auto", ca_subject_dn or ca_chain_file') from None
                self.download_offered = False
                log.info("backend %s: EJBCA has no /v1/ca resource: cacerts serves the chain from the "
                         "public webdist where a label names ca_subject_dn, else the chain learnt from "
                         "enrollment answers", self.name)
        if alias.ca_subject_dn and self.cacerts_source != "enrollment":
            return self._webdist(alias.ca_subject_dn)
        return self.learnt_chain(target)

    def _webdist(self, subject_dn: str) -> list[x509.Certificate]:
        """``GET <webdist>?cmd=cacert&issuer=<DN>`` (CertDistServlet, no authentication): the
        CA's chain as a PEM PKCS#7. The servlet URL-decodes ``issuer`` once more than the
        container does, so the DN is encoded twice (a ``+`` or ``%`` in it survives)."""
        if self.webdist_url is None:
            raise UpstreamError("no webdist_url: url does not end in /ejbca-rest-api, so the "
                                "public webdist's address is not known; set webdist_url")
        url = f"{self.webdist_url}?cmd=cacert&issuer={quote(quote(subject_dn, safe=''), safe='')}"
        response = self.http.request("GET", url, idempotent=True, headers={"Accept": "*/*"})
        status = response.status_code
        if status == 200:
            try:
                return _issuing_first(pkcs7.load_pem_pkcs7_certificates(response.content))
            except (ValueError, IndexError):
                raise UpstreamError("the CA's public webdist answered an unreadable PKCS#7") from None
        if status >= 500:
            log.warning("backend %s: the public webdist %s answered HTTP %s", self.name,
                        self.webdist_url, status)
            raise UpstreamUnavailable(f"the upstream CA is unavailable (HTTP {status})")
        log.error("backend %s: the public webdist %s answered HTTP %s for ca_subject_dn %r: check "
                  "ca_subject_dn (the CA's subject DN) and webdist_url", self.name, self.webdist_url,
                  status, subject_dn)
        raise UpstreamError(f"the CA's public webdist has no CA certificate for {clip(subject_dn, 80)}")

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
            dn = alias.ca_subject_dn or (issuer_dn(chain[0].subject) if chain else PROBE_ISSUER)
            if dn not in issuers:
                issuers.append(dn)
        return issuers or [PROBE_ISSUER]


def _no_rest_api(reason: str) -> UpstreamError:
    return UpstreamError(f"the upstream CA does not offer the REST certificate API: {reason}")


def _issuing_first(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    """A PKCS#7 SET of a CA chain in chain order: the CA that issued none of the others
    first, then each one's issuer (``cacerts`` and the health probe use the first)."""
    remaining = list(certificates)
    first = next(c for c in remaining if all(o.issuer != c.subject for o in remaining if o is not c))
    ordered = [first]
    remaining.remove(first)
    while remaining:
        issuer = next((c for c in remaining if c.subject == ordered[-1].issuer), None)
        if issuer is None:
            return ordered + remaining
        ordered.append(issuer)
        remaining.remove(issuer)
    return ordered


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
