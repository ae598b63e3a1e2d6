"""Wire formats: base64 in every shape clients send, PKCS#10 checks, PKCS#7 certs-only."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from asn1crypto import csr as acsr
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway import wire
from est_gateway.errors import BadRequest
from tests.support.pki import CA, csr_der, make_csr, p256_key, rsa_key

CSR = make_csr(p256_key(), cn="wire-test")
DER = csr_der(CSR)
B64 = base64.b64encode(DER)


def _wrap(text: bytes, width: int, eol: bytes) -> bytes:
    return eol.join(text[i:i + width] for i in range(0, len(text), width)) + eol


@pytest.mark.parametrize("body", [
    B64,                                   # one line, no newline (RFC 8951: no whitespace required)
    _wrap(B64, 64, b"\n"),                 # libest: 64 columns, LF
    _wrap(B64, 76, b"\r\n"),               # globalsign: 76 columns, CRLF
    b"  " + _wrap(B64, 10, b" \t\r\n"),    # spaces and tabs anywhere
    B64 + b"\n\n\n",
], ids=["unwrapped", "lf64", "crlf76", "ws-anywhere", "trailing-newlines"])
def test_base64_bodies_in_every_shape_decode_to_the_same_der(body: bytes) -> None:
    assert wire.decode_base64_body(body) == DER


@pytest.mark.parametrize("body, reason", [
    (b"", "empty"),
    (b"  \r\n", "empty"),
    (b"not base64 at all!", "not valid base64"),
    (B64[:-3], "not valid base64"),        # truncated: wrong padding
])
def test_bad_base64_is_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        wire.decode_base64_body(body)


def test_encoded_bodies_are_wrapped_at_64_with_a_trailing_newline() -> None:
    out = wire.encode_base64_body(DER)
    lines = out.split(b"\n")
    assert out.endswith(b"\n")
    assert all(len(line) == 64 for line in lines[:-2])
    assert 0 < len(lines[-2]) <= 64
    assert base64.b64decode(out) == DER


def test_valid_csr_parses() -> None:
    assert wire.parse_csr(DER).subject == CSR.subject


def test_der_that_is_not_a_csr_is_refused() -> None:
    cert = CA.create().cert
    with pytest.raises(ValueError, match="not a DER PKCS#10"):
        wire.parse_csr(cert.public_bytes(Encoding.DER))


def test_csr_with_broken_signature_is_refused() -> None:
    der = bytearray(csr_der(make_csr(rsa_key(), cn="sig-test")))
    der[-5] ^= 0xFF                     # inside the signature BIT STRING
    with pytest.raises(ValueError, match="signature does not verify"):
        wire.parse_csr(bytes(der))


def test_pkcs7_round_trip_is_the_same_set_of_certificates() -> None:
    certs = [CA.create(f"CA {i}").cert for i in range(3)]
    der = wire.certs_only(certs)
    back = wire.read_certs_only(der)
    assert len(back) == 3
    assert set(back) == set(certs)  # a SET OF: order carries no meaning


def test_pkcs7_is_readable_by_openssl(tmp_path: Path) -> None:
    certs = [CA.create("openssl-read").cert]
    path = tmp_path / "p7.der"
    path.write_bytes(wire.certs_only(certs))
    out = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-in", str(path), "-print_certs"],
                         capture_output=True, text=True, check=True).stdout
    assert "CN = openssl-read" in out or "CN=openssl-read" in out


def test_requested_sans_are_the_extension_requests() -> None:
    sans = [x509.DNSName("a.example"), x509.RFC822Name("a@example.com")]
    with_sans = make_csr(p256_key(), cn="sans", sans=sans)
    assert wire.requested_sans(with_sans) == sans
    assert wire.requested_sans(make_csr(p256_key(), cn="none")) == []


def test_a_duplicated_extension_request_is_refused() -> None:
    """Two subjectAltName extensions in one CSR: 400, never the first or the second."""
    request = acsr.CertificationRequest.load(csr_der(make_csr(p256_key(), cn="dup",
                                                                sans=[x509.DNSName("a.example")])))
    extensions = request["certification_request_info"]["attributes"][0]["values"][0]
    extensions.append(extensions[0].copy())
    duplicated = x509.load_der_x509_csr(request.dump(force=True))
    with pytest.raises(BadRequest, match="CSR extension request is malformed"):
        wire.requested_sans(duplicated)
