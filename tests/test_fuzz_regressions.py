"""Inputs the fuzzers found, kept as plain reproducers, plus fixed hostile samples that a
random search is unlikely to build (CSRs signed with SHA-1/MD5 by openssl, unknown key
algorithms, path tricks). Same invariant as tests/test_fuzz_hypothesis.py."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import der
from tests.support.inproc import InProcessGateway, check_response, start, valid_csr_der

ENROLL = "/.well-known/est/simpleenroll"
PKCS10 = ("Content-Type", "application/pkcs10")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    yield start(tmp_path_factory.mktemp("regress") / "est-local")


def _enroll(gw: InProcessGateway, der_bytes: bytes):  # type: ignore[no-untyped-def]
    response = gw.request("POST", ENROLL, headers=[PKCS10, *gw.auth().items()],
                          body=base64.encodebytes(der_bytes))
    check_response(response, method="POST", what=der_bytes.hex())
    return response


def _with_oid(csr: bytes, old: bytes, new: bytes) -> bytes:
    assert csr.count(old) == 1
    return csr.replace(old, new)


EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")          # 1.2.840.10045.2.1
P256 = bytes.fromhex("06082a8648ce3d030107")                  # 1.2.840.10045.3.1.7


@pytest.mark.parametrize("case", [
    # Found by test_csr_broken_at_every_der_level (one bit flipped in the key algorithm OID):
    # the CSR parses, but csr.public_key() raises cryptography's UnsupportedAlgorithm.
    "unknown key algorithm 1.3.840.10045.2.1",
    "unknown named curve 1.2.840.10045.3.1.99",
    "RSA OID with an EC key",
])
def test_csr_with_an_unknown_public_key_algorithm_is_400(gw: InProcessGateway, case: str) -> None:
    csr = valid_csr_der("odd-key")
    if case.startswith("unknown key"):
        mutated = _with_oid(csr, EC_PUBLIC_KEY, bytes.fromhex("06072b8648ce3d0201"))
    elif case.startswith("unknown named"):
        mutated = _with_oid(csr, P256, bytes.fromhex("06082a8648ce3d030163"))
    else:   # the key's AlgorithmIdentifier says rsaEncryption, the key bits are an EC point
        nodes = der.walk(csr)
        algorithm = next(n for n in nodes if n.tag == 0x30 and csr[n.content:].startswith(EC_PUBLIC_KEY))
        mutated = der.replace_content_nested(csr, nodes, algorithm, bytes.fromhex("06092a864886f70d0101010500"))
    assert _enroll(gw, mutated).status_code == 400


@pytest.mark.parametrize("version", [1, 2, 0x7F])
def test_csr_with_an_unknown_version_is_400(gw: InProcessGateway, version: int) -> None:
    """Found by test_csr_broken_at_every_der_level (INTEGER version 0 → 1): cryptography's
    load_der_x509_csr raises x509.InvalidVersion, which is not a ValueError."""
    csr = valid_csr_der("odd-version")
    nodes = der.walk(csr)
    version_node = nodes[2]
    assert (version_node.tag, csr[version_node.content]) == (0x02, 0)
    assert _enroll(gw, der.replace_content(csr, version_node, bytes([version]))).status_code == 400


@pytest.mark.parametrize("path", [
    # Found by test_paths_and_methods: werkzeug merges slashes with a 308 redirect whose body
    # is HTML (and whose Location is built from the Host header the client sent).
    "/.well-known/est//cacerts",
    "/.well-known/est//.",
    "//.well-known/est/cacerts",
    "/.well-known//est/simpleenroll",
])
def test_double_slashes_get_a_text_answer_not_a_redirect(gw: InProcessGateway, path: str) -> None:
    response = gw.request("GET", path, headers=[("Host", "attacker.example")])
    check_response(response, what=path)
    assert "attacker.example" not in response.headers.get("Location", "")


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_csrs_signed_with_weak_hashes_are_refused(gw: InProcessGateway, tmp_path: Path, digest: str) -> None:
    """openssl still signs with SHA-1/MD5 where cryptography will not; refused with 400."""
    out = tmp_path / "weak.der"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(tmp_path / "k.pem"), "-subj", "/CN=weak-hash", f"-{digest}",
                    "-outform", "DER", "-out", str(out)], check=True, capture_output=True, timeout=30)
    response = _enroll(gw, out.read_bytes())
    assert response.status_code == 400, response.get_data()
