"""The django-ca adapter's answer table: each answer django-ca's REST API (or the network)
can give, scripted with ``responses`` on the backend's session, and what the EST client gets.
The same adapter against a real django-ca is tests/django_ca/test_backend.py and test_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.testing.http import mocked_backend, upstream_credentials
from est_gateway_django_ca.target import DjangoCaTarget
from tests.support.answer_table import OK, Row, certify, check, enroll, rows, script, transport_rows
from tests.support.pki import CA

API = "https://ca.test/django_ca/api"
TARGET = DjangoCaTarget(ca="Test Issuing", profile="client")
PASSWORD = "pa55-w0rd"


@pytest.fixture(scope="module")
def issuing() -> CA:
    return CA.create("Test Issuing")


def ca_list(ca: CA) -> list[dict[str, Any]]:
    """``GET /ca/`` as django-ca 3.2 lists one CA (``CertificateAuthoritySchema``)."""
    return [{"id": 1, "name": "Test Issuing", "parent": None,
             "certificate": {"pem": ca.cert.public_bytes(Encoding.PEM).decode()}}]


@pytest.fixture
def mocked(tmp_path: Path) -> Iterator[tuple[Any, responses.RequestsMock]]:
    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "password").chmod(0o600)
    options = {**upstream_credentials(tmp_path, url=API, client_cert=False), "username": "est",
               "password_file": "password", "order_wait_s": 1}
    with mocked_backend("django-ca", options, base_dir=tmp_path) as (backend, upstream):
        yield backend, upstream


def issue(ca: CA, upstream: responses.RequestsMock) -> Any:
    """A ``responses`` callback for the sign request that issues at once, as django-ca's
    order does when its task has run: the order, then the certificate, answer the polls."""
    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        cert = certify(ca, x509.load_pem_x509_csr(body["csr"].encode()))
        serial = f"{cert.serial_number:X}"
        base = f"{API}/ca/{ca.cert.serial_number:X}"
        upstream.get(f"{base}/orders/abc123/", json={"slug": "abc123", "status": "issued", "serial": serial})
        upstream.get(f"{base}/certs/{serial}/",
                     json={"certificate": {"pem": cert.public_bytes(Encoding.PEM).decode()}, "revoked": False})
        return 200, {}, json.dumps({"slug": "abc123", "status": "pending"})
    return callback


TRANSPORT = transport_rows("https://ca.test/login/")


@rows(
    ("listed", Row({"status": 200}, OK)),
    ("wrong-password", Row({"status": 401, "json": {"detail": "Unauthorized"}}, 502,
                           "refused the gateway's credentials", "password_file/password_env")),
    ("no-permission", Row({"status": 403, "json": {"detail": "Forbidden"}}, 502, "refused the gateway's credentials",
                          "lacks the permission view_certificateauthority")),
    ("no-api-here", Row({"status": 404, "body": "<html>Not Found</html>"}, 502,
                        "does not offer this REST resource (HTTP 404)", "CA_ENABLE_REST_API")),
    ("not-found", Row({"status": 404, "json": {"detail": "Not Found"}}, 502, "does not offer CA")),
    ("not-listed", Row({"status": 200, "json": []}, 502, 'does not offer CA "Test Issuing"', "--api-enable")),
    ("unexpected-json", Row({"status": 200, "json": {"cas": []}}, 502, "unexpected JSON")),
    ("garbage-json", Row({"status": 200, "body": "<html>login</html>"}, 502, "something that is not JSON")),
    ("unreadable-ca", Row({"status": 200, "json": [{"id": 1, "certificate": {"pem": "x"}}]}, 502, "unreadable CA")),
    ("503-then-listed", Row({"status": 503, "body": ""}, OK, calls=2)),
    # a 500 is not repeated, a 503 is (a read); the client then gets the gateway's own
    # Retry-After: the upstream's is not passed on
    ("500", Row({"status": 500, "body": "<h1>Server Error (500)</h1>"}, 503, "unavailable (HTTP 500)",
                       "with HTTP 500", retry_after="30")),
    ("always-503-retry-after", Row({"status": 503, "headers": {"Retry-After": "120"}, "body": ""}, 503,
                                   "unavailable (HTTP 503)", "with HTTP 503", retry_after="30", calls=3)),
    ("refused", Row({"fault": "refused"}, 503, "cannot connect to the upstream CA", "cannot connect",
                    retry_after="30", calls=3)),
    *TRANSPORT,
)
def test_ca_list_answers(mocked: tuple[Any, responses.RequestsMock], issuing: CA, row: Row,
                         caplog: pytest.LogCaptureFixture) -> None:
    backend, upstream = mocked
    if row.answer == {"status": 200}:
        upstream.get(API + "/ca/", json=ca_list(issuing))
    else:
        upstream.get(API + "/ca/", **row.responses_kwargs())
        if row.status == OK:
            upstream.get(API + "/ca/", json=ca_list(issuing))
    chain = check(row, lambda: backend.ca_certs(TARGET), caplog)
    assert chain in (None, [issuing.cert])
    assert len(upstream.calls) == row.calls
    assert all(c.request.headers["Authorization"].startswith("Basic ") for c in upstream.calls)


@rows(
    ("issued", Row({}, OK)),
    ("invalid-csr", Row({"status": 422, "json": {"detail": [{"msg": "Value error, not a CSR"}]}}, 400,
                        "the CA refused the request: Value error, not a CSR")),
    ("refused-csr", Row({"status": 400, "json": {"detail": "Cannot parse CSR."}}, 400,
                        "the CA refused the request: Cannot parse CSR.")),
    ("no-sign-permission", Row({"status": 403, "json": {"detail": "Forbidden"}}, 502,
                               "refused the gateway's credentials", "lacks the permission sign_certificate")),
    ("no-order", Row({"status": 200, "json": {"status": "pending"}}, 502, "without an order")),
    ("other-4xx", Row({"status": 409, "json": {"detail": "busy"}}, 502, "unexpected HTTP 409")),
    # never repeated (django-ca may have opened the order)
    ("500", Row({"status": 500, "body": "<h1>Server Error (500)</h1>"}, 503, "unavailable (HTTP 500)",
                "with HTTP 500", retry_after="30")),
    ("503-retry-after", Row({"status": 503, "headers": {"Retry-After": "120"}, "body": ""}, 503,
                            "unavailable (HTTP 503)", "with HTTP 503", retry_after="30")),
    ("refused", Row({"fault": "refused"}, 503, "cannot connect to the upstream CA", "cannot connect",
                    retry_after="30")),
    *TRANSPORT,
)
def test_sign_answers(mocked: tuple[Any, responses.RequestsMock], issuing: CA, row: Row,
                      caplog: pytest.LogCaptureFixture) -> None:
    backend, upstream = mocked
    upstream.get(API + "/ca/", json=ca_list(issuing))
    upstream.get(API + "/profiles/client/", json={"name": "client", "extensions": {}, "expires": None})
    sign = f"{API}/ca/{issuing.cert.serial_number:X}/sign/"
    script(upstream, "POST", sign, row, issue(issuing, upstream))
    issued = check(row, lambda: enroll(backend, TARGET), caplog)
    if issued is not None:
        assert issued.chain == (issuing.cert,)
    assert [c.request.url for c in upstream.calls].count(sign) == 1
