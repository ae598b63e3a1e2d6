"""Log and audit records written by one thread of their own, never by the thread that logs.

A handler that writes to a pipe blocks once the reader stops reading (a stalled log
collector, a ``| tee`` on hold): the event loop or a request thread writing its audit line
would wait with it, and so would every request behind it. :func:`install` puts a
:class:`QueuedHandler` in the place of every handler of every logger: a record is prepared
(formatted at once, as the stdlib's ``QueueHandler`` does) and put on a bounded queue
without waiting; the process's :class:`LogWriter` thread (a stdlib ``QueueListener``)
passes it on to the handler it stands for. When the queue is full the record is dropped
and counted; the first time the writer catches up after drops, it says so once.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from logging.handlers import QueueHandler, QueueListener
from typing import Any

#: how long a stopping writer may take to write what is still queued
STOP_TIMEOUT_S = 5.0
log = logging.getLogger("est_gateway")

Write = Callable[[Any], object]


class LogWriter(QueueListener):
    """One process's log writer: a bounded queue of (write, record) and the thread that
    writes them in order."""

    def __init__(self, capacity: int, *, on_drop: Callable[[], None] | None = None) -> None:
        """``capacity``: records waiting for the writer at most (server.log_queue_records)."""
        self.pending: queue.Queue[tuple[Write, Any] | None] = queue.Queue(capacity)
        super().__init__(self.pending)
        self._on_drop = on_drop
        self._drops = itertools.count(1)
        #: records dropped so far (the queue was full)
        self.dropped = 0
        self._warned = False
        self._stopping = False
        self._ident: int | None = None

    def start(self) -> None:
        self._stopping = False
        super().start()
        assert self._thread is not None
        self._ident = self._thread.ident

    def submit(self, write: Write, item: Any) -> None:
        """From any thread, never waiting: ``write(item)`` on the writer thread, or a drop.
        What the writer thread logs itself is written at once (queued, it would wait behind
        itself)."""
        if threading.get_ident() == self._ident:
            write(item)
            return
        try:
            self.pending.put_nowait((write, item))
        except queue.Full:
            self.dropped = next(self._drops)    # itertools.count: no lost increments between threads
            if self._on_drop is not None:
                self._on_drop()

    def handle(self, item: tuple[Write, Any]) -> None:  # type: ignore[override]  # our items
        """On the writer thread: one queued write (a handler's faults stay in the handler)."""
        write, record = item
        try:
            write(record)
        except Exception:   # the writer must outlive any handler's bug
            pass
        if self.dropped and not self._warned and (self.pending.empty() or self._stopping):
            self._warned = True
            log.warning("%d log records dropped: the log output did not keep up (the metric "
                        "est_log_records_dropped_total counts every drop; this is said once)", self.dropped)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Write what is queued, for at most ``timeout`` (a stalled output must not hold up
        the process's exit), then end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        try:
            self.pending.put(None, timeout=timeout)    # QueueListener's sentinel
        except queue.Full:
            pass
        thread.join(timeout)
        self._thread = self._ident = None


class QueuedHandler(QueueHandler):
    """Stands in for ``target`` on its logger: each record it takes goes to the writer."""

    def __init__(self, target: logging.Handler, writer: LogWriter) -> None:
        super().__init__(writer.pending)
        self.target = target
        self.writer = writer
        self.setLevel(target.level)

    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.target.level or not self.filter(record):
            return False
        # prepare: the message is formatted here, so later changes to its arguments, and
        # the traceback's frames, are not held until the writer gets to it
        try:
            prepared = self.prepare(record)
        except Exception:   # a record that cannot be formatted: reported as logging does, never raised
            self.handleError(record)
            return False
        self.writer.submit(self.target.handle, prepared)
        return True

    def write_line(self, line: str) -> None:
        """For a target with ``write_line`` (the audit handler): the line alone, queued."""
        self.writer.submit(self.target.write_line, line)  # type: ignore[attr-defined]


def install(writer: LogWriter) -> None:
    """Put every handler of every logger (the root's included) behind ``writer``."""
    loggers = [logging.getLogger(), *(item for item in logging.Logger.manager.loggerDict.values()
                                     if isinstance(item, logging.Logger))]
    for logger in loggers:
        logger.handlers = [handler if isinstance(handler, QueuedHandler) else QueuedHandler(handler, writer)
                           for handler in logger.handlers]
