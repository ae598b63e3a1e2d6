"""The operator console (est_gateway.console) through Flask's test client, beside the EST
app of the same service: every route's refusal without a session, CSRF, the security
headers, logins (password, client certificate, throttle), and what its actions change."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient

from est_gateway.backends.local import LocalCABackend
from est_gateway.config import load_config
from est_gateway.console import create_console_app
from est_gateway.console.app import CONTENT_SECURITY_POLICY
from est_gateway.identity import TLS_ENVIRON_KEY, TLSInfo
from est_gateway.passwords import PasswordHash
from est_gateway.web import make_service, service_of
from tests.conftest import EXTRA_ALIASES
from tests.support.console import (
    ADMIN,
    ADMIN_PASSWORD,
    THROTTLED_ADDRESS,
    audit_to_file,
    csrf_of,
    prepare_console_folder,
)
from tests.support.inproc import InProcessGateway, start
from tests.support.pki import CA, csr_b64, make_csr, p256_key

EST = "/.well-known/est"
BASE = "https://127.0.0.1:8444"
#: every route and method of the console, with a path that exists
ROUTES = [
    ("GET", "/"), ("GET", "/certificates"), ("GET", "/certificates/local/1"),
    ("GET", "/certificates/local/1.pem"), ("GET", "/certificates/local/1/revoke"),
    ("POST", "/certificates/local/1/revoke"), ("GET", "/pending"),
    ("POST", "/pending/approvals/x/approve"), ("POST", "/pending/approvals/x/reject"),
    ("GET", "/audit"), ("POST", "/logout"),
]


class Console:
    """The EST app and the console app of one service, and the admin CA."""

    def __init__(self, gw: InProcessGateway, app: Flask, admin_ca: CA, audit_path: Path) -> None:
        self.gw, self.app, self.admin_ca, self.audit_path = gw, app, admin_ca, audit_path

    def client(self, *, address: str = "127.0.0.1", tls: TLSInfo | None = None) -> FlaskClient:
        client = self.app.test_client()
        client.environ_base.update({"REMOTE_ADDR": address, TLS_ENVIRON_KEY: tls or TLSInfo(version="TLSv1.3")})
        return client

    def signed_in(self) -> FlaskClient:
        client = self.client()
        page = client.get(f"{BASE}/login").get_data(as_text=True)
        answer = client.post(f"{BASE}/login", data={"csrf_token": csrf_of(page), "method": "password",
                                                   "username": ADMIN, "password": ADMIN_PASSWORD})
        assert answer.status_code == 303, answer.get_data(as_text=True)
        return client

    def enroll(self, cn: str, label: str = "est") -> tuple[str, Any]:
        """A certificate enrolled through the EST app; its serial and its key."""
        key = p256_key()
        answer = self.gw.request("POST", f"{EST}/{label}/simpleenroll", body=_csr(key, cn),
                                 headers=[*self.gw.auth().items(), ("Content-Type", "application/pkcs10")])
        assert answer.status_code in (200, 202), answer.get_data()
        cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.get_data()))[0]
        return format(cert.serial_number, "x"), (key, cert)

    def audit_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def _csr(key: Any, cn: str) -> bytes:
    return csr_b64(make_csr(key, cn=cn))


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    folder = tmp_path_factory.mktemp("console") / "est-local"
    label = f"""
# An EST label named like the console's scope: its password memory is its own.
[aliases.console]
backend = "local"
ca = "EST CA"
username = "{ADMIN}"
password_hash = "{PasswordHash.create("the label's own password", log_n=10).render()}"
"""
    admin_ca = prepare_console_folder(folder, limits=EXTRA_ALIASES.replace("auth_failures_per_minute = 1000",
                                                                           "auth_failures_per_minute = 5") + label)
    gw = start(folder)
    with audit_to_file(folder / "audit.jsonl"):
        yield Console(gw, create_console_app(gw.config, service_of(gw.app)), admin_ca, folder / "audit.jsonl")


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[0] == "GET"])
def test_every_page_sends_a_stranger_to_the_login(console: Console, method: str, path: str) -> None:
    answer = console.client().open(f"{BASE}{path}", method=method)
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[0] == "POST"])
def test_every_action_of_a_stranger_is_refused(console: Console, method: str, path: str) -> None:
    client = console.client()
    token = csrf_of(client.get(f"{BASE}/login").get_data(as_text=True))
    answer = client.post(f"{BASE}{path}", data={"csrf_token": token})
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/login")
    answer = client.post(f"{BASE}{path}", data={"csrf_token": "forged"})
    assert (answer.status_code, answer.mimetype) == (400, "text/plain")


def test_pages_of_a_signed_in_admin(console: Console) -> None:
    serial, _ = console.enroll("console-pages")
    client = console.signed_in()
    for path in ("/", "/certificates", f"/certificates?q={serial[:6]}", "/certificates?status=valid&label=est",
                 f"/certificates/local/{serial}", f"/certificates/local/{serial}/revoke", "/pending",
                 "/pending?all=1", "/audit", "/audit?outcome=failed&operation=simpleenroll&q=x"):
        answer = client.get(f"{BASE}{path}")
        assert answer.status_code == 200, path
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["X-Frame-Options"] == "DENY"
        html = answer.get_data(as_text=True)
        assert "<script" not in html and " style=" not in html, path
    overview = client.get(f"{BASE}/").get_data(as_text=True)
    assert "<svg" in overview and "certauth" in overview and "local" in overview
    found = client.get(f"{BASE}/certificates?q=console-pages").get_data(as_text=True)
    assert serial in found and "1 found" in found
    pem = client.get(f"{BASE}/certificates/local/{serial}.pem")
    assert pem.status_code == 200 and pem.get_data().startswith(b"-----BEGIN CERTIFICATE-----")
    assert client.get(f"{BASE}/certificates/local/ffff0000ffff").status_code == 404
    assert client.get(f"{BASE}/certificates/nothere/{serial}").status_code == 404
    assert client.get(f"{BASE}/certificates?page=0").status_code == 400
    assert client.get(f"{BASE}/certificates?status=bogus").status_code == 400
    downloads = [e for e in console.audit_lines() if e.get("action") == "download"]
    assert downloads[-1]["admin"] == ADMIN and downloads[-1]["serial"] == serial


def test_the_session_cookie_is_secure_httponly_strict(console: Console) -> None:
    client = console.client()
    page = client.get(f"{BASE}/login")
    cookie = page.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    answer = client.post(f"{BASE}/login", data={"csrf_token": csrf_of(page.get_data(as_text=True)),
                                                "username": ADMIN, "password": ADMIN_PASSWORD,
                                                "next": "//elsewhere.example/"})
    assert answer.headers["Location"] == "/"     # never sent to another site


def test_a_wrong_password_is_the_login_page_again_and_an_audit_line(console: Console) -> None:
    client = console.client(address="192.0.2.10")
    token = csrf_of(client.get(f"{BASE}/login").get_data(as_text=True))
    answer = client.post(f"{BASE}/login", data={"csrf_token": token, "username": ADMIN, "password": "wrong"})
    assert answer.status_code == 401 and "wrong username or password" in answer.get_data(as_text=True)
    assert client.get(f"{BASE}/").status_code == 303
    line = console.audit_lines()[-1]
    assert (line["action"], line["admin"], line["status"]) == ("login", ADMIN, 401)
    assert "wrong" not in json.dumps(line).replace("wrong username or password", "")
    client.post(f"{BASE}/login", data={"csrf_token": token, "username": "my-secret-pw", "password": "x"})
    line = console.audit_lines()[-1]
    assert line["admin"] == "<unknown>" and "my-secret-pw" not in json.dumps(line)


def test_failed_logins_count_against_the_gateways_throttle(console: Console) -> None:
    client = console.client(address=THROTTLED_ADDRESS)
    token = csrf_of(client.get(f"{BASE}/login").get_data(as_text=True))
    statuses = [client.post(f"{BASE}/login", data={"csrf_token": token, "username": ADMIN,
                                                   "password": "guess"}).status_code for _ in range(5)]
    right = client.post(f"{BASE}/login", data={"csrf_token": token, "username": ADMIN, "password": ADMIN_PASSWORD})
    assert statuses == [401] * 5
    assert right.status_code == 429 and right.headers["Retry-After"]


def test_an_admin_client_certificate_signs_in_and_stays_bound_to_its_connection(console: Console) -> None:
    cert = console.admin_ca.issue(p256_key(), cn="alice")
    tls = TLSInfo(version="TLSv1.3", peer_chain=(cert.public_bytes(Encoding.DER),))
    client = console.client(tls=tls)
    token = csrf_of(client.get(f"{BASE}/login").get_data(as_text=True))
    answer = client.post(f"{BASE}/login", data={"csrf_token": token, "method": "certificate"})
    assert answer.status_code == 303
    assert client.get(f"{BASE}/").status_code == 200
    assert console.audit_lines()[-1]["admin"] == "cert:CN=alice"
    client.environ_base[TLS_ENVIRON_KEY] = TLSInfo(version="TLSv1.3")     # the certificate is gone
    assert client.get(f"{BASE}/").status_code == 303


def test_a_device_certificate_is_no_admin(console: Console) -> None:
    device, _ = console.gw.client_cert("not-an-admin")
    client = console.client(tls=console.gw.tls_with(device))
    token = csrf_of(client.get(f"{BASE}/login").get_data(as_text=True))
    answer = client.post(f"{BASE}/login", data={"csrf_token": token, "method": "certificate"})
    assert answer.status_code == 401 and "does not chain" in answer.get_data(as_text=True)


def test_a_wrong_csrf_token_changes_nothing(console: Console) -> None:
    serial, _ = console.enroll("console-csrf")
    client = console.signed_in()
    answer = client.post(f"{BASE}/certificates/local/{serial}/revoke", data={"csrf_token": "x" * 43,
                                                                            "reason": "keyCompromise"})
    assert (answer.status_code, answer.mimetype) == (400, "text/plain")
    assert b"CSRF" in answer.get_data()
    answer = client.post(f"{BASE}/certificates/local/{serial}/revoke", data={"reason": "keyCompromise"})
    assert answer.status_code == 400
    assert _local(console).store.get(serial).status == "valid"   # type: ignore[union-attr]


def test_a_revoke_is_on_record_audited_and_the_certificate_no_longer_renews(console: Console) -> None:
    serial, (key, cert) = console.enroll("console-revoke")
    client = console.signed_in()
    confirm = client.get(f"{BASE}/certificates/local/{serial}/revoke").get_data(as_text=True)
    answer = client.post(f"{BASE}/certificates/local/{serial}/revoke",
                         data={"csrf_token": csrf_of(confirm), "reason": "keyCompromise"})
    assert answer.status_code == 303
    record = _local(console).store.get(serial)
    assert record is not None and (record.status, record.revocation_reason) == ("revoked", "keyCompromise")
    detail = client.get(f"{BASE}{answer.headers['Location']}").get_data(as_text=True)
    assert 'id="status">revoked' in detail
    line = console.audit_lines()[-1]
    assert (line["action"], line["admin"], line["serial"], line["outcome"]) == ("revoke", ADMIN, serial, "revoked")
    again = client.post(f"{BASE}/certificates/local/{serial}/revoke",
                        data={"csrf_token": csrf_of(confirm), "reason": "keyCompromise"})
    assert again.status_code == 400 and b"already revoked" in again.get_data()
    renewal = console.gw.request("POST", f"{EST}/est/simplereenroll", body=_csr(key, "console-revoke"),
                                 headers=[("Content-Type", "application/pkcs10")], tls=console.gw.tls_with(cert))
    assert renewal.status_code == 403 and b"revoked" in renewal.get_data()


@pytest.mark.parametrize(("decision", "status", "answer"), [("approve", "approved", 200),
                                                            ("reject", "rejected", 403)])
def test_approve_and_reject_decide_a_pending_enrollment(console: Console, decision: str, status: str,
                                                        answer: int) -> None:
    key = p256_key()
    headers = [*console.gw.auth().items(), ("Content-Type", "application/pkcs10")]
    body = _csr(key, f"console-{decision}")
    first = console.gw.request("POST", f"{EST}/manual/simpleenroll", body=body, headers=headers)
    assert first.status_code == 202
    store = console.gw.config.backends["approvals"].store    # type: ignore[attr-defined]
    waiting = [p for p in store.pending_list() if p.subject == f"CN=console-{decision}"]
    assert len(waiting) == 1
    client = console.signed_in()
    page = client.get(f"{BASE}/pending").get_data(as_text=True)
    assert waiting[0].id in page
    forged = client.post(f"{BASE}/pending/approvals/{waiting[0].id}/{decision}", data={"csrf_token": "no"})
    assert forged.status_code == 400 and store.pending_list(status="pending")[0].status == "pending"
    done = client.post(f"{BASE}/pending/approvals/{waiting[0].id}/{decision}",
                       data={"csrf_token": csrf_of(page), "reason": "not ours"})
    assert done.status_code == 303
    assert [p.status for p in store.pending_list(status=None) if p.id == waiting[0].id] == [status]
    line = console.audit_lines()[-1]
    assert (line["action"], line["admin"], line["approval_reference"]) == (decision, ADMIN, waiting[0].id)
    retry = console.gw.request("POST", f"{EST}/manual/simpleenroll", body=body, headers=headers)
    assert retry.status_code == answer
    twice = client.post(f"{BASE}/pending/approvals/{waiting[0].id}/{decision}", data={"csrf_token": csrf_of(page)})
    assert twice.status_code == 400


def test_the_audit_page_filters_and_the_chart_counts_enrollments(console: Console) -> None:
    console.enroll("console-audit")
    bad = console.gw.request("POST", f"{EST}/est/simpleenroll", body=_csr(p256_key(), "x"),
                             headers=[*console.gw.auth("nope").items(), ("Content-Type", "application/pkcs10")])
    assert bad.status_code == 401
    client = console.signed_in()
    failed = client.get(f"{BASE}/audit?outcome=failed&operation=simpleenroll").get_data(as_text=True)
    assert "<td>401</td>" in failed and "<td>200</td>" not in failed
    console_only = client.get(f"{BASE}/audit?outcome=console").get_data(as_text=True)
    assert "console login" in console_only and "simpleenroll" not in console_only.split("<tbody>")[1]
    overview = client.get(f"{BASE}/").get_data(as_text=True)
    assert "enrolled</title>" in overview
    assert " 0 refused" not in overview and " 0 answered" not in overview


def test_logout_ends_the_session(console: Console) -> None:
    client = console.signed_in()
    token = csrf_of(client.get(f"{BASE}/").get_data(as_text=True))
    assert client.post(f"{BASE}/logout", data={"csrf_token": token}).status_code == 303
    assert client.get(f"{BASE}/").status_code == 303
    assert console.audit_lines()[-1]["action"] == "logout"


def _local(console: Console) -> LocalCABackend:
    backend = console.gw.config.backends["local"]
    assert isinstance(backend, LocalCABackend)
    return backend


def test_an_idle_session_ends(console: Console) -> None:
    client = console.signed_in()
    assert client.get(f"{BASE}/").status_code == 200
    with client.session_transaction("/", base_url=BASE) as session:
        session["seen"] -= console.gw.config.console.session_idle_timeout_s + 1
    assert client.get(f"{BASE}/").status_code == 303


def test_a_session_cookie_signed_with_another_secret_is_no_session(console: Console) -> None:
    def visit(secret: bytes) -> int:
        signer = Flask("signer")
        signer.secret_key = secret
        serializer = SecureCookieSessionInterface().get_signing_serializer(signer)
        assert serializer is not None
        client = console.client()
        client.set_cookie("est_console", serializer.dumps({"admin": ADMIN, "via": "password", "seen": time.time()}),
                          domain="127.0.0.1", secure=True)
        return client.get(f"{BASE}/").status_code

    assert visit(console.gw.config.console.secret) == 200     # the cookie reaches the console
    assert visit(b"another secret of at least 32 characters") == 303


def test_a_login_starts_a_new_session_and_an_oversized_form_is_refused(console: Console) -> None:
    client = console.client()
    before = csrf_of(client.get(f"{BASE}/login").get_data(as_text=True))
    client.post(f"{BASE}/login", data={"csrf_token": before, "username": ADMIN, "password": ADMIN_PASSWORD})
    after = csrf_of(client.get(f"{BASE}/").get_data(as_text=True))
    assert after != before       # what an attacker may have planted before the login is gone
    answer = client.post(f"{BASE}/logout", data={"csrf_token": after, "pad": "x" * 70_000})
    assert (answer.status_code, answer.mimetype) == (413, "text/plain")
    assert client.get(f"{BASE}/").status_code == 200


def test_certificates_come_in_pages_of_one_built_in_ca(console: Console) -> None:
    serials = [console.enroll(f"console-page-{i:02}")[0] for i in range(27)]
    client = console.signed_in()
    first = client.get(f"{BASE}/certificates?q=console-page-").get_data(as_text=True)
    second = client.get(f"{BASE}/certificates?q=console-page-&page=2").get_data(as_text=True)
    assert "27 found; page 1 of 2" in first and "page 2 of 2" in second
    shown = [s for s in serials if s in first], [s for s in serials if s in second]
    assert len(shown[0]) == 25 and sorted(shown[0] + shown[1]) == sorted(serials)
    assert serials[-1] in first and serials[0] in second          # newest first
    other = client.get(f"{BASE}/certificates?backend=approvals&q=console-page-").get_data(as_text=True)
    assert "0 found" in other and 'name="backend"' in other
    assert client.get(f"{BASE}/certificates?backend=nothere").status_code == 404


def test_an_upstream_only_gateway_shows_health_and_no_certificates(tmp_path: Path) -> None:
    """With no built-in CA, the console shows each upstream backend's health (here: down)
    and says that certificates and approvals live in the upstream CA."""
    from tests.support.gateway import free_port

    folder = tmp_path / "est-local"
    prepare_console_folder(folder)
    text = (folder / "gateway.toml").read_text()
    upstream = text[:text.index("[backends.local]")] + f"""
[backends.cfssl]
type = "cfssl"
url = "https://127.0.0.1:{free_port()}"
client_cert = "tls/server.pem"
client_key = "tls/server.key"
ca_bundle = "trust-anchor.pem"
auth_key_file = "secrets/console.secret"
connect_timeout_s = 1
retries = 0

[aliases.est]
backend = "cfssl"
ca = "primary"
certificate_profile = "client"
username = "estuser"
password_file = "secrets/est.password"
""" + text[text.rindex("\n[console]"):]
    (folder / "gateway.toml").write_text(upstream)
    config = load_config(folder / "gateway.toml")
    for backend in config.backends.values():
        backend.start()
    app = create_console_app(config, make_service(config))
    client = app.test_client()
    client.environ_base.update({"REMOTE_ADDR": "127.0.0.1"})
    page = client.get(f"{BASE}/login").get_data(as_text=True)
    client.post(f"{BASE}/login", data={"csrf_token": csrf_of(page), "username": ADMIN, "password": ADMIN_PASSWORD})
    overview = client.get(f"{BASE}/").get_data(as_text=True)
    assert "<td>cfssl</td>" in overview and 'class="bad">50' in overview
    assert "certificates of upstream CAs live in those CAs" in client.get(f"{BASE}/certificates").get_data(as_text=True)
    assert "decided in those CAs" in client.get(f"{BASE}/pending").get_data(as_text=True)
    assert client.get(f"{BASE}/audit").status_code == 200


def test_the_admins_password_never_opens_an_est_label_called_console(console: Console) -> None:
    console.signed_in()          # the admin's password is now remembered by the service
    token = base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
    answer = console.gw.request("POST", f"{EST}/console/simpleenroll", body=_csr(p256_key(), "intruder"),
                                headers=[("Authorization", f"Basic {token}"), ("Content-Type", "application/pkcs10")])
    assert answer.status_code == 401


def test_an_unreadable_record_is_503_not_500(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    client = console.signed_in()

    def locked(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(_local(console).store, "search", locked)
    answer = client.get(f"{BASE}/certificates")
    assert (answer.status_code, answer.mimetype, answer.headers["Retry-After"]) == (503, "text/plain", "5")
    assert b"locked" not in answer.get_data()
