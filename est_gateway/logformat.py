"""One format for every line the gateway writes to stderr: its own, gunicorn's, the audit's.

``[server] log_format`` chooses ``text`` (a timestamp, the process id, the level, the
logger's name, the message) or ``json`` (one object per line with the same fields). The
formatter is installed on every handler (:func:`install`, and gunicorn's through
:func:`gunicorn_logger_class`), whatever writes the lines out.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

from est_gateway.config.model import LOG_FORMATS

#: the audit logger's messages are JSON objects already (est_gateway.audit)
AUDIT_LOGGER = "est_gateway.audit"
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _time(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``<UTC time> [<pid>] <LEVEL> <logger>: <message>``, a traceback on the lines below."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _time(record)

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, pid, level, logger, then ``message`` (or, for an
    audit line, the audit object itself under ``audit``) and any ``traceback``."""

    def format(self, record: logging.LogRecord) -> str:
        head = _ENCODER.encode({"time": _time(record), "pid": record.process,
                                "level": record.levelname, "logger": record.name})[:-1]
        message = record.getMessage()
        if record.name == AUDIT_LOGGER and message.startswith("{") and message.endswith("}"):
            body = f',"audit":{message}'     # already one JSON object: not parsed again
        else:
            body = f',"message":{_ENCODER.encode(message)}'
        if record.exc_info:
            body += f',"traceback":{_ENCODER.encode(self.formatException(record.exc_info))}'
        elif record.stack_info:
            body += f',"traceback":{_ENCODER.encode(self.formatStack(record.stack_info))}'
        return head + body + "}"


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f'log_format is one of {", ".join(LOG_FORMATS)}, not "{log_format}"')


def install(log_format: str, level: str) -> None:
    """The root logger writes to stderr in ``log_format``; so does every handler the
    audit logger has (set up before, by ``est_gateway.audit.configure``)."""
    chosen = formatter(log_format)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(chosen)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for audit_handler in logging.getLogger(AUDIT_LOGGER).handlers:
        audit_handler.setFormatter(chosen)


def gunicorn_logger_class(log_format: str) -> type[GunicornLogger]:
    """gunicorn's logger with its error-log handlers in ``log_format`` (set up again on
    every configuration reload, hence the subclass rather than a one-time change)."""
    chosen = formatter(log_format)

    class FormattedLogger(GunicornLogger):  # type: ignore[misc]
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                handler.setFormatter(chosen)

    return FormattedLogger
