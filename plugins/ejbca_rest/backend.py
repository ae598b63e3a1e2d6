"""EJBCA REST adapter (``type = "ejbca-rest"``), EJBCA's Community REST API.

Endpoints and field names follow EJBCA CE 8.0 (``EnrollCertificateRestRequest``,
``CertificateRestResponse``, ``RevokeStatusRestResponse``) and the newer Keyfactor
ejbca-ce ``CertificateRequestRestRequest`` (``certificate_request_type``) and
``CaRestResource`` (``/v1/ca/{subject_dn}/certificate/download``, EJBCA 8.1 and later).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.base import EnrollRequest, Issued, Pending, RevocationStatus
from est_gateway.config.model import CATarget
from est_gateway.config.reader import Section
from est_gateway.errors import UpstreamError, UpstreamUnavailable
from plugins.ejbca_rest.faults import interpret
from plugins.upstream.alias import AliasUpstream
from plugins.upstream.ejbca import (
    EjbcaBackend,
    EjbcaOptions,
    Meaning,
    ca_missing,
    clip,
    enrollment_refused,
    not_registered,
    unknown_ca_or_profile,
)

ENROLL = "/v1/certificate/pkcs10enroll"
CERTIFICATE_REQUEST = "/v1/certificate/certificaterequest"
CA_LIST = "/v1/ca"
STATUS = "/v1/certificate/status"
CACERTS_SOURCES = ("download", "enrollment")


class EjbcaRestBackend(EjbcaBackend):
    """Issues through ``pkcs10enroll`` (RA mode) or ``certificaterequest`` (client mode)."""

    alias_subject_dn = True

    def __init__(self, name: str, options: EjbcaOptions, *, cacerts_source: str = "download") -> None:
        super().__init__(name, options)
        self.cacerts_source = cacerts_source

    @classmethod
    def build(cls, name: str, common: EjbcaOptions, options: Section) -> EjbcaRestBackend:
        source = options.str("cacerts_source", "download", choices=CACERTS_SOURCES)
        return cls(name, common, cacerts_source=source)

    def describe_state(self) -> dict[str, str]:
        return {**super().describe_state(), "cacerts from": self.cacerts_source}

    def _call(self, method: str, path: str, meaning: Meaning, *, idempotent: bool,
              json: dict[str, Any] | None = None, raw: bool = False) -> Any:
        response = self.http.request(method, self.upstream.url + path, idempotent=idempotent,
                                     json=json, headers={"Accept": "application/json, */*"})
        return interpret(response, self, meaning, raw=raw)

    # -- issuing --------------------------------------------------------------------------

    def submit(self, request: EnrollRequest, username: str, password: str) -> Issued | Pending:
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

    def collect(self, request: EnrollRequest, username: str, password: str) -> Issued | None:
        """``certificaterequest`` for the end entity an approved request created."""
        meaning = Meaning(not_found=None, login_refused_is_none=True)
        data = self._certificate_request(request, username, password, meaning)
        return None if data is None else self._certificate(request, data)

    def issue_registered(self, request: EnrollRequest, username: str, code: str) -> Issued | Pending:
        """``POST /v1/certificate/certificaterequest`` for a pre-registered end entity."""
        meaning = Meaning(not_found=not_registered, refused=enrollment_refused, pending_allowed=True)
        return self._issued(request, self._certificate_request(request, username, code, meaning))

    def _certificate_request(self, request: EnrollRequest, username: str, password: str,
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

    def _issued(self, request: EnrollRequest, data: dict[str, Any] | Pending) -> Issued | Pending:
        if isinstance(data, Pending):
            return data
        return self._certificate(request, data)

    def _certificate(self, request: EnrollRequest, data: dict[str, Any]) -> Issued:
        """A ``CertificateRestResponse``/``CertificateEnrollmentRestResponse`` → :class:`Issued`."""
        certificate = _der_certificate(data.get("certificate"))
        chain = data.get("certificate_chain") or []
        if not isinstance(chain, list):
            raise UpstreamError("the upstream CA returned an unreadable certificate_chain")
        return self.issued(request, certificate, tuple(_der_certificate(c) for c in chain))

    # -- lookups --------------------------------------------------------------------------

    def revocation_status(self, certificate: x509.Certificate, target: CATarget) -> RevocationStatus:
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

    def fetch_ca_chain(self, target: CATarget, alias: AliasUpstream) -> list[x509.Certificate]:
        """``GET /v1/ca/{subject_dn}/certificate/download`` (PEM), or the chain learnt from
        enrollment for EJBCA before 8.1."""
        if self.cacerts_source == "enrollment":
            return self.learnt_chain(target)
        subject_dn = alias.ca_subject_dn or self._ca_subject_dn(target.ca)
        path = f"{CA_LIST}/{quote(subject_dn, safe='')}/certificate/download"
        pem = self._call("GET", path, Meaning(not_found=ca_missing), idempotent=True, raw=True)
        try:
            chain = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise UpstreamError("the upstream CA returned an unreadable CA certificate chain") from None
        return chain

    def _ca_subject_dn(self, ca_name: str) -> str:
        """The subject DN of CA ``ca_name`` from ``GET /v1/ca`` (EJBCA 8.1 and later)."""
        data = self._call("GET", CA_LIST, Meaning(not_found=ca_missing), idempotent=True)
        cas = data.get("certificate_authorities")
        for ca in cas if isinstance(cas, list) else []:
            if isinstance(ca, dict) and ca.get("name") == ca_name and ca.get("subject_dn"):
                return str(ca["subject_dn"])
        raise UpstreamError(f'the upstream CA lists no CA named "{ca_name}"')

    def health(self) -> None:
        """``GET /v1/certificate/status`` over the mutual-TLS session: reachable, TLS trusted
        both ways, REST protocol enabled; ``{"status": "OK", ...}`` or an ``ESTError``."""
        data = self._call("GET", STATUS, Meaning(not_found=_no_rest_api), idempotent=True)
        if data.get("status") != "OK":
            raise UpstreamUnavailable(f"the upstream CA reports status {clip(data.get('status'), 40)!r}")


def _no_rest_api(reason: str) -> UpstreamError:
    return UpstreamError(f"the upstream CA does not offer the REST certificate API: {reason}")


def _csr_pem(request: EnrollRequest) -> str:
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
