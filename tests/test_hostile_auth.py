"""Floods of wrong passwords, in process with threads: the throttle counts a guess before
its hash runs, and a worker's password checks are bounded in number, per worker and per
address, so a flood neither passes the limit nor holds every request thread."""

from __future__ import annotations

import base64
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import threading
from collections.abc import Callable
from pathlib import Path

from est_gateway import wire
from est_gateway.errors import TooManyRequests
from est_gateway.limits import FailureThrottle
from est_gateway.operations import MAX_PASSWORD_CHECKS
from est_gateway.passwords import PasswordChecker
from est_gateway.web.app import service_of
from tests.support.gated_hash import gate_password
from tests.support.inproc import InProcessGateway, start, valid_csr_der

ENROLL = "/.well-known/est/simpleenroll"
PKCS10 = ("Content-Type", "application/pkcs10")


def _gateway(tmp_path: Path, extra: str = "") -> InProcessGateway:
    return start(tmp_path / "est-local", extra)


def _enroll(gw: InProcessGateway, address: str, password: str = "wrong") -> tuple[int, str | None]:
    response = gw.request("POST", ENROLL, headers=[PKCS10, *gw.auth(password).items()], body=b"",
                          environ={"REMOTE_ADDR": address})
    return response.status_code, response.headers.get("Retry-After")


def _at_once(count: int, fn: Callable[[int], tuple[int, str | None]]) -> tuple[list[threading.Thread],
                                                                               list[tuple[int, str | None]]]:
    """Start ``count`` threads calling ``fn(i)`` together; their answers as they come."""
    barrier = threading.Barrier(count)
    answers: list[tuple[int, str | None]] = []

    def run(i: int) -> None:
        barrier.wait(30)
        answers.append(fn(i))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return threads, answers


def _join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(60)
        assert not t.is_alive()


def _wait_for(predicate: Callable[[], bool], timeout: float = 20) -> bool:
    done = threading.Event()
    for _ in range(int(timeout * 100)):
        if predicate():
            return True
        done.wait(0.01)
    return predicate()


# -- the throttle counts before the check ---------------------------------------------------

def _reserve_and_hold(throttle: FailureThrottle, address: str, count: int, hold: Callable[[], object],
                      results: list[str], reserved: Callable[[], None] = lambda: None) -> None:
    """``count`` threads start a costly check at once; each reservation is held until
    ``hold()`` returns, which every thread calls once all have reserved or been refused
    (``reserved`` runs then)."""
    barrier = threading.Barrier(count)
    decided = threading.Barrier(count, action=reserved)

    def one() -> None:
        barrier.wait(30)
        attempt = throttle.begin(address, "est")
        try:
            attempt = throttle.reserve(attempt)
        except TooManyRequests:
            results.append("429")
            decided.wait(30)
            return
        results.append("checked")
        decided.wait(30)
        hold()
        throttle.end(attempt, failed=True)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    _join(threads)


def test_guesses_from_a_fresh_address_at_once_are_counted_before_their_check() -> None:
    """120 costly checks at once from an address that never failed: the limit is checked,
    the rest get 429 (main checked every one: 120 × 401)."""
    throttle = FailureThrottle(10)
    results: list[str] = []
    _reserve_and_hold(throttle, "198.51.100.7", 120, lambda: None, results)
    assert results.count("checked") == 10 and results.count("429") == 110
    try:
        throttle.begin("198.51.100.7", "est")
        raise AssertionError("the address has failed 10 times: 429 expected")
    except TooManyRequests as exc:
        assert exc.retry_after is not None and exc.retry_after > 1


def _child(throttle: FailureThrottle, address: str, conn: multiprocessing.connection.Connection,
           release: multiprocessing.synchronize.Event) -> None:
    results: list[str] = []
    _reserve_and_hold(throttle, address, 30, lambda: release.wait(60), results,
                      reserved=lambda: conn.send(results.count("checked")))


def test_the_count_before_the_check_holds_across_forked_workers() -> None:
    """Three forked workers, 30 guesses each, every reservation held until all 90 have been
    decided: at most the limit are checked in all."""
    throttle = FailureThrottle(10)
    ctx = multiprocessing.get_context("fork")
    release = ctx.Event()
    pipes = [ctx.Pipe() for _ in range(3)]
    children = [ctx.Process(target=_child, args=(throttle, "198.51.100.8", child, release))
                for _, child in pipes]
    for c in children:
        c.start()
    checked = [parent.recv() if parent.poll(60) else -1 for parent, _ in pipes]
    release.set()
    for c in children:
        c.join(30)
    assert -1 not in checked and sum(checked) == 10


def test_a_flood_from_a_fresh_address_checks_at_most_the_limit_through_the_app(tmp_path: Path) -> None:
    gw = _gateway(tmp_path)
    service_of(gw.app).passwords = PasswordChecker(60, max_hashing=200, max_checks=200, max_per_address=200)
    gate = gate_password(gw)
    threads, answers = _at_once(120, lambda i: _enroll(gw, "198.51.100.9", f"guess-{i}"))
    assert _wait_for(lambda: len(answers) == 110)   # refused at once, before any check
    assert gate.started == 10
    gate.release()
    _join(threads)
    statuses = [s for s, _ in answers]
    assert statuses.count(401) == 10 and statuses.count(429) == 110
    assert all(retry for s, retry in answers if s == 429)
    assert _enroll(gw, "198.51.100.9", gw.password)[0] == 429    # the window holds


# -- password checks are bounded per worker and per address ----------------------------------

def test_a_flood_of_checks_holds_a_bounded_number_of_threads_and_starves_no_one(tmp_path: Path) -> None:
    """With the hash stuck, 60 wrong passwords from each of two addresses: at most half the
    worker's checks per address are admitted, the rest refused at once with Retry-After; a
    cached password, cacerts and a renewal are answered meanwhile."""
    gw = _gateway(tmp_path, "[limits]\nauth_failures_per_minute = 1000\n")
    checker = service_of(gw.app).passwords
    assert checker.max_checks <= MAX_PASSWORD_CHECKS
    per_address = checker.max_per_address
    assert 1 <= per_address < checker.max_checks
    # a device enrolls first: its password is remembered, its certificate can renew
    csr = base64.encodebytes(valid_csr_der("flood-device"))
    ok = gw.request("POST", ENROLL, headers=[PKCS10, *gw.auth().items()], body=csr)
    assert ok.status_code == 200
    cert = wire.read_certs_only(base64.b64decode(ok.get_data()))[0]

    gate = gate_password(gw)
    flood_a, answers_a = _at_once(60, lambda i: _enroll(gw, "203.0.113.1", f"a-guess-{i}"))
    assert _wait_for(lambda: len(answers_a) == 60 - per_address)
    flood_b, answers_b = _at_once(60, lambda i: _enroll(gw, "203.0.113.2", f"b-guess-{i}"))
    assert _wait_for(lambda: len(answers_b) == 60 - per_address)
    assert all(s == 429 and retry for s, retry in answers_a + answers_b)
    # a third address finds the worker's checks taken: 503 at once
    if 2 * per_address >= checker.max_checks:
        status, retry = _enroll(gw, "203.0.113.3")
        assert status == 503 and retry
    stuck = len(checker._flights)
    assert stuck <= checker.max_checks

    # requests that need no hash go through while the flood is stuck
    assert gw.request("GET", "/.well-known/est/cacerts").status_code == 200
    cached = gw.request("POST", ENROLL, headers=[PKCS10, *gw.auth().items()],
                        body=base64.encodebytes(valid_csr_der("flood-device-2")),
                        environ={"REMOTE_ADDR": "203.0.113.1"})
    assert cached.status_code == 200
    renewal = gw.request("POST", "/.well-known/est/simplereenroll", headers=[PKCS10], body=csr,
                         tls=gw.tls_with(cert))
    assert renewal.status_code == 200, renewal.get_data()
    assert len(checker._flights) == stuck and gate.started <= checker.max_checks

    gate.release()
    _join(flood_a + flood_b)
    statuses = [s for s, _ in answers_a + answers_b]
    assert statuses.count(401) == 2 * per_address


def test_a_guess_repeated_costs_one_hash_and_no_wait(tmp_path: Path) -> None:
    """40 requests with one wrong password at once: one hash (the others wait for it), then
    the same guess is refused from the worker's memory without a hash or a wait."""
    gw = _gateway(tmp_path, "[limits]\nauth_failures_per_minute = 1000\n")
    gate = gate_password(gw)
    flood, answers = _at_once(40, lambda i: _enroll(gw, "203.0.113.9", "the-same-guess"))
    assert gate.wait_started(1)
    gate.release()
    _join(flood)
    assert [s for s, _ in answers] == [401] * 40 and gate.started == 1
    gate_again = gate_password(gw)      # counts the hashes from here on
    gate_again.release()
    assert [_enroll(gw, f"203.0.113.{10 + i}", "the-same-guess")[0] for i in range(5)] == [401] * 5
    assert gate_again.started == 0
