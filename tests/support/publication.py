"""A started local CA that publishes a CRL and OCSP, its configuration and a settable clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from est_gateway.backends.base import EnrollRequest, Issued, Requester
from est_gateway.backends.local import LocalCABackend
from est_gateway.backends.local.options import LocalTarget
from est_gateway.config.load import parse_config
from est_gateway.config.model import GatewayConfig
from tests.support.pki import make_csr, rsa_key

TARGET = LocalTarget(ca="EST CA")
CRL_PATH = "/crl/est-ca.crl"
OCSP_PATH = "/ocsp/est-ca"


class SetClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def publishing_config(folder: Path, *, port: int = 8080, ocsp_signer: str = "responder",
                      publication: dict[str, Any] | None = None, ca: dict[str, Any] | None = None,
                      more_cas: dict[str, dict[str, Any]] | None = None) -> GatewayConfig:
    """A configuration whose local CA "EST CA" publishes at http://127.0.0.1:<port>/
    (an option of ``ca`` set to None is left out)."""
    ca_options = {"key_type": "ec-p256", "hierarchy": "root+issuing",
                  "crl_url": f"http://127.0.0.1:{port}{CRL_PATH}", "ocsp_url": f"http://127.0.0.1:{port}{OCSP_PATH}",
                  "ocsp_signer": ocsp_signer, **(ca or {})}
    (folder / "secrets").mkdir(parents=True, exist_ok=True)
    password = folder / "secrets" / "pw"
    password.write_text("secret\n")
    password.chmod(0o600)
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:18443", "tls": False},
        "publication": {"listen": f"127.0.0.1:{port}", **(publication or {})},
        "backends": {"local": {"type": "local", "state_dir": str(folder / "state"), "cas": {
            "EST CA": {k: v for k, v in ca_options.items() if v is not None}, **(more_cas or {})}}},
        "aliases": {"est": {"backend": "local", "ca": "EST CA", "username": "u", "password_file": str(password)}},
    }
    return parse_config(data, base_dir=folder)


@dataclass
class Published:
    """A started configuration, its local backend and the certificates it issued."""

    config: GatewayConfig
    backend: LocalCABackend

    @property
    def issuer(self) -> x509.Certificate:
        return self.backend.ca_certs(TARGET)[0]

    def enroll(self, cn: str = "device-1") -> x509.Certificate:
        return self.issue(cn)[0]

    def issue(self, cn: str = "device-1", target: LocalTarget = TARGET) -> tuple[x509.Certificate, x509.Certificate]:
        """A new certificate of ``target``'s CA, and its issuer."""
        result = self.backend.enroll(EnrollRequest(csr=make_csr(rsa_key(), cn=cn), alias="est", target=target,
                                                   requester=Requester(username="u"), request_id="t"))
        assert isinstance(result, Issued)
        return result.certificate, result.chain[0]

    def revoke(self, cert: x509.Certificate, reason: str = "keyCompromise") -> None:
        self.backend.store.revoke(format(cert.serial_number, "x"), reason, dt.datetime.now(dt.UTC))


def started(config: GatewayConfig) -> Published:
    backend = config.backends["local"]
    assert isinstance(backend, LocalCABackend)
    backend.start()
    return Published(config, backend)
