"""Security guards that no test held before issue 10 (§5, §6), each checked through the
application with the local CA: a test here fails when its guard is removed."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_private_key
from werkzeug.test import TestResponse

from est_gateway import wire
from est_gateway.backends.local import LocalCABackend, authority
from tests.support.inproc import InProcessGateway, start, valid_csr_der
from tests.support.pki import CA, csr_der, make_csr, p256_key, write_pem

PKCS10 = ("Content-Type", "application/pkcs10")
EST = "/.well-known/est"
EXTRA = """
[aliases.maker]
backend = "local"
ca = "EST CA"
require_client_cert = true
trusted_client_cas_file = "{maker}"

[backends.manual]
type = "local"
state_dir = "manual-ca"
approval = "manual"

[backends.manual.cas."EST CA"]
key_type = "ec-p256"

[aliases.manual]
backend = "manual"
ca = "EST CA"
username = "estuser"
password_file = "secrets/est.password"
"""
MAKER = CA.create("Device Maker CA")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    folder = tmp_path_factory.mktemp("guards") / "est-local"
    folder.mkdir()
    maker = write_pem(folder / "maker-ca.pem", MAKER.cert)
    yield start(folder, EXTRA.replace("{maker}", str(maker)))


def _post(gw: InProcessGateway, path: str, body: bytes, *, auth: bool = True, **kw: object) -> TestResponse:
    headers = [PKCS10, *(gw.auth().items() if auth else [])]
    return gw.request("POST", f"{EST}/{path}", headers=headers, body=base64.encodebytes(body), **kw)  # type: ignore[arg-type]


def _cert(response: TestResponse) -> x509.Certificate:
    assert response.status_code == 200, response.get_data()
    return wire.read_certs_only(base64.b64decode(response.get_data()))[0]


def _local(gw: InProcessGateway, name: str = "local") -> LocalCABackend:
    backend = gw.config.backends[name]
    assert isinstance(backend, LocalCABackend)
    return backend


# -- trusted_client_cas authenticate simpleenroll, never renewal --------------------------

def test_a_trusted_client_ca_certificate_enrolls_but_never_renews(gw: InProcessGateway) -> None:
    key = p256_key()
    maker_cert = MAKER.issue(key, cn="made-device")
    csr = csr_der(make_csr(key, cn="made-device"))
    assert _post(gw, "maker/simpleenroll", csr, auth=False, tls=gw.tls_with(maker_cert)).status_code == 200
    for label in ("maker/", ""):
        response = _post(gw, f"{label}simplereenroll", csr, auth=False, tls=gw.tls_with(maker_cert))
        assert response.status_code == 403, response.get_data()


def test_a_certificate_the_ca_key_signed_but_never_recorded_does_not_renew(gw: InProcessGateway) -> None:
    cert, key = gw.client_cert("never-recorded")
    response = _post(gw, "simplereenroll", csr_der(make_csr(key, cn="never-recorded")), auth=False,
                     tls=gw.tls_with(cert))
    assert response.status_code == 403
    assert response.get_data() == (b"client certificate was not issued by this EST label's CA; "
                                   b"it cannot be renewed here\n")


# -- the record ---------------------------------------------------------------------------

def test_a_failed_record_write_answers_503_and_no_certificate(gw: InProcessGateway) -> None:
    store = _local(gw).store
    before = store.count()
    conn = sqlite3.connect(store.path)
    try:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON certificates "
                     "BEGIN SELECT RAISE(ABORT, 'database is locked'); END")
        conn.commit()
        response = _post(gw, "simpleenroll", valid_csr_der("unrecorded"))
    finally:
        conn.execute("DROP TRIGGER refuse")
        conn.commit()
        conn.close()
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Retry-After"] == "30"
    assert b"BEGIN" not in response.get_data() and b"CERTIFICATE" not in response.get_data()
    assert store.count() == before


# -- serverkeygen repeated after its approval was answered --------------------------------

def test_a_repeated_serverkeygen_never_returns_a_key_that_does_not_match(gw: InProcessGateway) -> None:
    csr = valid_csr_der("keygen-approved")
    first = _post(gw, "manual/serverkeygen", csr)
    assert first.status_code == 202
    backend = _local(gw, "manual")
    [queued] = [p for p in backend.store.pending_list() if p.subject == "CN=keygen-approved"]
    backend.store.pending_decide(queued.id, "approved", authority.utcnow())
    answered = _post(gw, "manual/serverkeygen", csr)
    assert answered.status_code == 200, answered.get_data()
    key, cert = _keygen_parts(answered)
    assert _spki(key.public_key()) == _spki(cert.public_key())
    again = _post(gw, "manual/serverkeygen", csr)
    assert again.status_code == 403, "a repeat must not hand out a fresh key with the old certificate"
    assert again.get_data() == b"this serverkeygen request was already answered; send a new CSR\n"


def _keygen_parts(response: TestResponse) -> tuple[object, x509.Certificate]:
    boundary = response.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
    parts = [p for p in response.get_data().split(b"--" + boundary) if b"\r\n\r\n" in p]
    bodies = {p.split(b"\r\n\r\n", 1)[0].lower(): base64.b64decode(p.split(b"\r\n\r\n", 1)[1]) for p in parts}
    key_der = next(v for k, v in bodies.items() if b"pkcs8" in k)
    cert_der = next(v for k, v in bodies.items() if b"pkcs7" in k)
    return load_der_private_key(key_der, None), wire.read_certs_only(cert_der)[0]


def _spki(key: object) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined,no-any-return]


# -- names and logs ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["*", "*.example.com", "a\x00.example.com", "bad_name.example", "-x.example",
                                  "x..example", "example.com.", "xn--zz.example", "*.com",
                                  "a.*.example.com", "f*o.example.com", "a" * 64 + ".example"])
def test_invalid_or_wildcard_dns_names_are_not_issued(gw: InProcessGateway, name: str) -> None:
    """Issue 10 §5: "*", "*.example.com" and names with NUL were issued as requested."""
    csr = csr_der(make_csr(p256_key(), cn="dns-check", sans=[x509.DNSName(name)]))
    response = _post(gw, "simpleenroll", csr)
    assert response.status_code == 400, response.get_data()
    assert b"\x00" not in response.get_data()


@pytest.mark.parametrize("name", ["device-1.example.com", "xn--bcher-kva.example", "r3--sn-x.example.net",
                                  "A1.Example.ORG"])
def test_valid_dns_names_are_issued(gw: InProcessGateway, name: str) -> None:
    csr = csr_der(make_csr(p256_key(), cn="dns-ok", sans=[x509.DNSName(name)]))
    cert = _cert(_post(gw, "simpleenroll", csr))
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        x509.SubjectAlternativeName([x509.DNSName(name)])


def test_a_password_typed_as_the_username_is_never_logged(gw: InProcessGateway,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10 §5: `curl -u "$PW:estuser"` put the password in the warning and the audit line."""
    token = base64.b64encode(f"{gw.password}:estuser".encode()).decode()
    with caplog.at_level(logging.DEBUG):
        response = gw.request("POST", f"{EST}/simpleenroll", body=base64.encodebytes(valid_csr_der("swapped")),
                              headers=[PKCS10, ("Authorization", f"Basic {token}")])
    assert response.status_code == 401
    assert caplog.records
    assert not [r for r in caplog.records if gw.password in r.getMessage()]
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "est_gateway.audit"]
    assert [e["username"] for e in audit] == ["<unknown>"]
