"""Shared fixtures: a real local-mode gateway on a loopback port, driven with curl/openssl."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from est_gateway import localmode
from est_gateway.backends.local import authority
from tests.support.gateway import RUNNING, CurlResult, GatewayProcess, children_of, curl, local_instance

EXTRA_ALIASES = """
# Many tests share this gateway from 127.0.0.1 and some fail authentication on purpose;
# the throttle itself is tested on a gateway of its own (tests/test_e2e_hardening.py).
[limits]
auth_failures_per_minute = 1000

# Added by the tests: simpleenroll needs a client certificate as well as the password.
[aliases.certauth]
backend = "local"
ca = "EST CA"
require_client_cert = true
username = "estuser"
password_file = "secrets/est.password"

# csrattrs as in the RFC 7030 §4.5.2 example, enforced; serverkeygen switched off.
[aliases.attrs]
backend = "local"
ca = "EST CA"
username = "estuser"
password_file = "secrets/est.password"
serverkeygen = false

[aliases.attrs.csrattrs]
attributes = ["challengePassword"]
extension_requests = ["macAddress"]
key_type = "ec-p384"
signature_hash = "sha384"
enforce = true

# serverkeygen generates a key of the CSR's own type (not libest-compatible for EC CSRs).
[aliases.keylikecsr]
backend = "local"
ca = "EST CA"
username = "estuser"
password_file = "secrets/est.password"
serverkeygen_key_type = "csr"

# The CSR's challengePassword must carry this TLS session's channel binding.
[aliases.bound]
backend = "local"
ca = "EST CA"
username = "estuser"
password_file = "secrets/est.password"
challenge_password = "channel-binding"

# A second built-in CA whose requests wait for the operator.
[backends.approvals]
type = "local"
state_dir = "approvals-ca"
approval = "manual"
retry_after_s = 7

[backends.approvals.cas."Approval CA"]
key_type = "ec-p256"

[aliases.manual]
backend = "approvals"
ca = "Approval CA"
username = "estuser"
password_file = "secrets/est.password"
"""


@dataclass
class Gateway:
    """A running local-mode gateway and what a client needs to talk to it."""

    instance: localmode.LocalInstance
    process: GatewayProcess
    work: Path

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def password(self) -> str:
        return self.instance.password()

    def curl(self, *args: str) -> CurlResult:
        return curl(*args, cacert=self.instance.trust_anchor)

    def enroll_args(self, csr_b64: Path, *, alias: str = "") -> list[str]:
        path = f"{alias}/" if alias else ""
        return ["-u", f"{localmode.USERNAME}:{self.password}", "-H", "Content-Type: application/pkcs10",
                "--data-binary", f"@{csr_b64}", f"{self.url}/{path}simpleenroll"]

    def ca_signing(self) -> tuple[authority.PrivateKey, x509.Certificate]:
        """The EST CA's own key and certificate, to mint odd certificates for negative tests."""
        folder = self.instance.folder / "local-ca" / "cas" / "EST-CA"
        chain = x509.load_pem_x509_certificates((folder / "chain.pem").read_bytes())
        return authority.load_key(folder / "signing.key"), chain[0]

    def cli(self, *args: str, backend: str = "local") -> subprocess.CompletedProcess[str]:
        return local_ca_cli(self.instance.config, *args, backend=backend)


def local_ca_cli(config: Path, *args: str, backend: str = "local") -> subprocess.CompletedProcess[str]:
    """Run `est-gateway local-ca` as an operator would."""
    return subprocess.run([sys.executable, "-m", "est_gateway.cli", "local-ca", "--config", str(config),
                           "--backend", backend, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(autouse=True)
def _no_gateway_outlives_its_test() -> Iterator[None]:
    """A test that fails before its own stop() must not leave a gateway running into the next
    test (where its Popen's ResourceWarning would fail an unrelated test). Wider-scoped
    fixtures start theirs before this snapshot, so those are kept."""
    before = set(RUNNING)
    yield
    for left in RUNNING - before:
        workers = children_of(left.proc.pid) if left.proc else []
        left.stop(signal.SIGKILL)         # the arbiter first: it would replace killed workers
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway") / "est-local"
    instance, process = local_instance(folder, extra_config=EXTRA_ALIASES)
    process.start()
    try:
        yield Gateway(instance, process, tmp_path_factory.mktemp("client"))
    finally:
        process.stop()
