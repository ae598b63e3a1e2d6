"""Password hashing and the per-worker memory of a verified password."""

from __future__ import annotations

import pytest

from est_gateway.passwords import PasswordChecker, PasswordHash
from tests.support.clock import FakeClock


class CountingHash(PasswordHash):
    """A real scrypt hash that counts how often it is computed."""

    calls = 0

    def verify(self, password: str) -> bool:
        type(self).calls += 1
        return super().verify(password)


def _hash(password: str) -> CountingHash:
    h = PasswordHash.create(password, log_n=10)
    CountingHash.calls = 0
    return CountingHash(h.log_n, h.r, h.p, h.salt, h.digest)


def test_hash_round_trip_and_no_secret_in_repr() -> None:
    h = PasswordHash.create("open sesame", log_n=10)
    again = PasswordHash.parse(h.render())
    assert again.verify("open sesame") and not again.verify("open sesame!")
    assert "open" not in repr(h) and h.render() not in repr(h)


@pytest.mark.parametrize("text", ["", "scrypt$14$8$1$abc", "scrypt$99$8$1$AAAAAAAAAAA=$" + "A" * 44,
                                  "bcrypt$x$y$z$a$b"])
def test_malformed_hashes_are_explained(text: str) -> None:
    with pytest.raises(ValueError):
        PasswordHash.parse(text)




def test_a_verified_password_is_remembered_until_it_expires() -> None:
    stored, clock = _hash("right"), FakeClock(0.0)
    checker = PasswordChecker(60, clock=clock)
    assert checker.verify("est", stored, "right")
    assert checker.verify("est", stored, "right")
    assert CountingHash.calls == 1                        # the second check skipped scrypt
    assert not checker.verify("est", stored, "wrong")     # a different password still hashes
    assert CountingHash.calls == 2
    clock.now = 61
    assert checker.verify("est", stored, "right")
    assert CountingHash.calls == 3                        # expired: hashed again


def test_failures_are_never_remembered_and_scopes_are_separate() -> None:
    stored = _hash("right")
    checker = PasswordChecker(60)
    for _ in range(3):
        assert not checker.verify("est", stored, "wrong")
    assert CountingHash.calls == 3
    assert checker.verify("est", stored, "right")
    other = _hash("other")
    assert not checker.verify("newkey", other, "right")   # remembered for "est" only


def test_memory_can_be_turned_off() -> None:
    stored = _hash("right")
    checker = PasswordChecker(0)
    assert checker.verify("est", stored, "right") and checker.verify("est", stored, "right")
    assert CountingHash.calls == 2


def test_threads_queued_behind_a_verification_reuse_its_result() -> None:
    """After the memory expires, eight threads presenting the same password run scrypt once."""
    import threading

    stored = _hash("right")
    checker = PasswordChecker(60, max_hashing=1)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(checker.verify("est", stored, "right")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [True] * 8
    assert CountingHash.calls == 1
