"""End to end: curl/openssl → real gateway process → real ``cfssl serve`` over mutual TLS.

One gateway, three aliases: ``est`` (the working setup), ``wrongkey`` (a backend whose HMAC
auth key is not CFSSL's) and ``typo`` (a profile name CFSSL does not know). Revocation is
asked of the real ``cfssl ocspserve``. The CA's operator side (revoke, publish, stop,
start) is CFSSL's own API and tools.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from est_gateway import localmode
from tests.support import openssl
from tests.support.cfssl import CLIENT_PROFILE, CfsslCA
from tests.support.gateway import GatewayProcess, UpstreamGateway, certificates, curl, free_port, serverkeygen_parts

pytestmark = pytest.mark.e2e

AUTH_KEY_ENV = "EST_TEST_CFSSL_AUTH_KEY"

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
tls_cert = "tls/server.pem"
tls_key = "tls/server.key"
workers = 1

[backends.cfssl]
type = "cfssl"
url = "{url}"
client_cert = "{ca}/client.pem"
client_key = "{ca}/client-key.pem"
ca_bundle = "{ca}/ca.pem"
auth_key_env = "{auth_env}"
connect_timeout_s = 1
read_timeout_s = 2
retries = 0
circuit_breaker_failures = 2
circuit_breaker_cooldown_s = 1

[backends.cfssl.revocation]
methods = ["ocsp"]
max_cache_s = 0

[backends.wrongkey]
type = "cfssl"
url = "{url}"
client_cert = "{ca}/client.pem"
client_key = "{ca}/client-key.pem"
ca_bundle = "{ca}/ca.pem"
auth_key_file = "{wrong_key}"

[aliases.est]
backend = "cfssl"
ca = "primary"
certificate_profile = "{profile}"
username = "estuser"
password_file = "secrets/est.password"
allow_same_key_renewal = false
# same CFSSL signer as "typo": the gateway starts only with the two declared one renewal domain
accept_renewals_from = ["typo"]

[aliases.wrongkey]
backend = "wrongkey"
ca = "primary"
certificate_profile = "{profile}"
username = "estuser"
password_file = "secrets/est.password"

[aliases.typo]
backend = "cfssl"
ca = "primary"
certificate_profile = "est-clinet"
username = "estuser"
password_file = "secrets/est.password"
accept_renewals_from = ["est"]
"""


@dataclass
class Setup(UpstreamGateway):
    ca: CfsslCA


@pytest.fixture(scope="module")
def setup(ca: CfsslCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("cfssl-e2e")
    port = free_port()
    instance, _ = localmode.prepare(folder / "gateway", port=port)
    wrong_key = folder / "wrong.key"
    wrong_key.write_text("cd" * 32)
    wrong_key.chmod(0o600)
    config = instance.folder / "cfssl.toml"
    config.write_text(CONFIG.format(port=port, url=ca.url, ca=ca.folder, auth_env=AUTH_KEY_ENV,
                                    wrong_key=wrong_key, profile=CLIENT_PROFILE), encoding="utf-8")
    gateway = GatewayProcess(config, port, folder / "gateway.log",
                             env={AUTH_KEY_ENV: ca.auth_key_file.read_text()})
    gateway.start()
    try:
        yield Setup(gateway, instance.folder, instance.trust_anchor, instance.password(), ca)
    finally:
        gateway.stop()
    output = gateway.output()
    assert ca.auth_key_file.read_text() not in output and "cd" * 32 not in output
    assert "Traceback" not in output


def save_leaf(body: bytes, path: Path) -> x509.Certificate:
    (cert,) = certificates(body)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def test_cacerts_is_the_cfssl_ca(setup: Setup) -> None:
    answer = curl(f"{setup.gateway.url}/est/cacerts", cacert=setup.trust_anchor)
    assert answer.status == 200, answer.body
    assert certificates(answer.body) == [setup.ca.ca_cert]


@pytest.mark.parametrize("key_type", ["rsa", "p256"])
def test_enroll_reenroll_revoke_then_renewal_refused(setup: Setup, key_type: str) -> None:
    folder, cn = setup.folder, f"device-{key_type}"
    key, csr = openssl.new_csr(folder, f"{key_type}-1", subject=f"/CN={cn}", key_type=key_type,
                               san=f"DNS:{cn}.example")
    enrolled = setup.enroll("est", csr)
    assert enrolled.status == 200, enrolled.body
    first = save_leaf(enrolled.body, folder / f"{key_type}-1.pem")
    assert first.issuer == setup.ca.ca_cert.subject
    assert ExtendedKeyUsageOID.CLIENT_AUTH in first.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    text = openssl.run("x509", "-in", str(folder / f"{key_type}-1.pem"), "-noout", "-text").decode()
    assert ("rsaEncryption" if key_type == "rsa" else "prime256v1") in text

    tls = ("--cert", str(folder / f"{key_type}-1.pem"), "--key", str(key))
    _, csr2 = openssl.new_csr(folder, f"{key_type}-2", subject=f"/CN={cn}", key_type=key_type,
                              san=f"DNS:{cn}.example")
    renewed = setup.post("est", "simplereenroll", csr2, *tls)
    assert renewed.status == 200, renewed.body
    second = save_leaf(renewed.body, folder / f"{key_type}-2.pem")
    assert second.subject == first.subject and second.serial_number != first.serial_number

    setup.ca.revoke(first)        # the CA operator revokes; ocspserve now says so
    _, csr3 = openssl.new_csr(folder, f"{key_type}-3", subject=f"/CN={cn}", key_type=key_type,
                              san=f"DNS:{cn}.example")
    refused = setup.post("est", "simplereenroll", csr3, *tls)
    assert refused.status == 403, refused.body
    assert b"revoked" in refused.body and refused.headers["content-type"].startswith("text/plain")


def test_serverkeygen_through_cfssl(setup: Setup) -> None:
    _, csr = openssl.new_csr(setup.folder, "keygen", subject="/CN=keygen-device", key_type="p256")
    answer = setup.post("est", "serverkeygen", csr, "-u", f"estuser:{setup.password}")
    assert answer.status == 200, answer.body
    key, cert = serverkeygen_parts(answer)
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == "CN=keygen-device"


def test_wrong_upstream_credentials_are_502_and_logged_for_the_operator(setup: Setup) -> None:
    _, csr = openssl.new_csr(setup.folder, "wrongkey", subject="/CN=wrongkey-device", key_type="p256")
    answer = setup.enroll("wrongkey", csr)
    assert answer.status == 502, answer.body
    assert answer.body == b"the upstream CA refused the gateway's credentials\n" or \
        answer.body.startswith(b"the upstream CA refused the gateway's credentials")
    lines = [line for line in setup.gateway.output().splitlines() if "invalid token" in line]
    assert lines and "auth_key_file" in lines[-1] and "ERROR" in lines[-1].upper()


def test_an_unknown_profile_is_502_with_the_reason(setup: Setup) -> None:
    _, csr = openssl.new_csr(setup.folder, "typo", subject="/CN=typo-device", key_type="p256")
    answer = setup.enroll("typo", csr)
    assert answer.status == 502, answer.body
    assert b"lacks the extended key usage clientAuth" in answer.body


def test_healthz_reports_each_backend(setup: Setup) -> None:
    answer = curl(f"https://127.0.0.1:{setup.gateway.port}/healthz", cacert=setup.trust_anchor)
    assert answer.status == 503, answer.body          # wrongkey and typo are not healthy
    assert b"backend wrongkey: 502" in answer.body
    assert b"backend cfssl: 502" in answer.body and b"est-clinet" in answer.body


def test_ca_stopped_is_503_then_fail_fast_then_recovery_without_restart(setup: Setup) -> None:
    _, csr = openssl.new_csr(setup.folder, "outage", subject="/CN=outage-device", key_type="p256")
    assert setup.enroll("est", csr).status == 200      # a pooled connection exists now
    setup.ca.serve.stop()
    try:
        down = [setup.enroll("est", csr) for _ in range(2)]
        assert [d.status for d in down] == [503, 503], [d.body for d in down]
        assert all(d.headers["retry-after"].isdigit() for d in down)
        fast = setup.enroll("est", csr)
        assert fast.status == 503 and b"not asking it again" in fast.body, fast.body
    finally:
        setup.ca.serve.start()
    time.sleep(1.1)                                     # the breaker's cooldown
    back = setup.enroll("est", csr)
    assert back.status == 200, back.body
