"""One structured (JSON) audit line per EST request, on the ``est_gateway.audit`` logger.

Holds who asked, for what and what came of it. Never a password, a private key or an
upstream credential: the fields are filled only from already-safe values (names,
subjects, serials, short client-safe reasons).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography import x509

from est_gateway.logwriter import QueuedHandler

logger = logging.getLogger("est_gateway.audit")
#: one encoder for every line (json.dumps with options builds a new one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: the audit line is the message alone
_BARE = logging.Formatter("%(message)s")


@dataclass
class AuditEvent:
    """Filled in as a request is handled, written once at its end."""

    request_id: str
    alias: str
    operation: str
    method: str
    client_address: str | None = None
    username: str | None = None
    client_cert_subject: str | None = None
    client_cert_serial: str | None = None
    csr_subject: str | None = None
    issued_serial: str | None = None
    #: the CA's approval request (local pending id, EJBCA approval), on the 202 and on the
    #: 200 or 403 that ends it, so one device's request can be followed to its decision
    approval_reference: str | None = None
    outcome: str = "error"
    status: int = 500
    latency_ms: float = 0.0

    def client_certificate(self, cert: x509.Certificate | None) -> None:
        if cert is not None:
            self.client_cert_subject = cert.subject.rfc4514_string()
            self.client_cert_serial = format(cert.serial_number, "x")

    def emit(self) -> None:
        """The JSON line, through ``logging`` (operators attach their handlers); not even
        built when the audit logger does not take INFO."""
        if logger.isEnabledFor(logging.INFO):
            # The fields are plain values: a shallow copy (asdict deep-copies each one).
            emit_fields(vars(self))


def emit_fields(fields: Mapping[str, object]) -> None:
    """One audit line of plain values (an EST request's, an operator console action's),
    stamped with the time."""
    if not logger.isEnabledFor(logging.INFO):
        return
    line = _ENCODER.encode({"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **fields})
    handler = _own_handler()
    if handler is not None:
        handler.write_line(line)
        return
    logger.handle(_record(line))


class AuditFile:
    """Audit lines appended by every worker process to one file, so they can be read back
    (the operator console). Bounded: a line that would take the file past ``max_bytes``
    first moves it to ``<name>.1``, replacing the previous one, so at most twice
    ``max_bytes`` are kept. Appends and the move happen under an exclusive ``flock`` of the
    file; a writer that locked a file just moved away opens the new one."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes

    @property
    def previous(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    continue            # moved away between open and lock: open the new one
                size = os.fstat(fd).st_size
                if os.fstat(fd).st_ino != current:
                    continue
                if size and size + len(data) > self.max_bytes:
                    os.replace(self.path, self.previous)
                    continue
                os.write(fd, data)
                return
            finally:
                os.close(fd)

    def lines(self) -> list[str]:
        """Every line kept, oldest first (at most twice ``max_bytes`` read)."""
        found: list[str] = []
        for path in (self.previous, self.path):
            try:
                with path.open("rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - self.max_bytes))
                    data = f.read(self.max_bytes)
            except FileNotFoundError:
                continue
            found += data.decode("utf-8", "replace").splitlines()
        return found


class AuditLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The gateway's own audit handler (:func:`configure`): each line, bare, on a stream.

    While it is the audit logger's only handler, with no filter on either, its own
    formatter and the logger not propagating, :meth:`AuditEvent.emit` hands it the line
    directly: the same bytes as a log record formatted with ``%(message)s`` would give,
    without making the record and passing it through ``logging``'s filters and formatting.
    Measured in a running gateway (issue 14), the audit line cost ~36 µs of a ~0.98 ms
    keep-alive enrollment, most of it in that machinery. Any other set-up (an operator's
    handlers or filters, pytest's caplog) takes the ordinary path."""

    def __init__(self, stream: IO[str] | None = None, *, file: AuditFile | None = None) -> None:
        super().__init__(stream)
        self.setFormatter(_BARE)
        #: where each line goes as well, for reading back
        self.file = file

    def write_line(self, line: str) -> None:
        """Write one audit line as :meth:`emit` would write a record whose message it is."""
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
            if self.file is not None:
                self.file.append(line)
        except Exception:
            self.handleError(_record(line))
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.file is not None:
            try:   # the bare JSON line, whatever format stderr's lines are in
                self.file.append(record.getMessage())
            except Exception:
                self.handleError(record)


def _record(line: str) -> logging.LogRecord:
    """The log record of an audit line, made here rather than by ``logger.info``, which
    would walk the stack to find its caller's file and line (the JSON line shows neither)."""
    return logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None, "emit")


def _own_handler() -> AuditLineHandler | QueuedHandler | None:
    """The audit logger's :class:`AuditLineHandler` (or the log writer's stand-in for it),
    when nothing else sees its records."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.filters:
        return None
    handler = handlers[0]
    target = handler.target if isinstance(handler, QueuedHandler) else handler
    if (not isinstance(handler, AuditLineHandler | QueuedHandler) or type(target) is not AuditLineHandler
            or handler.filters or target.filters or target.level > logging.INFO or target.formatter is not _BARE):
        return None
    return handler


def configure(stream_handler: logging.Handler | None = None, *, file: AuditFile | None = None) -> None:
    """Audit lines are bare JSON on their own handler (not the human log format), and
    appended to ``file`` too when one is given."""
    handler = stream_handler or AuditLineHandler(file=file)
    handler.setFormatter(_BARE)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
