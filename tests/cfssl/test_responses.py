"""The CFSSL adapter's answer table: each answer ``cfssl serve`` (or the network) can give,
scripted with ``responses`` on the backend's session, and what the EST client gets for it.
The same adapter against a real ``cfssl serve`` is tests/cfssl/test_backend.py and test_faults.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.testing.http import URL, mocked_backend, upstream_credentials
from est_gateway_cfssl.api import AUTHSIGN, INFO
from est_gateway_cfssl.options import CfsslTarget
from tests.support.answer_table import OK, Row, certify, check, enroll, rows, script, transport_rows
from tests.support.pki import CA

TARGET = CfsslTarget(label="primary", profile="client")


@pytest.fixture(scope="module")
def signer() -> CA:
    return CA.create("CFSSL Test Signer")


def envelope(result: Any = None, *, code: int | None = None, message: str = "") -> dict[str, Any]:
    """CFSSL's API envelope (api/api.go)."""
    errors = [{"code": code, "message": message}] if code is not None else []
    return {"success": code is None, "result": result, "errors": errors, "messages": []}


def info(signer: CA) -> dict[str, Any]:
    return envelope({"certificate": signer.cert.public_bytes(Encoding.PEM).decode(), "usages": ["client auth"]})


@pytest.fixture
def mocked(tmp_path: Path, signer: CA) -> Iterator[tuple[Any, responses.RequestsMock]]:
    (tmp_path / "auth.key").write_text("ab" * 16)
    (tmp_path / "auth.key").chmod(0o600)
    options = {**upstream_credentials(tmp_path), "auth_key_file": "auth.key"}
    with mocked_backend("cfssl", options, base_dir=tmp_path) as (backend, upstream):
        yield backend, upstream


def sign(signer: CA) -> Any:
    """A ``responses`` callback that signs the authsign request's CSR as CFSSL would."""
    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        raw = json.loads(base64.b64decode(json.loads(request.body)["request"]))
        cert = certify(signer, x509.load_pem_x509_csr(raw["certificate_request"].encode()))
        return 200, {}, json.dumps(envelope({"certificate": cert.public_bytes(Encoding.PEM).decode()}))
    return callback


TRANSPORT = (
    *transport_rows("https://elsewhere.test/sign"),
    ("refused", Row({"fault": "refused"}, 503, "cannot connect to the upstream CA", "cannot connect",
                    retry_after="30", calls=3)),
)


@rows(
    ("issued", Row({}, OK)),
    ("csr-refused", Row({"status": 400, "json": envelope(code=9002, message="bad CSR")}, 400,
                        "the CA refused the request: bad CSR")),
    ("policy-refused", Row({"status": 400, "json": envelope(code=5300, message="not allowed")}, 400,
                           "the CA refused the request: not allowed")),
    ("invalid-token", Row({"status": 400, "json": envelope(code=1000, message="invalid token")}, 502,
                          "refused the gateway's credentials", "auth_key_file")),
    ("no-auth-provider", Row({"status": 400, "json": envelope(code=1000, message="no authentication provider")},
                             502, "not set up for authenticated signing", '"auth_key"')),
    ("invalid-cn", Row({"status": 403, "body": "Invalid CN"}, 502, "refused the gateway's credentials",
                       "-mutual-tls-cn")),
    ("not-found", Row({"status": 404, "body": "404 page not found"}, 502, "does not offer this API (HTTP 404)",
                      "url must be the base of cfssl serve")),
    ("other-4xx", Row({"status": 409, "json": envelope(code=1000, message="busy")}, 502,
                      "the upstream CA refused the call: busy")),
    ("signer-failure", Row({"status": 500, "json": envelope(code=2000, message="sign failed")}, 503,
                           "unavailable (HTTP 500)", "CFSSL answered HTTP 500", retry_after="30")),
    # not repeated (a signing request may have been carried out); the upstream's Retry-After
    # is not passed on: the client gets the gateway's own
    ("503-retry-after", Row({"status": 503, "headers": {"Retry-After": "120"}, "body": ""}, 503,
                            "unavailable (HTTP 503)", "CFSSL answered HTTP 503", retry_after="30")),
    ("garbage-json", Row({"status": 200, "body": "<html>proxy error</html>"}, 502, "not CFSSL's JSON")),
    ("not-a-success", Row({"status": 200, "json": envelope(code=1, message="")}, 502, "not CFSSL's JSON")),
    *((name, Row(row.answer, row.status, row.reason, row.log, row.retry_after)) for name, row in TRANSPORT),
)
def test_authsign_answers(mocked: tuple[Any, responses.RequestsMock], signer: CA, row: Row,
                          caplog: pytest.LogCaptureFixture) -> None:
    backend, upstream = mocked
    upstream.post(URL + INFO, json=info(signer))
    script(upstream, "POST", URL + AUTHSIGN, row, sign(signer))
    issued = check(row, lambda: enroll(backend, TARGET), caplog)
    if issued is not None:
        assert issued.chain == (signer.cert,)
    assert [c.request.url for c in upstream.calls] == [URL + INFO, URL + AUTHSIGN]   # never repeated


@rows(
    ("info", Row({"status": 200}, OK)),
    ("503-then-info", Row({"status": 503, "body": ""}, OK, "", "", calls=2)),
    ("always-503", Row({"status": 503, "body": ""}, 503, "unavailable (HTTP 503)", "CFSSL answered HTTP 503",
                       retry_after="30", calls=3)),
    ("500", Row({"status": 500, "json": envelope(code=2000, message="no signer")}, 503, "unavailable (HTTP 500)",
                "CFSSL answered HTTP 500", retry_after="30")),
    ("no-certificate", Row({"status": 200, "json": envelope({"usages": []})}, 502,
                           "without a readable CA certificate")),
    *TRANSPORT,
)
def test_info_answers(mocked: tuple[Any, responses.RequestsMock], signer: CA, row: Row,
                      caplog: pytest.LogCaptureFixture) -> None:
    """``info`` is idempotent: repeated after 502/503/504 and a refused connection, never after
    a timeout (the CA may be busy with it)."""
    backend, upstream = mocked
    if row.answer == {"status": 200}:
        upstream.post(URL + INFO, json=info(signer))
    else:
        upstream.post(URL + INFO, **row.responses_kwargs())
        if row.status == OK:       # the repeat finds the CA back
            upstream.post(URL + INFO, json=info(signer))
    chain = check(row, lambda: backend.ca_certs(TARGET), caplog)
    assert chain in (None, [signer.cert])
    assert len(upstream.calls) == row.calls
