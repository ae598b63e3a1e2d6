"""Each check of what CFSSL issued, on certificates made to differ in exactly one way
(the real server's own deviations, profile fallback and dropped attributes, are in
test_backend.py)."""

from __future__ import annotations

import pytest
from cryptography import x509

from est_gateway.errors import UpstreamError
from est_gateway_cfssl.issued import check_issued
from est_gateway_cfssl.options import CfsslTarget
from tests.support.pki import CA, make_csr, p256_key

TARGET = CfsslTarget(label="primary", profile="est-client")


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.create("Issued Check CA")


def test_the_expected_certificate_passes(ca: CA) -> None:
    key = p256_key()
    sans: list[x509.GeneralName] = [x509.DNSName("d.example")]
    check_issued(ca.issue(key, cn="d", sans=sans), make_csr(key, cn="d", sans=sans), ca.cert, TARGET, "t")


@pytest.mark.parametrize(("change", "reason"), [
    ("key", "another key"),
    ("sans", "subjectAltName differs"),
    ("subject", "subject differs from the CSR's in CN"),
    ("signer", "not signed by the CA certificate"),
    ("eku", "lacks the extended key usage clientAuth"),
])
def test_one_difference_is_a_502_naming_it(ca: CA, change: str, reason: str) -> None:
    key = p256_key()
    csr = make_csr(key, cn="d", sans=[x509.DNSName("d.example")])
    issuer = CA.create("Issued Check CA") if change == "signer" else ca
    cert = issuer.issue(p256_key() if change == "key" else key, cn="e" if change == "subject" else "d",
                        sans=[x509.DNSName("other.example" if change == "sans" else "d.example")],
                        eku=("serverAuth",) if change == "eku" else ("clientAuth",))
    with pytest.raises(UpstreamError, match=reason) as caught:
        check_issued(cert, csr, ca.cert, TARGET, "t")
    assert caught.value.status == 502
