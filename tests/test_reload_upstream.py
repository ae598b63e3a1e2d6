"""A reload reads the upstream client certificate and key again: a gateway in front of
the stand-in EJBCA (which requires a client certificate from its management CA) presents
the renewed RA certificate once SIGHUP has been handled, without a restart."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from est_gateway import localmode
from tests.support.ejbca_standin import CA_NAME, StandinEjbca, StandinServer, UpstreamPKI
from tests.support.gateway import GatewayProcess, UpstreamGateway, children_of, free_port
from tests.support.pki import csr_b64, make_csr, p256_key, rsa_key, write_pem

pytestmark = pytest.mark.e2e

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
tls_cert = "tls/server.pem"
tls_key = "tls/server.key"
workers = 1

[backends.rest]
type = "ejbca-rest"
url = "{rest_url}"
client_cert = "{pki}/ra-client.pem"
client_key = "{pki}/ra-client.key"
ca_bundle = "{pki}/upstream-ca.pem"
retries = 0

[aliases.est]
backend = "rest"
ca = "{ca}"
certificate_profile = "ENDUSER"
end_entity_profile = "EMPTY"
username = "estuser"
password_file = "secrets/est.password"
"""


def _client_names(standin: StandinEjbca, since: int) -> set[str]:
    """The common names of the client certificates the stand-in saw since call ``since``."""
    return {value for call in standin.calls[since:] for rdn in call["peer"]["subject"]
            for key, value in rdn if key == "commonName"}


def test_a_reload_presents_the_renewed_upstream_client_certificate(tmp_path: Path) -> None:
    pki = UpstreamPKI(tmp_path / "upstream")
    standin = StandinEjbca()
    with StandinServer(standin, pki.server_context()) as server:
        port = free_port()
        instance, _ = localmode.prepare(tmp_path / "gateway", port=port)
        config = instance.folder / "ejbca.toml"
        config.write_text(CONFIG.format(port=port, rest_url=server.rest_url, pki=pki.folder, ca=CA_NAME),
                          encoding="utf-8")
        process = GatewayProcess(config, port, tmp_path / "gateway.log")
        gateway = UpstreamGateway(process, instance.folder, instance.trust_anchor, instance.password())
        process.start()
        try:
            (before,) = process.workers(1)
            answer = gateway.enroll("est", csr_b64(make_csr(p256_key(), cn="before-renewal")))
            assert answer.status == 200, answer.body
            assert _client_names(standin, 0) == {"est-gateway RA"}
            # The RA certificate is renewed in place, as an operator's tooling would.
            key = rsa_key()
            write_pem(pki.client_cert_file, pki.management.issue(key, cn="est-gateway RA renewed"))
            write_pem(pki.client_key_file, key)
            assert process.proc is not None
            process.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while not (now := children_of(process.proc.pid)) or before in now:
                assert time.monotonic() < deadline, "the worker was not replaced"
                time.sleep(0.05)
            seen = len(standin.calls)
            answer = gateway.enroll("est", csr_b64(make_csr(p256_key(), cn="after-renewal")))
            assert answer.status == 200, answer.body
            assert _client_names(standin, seen) == {"est-gateway RA renewed"}
        finally:
            process.stop()
    assert "reloaded" in process.output() and "Traceback" not in process.output()
