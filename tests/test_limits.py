"""Input limits and the authentication-failure throttle (units; end to end in test_e2e_hardening)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

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




def _fail(throttle: FailureThrottle, address: str, scope: str = "est") -> None:
    throttle.end(throttle.begin(address, scope), failed=True)


def test_throttle_opens_after_the_limit_and_closes_when_the_window_ends() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(3, clock=clock)
    for _ in range(3):
        _fail(throttle, "192.0.2.1")
        clock.now += 1
    with pytest.raises(TooManyRequests) as info:
        throttle.begin("192.0.2.1", "est")
    assert info.value.retry_after == 58           # the window opened 3 s ago
    throttle.begin("192.0.2.2", "est")             # other addresses are not affected
    clock.now += 58
    throttle.begin("192.0.2.1", "est")             # the window has ended
    _fail(throttle, "192.0.2.1")                   # and a new one counts from 1
    throttle.begin("192.0.2.1", "est")


def test_throttle_is_shared_with_forked_workers() -> None:
    """Counters live in shared memory: failures seen by a child process count in the parent."""
    throttle = FailureThrottle(2)
    ctx = multiprocessing.get_context("fork")
    for _ in range(2):
        child = ctx.Process(target=_fail, args=(throttle, "192.0.2.9"))
        child.start()
        child.join(10)
        assert child.exitcode == 0
    with pytest.raises(TooManyRequests):
        throttle.begin("192.0.2.9", "est")


def test_throttle_off_when_zero() -> None:
    throttle = FailureThrottle(0)
    for _ in range(100):
        _fail(throttle, "192.0.2.1")
    throttle.begin("192.0.2.1", "est")


def test_throttle_never_refuses_an_address_that_did_not_fail() -> None:
    """Issue 10 §3: 1,200 failing addresses made 45 of 200 fresh addresses get 429 (shared
    buckets). Counters are per exact address: the fresh ones are never refused."""
    throttle = FailureThrottle(10)
    for i in range(1200):
        for _ in range(10):
            _fail(throttle, f"10.{i >> 8}.{i & 255}.1")
    refused = 0
    for i in range(200):
        try:
            throttle.begin(f"172.16.{i}.9", "est")
        except TooManyRequests:
            refused += 1
    assert refused == 0
    with pytest.raises(TooManyRequests):          # while the failing ones still are
        throttle.begin("10.0.7.1", "est")


def test_throttle_memory_is_bounded_by_forgetting_the_oldest() -> None:
    """More failing addresses than entries: the oldest are forgotten, the newest still count,
    and no fresh address is ever refused."""
    clock = FakeClock()
    throttle = FailureThrottle(2, entries=1024, clock=clock)
    for i in range(5000):
        clock.now += 0.001
        _fail(throttle, f"10.{i >> 8}.{i & 255}.1")
        _fail(throttle, f"10.{i >> 8}.{i & 255}.1")
    with pytest.raises(TooManyRequests):
        throttle.begin("10.19.135.1", "est")      # the last one (4999)
    forgotten = 0
    for i in range(1000):
        try:
            throttle.end(throttle.begin(f"10.{i >> 8}.{i & 255}.1", "est"), failed=False)
        except TooManyRequests:
            pass
        else:
            forgotten += 1
    assert forgotten > 900                          # the oldest 1000 are (nearly) all gone
    for i in range(200):
        throttle.begin(f"172.16.{i}.9", "est")


def test_throttle_counts_ipv6_by_64_and_ipv4_mapped_as_ipv4() -> None:
    throttle = FailureThrottle(2)
    _fail(throttle, "2001:db8:1:2::1")
    _fail(throttle, "2001:db8:1:2:ffff::99")        # same /64
    with pytest.raises(TooManyRequests):
        throttle.begin("2001:db8:1:2::abcd", "est")
    throttle.begin("2001:db8:1:3::1", "est")      # the next /64 is someone else
    _fail(throttle, "::ffff:192.0.2.5")
    _fail(throttle, "192.0.2.5")
    with pytest.raises(TooManyRequests):
        throttle.begin("192.0.2.5", "est")


def test_failures_on_one_label_do_not_throttle_another_unless_configured() -> None:
    throttle = FailureThrottle(2, scopes=("est", "other"))
    _fail(throttle, "192.0.2.1", "other")
    _fail(throttle, "192.0.2.1", "other")
    with pytest.raises(TooManyRequests):
        throttle.begin("192.0.2.1", "other")
    throttle.begin("192.0.2.1", "est")
    shared = FailureThrottle(2, scopes=("est", "other"), per_label=False)
    _fail(shared, "192.0.2.1", "other")
    _fail(shared, "192.0.2.1", "other")
    with pytest.raises(TooManyRequests):
        shared.begin("192.0.2.1", "est")


def test_throttle_holds_under_concurrent_guesses() -> None:
    """Issue 10 §3: 40 guesses at once gave 25 failures before the first 429. Once an
    address has failed, attempts in flight count: concurrent guesses never pass the limit."""
    throttle = FailureThrottle(10)
    _fail(throttle, "192.0.2.1")
    barrier = threading.Barrier(40)
    outcomes: list[str] = []

    def guess() -> None:
        try:
            attempt = throttle.begin("192.0.2.1", "est")
        except TooManyRequests:
            outcomes.append("429")
            barrier.wait(30)
            return
        barrier.wait(30)                            # every guess is in flight at once
        throttle.end(attempt, failed=True)
        outcomes.append("failed")

    threads = [threading.Thread(target=guess) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 40
    assert 1 + outcomes.count("failed") == 10
    with pytest.raises(TooManyRequests):
        throttle.begin("192.0.2.1", "est")


def test_a_success_releases_its_reservation() -> None:
    throttle = FailureThrottle(3)
    _fail(throttle, "192.0.2.1")
    for _ in range(50):                             # successes after a failure never add up
        throttle.end(throttle.begin("192.0.2.1", "est"), failed=False)
    throttle.begin("192.0.2.1", "est")


def test_until_a_key_fails_an_attempt_takes_no_lock_and_looks_nothing_up() -> None:
    """The common case, no failure anywhere within a window, takes none of the lookup's
    cost; once any key has failed, every key is looked up again until a window passes."""
    clock = FakeClock()
    throttle = FailureThrottle(2, clock=clock)
    taken: list[int] = []

    class CountingLock:
        def __init__(self, lock: Any) -> None:
            self.lock = lock

        def __enter__(self) -> None:
            taken.append(1)
            self.lock.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.lock.__exit__(*exc)

    throttle._lock = CountingLock(throttle._lock)  # type: ignore[assignment]
    for i in range(20):
        throttle.end(throttle.begin(f"192.0.2.{i}", "est"), failed=False)
    assert taken == []
    _fail(throttle, "192.0.2.1")                   # recording the failure takes the lock
    throttle.begin("198.51.100.7", "est")          # then any key is looked up again
    assert len(taken) == 2
    _fail(throttle, "192.0.2.1")
    with pytest.raises(TooManyRequests):
        throttle.begin("192.0.2.1", "est")
    clock.now += 61                                # a window since the last failure
    taken.clear()
    throttle.end(throttle.begin("192.0.2.1", "est"), failed=False)
    assert taken == []
