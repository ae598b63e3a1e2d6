"""What a reload asks of a worker's stop and of a backend started a second time in the
arbiter: a connection accepted for a request is answered, not dropped; starting the local
CA's store again keeps the locks SQLite holds on it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from est_gateway.backends.local.store import CertificateStore
from tests.test_loop_writes import Served, eventually, read_answers, request


def test_a_stopping_worker_answers_a_request_still_arriving() -> None:
    """Only an idle keep-alive connection is closed at the stop: one whose request is
    half sent when the stop comes gets its answer (then the connection closes)."""
    it = Served()
    it.runner.start()
    try:
        _stop_with_a_request_arriving(it)
    finally:
        it.running = False
        it.runner.join(20)
        for thread in it.threads:
            thread.join(20)
        it.loop.close_wakeup()
        it.listener.close()


def _stop_with_a_request_arriving(it: Served) -> None:
    with it.connect() as arriving, it.connect() as idle:
        idle.sendall(request("/first"))
        assert read_answers(idle, 1) == [b"/first"]          # now idle, kept alive
        half = request("/arriving")
        arriving.sendall(half[:10])
        eventually(lambda: it.loop.count == 2, "both accepted")
        it.running = False
        eventually(lambda: it.loop.count == 1, "the idle connection is closed")
        assert idle.recv(10) == b""
        arriving.sendall(half[10:])
        assert read_answers(arriving, 1) == [b"/arriving"]
        assert arriving.recv(10) == b""
        it.runner.join(20)
        assert not it.runner.is_alive()


def _posix_locks(path: Path) -> list[str]:
    """This process's POSIX locks on ``path`` (from /proc/locks)."""
    inode = os.stat(path).st_ino
    found = [line.split()[1:] for line in Path("/proc/locks").read_text().splitlines()]
    # without the line's ordinal, which other processes' locks shift
    return [" ".join(fields) for fields in found
            if fields[0] == "POSIX" and fields[3] == str(os.getpid()) and fields[4].endswith(f":{inode}")]


def test_starting_the_store_again_keeps_the_locks_sqlite_holds_on_it(tmp_path: Path) -> None:
    """A reload starts a new local backend in the arbiter while the running one's store is
    open there; closing a descriptor of the database would drop every POSIX lock the
    process holds on it, and workers forked afterwards corrupted the record."""
    path = tmp_path / "certificates.sqlite3"
    CertificateStore(path).initialise()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM certificates").fetchall()     # a read transaction: a lock
        held = _posix_locks(path)
        assert held
        CertificateStore(path).initialise()
        assert _posix_locks(path) == held
        conn.execute("COMMIT")
    finally:
        conn.close()
