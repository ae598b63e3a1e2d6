"""The local CA's revocation as real relying parties check it: ``openssl ocsp``, ``openssl
verify -crl_check`` and the gateway's own OCSP/CRL checker, against a real local-mode gateway
(EST over TLS, CRL and OCSP in plain HTTP on the publication listener, two workers);
certificates enrolled with curl, revoked with ``local-ca revoke``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from est_gateway import localmode
from est_gateway.backends.local.authority import cert_pem
from est_gateway.publication.crl import crl_number
from est_gateway.upstream.revocation import CertStatus, RevocationChecker, RevocationSettings
from tests.support import openssl as openssl_tools
from tests.support.gateway import GatewayProcess, curl, free_port, leaf


@dataclass
class Served:
    """A running local-mode gateway and where its revocation is published."""

    instance: localmode.LocalInstance
    gateway: GatewayProcess
    base: str

    @property
    def crl_url(self) -> str:
        return f"{self.base}/crl/est-ca.crl"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base}/ocsp/est-ca"

    @property
    def chain(self) -> list[x509.Certificate]:
        """The EST CA's chain: issuing CA first, root last."""
        return x509.load_pem_x509_certificates((self.instance.folder / "local-ca" / "cas" / "EST-CA" /
                                                "chain.pem").read_bytes())

    def pem(self, name: str, *certs: x509.Certificate) -> Path:
        path = self.instance.folder / name
        path.write_bytes(cert_pem(*certs))
        return path

    def enroll(self, cn: str = "device-1") -> x509.Certificate:
        _key, csr = openssl_tools.new_csr(self.instance.folder, cn, subject=f"/CN={cn}")
        answer = curl("-u", f"estuser:{self.instance.password()}", "-H", "Content-Type: application/pkcs10",
                      "--data-binary", f"@{csr}", f"{self.gateway.url}/simpleenroll",
                      cacert=self.instance.trust_anchor)
        assert answer.status == 200, answer.body
        return leaf(answer.body)

    def revoke_with_cli(self, cert: x509.Certificate) -> None:
        done = subprocess.run([sys.executable, "-m", "est_gateway.cli", "local-ca", "revoke", "--config",
                               str(self.instance.config), format(cert.serial_number, "x"), "--reason", "keyCompromise"],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("publication")
    est, port = free_port(), free_port()
    instance, _ = localmode.prepare(folder / "est-local", port=est, publication_port=port)
    gateway = GatewayProcess(instance.config, est, folder / "gateway.log")
    gateway.start("local", "--state-dir", str(instance.folder))
    try:
        yield Served(instance, gateway, f"http://127.0.0.1:{port}")
    finally:
        gateway.stop()


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def openssl_ocsp(served: Served, cert: x509.Certificate) -> str:
    issuer, root = served.chain
    done = openssl("ocsp", "-issuer", str(served.pem("issuer.pem", issuer)), "-cert", str(served.pem("c.pem", cert)),
                   "-url", served.ocsp_url, "-CAfile", str(served.pem("chain.pem", issuer, root)))
    assert done.returncode == 0, done.stderr
    assert "Response verify OK" in done.stderr and "WARNING" not in done.stdout + done.stderr
    return done.stdout


def test_openssl_ocsp_says_good_then_revoked_after_local_ca_revoke(served: Served) -> None:
    cert = served.enroll()
    assert f"{served.instance.folder}/c.pem: good" in openssl_ocsp(served, cert)
    served.revoke_with_cli(cert)
    answer = openssl_ocsp(served, cert)
    assert ": revoked" in answer and "Reason: keyCompromise" in answer


def test_openssl_verify_with_the_crl_refuses_a_revoked_certificate(served: Served) -> None:
    good, bad = served.enroll("good"), served.enroll("bad")
    served.revoke_with_cli(bad)
    fetched = curl(served.crl_url)
    assert fetched.status == 200 and fetched.headers["content-type"] == "application/pkix-crl"
    crl = served.instance.folder / "crl.pem"
    crl.write_bytes(x509.load_der_x509_crl(fetched.body).public_bytes(Encoding.PEM))
    chain = served.pem("chain.pem", *served.chain)
    for cert, ok in ((good, True), (bad, False)):
        done = openssl("verify", "-crl_check", "-CRLfile", str(crl), "-CAfile", str(chain),
                       str(served.pem("leaf.pem", cert)))
        assert (done.returncode == 0) is ok, done.stdout + done.stderr
        if not ok:
            assert "certificate revoked" in done.stdout + done.stderr


@pytest.mark.parametrize("method", ["ocsp", "crl"])
def test_the_gateways_own_checker_accepts_the_local_responder(served: Served, method: str) -> None:
    cert = served.enroll()
    issuer = served.chain[0]
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


def test_the_banner_names_both_urls_and_every_worker_serves_one_crl(served: Served) -> None:
    banner = served.gateway.output()
    assert f"CRL            : {served.crl_url}" in banner and f"OCSP           : {served.ocsp_url}" in banner
    before = {curl(served.crl_url).body for _ in range(6)}     # six connections, both workers
    assert len(before) == 1
    served.revoke_with_cli(served.enroll("counted"))
    after = {curl(served.crl_url).body for _ in range(6)}
    assert len(after) == 1
    assert crl_number(x509.load_der_x509_crl(after.pop())) > crl_number(x509.load_der_x509_crl(before.pop()))


def operations_procedure() -> str:
    """The commands of docs/operations.md that check a certificate by hand."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = text.split("## Revocation: CRL and OCSP", 1)[1].split("\n## ", 1)[0]
    return section.split("Checking by hand", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_procedure_of_docs_operations_runs_as_written(served: Served, tmp_path: Path) -> None:
    commands = operations_procedure().replace("http://127.0.0.1:8080", served.base)
    cert = served.enroll("by-hand")
    for name, certs in (("issuer.pem", served.chain[:1]), ("chain.pem", served.chain), ("dev.pem", [cert])):
        (tmp_path / name).write_bytes(cert_pem(*certs))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    done = run()
    assert done.returncode == 0, done.stderr
    assert "dev.pem: good" in done.stdout and "dev.pem: OK" in done.stdout
    served.revoke_with_cli(cert)
    done = run()
    assert done.returncode != 0 and "dev.pem: revoked" in done.stdout
    assert "certificate revoked" in done.stdout + done.stderr
