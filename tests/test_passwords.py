"""Password hashing and the per-worker memory of a verified password."""

from __future__ import annotations

import threading
import time

import pytest

from est_gateway.passwords import PasswordChecker, PasswordHash, _Flight
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


def test_a_refused_password_is_refused_again_without_a_hash_and_scopes_are_separate() -> None:
    stored = _hash("right")
    checker = PasswordChecker(60)
    for _ in range(3):
        assert not checker.verify("est", stored, "wrong")
    assert CountingHash.calls == 1                         # a repeated guess costs one hash
    assert not checker.verify("est", stored, "wrong-2")
    assert CountingHash.calls == 2
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


class BlockingHash(CountingHash):
    """Counts, and holds each computation until released (the first may fail once)."""

    release = threading.Event()
    fail_first = False

    def verify(self, password: str) -> bool:
        type(self).calls += 1
        assert type(self).release.wait(30)
        if type(self).fail_first and type(self).calls == 1:
            raise MemoryError("no memory for scrypt")
        return PasswordHash.verify(self, password)


def _blocking(password: str, *, fail_first: bool = False) -> BlockingHash:
    h = PasswordHash.create(password, log_n=10)
    BlockingHash.calls, BlockingHash.release, BlockingHash.fail_first = 0, threading.Event(), fail_first
    return BlockingHash(h.log_n, h.r, h.p, h.salt, h.digest)


class CountedEvent(threading.Event):
    """An Event that counts the threads waiting on it."""

    waiting = 0

    def wait(self, timeout: float | None = None) -> bool:
        type(self).waiting += 1
        return super().wait(timeout)


class CountedFlight(_Flight):
    def __init__(self) -> None:
        super().__init__()
        self.done = CountedEvent()


def _presented_at_once(checker: PasswordChecker, stored: PasswordHash, password: str,
                       count: int = 8) -> list[object]:
    """``count`` threads present ``password``; the first verification is held until all the
    others wait for it."""
    results: list[object] = []
    CountedEvent.waiting = 0

    def present() -> None:
        try:
            results.append(checker.verify("est", stored, password))
        except MemoryError as exc:
            results.append(exc)

    threads = [threading.Thread(target=present) for _ in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10     # every other thread waits for the first's result
    while CountedEvent.waiting < count - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    BlockingHash.release.set()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize(("password", "ok"), [("right", True), ("wrong", False)])
def test_one_password_presented_at_once_is_hashed_once_whatever_max_hashing(
        password: str, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default max_hashing (2), eight requests presenting one password when the
    memory has expired run one scrypt (16 MiB), not two at once."""
    monkeypatch.setattr("est_gateway.passwords._Flight", CountedFlight)
    stored = _blocking("right")
    results = _presented_at_once(PasswordChecker(60), stored, password)
    assert results == [ok] * 8
    assert BlockingHash.calls == 1


def test_when_a_verification_fails_with_an_error_the_waiting_ones_verify_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("est_gateway.passwords._Flight", CountedFlight)
    stored = _blocking("right", fail_first=True)
    results = _presented_at_once(PasswordChecker(60), stored, "right", count=4)
    assert sum(isinstance(r, MemoryError) for r in results) == 1
    assert results.count(True) == 3
    assert BlockingHash.calls == 2       # the failed one, then one for the three waiting
