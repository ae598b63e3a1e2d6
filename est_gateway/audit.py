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

from cryptography import x509

logger = logging.getLogger("est_gateway.audit")
#: one encoder for every line (json.dumps with options builds a new one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


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
        # The record is made here rather than by logger.info, which would walk the stack to
        # find its caller's file and line (this function's: the JSON line does not show them).
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, _ENCODER.encode(fields), (),
                                        None, "emit"))


def configure(stream_handler: logging.Handler | None = None) -> None:
    """Audit lines are bare JSON on their own handler (not the human log format)."""
    handler = stream_handler or logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
