"""The local CA's record of every certificate it issued (SQLite, WAL, synchronous=FULL).

A certificate is committed here before it is returned to anyone; several worker
processes (or gateway instances sharing one state folder) write to the same file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

REVOCATION_REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
                      "superseded", "cessationOfOperation", "certificateHold",
                      "privilegeWithdrawn")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial            TEXT PRIMARY KEY,          -- lowercase hex, no leading zeros
    issuer            TEXT NOT NULL,
    subject           TEXT NOT NULL,
    sans              TEXT NOT NULL,             -- JSON list of "type:value"
    not_before        TEXT NOT NULL,
    not_after         TEXT NOT NULL,
    ca                TEXT NOT NULL,
    alias             TEXT NOT NULL,
    certificate_profile TEXT NOT NULL,
    requester         TEXT NOT NULL,
    request_id        TEXT NOT NULL,
    issued_at         TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'valid',  -- valid, superseded (renewed), revoked
    revoked_at        TEXT,
    revocation_reason TEXT,
    der               BLOB NOT NULL,
    renews            TEXT                       -- serial of the certificate this one renewed
);
-- No query looks certificates up by subject: an index on it only cost every insert
-- another B-tree page to write and fsync (older records have one: it is dropped).
DROP INDEX IF EXISTS certificates_subject;
CREATE INDEX IF NOT EXISTS certificates_renews ON certificates (renews) WHERE renews IS NOT NULL;
-- The CRL lists a CA's revoked certificates: a partial index holds only those, so that an
-- insert (always status 'valid') writes no page of it.
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (ca) WHERE status = 'revoked';
CREATE TABLE IF NOT EXISTS pending (
    id          TEXT PRIMARY KEY,
    retry_key   TEXT NOT NULL UNIQUE,              -- same CSR + same identity + same operation
    alias       TEXT NOT NULL,
    subject     TEXT NOT NULL,
    requester   TEXT NOT NULL,
    csr         BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',   -- pending, approved, rejected, issuing, issued
    decided_at  TEXT,
    reason      TEXT,
    serial      TEXT
);
"""


@dataclass(frozen=True)
class Record:
    """One issued certificate as recorded."""

    serial: str
    issuer: str
    subject: str
    sans: list[str]
    not_before: str
    not_after: str
    ca: str
    alias: str
    certificate_profile: str
    requester: str
    request_id: str
    issued_at: str
    status: str
    revoked_at: str | None
    revocation_reason: str | None
    der: bytes

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


class DuplicateSerial(Exception):
    """The serial is already on record (retry with a new one)."""


class AlreadyRenewed(Exception):
    """The certificate a renewal was to supersede is no longer valid on record (renewed or
    revoked meanwhile): nothing was recorded."""


class CertificateStore:
    """Durable certificate records, shared by threads, worker processes and gateway instances.

    Each thread keeps one connection (opened again after a fork). Writers queue on a
    lock in the process and on a file lock between processes, which wakes the next one
    at once, instead of meeting in SQLite's busy handler, which sleeps with back-off and
    gave concurrent enrollments a long latency tail.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        #: certificates waiting for the next group commit (see :meth:`add`)
        self._queued: list[_QueuedRow] = []
        self._queue_lock = threading.Lock()
        #: (pid, closer) of the folder's lock file, kept open; reopened after a fork
        self._lock_fd: tuple[int, int, Callable[[], object]] | None = None
        #: every thread's connection with its process id, so that close() reaches them all
        self._opened: list[tuple[int, sqlite3.Connection]] = []
        self._opened_lock = threading.Lock()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")   # committed means on disk
            conn.execute("PRAGMA busy_timeout=30000")
            # 256 KiB of page cache per connection (one per thread: up to ten per worker).
            # Lookups are by primary key, and a commit by any other process empties the
            # cache of every connection anyway (WAL): a larger one held memory, not speed.
            conn.execute("PRAGMA cache_size=-256")
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._opened_lock:
                self._opened.append((os.getpid(), conn))
        yield conn

    def close(self) -> None:
        """Close this process's connections (those inherited over a fork are the parent's)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for pid, conn in opened:
            if pid == os.getpid():
                conn.close()
        with self._write_lock:
            if self._lock_fd is not None and self._lock_fd[0] == os.getpid():
                self._lock_fd[2]()    # closes the descriptor once, here or at garbage collection
            self._lock_fd = None

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A connection for one write, holding the process's and the folder's write locks."""
        with self._write_lock, self._folder_locked(), self._connect() as conn:
            yield conn

    @contextmanager
    def _folder_locked(self) -> Iterator[None]:
        """The folder's write lock, between processes (taken under ``_write_lock``)."""
        lock = self._folder_lock()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _folder_lock(self) -> int:
        """The lock file's descriptor for this process (called under ``_write_lock``); an
        inherited one would share its lock with the parent, so a forked child opens its own."""
        if self._lock_fd is None or self._lock_fd[0] != os.getpid():
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_fd = (os.getpid(), fd, weakref.finalize(self, os.close, fd))
        return self._lock_fd[1]

    def initialise(self) -> None:
        """Create the record (mode 0600: SQLite gives its WAL and shared-memory files the
        database's mode) and its tables; make older files private too."""
        # Only when it is missing: closing any descriptor of a database drops the process's
        # POSIX locks on it, SQLite's own, and a gateway reloading its configuration starts
        # this store while its first one is open (SQLite's "How To Corrupt", section 2.2).
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists() and part.stat().st_mode & 0o077:
                part.chmod(0o600)
        with self._writing() as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(certificates)")}
            if columns and "renews" not in columns:    # a record made before renewals were linked
                conn.execute("ALTER TABLE certificates ADD COLUMN renews TEXT")
            conn.executescript(_SCHEMA)

    def add(self, cert: x509.Certificate, *, ca: str, alias: str, certificate_profile: str,
            requester: str, request_id: str, issued_at: dt.datetime, names: RecordNames | None = None,
            renews: str | None = None, supersede: bool = False) -> None:
        """Commit a new record; raises :class:`DuplicateSerial` if the serial exists.
        ``names`` are the certificate's, as :meth:`RecordNames.of` gives them, when the
        caller that built the certificate knows them (it spares parsing it again).
        ``renews`` is the serial of the certificate this one renews (its lineage); with
        ``supersede`` that record is marked superseded in the same transaction, only if it
        is still valid, else nothing is recorded and :class:`AlreadyRenewed` is raised: of
        concurrent renewals of one certificate, exactly one is recorded.

        Group commit: the rows of threads that arrive while another thread commits wait
        for the write lock together, and the first of them to get it commits them all in
        one transaction (one fsync). Every caller returns only after the transaction that
        holds its row has committed, so "returned means on disk" is unchanged."""
        issuer, subject, sans = names or RecordNames.of(cert)
        row = (
            serial_hex(cert.serial_number), issuer, subject, json.dumps(sans),
            cert.not_valid_before_utc.isoformat(), cert.not_valid_after_utc.isoformat(),
            ca, alias, certificate_profile, requester, request_id, issued_at.isoformat(),
            cert.public_bytes(Encoding.DER), renews and normalise_serial(renews),
        )
        mine = _QueuedRow(row, supersede=supersede and renews is not None)
        with self._queue_lock:
            self._queued.append(mine)
        def commit() -> None:
            with self._write_lock:
                # The thread before this one may have committed this row with its own: then
                # there is nothing to write, and no folder lock to take.
                if not mine.done:
                    with self._folder_locked(), self._connect() as conn:
                        with self._queue_lock:
                            batch, self._queued = self._queued, []
                        self._commit(conn, batch)

        commit()
        if mine.error is not None:
            raise mine.error

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_QueuedRow]) -> None:
        """Insert ``batch`` in one transaction. A taken serial fails only its own row (SQLite
        aborts the statement, not the transaction); a failed commit fails every row."""
        failure: Exception = sqlite3.OperationalError("the group commit did not complete")
        committed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                try:
                    conn.execute(
                        "INSERT INTO certificates (serial, issuer, subject, sans, not_before, not_after,"
                        " ca, alias, certificate_profile, requester, request_id, issued_at, der, renews)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", item.row)
                except sqlite3.IntegrityError as exc:
                    if exc.sqlite_errorname != "SQLITE_CONSTRAINT_PRIMARYKEY":
                        raise            # not a taken serial: the record cannot be written
                    item.error = DuplicateSerial(item.row[0])
                    continue
                if item.supersede and not _superseded(conn, item.row[-1]):
                    # renewed (or revoked) by another request meanwhile, maybe in this batch
                    conn.execute("DELETE FROM certificates WHERE serial = ?", (item.row[0],))
                    item.error = AlreadyRenewed(item.row[-1])
            conn.execute("COMMIT")
            committed = True
        except sqlite3.Error as exc:
            failure = exc
        finally:
            if not committed and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            for item in batch:
                if not committed and not isinstance(item.error, DuplicateSerial):
                    item.error = failure
                item.done = True

    def get(self, serial: str) -> Record | None:
        with self._connect() as conn:
            found = _one(conn.execute(f"SELECT {_COLUMNS} FROM certificates WHERE serial = ?",
                                      (normalise_serial(serial),)))
        return _record(found) if found else None

    def records(self, *, limit: int = 1000, status: str | None = None) -> list[Record]:
        query = f"SELECT {_COLUMNS} FROM certificates"
        args: tuple[object, ...] = ()
        if status:
            query += " WHERE status = ?"
            args = (status,)
        query += " ORDER BY issued_at DESC LIMIT ?"
        with self._connect() as conn:
            return [_record(r) for r in conn.execute(query, (*args, limit))]

    def search(self, *, text: str = "", alias: str | None = None, status: str | None = None,
               offset: int = 0, limit: int = 50) -> tuple[list[Record], int]:
        """Records, newest first, whose subject or a subjectAltName contains ``text`` or whose
        serial starts with it; with the total that match (for pages of ``limit``)."""
        where, args = [], []
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            try:
                prefix = normalise_serial(text) + "%"
            except ValueError:
                prefix = like[1:]      # no serial matches: it is hex
            where.append("(subject LIKE ? ESCAPE '\\' OR sans LIKE ? ESCAPE '\\' OR serial LIKE ? ESCAPE '\\')")
            args += [like, like, prefix]
        if alias:
            where.append("alias = ?")
            args.append(alias)
        if status:
            where.append("status = ?")
            args.append(status)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._connect() as conn:
            total = int(_one(conn.execute(f"SELECT COUNT(*) FROM certificates{clause}", args))[0])
            rows = conn.execute(f"SELECT {_COLUMNS} FROM certificates{clause} ORDER BY issued_at DESC"
                                " LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return [_record(r) for r in rows], total

    def with_serial_prefix(self, prefix: str, *, limit: int) -> list[Record]:
        """Records whose serial starts with ``prefix`` (hex, as :func:`normalise_serial`
        reads it, leading zeros kept), at most ``limit``: for ``local-ca show``."""
        cleaned = prefix.strip().lower().removeprefix("0x").replace(":", "")
        normalise_serial(cleaned)     # a ValueError for what is not hexadecimal
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM certificates WHERE substr(serial, 1, ?) = ? "
                                "ORDER BY serial LIMIT ?", (len(cleaned), cleaned, limit))
            return [_record(r) for r in rows]

    def ping(self) -> None:
        """Raise ``sqlite3.Error`` unless the record can be read."""
        with self._connect() as conn:
            conn.execute("SELECT 1 FROM certificates LIMIT 1").fetchall()

    def count(self) -> int:
        with self._connect() as conn:
            return int(_one(conn.execute("SELECT COUNT(*) FROM certificates"))[0])

    def lineage(self, serial: str) -> list[bytes]:
        """The DER of every certificate on record in ``serial``'s renewal lineage: its
        predecessors back to the first enrollment and every renewal of any of them."""
        query = """
            WITH RECURSIVE up(serial, renews) AS (
                SELECT serial, renews FROM certificates WHERE serial = ?
                UNION SELECT c.serial, c.renews FROM certificates c JOIN up ON c.serial = up.renews),
            down(serial) AS (
                SELECT serial FROM up WHERE renews IS NULL
                    OR renews NOT IN (SELECT serial FROM certificates)
                UNION SELECT c.serial FROM certificates c JOIN down ON c.renews = down.serial)
            SELECT der FROM certificates WHERE serial IN (SELECT serial FROM up UNION SELECT serial FROM down)"""
        with self._connect() as conn:
            return [bytes(row[0]) for row in conn.execute(query, (normalise_serial(serial),)).fetchall()]

    def supersede(self, serial: str) -> None:
        """Mark a valid record superseded (renewed): it can no longer renew."""
        with self._writing() as conn:
            _superseded(conn, normalise_serial(serial))

    def revoke(self, serial: str, reason: str, at: dt.datetime) -> Record:
        """Mark a record revoked; raises ``LookupError`` (unknown) or ``ValueError`` (already)."""
        if reason not in REVOCATION_REASONS:
            raise ValueError(f"unknown reason {reason!r}; use one of {', '.join(REVOCATION_REASONS)}")
        key = normalise_serial(serial)
        with self._writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = _one(conn.execute("SELECT status FROM certificates WHERE serial = ?", (key,)))
                if row is None:
                    raise LookupError(f"no certificate with serial {key} on record")
                if row[0] == "revoked":
                    raise ValueError(f"certificate {key} is already revoked")
                conn.execute("UPDATE certificates SET status='revoked', revoked_at=?,"
                             " revocation_reason=? WHERE serial=?", (at.isoformat(), reason, key))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        record = self.get(key)
        assert record is not None
        return record

    def revocations(self, ca: str) -> list[RevokedEntry]:
        """Every revoked certificate of CA ``ca`` (a CA's revocations only grow: a
        revoked record stays revoked, and no record is ever deleted)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT serial, revoked_at, revocation_reason FROM certificates"
                                " WHERE ca = ? AND status = 'revoked' ORDER BY serial", (ca,)).fetchall()
        return [RevokedEntry(int(serial, 16), dt.datetime.fromisoformat(at), reason or "unspecified")
                for serial, at, reason in rows]

    def revoked_count(self, ca: str) -> int:
        """How many certificates of CA ``ca`` are revoked: since revocations only grow, an
        unchanged count means an unchanged list (what a CRL built from it holds)."""
        with self._connect() as conn:
            return int(_one(conn.execute("SELECT COUNT(*) FROM certificates WHERE ca = ? AND status = 'revoked'",
                                         (ca,)))[0])

    # -- approval queue (approval = "manual") ----------------------------------------------

    def pending_lookup(self, retry_key: str) -> PendingRecord | None:
        with self._connect() as conn:
            row = _one(conn.execute(f"SELECT {_PENDING_COLUMNS} FROM pending WHERE retry_key = ?",
                               (retry_key,)))
        return PendingRecord(*row) if row else None

    def pending_add(self, record_id: str, retry_key: str, *, alias: str, subject: str, requester: str,
                    csr: bytes, at: dt.datetime) -> PendingRecord:
        """Queue a request; if the same request is already queued, return that one."""
        with self._writing() as conn:
            conn.execute("INSERT OR IGNORE INTO pending (id, retry_key, alias, subject, requester, csr,"
                         " created_at) VALUES (?,?,?,?,?,?,?)",
                         (record_id, retry_key, alias, subject, requester, csr, at.isoformat()))
        found = self.pending_lookup(retry_key)
        assert found is not None
        return found

    def pending_list(self, *, status: str | None = "pending") -> list[PendingRecord]:
        query = f"SELECT {_PENDING_COLUMNS} FROM pending"
        args: tuple[str, ...] = ()
        if status:
            query, args = query + " WHERE status = ?", (status,)
        with self._connect() as conn:
            return [PendingRecord(*r) for r in conn.execute(query + " ORDER BY created_at", args)]

    def pending_decide(self, record_id: str, decision: str, at: dt.datetime, reason: str | None = None
                       ) -> PendingRecord:
        """Approve or reject a pending request; raises LookupError / ValueError with a reason."""
        with self._writing() as conn:
            cur = conn.execute("UPDATE pending SET status=?, decided_at=?, reason=? WHERE id=? AND status='pending'",
                               (decision, at.isoformat(), reason, record_id))
            if cur.rowcount == 0:
                row = _one(conn.execute("SELECT status FROM pending WHERE id=?", (record_id,)))
                if row is None:
                    raise LookupError(f"no pending request {record_id}")
                raise ValueError(f"request {record_id} is already {row[0]}")
            row = _one(conn.execute(f"SELECT {_PENDING_COLUMNS} FROM pending WHERE id=?", (record_id,)))
        return PendingRecord(*row)

    def pending_claim(self, record_id: str) -> bool:
        """Move an approved request to 'issuing'; only one concurrent poll wins."""
        with self._writing() as conn:
            cur = conn.execute("UPDATE pending SET status='issuing' WHERE id=? AND status='approved'",
                               (record_id,))
            return cur.rowcount == 1

    def pending_finish(self, record_id: str, serial: str | None) -> None:
        """Record the issued serial, or (None) hand the request back to 'approved'."""
        with self._writing() as conn:
            if serial is None:
                conn.execute("UPDATE pending SET status='approved' WHERE id=? AND status='issuing'", (record_id,))
            else:
                conn.execute("UPDATE pending SET status='issued', serial=? WHERE id=?", (serial, record_id))


class RevokedEntry(NamedTuple):
    """One revoked certificate, as a CRL lists it."""

    serial: int
    revoked_at: dt.datetime
    reason: str


class RecordNames(NamedTuple):
    """A certificate's names as its record holds them."""

    issuer: str
    subject: str
    sans: list[str]

    @classmethod
    def of(cls, cert: x509.Certificate) -> RecordNames:
        return cls(cert.issuer.rfc4514_string(), cert.subject.rfc4514_string(), describe_sans(cert))


@dataclass
class _QueuedRow:
    """One certificate row waiting for a group commit, and what became of it."""

    row: tuple[Any, ...]
    supersede: bool = False
    done: bool = False
    error: Exception | None = None


_PENDING_COLUMNS = "id, retry_key, alias, subject, requester, csr, created_at, status, decided_at, reason, serial"


@dataclass(frozen=True)
class PendingRecord:
    """A request waiting for (or decided by) the operator."""

    id: str
    retry_key: str
    alias: str
    subject: str
    requester: str
    csr: bytes
    created_at: str
    status: str
    decided_at: str | None
    reason: str | None
    serial: str | None


_COLUMNS = ("serial, issuer, subject, sans, not_before, not_after, ca, alias, certificate_profile,"
            " requester, request_id, issued_at, status, revoked_at, revocation_reason, der")


def _superseded(conn: sqlite3.Connection, serial: str) -> bool:
    """Mark a valid record superseded; False when it is not (or no longer) valid."""
    cursor = conn.execute("UPDATE certificates SET status='superseded' WHERE serial=? AND status='valid'",
                          (serial,))
    return cursor.rowcount == 1


def _one(cursor: sqlite3.Cursor) -> Any:
    """The first row, reading the statement to its end: an unfinished SELECT would keep a
    read transaction open on this long-lived connection and hold back WAL checkpoints."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


def _record(row: tuple[object, ...]) -> Record:
    values = list(row)
    values[3] = json.loads(str(values[3]))
    return Record(*values)  # type: ignore[arg-type]


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalise_serial(text: str) -> str:
    """Accept ``0x``-prefixed, colon-separated or upper-case hex; raise ValueError otherwise."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError(f'"{text}" is not a hexadecimal serial number')
    return format(int(cleaned, 16), "x")


def describe_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [describe_general_name(n) for n in san]


def describe_general_name(gn: x509.GeneralName) -> str:
    kinds = {x509.DNSName: "dns", x509.IPAddress: "ip", x509.RFC822Name: "email",
             x509.UniformResourceIdentifier: "uri"}
    kind = kinds.get(type(gn), type(gn).__name__)
    return f"{kind}:{gn.value}"
