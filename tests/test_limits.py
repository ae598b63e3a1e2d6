"""Input limits and the authentication-failure throttle (units; end to end in test_e2e_hardening)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from est_gateway.errors import BadRequest, TooManyRequests
from est_gateway.limits import FailureThrottle, Limits
from tests.support import openssl
from tests.support.clock import FakeClock
from tests.support.pki import huge_exponent_rsa_key, make_csr, p256_key, rsa_key

LIMITS = Limits()


def test_good_keys_pass() -> None:
    LIMITS.check_csr_key(make_csr(rsa_key(2048)))
    LIMITS.check_csr_key(make_csr(p256_key()))


def test_small_rsa_is_refused() -> None:
    with pytest.raises(BadRequest, match="RSA keys must have 2048 to 8192 bits, not 1024"):
        LIMITS.check_csr_key(make_csr(rsa_key(1024)))


def test_a_huge_rsa_public_exponent_is_refused() -> None:
    """Verifying with a 3000-bit exponent costs ~180 times the usual: refused for CSRs and,
    through the same check, for every key of a presented client-certificate chain."""
    with pytest.raises(BadRequest, match="RSA public exponents must be odd, from 3 to 2147483647"):
        LIMITS.check_csr_key(make_csr(huge_exponent_rsa_key()))
    assert LIMITS.public_key_refusal(huge_exponent_rsa_key().public_key()) is not None
    assert LIMITS.public_key_refusal(rsa_key(2048).public_key()) is None


def test_curve_outside_the_list_is_refused() -> None:
    with pytest.raises(BadRequest, match="EC curve secp256k1 is not accepted"):
        LIMITS.check_csr_key(make_csr(ec.generate_private_key(ec.SECP256K1())))


def test_sha1_signature_is_refused(tmp_path: Path) -> None:
    # cryptography will not sign with SHA-1 any more; openssl still does, as old devices do.
    der = openssl.run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k"),
                      "-subj", "/CN=sha1-device", "-sha1", "-outform", "DER")
    with pytest.raises(BadRequest, match="signed with SHA1, which is not accepted"):
        LIMITS.check_csr_key(x509.load_der_x509_csr(der))


def test_subject_and_san_counts_and_lengths() -> None:
    small = Limits(max_subject_attributes=2, max_sans=1, max_value_length=16)
    with pytest.raises(BadRequest, match="subject has 3 attributes; at most 2"):
        small.check_csr_names(make_csr(p256_key(), attrs=[("ORGANIZATION_NAME", "A"), ("COUNTRY_NAME", "SE")]))
    with pytest.raises(BadRequest, match="asks for 2 subjectAltNames; at most 1"):
        small.check_csr_names(make_csr(p256_key(), sans=[x509.DNSName("a.example"), x509.DNSName("b.example")]))
    with pytest.raises(BadRequest, match="a subjectAltName is longer than 16"):
        small.check_csr_names(make_csr(p256_key(), sans=[x509.DNSName("a-long-name.example.org")]))
    with pytest.raises(BadRequest, match="a subject value is longer than 16"):
        small.check_csr_names(make_csr(p256_key(), cn="a-rather-long-common-name"))
    small.check_csr_names(make_csr(p256_key(), cn="ok", sans=[x509.DNSName("a.example")]))




def test_throttle_opens_after_the_limit_and_closes_when_the_window_ends() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(3, clock=clock)
    for _ in range(3):
        throttle.check("192.0.2.1")
        throttle.failed("192.0.2.1")
        clock.now += 1
    with pytest.raises(TooManyRequests) as info:
        throttle.check("192.0.2.1")
    assert info.value.retry_after == 58           # the window opened 3 s ago
    throttle.check("192.0.2.2")                    # other addresses are not affected
    clock.now += 58
    throttle.check("192.0.2.1")                    # the window has ended
    throttle.failed("192.0.2.1")                   # and a new one counts from 1
    throttle.check("192.0.2.1")


def test_throttle_is_shared_with_forked_workers() -> None:
    """Counters live in shared memory: failures seen by a child process count in the parent."""
    throttle = FailureThrottle(2)
    ctx = multiprocessing.get_context("fork")
    for _ in range(2):
        child = ctx.Process(target=throttle.failed, args=("192.0.2.9",))
        child.start()
        child.join(10)
        assert child.exitcode == 0
    with pytest.raises(TooManyRequests):
        throttle.check("192.0.2.9")


def test_throttle_off_when_zero() -> None:
    throttle = FailureThrottle(0)
    for _ in range(100):
        throttle.failed("192.0.2.1")
    throttle.check("192.0.2.1")
