"""End to end: curl/openssl → real gateway process → real django-ca (gunicorn, HTTPS).

One gateway serves four aliases on four backends that all talk to the session's
django-ca: ``est`` (the gateway's user), ``queued`` (``order_wait_s = 0``: every new
order is answered 202 first), ``wrongpass`` (a wrong password) and ``noperm`` (a user
without ``sign_certificate``). The last test stops django-ca and starts it again.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from est_gateway import localmode
from tests.support.django_ca import READONLY, DjangoCa, backend_section
from tests.support.gateway import (
    GatewayProcess,
    UpstreamGateway,
    certificates,
    curl,
    free_port,
    leaf,
    serverkeygen_parts,
)

pytestmark = pytest.mark.e2e

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
tls_cert = "tls/server.pem"
tls_key = "tls/server.key"
workers = 1

[backends.djangoca]
{main}
[backends.queued]
{queued}
[backends.wrongpass]
{wrongpass}
[backends.noperm]
{noperm}
{aliases}
"""

ALIAS = """
[aliases.{name}]
backend = "{backend}"
ca = "Test Issuing"
certificate_profile = "client"
username = "estuser"
password_file = "secrets/est.password"
"""


@dataclass
class Setup(UpstreamGateway):
    ca: DjangoCa


@pytest.fixture(scope="module")
def setup(django_ca: DjangoCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("django-ca-e2e")
    port = free_port()
    instance, _ = localmode.prepare(folder / "gateway", port=port)
    secrets = folder / "secrets"
    secrets.mkdir()
    wrong = secrets / "wrong.password"
    wrong.write_text("not-the-gateway-password\n")
    readonly = secrets / "readonly.password"
    readonly.write_text(django_ca.readonly_password + "\n")
    wrong.chmod(0o600)                 # secret files others can read are refused
    readonly.chmod(0o600)
    common = {"connect_timeout_s": 1, "read_timeout_s": 5, "retries": 0}
    config = instance.folder / "django-ca.toml"
    config.write_text(CONFIG.format(
        port=port,
        main=backend_section(django_ca, secrets, **common, circuit_breaker_failures=2,
                             circuit_breaker_cooldown_s=1),
        queued=backend_section(django_ca, secrets, **common, order_wait_s=0, pending_retry_after_s=120),
        wrongpass=backend_section(django_ca, secrets, **common, password_file=str(wrong)),
        noperm=backend_section(django_ca, secrets, **common, username=READONLY, password_file=str(readonly)),
        aliases="".join(ALIAS.format(name=n, backend=b) for n, b in
                        (("est", "djangoca"), ("queued", "queued"), ("wrongpass", "wrongpass"),
                         ("noperm", "noperm")))), encoding="utf-8")
    gateway = GatewayProcess(config, port, folder / "gateway.log")
    gateway.start()
    try:
        yield Setup(gateway, instance.folder, instance.trust_anchor, instance.password(), django_ca)
    finally:
        gateway.stop()
        log = gateway.output()
        assert django_ca.password not in log and django_ca.readonly_password not in log


def new_csr(folder: Path, cn: str, name: str, key: str = "ec") -> bytes:
    """openssl makes the key and the CSR (with a DNS subjectAltName), as a device would."""
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec" else ["-newkey", "rsa:2048"]
    der = folder / f"{name}.csr.der"
    subprocess.run(["openssl", "req", "-new", *new_key, "-nodes", "-keyout", str(folder / f"{name}.key"),
                    "-subj", f"/O=Example/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}.example.org",
                    "-outform", "DER", "-out", str(der)], check=True, capture_output=True)
    return base64.encodebytes(der.read_bytes())


def ca_pems(ca: DjangoCa) -> dict[str, bytes]:
    """The CA certificates as django-ca itself lists them, by name."""
    return {entry["name"]: entry["certificate"]["pem"].encode() for entry in ca.api("GET", "/ca/")}


def write(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_cacerts_is_the_issuing_ca_and_its_root(setup: Setup) -> None:
    answer = curl(f"{setup.gateway.url}/est/cacerts", cacert=setup.trust_anchor)
    assert answer.status == 200, answer.body
    pems = ca_pems(setup.ca)
    expected = {x509.load_pem_x509_certificate(pems[name]) for name in ("Test Issuing", "Test Root")}
    assert set(certificates(answer.body)) == expected


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_simpleenroll_rsa_and_p256_verifies_with_openssl(setup: Setup, key: str) -> None:
    answer = setup.enroll("est", new_csr(setup.folder, f"device-{key}", f"enroll-{key}", key))
    assert answer.status == 200, answer.body
    cert = write(setup.folder / f"enroll-{key}.pem", leaf(answer.body))
    pems = ca_pems(setup.ca)
    (setup.folder / "root.pem").write_bytes(pems["Test Root"])
    (setup.folder / "issuing.pem").write_bytes(pems["Test Issuing"])
    verified = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(setup.folder / "root.pem"),
                               "-untrusted", str(setup.folder / "issuing.pem"), str(cert)],
                              capture_output=True, text=True)
    assert verified.returncode == 0 and ": OK" in verified.stdout, verified.stdout + verified.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout
    assert "TLS Web Client Authentication" in text and f"DNS:device-{key}.example.org" in text
    assert "Digital Signature" in text
    assert ("rsaEncryption" if key == "rsa" else "id-ecPublicKey") in text


def test_reenroll_then_revoked_at_the_ca_is_refused(setup: Setup) -> None:
    enrolled = setup.enroll("est", new_csr(setup.folder, "device-renew", "renew-1"))
    assert enrolled.status == 200, enrolled.body
    first = leaf(enrolled.body)
    tls = ("--cert", str(write(setup.folder / "renew-1.pem", first)), "--key", str(setup.folder / "renew-1.key"))
    renewed = setup.post("est", "simplereenroll", new_csr(setup.folder, "device-renew", "renew-2"), *tls)
    assert renewed.status == 200, renewed.body
    second = leaf(renewed.body)
    assert second.subject == first.subject and second.serial_number != first.serial_number

    setup.ca.revoke(second)
    tls = ("--cert", str(write(setup.folder / "renew-2.pem", second)), "--key", str(setup.folder / "renew-2.key"))
    refused = setup.post("est", "simplereenroll", new_csr(setup.folder, "device-renew", "renew-3"), *tls)
    assert refused.status == 403, refused.body
    assert b"revoked" in refused.body


def test_serverkeygen_through_django_ca(setup: Setup) -> None:
    answer = setup.post("est", "serverkeygen", new_csr(setup.folder, "keygen", "keygen"),
                        "-u", f"estuser:{setup.password}")
    assert answer.status == 200, answer.body
    key, cert = serverkeygen_parts(answer)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert cert.subject.rfc4514_string() == "CN=keygen,O=Example"


def test_pending_order_is_202_then_the_repeat_gets_the_certificate(setup: Setup) -> None:
    body = new_csr(setup.folder, "device-queued", "queued")
    first = setup.enroll("queued", body)
    assert first.status == 202, first.body
    assert first.headers["retry-after"] == "120"
    again = setup.enroll("queued", body)
    assert again.status == 200, again.body
    assert leaf(again.body).subject.rfc4514_string() == "CN=device-queued,O=Example"


@pytest.mark.parametrize(("alias", "logged"), [
    ("wrongpass", "refused the gateway's username or password (HTTP 401)"),
    ("noperm", "lacks the permission sign_certificate"),
])
def test_wrong_upstream_credentials_are_502_and_logged(setup: Setup, alias: str, logged: str) -> None:
    answer = setup.enroll(alias, new_csr(setup.folder, f"device-{alias}", alias))
    assert answer.status == 502, answer.body
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.body.strip() == b"the upstream CA refused the gateway's credentials"
    lines = [line for line in setup.gateway.output().splitlines() if logged in line]
    assert lines and "ERROR" in lines[0] and f"backend {alias}" in lines[0]


def test_ca_stopped_is_503_with_breaker_and_recovers_without_restart(setup: Setup) -> None:
    """Runs last in this module: django-ca is stopped, then started again on the same port."""
    setup.ca.stop()
    try:
        answers = [setup.enroll("est", new_csr(setup.folder, "device-down", f"down-{i}")) for i in range(3)]
        for answer in answers:
            assert answer.status == 503, answer.body
            assert answer.headers["retry-after"].isdigit()
        assert b"cannot connect" in answers[0].body
        assert b"not asking it again" in answers[2].body   # the breaker opened after 2 failures
        health = curl(f"{setup.gateway.url.rsplit('/.well-known', 1)[0]}/healthz", cacert=setup.trust_anchor)
        assert health.status == 503 and b"backend djangoca: 503" in health.body
    finally:
        setup.ca.start()
    deadline = time.monotonic() + 20   # a generous bound on the 1 s cooldown
    while True:
        answer = setup.enroll("est", new_csr(setup.folder, "device-back", "back"))
        if answer.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert answer.status == 200, answer.body
