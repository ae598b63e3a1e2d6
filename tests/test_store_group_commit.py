"""The certificate record's group commit: rows of threads that wait together commit in one
transaction, each caller returns only once its own row is on disk, and one row's failure
stays its own."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from est_gateway.backends.local import authority
from est_gateway.backends.local.store import CertificateStore, DuplicateSerial, serial_hex
from tests.support.pki import CA, p256_key

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture()
def store(tmp_path: Path) -> CertificateStore:
    s = CertificateStore(tmp_path / "certificates.sqlite3")
    s.initialise()
    return s


@pytest.fixture(scope="module")
def ca() -> CA:
    key = p256_key()
    cert = authority.build_ca(authority.name("Group Commit CA"), key, issuer=None, issuer_key=None,
                              days=30, now=NOW)
    return CA(key, cert)


def add(store: CertificateStore, cert: x509.Certificate) -> None:
    store.add(cert, ca="EST CA", alias="est", certificate_profile="default", requester="t",
              request_id="r", issued_at=NOW)


def on_disk(store: CertificateStore) -> set[str]:
    """Serials a fresh connection (another process, after a crash) reads."""
    conn = sqlite3.connect(store.path)
    try:
        return {row[0] for row in conn.execute("SELECT serial FROM certificates")}
    finally:
        conn.close()


def add_while_a_commit_is_running(store: CertificateStore, certs: list[x509.Certificate]
                                  ) -> tuple[dict[int, BaseException | None], list[int]]:
    """Hold the write lock (a commit in progress), let every thread queue its row, release;
    return each thread's outcome and the size of every transaction that committed rows."""
    outcomes: dict[int, BaseException | None] = {}
    transactions: list[int] = []
    original = CertificateStore._commit

    def counting(conn: sqlite3.Connection, batch: list) -> None:  # type: ignore[type-arg]
        transactions.append(len(batch))
        original(conn, batch)

    def run(i: int, cert: x509.Certificate) -> None:
        try:
            add(store, cert)
            outcomes[i] = None
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            outcomes[i] = exc

    store._commit = counting  # type: ignore[method-assign]
    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(certs)]
    with store._write_lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(store._queued) < len(certs):
            assert time.monotonic() < deadline, "threads did not queue their rows"
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    return outcomes, transactions


def test_waiting_rows_commit_together_and_each_caller_returns_after_its_commit(
        store: CertificateStore, ca: CA) -> None:
    certs = [ca.issue(p256_key(), cn=f"device-{i}") for i in range(6)]
    outcomes, transactions = add_while_a_commit_is_running(store, certs)
    assert outcomes == dict.fromkeys(range(6))
    assert transactions == [6]          # one transaction, one fsync, for six certificates
    assert on_disk(store) == {serial_hex(c.serial_number) for c in certs}


def test_a_taken_serial_fails_only_its_own_row(store: CertificateStore, ca: CA) -> None:
    first = ca.issue(p256_key(), cn="first")
    add(store, first)
    others = [ca.issue(p256_key(), cn=f"other-{i}") for i in range(3)]
    outcomes, transactions = add_while_a_commit_is_running(store, [others[0], first, *others[1:]])
    assert isinstance(outcomes.pop(1), DuplicateSerial)
    assert outcomes == {0: None, 2: None, 3: None}
    assert transactions == [4]
    assert on_disk(store) == {serial_hex(c.serial_number) for c in [first, *others]}


def test_a_failed_commit_fails_every_row_in_it(store: CertificateStore, ca: CA) -> None:
    conn = sqlite3.connect(store.path)
    try:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON certificates WHEN NEW.subject = 'CN=poison' "
                     "BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END")
        conn.commit()
    finally:
        conn.close()
    certs = [ca.issue(p256_key(), cn="fine-1"), ca.issue(p256_key(), cn="poison"), ca.issue(p256_key(), cn="fine-2")]
    outcomes, _ = add_while_a_commit_is_running(store, certs)
    assert all(isinstance(e, sqlite3.Error) for e in outcomes.values()), outcomes
    assert on_disk(store) == set()      # nobody was told "issued" for a row that is not there
    add(store, certs[0])                # the store is usable afterwards
    assert on_disk(store) == {serial_hex(certs[0].serial_number)}


def test_close_releases_the_lock_file(store: CertificateStore, ca: CA) -> None:
    add(store, ca.issue(p256_key(), cn="before-close"))
    assert store._lock_fd is not None
    fd = store._lock_fd[1]
    store.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert store._lock_fd is None
    assert len(on_disk(store)) == 1


def test_the_record_keeps_no_index_that_no_query_uses(tmp_path: Path, ca: CA) -> None:
    """Each index is one more B-tree page written and fsynced per certificate: the record
    has only the serial's (its primary key) and a partial one of renewals (a first
    enrollment writes no entry in it); an older record's subject index is dropped."""
    path = tmp_path / "certificates.sqlite3"
    old = CertificateStore(path)
    old.initialise()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE INDEX certificates_subject ON certificates(subject)")
    old.close()
    store = CertificateStore(path)
    store.initialise()
    add(store, ca.issue(p256_key(), cn="indexed"))
    with sqlite3.connect(path) as conn:
        indexes = dict(conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'certificates'"))
    store.close()
    # ... and the partial ones of renewals and of revoked certificates (CRLs), which an
    # insert of a first certificate (always 'valid', renewing nothing) never writes to
    assert set(indexes) == {"sqlite_autoindex_certificates_1", "certificates_renews", "certificates_revoked"}
    assert indexes["certificates_renews"].endswith("WHERE renews IS NOT NULL")
    assert indexes["certificates_revoked"].endswith("WHERE status = 'revoked'")
