"""SIGTERM against a real gateway: a request already handed to the pool is finished, its
answer written by the event loop, before the worker exits."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.load import bodies, cheap_password_instance, enroll_all

pytestmark = pytest.mark.e2e


def test_sigterm_answers_an_enrollment_still_waiting_for_its_commit(tmp_path: Path) -> None:
    """The record's folder lock is held from outside, so the enrollment waits on its pool
    thread for the commit when SIGTERM arrives; once the lock is released it is committed,
    answered with its certificate, and the gateway exits 0."""
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
