"""Whatever a client sends the publication app, it answers an OCSP response, a CRL or a
short text/plain refusal; never a 500 (property-based, in process)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from est_gateway.publication.app import create_publication_app
from tests.support.publication import OCSP_PATH, publishing_config, started


@dataclass
class Target:
    client: FlaskClient
    #: a valid request about a certificate on record, with a nonce
    valid: bytes


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    published = started(publishing_config(tmp_path_factory.mktemp("fuzz")))
    cert = published.enroll()
    valid = (ocsp.OCSPRequestBuilder().add_certificate(cert, published.issuer, hashes.SHA1())
             .add_extension(x509.OCSPNonce(b"n" * 16), critical=False).build().public_bytes(Encoding.DER))
    yield Target(create_publication_app(published.config).test_client(), valid)
    published.backend.close()


def answered_as_ocsp(client: FlaskClient, method: str, path: str, body: bytes = b"") -> None:
    answer = client.open(path, method=method, data=body, headers={"Content-Type": "application/ocsp-request"})
    assert answer.status_code == 200, answer.data
    ocsp.load_der_ocsp_response(answer.data)      # parses: a status, maybe an answer


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """The valid request with bytes replaced, cut off, inserted or removed."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "cut", "insert", "remove"]))
        if action == "replace" and where < len(data):
            data[where] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[where:]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif where < len(data):
            del data[where]
    return bytes(data)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_a_mutated_request_gets_an_ocsp_response(target: Target, data: st.DataObject) -> None:
    body = data.draw(mutated(target.valid))
    answered_as_ocsp(target.client, "POST", OCSP_PATH, body)
    answered_as_ocsp(target.client, "GET", f"{OCSP_PATH}/{base64.b64encode(body).decode()}")


@FUZZ
@given(body=st.binary(max_size=2048))
def test_any_body_gets_an_ocsp_response(target: Target, body: bytes) -> None:
    answered_as_ocsp(target.client, "POST", OCSP_PATH, body)


@FUZZ
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
       path=st.text(st.characters(codec="latin-1"), max_size=300))
def test_any_path_and_method_get_an_allowed_status(target: Target, method: str, path: str) -> None:
    answer = target.client.open("/" + path.lstrip("/"), method=method)
    assert answer.status_code in (200, 400, 404, 405, 413, 415), answer.data
    if answer.status_code != 200:
        assert answer.content_type.startswith("text/plain")
