"""The local CA's revocation as real relying parties check it: ``openssl ocsp``, ``openssl
verify -crl_check`` and the gateway's own OCSP/CRL checker, against a local-mode instance
whose publication app serves on a loopback port; revocations through ``local-ca revoke``."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from werkzeug.serving import make_server

from est_gateway import localmode
from est_gateway.backends.local import LocalCABackend
from est_gateway.backends.local.authority import cert_pem
from est_gateway.config import GatewayConfig, load_config
from est_gateway.publication.app import create_publication_app
from est_gateway.upstream.revocation import CertStatus, RevocationChecker, RevocationSettings
from tests.support.gateway import curl, free_port
from tests.support.publication import TARGET, Published


@dataclass
class Served:
    """A local-mode instance, its started CA, and where its revocation is published."""

    instance: localmode.LocalInstance
    published: Published
    base: str

    @property
    def crl_url(self) -> str:
        return f"{self.base}/crl/est-ca.crl"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base}/ocsp/est-ca"

    def pem(self, name: str, *certs: x509.Certificate) -> Path:
        path = self.instance.folder / name
        path.write_bytes(cert_pem(*certs))
        return path

    def revoke_with_cli(self, cert: x509.Certificate) -> None:
        done = subprocess.run([sys.executable, "-m", "est_gateway.cli", "local-ca", "revoke", "--config",
                               str(self.instance.config), format(cert.serial_number, "x"), "--reason", "keyCompromise"],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    instance, _ = localmode.prepare(tmp_path / "est-local", port=free_port(), publication_port=port)
    config: GatewayConfig = load_config(instance.config)
    assert (config.publication.host, config.publication.port) == ("127.0.0.1", port)
    backend = config.backends["local"]
    assert isinstance(backend, LocalCABackend)
    backend.start()
    server = make_server("127.0.0.1", port, create_publication_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(instance, Published(config, backend), f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        backend.close()


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def openssl_ocsp(served: Served, cert: x509.Certificate) -> str:
    issuer, root = served.published.backend.ca_certs(TARGET)
    done = openssl("ocsp", "-issuer", str(served.pem("issuer.pem", issuer)), "-cert", str(served.pem("c.pem", cert)),
                   "-url", served.ocsp_url, "-CAfile", str(served.pem("chain.pem", issuer, root)))
    assert done.returncode == 0, done.stderr
    assert "Response verify OK" in done.stderr and "WARNING" not in done.stdout + done.stderr
    return done.stdout


def test_openssl_ocsp_says_good_then_revoked_after_local_ca_revoke(served: Served) -> None:
    cert = served.published.enroll()
    assert f"{served.instance.folder}/c.pem: good" in openssl_ocsp(served, cert)
    served.revoke_with_cli(cert)
    answer = openssl_ocsp(served, cert)
    assert ": revoked" in answer and "Reason: keyCompromise" in answer


def test_openssl_verify_with_the_crl_refuses_a_revoked_certificate(served: Served) -> None:
    good, bad = served.published.enroll("good"), served.published.enroll("bad")
    served.revoke_with_cli(bad)
    fetched = curl(served.crl_url)
    assert fetched.status == 200 and fetched.headers["content-type"] == "application/pkix-crl"
    crl = served.instance.folder / "crl.pem"
    crl.write_bytes(x509.load_der_x509_crl(fetched.body).public_bytes(Encoding.PEM))
    chain = served.pem("chain.pem", *served.published.backend.ca_certs(TARGET))
    for cert, ok in ((good, True), (bad, False)):
        done = openssl("verify", "-crl_check", "-CRLfile", str(crl), "-CAfile", str(chain),
                       str(served.pem("leaf.pem", cert)))
        assert (done.returncode == 0) is ok, done.stdout + done.stderr
        if not ok:
            assert "certificate revoked" in done.stdout + done.stderr


@pytest.mark.parametrize("method", ["ocsp", "crl"])
def test_the_gateways_own_checker_accepts_the_local_responder(served: Served, method: str) -> None:
    cert = served.published.enroll()
    issuer = served.published.issuer
    settings = RevocationSettings(methods=(method,))
    assert RevocationChecker(settings).check(cert, issuer).status is CertStatus.GOOD
    served.revoke_with_cli(cert)
    answer = RevocationChecker(settings).check(cert, issuer)   # a new checker: nothing cached
    assert answer.status is CertStatus.REVOKED and answer.reason == "key_compromise"


def test_a_malformed_request_over_http_gets_malformed_request(served: Served) -> None:
    answer = curl("-H", "Content-Type: application/ocsp-request", "--data-binary", "not an OCSP request",
                  served.ocsp_url)
    assert answer.status == 200 and answer.headers["content-type"] == "application/ocsp-response"
    assert ocsp.load_der_ocsp_response(answer.body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
