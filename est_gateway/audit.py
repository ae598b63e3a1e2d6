"""One structured (JSON) audit line per EST request, on the ``est_gateway.audit`` logger.

Holds who asked, for what and what came of it. Never a password, a private key or an
upstream credential: the fields are filled only from already-safe values (names,
subjects, serials, short client-safe reasons).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
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
        if not logger.isEnabledFor(logging.INFO):
            return
        # The fields are plain values: a shallow copy (asdict deep-copies each one).
        fields = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **vars(self)}
        line = _ENCODER.encode(fields)
        handler = _own_handler()
        if handler is not None:
            handler.write_line(line)
            return
        logger.handle(_record(line))


class AuditLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The gateway's own audit handler (:func:`configure`): each line, bare, on a stream.

    While it is the audit logger's only handler, with no filter on either, its own
    formatter and the logger not propagating, :meth:`AuditEvent.emit` hands it the line
    directly: the same bytes as a log record formatted with ``%(message)s`` would give,
    without making the record and passing it through ``logging``'s filters and formatting.
    Measured in a running gateway (issue 14), the audit line cost ~36 µs of a ~0.98 ms
    keep-alive enrollment, most of it in that machinery. Any other set-up (an operator's
    handlers or filters, pytest's caplog) takes the ordinary path."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self.setFormatter(_BARE)

    def write_line(self, line: str) -> None:
        """Write one audit line as :meth:`emit` would write a record whose message it is."""
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:
            self.handleError(_record(line))
        finally:
            self.release()


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


def configure(stream_handler: logging.Handler | None = None) -> None:
    """Audit lines are bare JSON on their own handler (not the human log format)."""
    handler = stream_handler or AuditLineHandler()
    handler.setFormatter(_BARE)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
