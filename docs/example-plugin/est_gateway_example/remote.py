"""An example backend for a CA reached over HTTPS: the calls, and their answers in one place.

The CA's API here is made up, as small as an API can be while being one (a real vendor's
is what its documentation and source say)::

    POST /sign                  {"csr": PEM, "profile": name} -> {"certificate": PEM}
    GET  /chain                 -> {"chain": [PEM, ...]}   (issuing CA first)
    GET  /certificates/<hex>    -> {"revoked": bool}; 404 for a serial it did not issue
    errors: 4xx {"error": "..."}, 5xx while it cannot sign

Configuration (the connection keys are :func:`~est_gateway.plugin.parse_upstream`'s)::

    [backends.remote]
    type = "example-remote-ca"
    url = "https://ca.example.org/api"
    ca_bundle = "ca/upstream-tls-ca.pem"
    client_cert = "ca/gateway.pem"
    client_key = "ca/gateway.key"

    [aliases.est]
    backend = "remote"
    profile = "client"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.plugin import (
    BadRequest,
    CABackend,
    EnrollRequest,
    Issued,
    ReenrollRequest,
    RevocationStatus,
    Section,
    UpstreamError,
    UpstreamSettings,
    UpstreamUnavailable,
    clip,
    issued_by,
    parse_upstream,
    spki,
)
from est_gateway.plugin.http import UpstreamClient, UpstreamResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteCATarget:
    profile: str = "client"


class RemoteCABackend(CABackend[RemoteCATarget]):
    """Signs through the CA's ``/sign``; one :class:`UpstreamClient` per backend keeps a
    session per worker process (timeouts, trust, retries of reads, the breaker)."""

    def __init__(self, name: str, settings: UpstreamSettings | None) -> None:
        super().__init__(name)
        #: ``None`` only after a configuration problem (the gateway then never serves)
        self.client = UpstreamClient(settings) if settings is not None else None

    @classmethod
    def from_options(cls, name: str, options: Section) -> RemoteCABackend:
        return cls(name, parse_upstream(options))

    def parse_target(self, alias: Section) -> RemoteCATarget:
        return RemoteCATarget(profile=alias.str("profile", "client"))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def describe_state(self) -> dict[str, str]:
        return self.client.settings.describe() if self.client is not None else {}

    # -- EST operations -----------------------------------------------------------------------

    def ca_certs(self, target: RemoteCATarget) -> list[x509.Certificate]:
        chain = self._call("GET", "/chain", idempotent=True).get("chain")
        return [_certificate(pem) for pem in (chain if isinstance(chain, list) else [None])]

    def enroll(self, request: EnrollRequest[RemoteCATarget]) -> Issued:
        """Not idempotent: a sign request that timed out may have been carried out."""
        csr_pem = request.csr.public_bytes(Encoding.PEM).decode("ascii")
        answer = self._call("POST", "/sign", idempotent=False, json={"csr": csr_pem, "profile": request.target.profile})
        certificate = _certificate(answer.get("certificate"))
        chain = self.ca_certs(request.target)
        if spki(certificate.public_key()) != spki(request.csr.public_key()) or not issued_by(certificate, chain[0]):
            raise UpstreamError("the upstream CA returned a certificate for another key or from another CA")
        return Issued(certificate, tuple(chain))

    def reenroll(self, request: ReenrollRequest[RemoteCATarget]) -> Issued:
        return self.enroll(request)

    def revocation_status(self, certificate: x509.Certificate, target: RemoteCATarget) -> RevocationStatus:
        if not issued_by(certificate, self.ca_certs(target)[0]):
            return RevocationStatus(known=False, revoked=False)
        answer = self._call("GET", f"/certificates/{certificate.serial_number:x}", idempotent=True)
        if not answer:
            return RevocationStatus(known=False, revoked=False)
        return RevocationStatus(known=True, revoked=answer.get("revoked") is True)

    # -- the one boundary -----------------------------------------------------------------------

    def _call(self, method: str, path: str, *, idempotent: bool, json: Any = None) -> dict[str, Any]:
        """One call; transport faults and redirects are the client's (502/503/504)."""
        if self.client is None:
            raise UpstreamUnavailable(f"backend {self.name} has no valid upstream settings")
        response = self.client.request(method, self.client.settings.url + path, idempotent=idempotent, json=json)
        return self._answer(response)

    def _answer(self, response: UpstreamResponse) -> dict[str, Any]:
        """The CA's answer as JSON (``{}`` for a 404), or the error the client gets."""
        status = response.status_code
        if status >= 500:
            raise UpstreamUnavailable(f"the upstream CA is unavailable (HTTP {status})")
        if status == 404:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if status == 200:
            if not isinstance(body, dict):
                raise UpstreamError("the upstream CA answered with something that is not its JSON")
            return body
        reason = clip(body.get("error") if isinstance(body, dict) else None, 200)
        if status in (401, 403):
            log.error("backend %s: %s refused the gateway's client certificate (HTTP %s): %s",
                      self.name, response.url, status, reason)
            raise UpstreamError("the upstream CA refused the gateway's credentials")
        if 400 <= status < 500:
            raise BadRequest(f"the CA refused the request: {reason or f'HTTP {status}'}")
        raise UpstreamError(f"the upstream CA answered HTTP {status}")


def _certificate(pem: object) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(str(pem).encode())
    except ValueError:
        raise UpstreamError("the upstream CA returned an unreadable certificate") from None
