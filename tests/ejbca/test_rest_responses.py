"""The EJBCA REST adapter's answer table: each answer EJBCA's REST API (or the network) can
give to an enrollment and a revocation lookup, scripted with ``responses`` on the backend's
session, and what the EST client gets. The approval flow and EJBCA's login messages are
tests/ejbca/test_approvals.py and test_rest.py, against the stand-in EJBCA."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.testing.http import mocked_backend, upstream_credentials
from est_gateway_ejbca.alias import EjbcaTarget
from est_gateway_ejbca.rest.backend import ENROLL
from tests.support.answer_table import OK, Row, certify, check, enroll, rows, script, transport_rows
from tests.support.pki import CA, p256_key

API = "https://ca.test/ejbca/ejbca-rest-api"
TARGET = EjbcaTarget(ca="EST Sub CA", certificate_profile="ENDUSER", end_entity_profile="EMPTY")
STATUS = re.compile(re.escape(API) + r"/v1/certificate/[^/]+/[0-9A-F]+/revocationstatus")


@pytest.fixture(scope="module")
def issuing() -> CA:
    return CA.create("EST Sub CA")


@pytest.fixture
def mocked(tmp_path: Path) -> Iterator[tuple[Any, responses.RequestsMock]]:
    with mocked_backend("ejbca-rest", upstream_credentials(tmp_path, url=API), base_dir=tmp_path) as made:
        yield made


def error(status: int, message: str) -> dict[str, Any]:
    """EJBCA's REST error body (``ExceptionHandler``)."""
    return {"status": status, "json": {"error_code": status, "error_message": message}}


def sign(ca: CA) -> Any:
    """A ``responses`` callback for ``pkcs10enroll`` that issues as EJBCA does (201,
    ``CertificateRestResponse``: base64 DER, the chain with ``include_chain``)."""
    def callback(request: Any) -> tuple[int, dict[str, str], str]:
        cert = certify(ca, x509.load_pem_x509_csr(json.loads(request.body)["certificate_request"].encode()))
        der = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in (cert, ca.cert)]
        return 201, {}, json.dumps({"certificate": der[0], "certificate_chain": der[1:],
                                    "serial_number": f"{cert.serial_number:X}", "response_format": "DER"})
    return callback


TRANSPORT = transport_rows("https://ca.test/ejbca/adminweb/")
NOT_ROUTED = error(404, "RESTEASY003210: Could not find resource for full path")


@rows(
    ("issued", Row({}, OK)),
    ("refused", Row(error(400, "Subject DN field 'CN' must exist."), 400,
                    "the CA refused the request: Subject DN field 'CN' must exist.")),
    ("conflict", Row(error(409, "End entity already exists"), 400, "the CA refused the request")),
    ("validation", Row(error(422, "Key length 1024 not allowed"), 400, "Key length 1024 not allowed")),
    ("not-routed", Row(NOT_ROUTED, 502, "does not offer this REST resource (HTTP 404)", "check url")),
    ("no-rights", Row(error(403, "Not authorized to resource /ra_functionality/create_end_entity"), 502,
                      "refused the gateway's credentials", "RA administrator rights")),
    # never repeated (EJBCA may have created the end entity and issued)
    ("500", Row(error(500, "General failure"), 503, "unavailable (HTTP 500)", "EJBCA answered HTTP 500",
                retry_after="30")),
    ("503-retry-after", Row({**error(503, "CA offline"), "headers": {"Retry-After": "120"}}, 503,
                            "unavailable (HTTP 503)", "EJBCA answered HTTP 503", retry_after="30")),
    ("garbage-json", Row({"status": 200, "body": "<html>login</html>"}, 502, "something that is not JSON")),
    ("no-certificate", Row({"status": 201, "json": {"certificate": "not base64!"}}, 502,
                           "unreadable certificate")),
    ("refused-connection", Row({"fault": "refused"}, 503, "cannot connect to the upstream CA", "cannot connect",
                               retry_after="30")),
    *TRANSPORT,
)
def test_enrollment_answers(mocked: tuple[Any, responses.RequestsMock], issuing: CA, row: Row,
                            caplog: pytest.LogCaptureFixture) -> None:
    backend, upstream = mocked
    script(upstream, "POST", API + ENROLL, row, sign(issuing))
    issued = check(row, lambda: enroll(backend, TARGET, retry_key=""), caplog)
    if issued is not None:
        assert issued.chain == (issuing.cert,)
    assert [c.request.url for c in upstream.calls] == [API + ENROLL]


@rows(
    ("good", Row({"status": 200, "json": {"revoked": False}}, OK)),
    ("revoked", Row({"status": 200, "json": {"revoked": True, "revocation_reason": "KEY_COMPROMISE"}}, OK)),
    ("unknown", Row(error(404, "Certificate not found"), OK)),
    ("not-routed", Row(NOT_ROUTED, 502, "does not offer this REST resource", "check url")),
    ("no-rights", Row(error(403, "Not authorized to resource /ca/1"), 502, "refused the gateway's credentials",
                      "RA administrator rights")),
    ("without-revoked", Row({"status": 200, "json": {"serial_number": "1"}}, 502, 'without "revoked"')),
    ("503-then-good", Row({"status": 503, "body": ""}, OK, calls=2)),
    ("always-503", Row(error(503, "CA offline"), 503, "unavailable (HTTP 503)", "EJBCA answered HTTP 503",
                       retry_after="30", calls=3)),
    ("refused-connection", Row({"fault": "refused"}, 503, "cannot connect to the upstream CA", "cannot connect",
                               retry_after="30", calls=3)),
    *TRANSPORT,
)
def test_revocation_status_answers(mocked: tuple[Any, responses.RequestsMock], issuing: CA, row: Row,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A lookup is idempotent: repeated after 502/503/504 and a refused connection."""
    backend, upstream = mocked
    upstream.get(STATUS, **row.responses_kwargs())
    if row.calls > 1 and row.status == OK:
        upstream.get(STATUS, json={"revoked": False})
    certificate = issuing.issue(p256_key())
    status = check(row, lambda: backend.revocation_status(certificate, TARGET), caplog)
    if status is not None:
        final = row.answer if row.calls == 1 else {"status": 200, "json": {"revoked": False}}
        assert (status.known, status.revoked) == (final["status"] == 200, final["json"].get("revoked") is True)
    assert len(upstream.calls) == row.calls
    assert f"/{certificate.serial_number:X}/revocationstatus" in upstream.calls[0].request.url
