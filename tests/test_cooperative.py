"""Local-CA enrollments in greenlets on the event-loop thread (est_gateway.server.cooperative):
their waits are handed to threads, commits of one loop pass go out as one group, errors
reach the request, and a graceful stop answers the requests still waiting."""

from __future__ import annotations

import datetime as dt
import fcntl
import gc
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import greenlet
import pytest

from est_gateway import waits
from est_gateway.backends.local import authority
from est_gateway.backends.local.store import CertificateStore, serial_hex
from est_gateway.passwords import PasswordChecker, PasswordHash
from est_gateway.server.cooperative import RequestHub
from tests.support.load import bodies, cheap_password_instance, enroll_all
from tests.support.pki import CA, p256_key

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Loop:
    """The loop's side of a hub: what the worker's event loop does with it."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="test-pool")
        self.woken = threading.Event()
        self.hub = RequestHub(self.pool, self.woken.set)

    def run_until_idle(self, timeout: float = 10.0) -> None:
        """Passes of the loop until no request waits any longer."""
        deadline = time.monotonic() + timeout
        self.hub.after_pass()
        while self.hub.busy():
            assert time.monotonic() < deadline, "requests still waiting"
            self.woken.wait(0.05)
            self.woken.clear()
            self.hub.after_pass()

    def close(self) -> None:
        self.hub.close()
        self.pool.shutdown(wait=True)


@pytest.fixture
def loop() -> Iterator[Loop]:
    it = Loop()
    yield it
    it.close()


def test_outside_a_request_greenlet_the_waits_are_plain_calls() -> None:
    here = threading.get_ident()
    assert waits.in_thread(threading.get_ident) == here
    assert waits.in_group_commit(threading.get_ident) == here
    waits.pass_turn()                                       # nothing to wait for


def test_requests_that_pass_their_turn_run_each_stage_in_a_row(loop: Loop) -> None:
    """Three requests of one pass: each checks, passes its turn, signs, passes it again,
    records. Every request's check runs before any signature, every signature before any
    record (interleaved without pass_turn: check, sign, record, check, ...), all in the
    pass they arrived in."""
    stages: list[str] = []

    def request(i: int) -> Callable[[], None]:
        def run() -> None:
            stages.append(f"check {i}")
            waits.pass_turn()
            stages.append(f"sign {i}")
            waits.pass_turn()          # passed again while the loop resumes the pass's turns
            stages.append(f"record {i}")
        return run

    for i in range(3):
        loop.hub.start(request(i))
    assert stages == [] and loop.hub.busy()                 # each first lets the pass's others be read
    loop.hub.after_pass()                                   # the end of the same pass: all go on
    assert stages == ["check 0", "check 1", "check 2", "sign 0", "sign 1", "sign 2",
                      "record 0", "record 1", "record 2"]
    assert not loop.hub.busy()


def test_commits_of_one_pass_run_together_on_the_commit_thread(loop: Loop) -> None:
    ran: list[tuple[int, int]] = []
    results: dict[int, int] = {}

    def request(i: int) -> Callable[[], None]:
        def commit() -> int:
            ran.append((i, threading.get_ident()))
            return i * 10

        def run() -> None:
            results[i] = waits.in_group_commit(commit)
        return run

    for i in range(3):
        loop.hub.start(request(i))
    assert results == {} and loop.hub.suspended == 3      # each waits; the loop goes on
    loop.run_until_idle()
    assert results == {0: 0, 1: 10, 2: 20}
    assert [i for i, _ in ran] == [0, 1, 2]
    assert len({thread for _, thread in ran}) == 1 and ran[0][1] != threading.get_ident()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_the_commit_thread_does_not_preempt_the_loop_thread(loop: Loop) -> None:
    """The commit thread runs under SCHED_BATCH (no preemption of the loop when it wakes),
    named est-commit; the loop thread and the pool keep the normal policy."""
    seen: list[tuple[int, str]] = []

    def policy_and_name() -> tuple[int, str]:
        name = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()
        return os.sched_getscheduler(0), name

    def run() -> None:
        seen.append(waits.in_group_commit(policy_and_name))
        seen.append(waits.in_thread(policy_and_name))

    loop.hub.start(run)
    loop.run_until_idle()
    assert seen[0] == (os.SCHED_BATCH, "est-commit")
    assert seen[1][0] == os.SCHED_OTHER and seen[1][1] != "est-commit"
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_an_error_in_a_wait_is_raised_in_its_request(loop: Loop) -> None:
    seen: list[BaseException] = []

    def failing() -> None:
        raise OSError("disk full")

    def run() -> None:
        try:
            waits.in_thread(failing)
        except OSError as exc:
            seen.append(exc)

    loop.hub.start(run)
    loop.run_until_idle()
    assert [str(e) for e in seen] == ["disk full"]


def test_a_password_is_hashed_on_a_pool_thread_not_on_the_loop(loop: Loop) -> None:
    """scrypt takes tens of ms: in a loop greenlet the check waits for a pool thread."""
    checker = PasswordChecker(ttl_s=60)
    stored = PasswordHash.create("s3cret", log_n=10)
    hashed_on: list[str] = []
    original = stored.verify

    def verify(password: str) -> bool:
        hashed_on.append(threading.current_thread().name)
        return original(password)

    object.__setattr__(stored, "verify", verify)
    outcome: list[bool] = []
    loop.hub.start(lambda: outcome.append(checker.verify("est", stored, "s3cret")))
    assert outcome == [] and loop.hub.suspended == 1
    loop.run_until_idle()
    assert outcome == [True] and hashed_on[0].startswith("test-pool")
    loop.hub.start(lambda: outcome.append(checker.verify("est", stored, "s3cret")))
    loop.hub.after_pass()
    assert outcome == [True, True] and not loop.hub.busy()     # remembered: no wait at all


def test_a_record_commits_on_the_commit_thread_and_is_on_disk_when_add_returns(
        loop: Loop, tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certificates.sqlite3")
    store.initialise()
    key = p256_key()
    ca = CA(key, authority.build_ca(authority.name("Coop CA"), key, issuer=None, issuer_key=None, days=30, now=NOW))
    certs = [ca.issue(p256_key(), cn=f"device-{i}") for i in range(3)]
    returned: list[str] = []

    def add(cert: Any) -> Callable[[], None]:
        def run() -> None:
            store.add(cert, ca="EST CA", alias="est", certificate_profile="default", requester="t",
                      request_id="r", issued_at=NOW)
            returned.append(serial_hex(cert.serial_number))
        return run

    for cert in certs:
        loop.hub.start(add(cert))
    assert returned == [] and loop.hub.suspended == 3
    loop.run_until_idle()
    assert sorted(returned) == sorted(serial_hex(c.serial_number) for c in certs)
    assert {r.serial for r in store.records()} == set(returned)
    store.close()


def test_the_hub_leaves_no_greenlet_of_its_own_behind(loop: Loop) -> None:
    loop.hub.start(lambda: waits.in_thread(lambda: None))
    loop.run_until_idle()
    assert not loop.hub.busy()
    assert greenlet.getcurrent().parent is None      # the test runs in the main greenlet


def test_one_greenlet_serves_request_after_request(loop: Loop) -> None:
    """A finished request's greenlet serves the next (a new one per request cost a map and
    an unmap of its frame stack); requests waiting at once each have their own."""
    seen: list[greenlet.greenlet] = []

    def request() -> None:
        seen.append(greenlet.getcurrent())
        waits.in_thread(lambda: None)

    loop.hub.start(request)
    loop.run_until_idle()
    loop.hub.start(request)
    loop.run_until_idle()
    assert seen[0] is seen[1]
    loop.hub.start(request)
    loop.hub.start(request)         # the first still waits: another greenlet
    loop.run_until_idle()
    assert seen[2] is not seen[3]
    assert seen[0] in (seen[2], seen[3])         # one of them is the kept one


def test_a_request_that_raises_reaches_the_loop_and_its_greenlet_is_not_kept(loop: Loop) -> None:
    seen: list[greenlet.greenlet] = []

    def failing() -> None:
        seen.append(greenlet.getcurrent())
        raise RuntimeError("bug in a request")

    loop.hub.start(failing)
    loop.hub.start(lambda: seen.append(greenlet.getcurrent()))    # in the same pass
    with pytest.raises(RuntimeError, match="bug in a request"):
        loop.hub.after_pass()
    assert seen[0].dead
    loop.hub.after_pass()                           # the other request still gets its turn
    assert len(seen) == 2 and seen[1] is not seen[0] and not seen[1].dead
    assert not loop.hub.busy()


def test_an_idle_greenlet_keeps_nothing_of_the_request_it_served(loop: Loop) -> None:
    """A finished request's connection (its TLS state) must not live on in the greenlet
    that waits for the next request."""

    class Connection:
        pass

    conn = Connection()
    gone = weakref.ref(conn)

    def request(c: Connection = conn) -> None:
        waits.in_thread(lambda: c)

    loop.hub.start(request)
    loop.run_until_idle()
    del conn, request
    gc.collect()
    assert gone() is None


def test_idle_greenlets_kept_are_bounded(loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("est_gateway.server.cooperative.IDLE_KEPT", 2)
    seen: list[greenlet.greenlet] = []

    def request() -> None:
        seen.append(greenlet.getcurrent())
        waits.in_thread(lambda: None)

    for _ in range(4):                 # four at once: four greenlets
        loop.hub.start(request)
    loop.run_until_idle()
    assert len(set(seen)) == 4
    assert sum(g.dead for g in seen) == 2          # two kept for the next requests, two ended
    for _ in range(3):
        loop.hub.start(request)
    loop.run_until_idle()
    assert len(set(seen[4:])) == 3 and len(set(seen[4:]) & set(seen[:4])) == 2


@pytest.mark.e2e
def test_sigterm_answers_an_enrollment_still_waiting_for_its_commit(tmp_path: Path) -> None:
    """The record's folder lock is held from outside, so the enrollment waits in its
    greenlet for the commit when SIGTERM arrives; once the lock is released it is
    committed, answered with its certificate, and the gateway exits 0."""
    instance, process = cheap_password_instance(tmp_path / "est-local", workers=1)
    process.start()
    lock_file = instance.folder / "local-ca" / "certificates.sqlite3.lock"
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with ThreadPoolExecutor(1) as pool:
                running = pool.submit(enroll_all, process.port, instance.trust_anchor, instance.password(),
                                      bodies(1, "drain"), concurrency=1, timeout=30)
                deadline = time.monotonic() + 20
                while not _lock_has_a_waiter(lock_file):
                    assert time.monotonic() < deadline, "the enrollment never waited for the lock"
                    time.sleep(0.02)
                assert process.proc is not None
                process.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                assert running.done() is False          # still waiting for its commit
                fcntl.flock(fd, fcntl.LOCK_UN)
                outcome = running.result(30)[0]
        finally:
            os.close(fd)
        assert process.proc.wait(20) == 0
    finally:
        process.stop()
    assert outcome.status == 200 and outcome.certificate is not None, outcome
    log = process.output()
    assert "Traceback" not in log, log[log.find("Traceback") - 300:][:3000]


def _lock_has_a_waiter(path: Path) -> bool:
    """/proc/locks lists a blocked request ("->") on the file's inode."""
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[fields.index("->") + 5].endswith(f":{inode}"):
            return True
    return False
