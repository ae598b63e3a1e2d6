"""A log output that stops reading never stops the gateway: log and audit records go to a
bounded queue and one writer thread per process; when the queue is full they are dropped,
counted and, once, reported.

The writer on its own with a handler that blocks at will, then a real gateway whose stderr
and stdout are a pipe nobody reads.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import read_response
from est_gateway import audit
from est_gateway.audit import AuditEvent
from est_gateway.logwriter import LogWriter, QueuedHandler, install
from tests.support.gateway import RUNNING, GatewayProcess, local_instance

CAPACITY = 8
RECORDS = 50


class BlockingStream(io.StringIO):
    """A stream whose writes wait until :attr:`flowing` is set (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.flowing = threading.Event()

    def write(self, text: str) -> int:
        assert self.flowing.wait(30), "the test never let the stream flow"
        return super().write(text)


@pytest.fixture
def loggers() -> Iterator[tuple[logging.Logger, logging.Logger]]:
    """A private logger, and the audit logger, both restored afterwards."""
    mine = logging.getLogger("tests.logwriter")
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in (mine, audit.logger, logging.getLogger())]
    mine.propagate = False
    mine.setLevel(logging.INFO)
    try:
        yield mine, audit.logger
    finally:
        for lg, handlers, level, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)


def log_from_a_thread(logger: logging.Logger, count: int) -> None:
    """Log ``count`` records on another thread, which must finish while the output is stuck."""
    done = threading.Thread(target=lambda: [logger.info("record %d", i) for i in range(count)])
    done.start()
    done.join(10)
    assert not done.is_alive(), "logging blocked on a stuck output"


def test_a_stuck_handler_never_blocks_the_logging_thread(loggers: tuple[logging.Logger, logging.Logger]) -> None:
    mine, _ = loggers
    stream = BlockingStream()
    mine.handlers = [logging.StreamHandler(stream)]
    drops: list[int] = []
    writer = LogWriter(CAPACITY, on_drop=lambda: drops.append(1))
    warnings = io.StringIO()
    logging.getLogger().handlers = [logging.StreamHandler(warnings)]    # where the one warning goes
    writer.start()
    install(writer)
    assert all(isinstance(h, QueuedHandler) for h in mine.handlers + logging.getLogger().handlers)
    try:
        log_from_a_thread(mine, RECORDS)
        # the queue holds CAPACITY, the writer one more (blocked in the write), the rest dropped
        assert RECORDS - CAPACITY - 1 <= writer.dropped <= RECORDS - CAPACITY
        assert len(drops) == writer.dropped
    finally:
        stream.flowing.set()
        writer.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == RECORDS - writer.dropped
    assert lines == sorted(lines, key=lambda line: int(line.split()[1]))     # in order
    assert lines[0] == "record 0"
    said = warnings.getvalue().splitlines()
    assert said == [f"{writer.dropped} log records dropped: the log output did not keep up (the metric "
                    "est_log_records_dropped_total counts every drop; this is said once)"]


def test_the_warning_is_said_once_however_often_records_are_dropped(
        loggers: tuple[logging.Logger, logging.Logger]) -> None:
    mine, _ = loggers
    stream = BlockingStream()
    mine.handlers = [logging.StreamHandler(stream)]
    warnings = io.StringIO()
    logging.getLogger().handlers = [logging.StreamHandler(warnings)]
    writer = LogWriter(CAPACITY)
    writer.start()
    install(writer)
    try:
        for _ in range(2):
            stream.flowing.clear()
            log_from_a_thread(mine, RECORDS)
            stream.flowing.set()
            writer.stop()
            writer.start()
    finally:
        stream.flowing.set()
        writer.stop()
    assert writer.dropped >= 2 * (RECORDS - CAPACITY - 1)
    assert len(warnings.getvalue().splitlines()) == 1


def test_audit_lines_behind_the_writer_are_the_same_lines_without_a_log_record(
        loggers: tuple[logging.Logger, logging.Logger], monkeypatch: pytest.MonkeyPatch) -> None:
    _, audit_logger = loggers
    stream = BlockingStream()
    audit.configure(audit.AuditLineHandler(stream))
    writer = LogWriter(CAPACITY)
    writer.start()
    install(writer)

    def no_record(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("a log record was made")

    monkeypatch.setattr(audit_logger, "makeRecord", no_record)
    event = AuditEvent(request_id="0" * 16, alias="est", operation="cacerts", method="GET", status=200, outcome="ok")
    try:
        done = threading.Thread(target=lambda: [event.emit() for _ in range(RECORDS)])
        done.start()
        done.join(10)
        assert not done.is_alive(), "an audit line blocked on a stuck output"
    finally:
        stream.flowing.set()
        writer.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == RECORDS - writer.dropped and writer.dropped > 0
    assert {json.loads(line)["operation"] for line in lines} == {"cacerts"}


# -- a real gateway whose output nobody reads ----------------------------------------------

REQUESTS = 1000
#: /metrics' line of the drop count (all worker processes together)
DROPPED = re.compile(rb"^est_log_records_dropped_total ([0-9.e+]+)$", re.M)


def get(tls: ssl.SSLSocket, path: str) -> tuple[int, bytes]:
    """One keep-alive GET; the status and body."""
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    status, _, body = read_response(tls)
    return status, body


@pytest.mark.e2e
def test_a_gateway_whose_log_pipe_nobody_reads_keeps_answering(tmp_path: Path) -> None:
    instance, process = local_instance(tmp_path / "est-local", extra_config="")
    config = instance.config.read_text().replace("[server]\n", "[server]\nlog_queue_records = 64\n", 1)
    instance.config.write_text(config)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "est_gateway.cli", "serve", "--config", str(instance.config)],
                            stdout=write_end, stderr=write_end, stdin=subprocess.DEVNULL)
    os.close(write_end)
    process.proc = proc
    RUNNING.add(process)
    ctx = ssl.create_default_context(cafile=str(instance.trust_anchor))
    answered, output = 0, b""
    try:
        wait_listening(process)
        while answered < REQUESTS:
            with socket.create_connection(("127.0.0.1", process.port), timeout=20) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                for _ in range(50):     # within max_requests_per_connection
                    status, _ = get(tls, "/.well-known/est/cacerts")
                    assert status == 200
                    answered += 1
        with socket.create_connection(("127.0.0.1", process.port), timeout=20) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            status, metrics = get(tls, "/metrics")
        assert status == 200
        found = DROPPED.search(metrics)
        assert found is not None, metrics.decode()[:2000]
        dropped = float(found.group(1))
        # each answer's audit line is written or dropped: far more than the pipe holds were dropped
        assert dropped > REQUESTS / 2
    finally:
        # Now read the pipe: what was queued is written, the warning among it, and the
        # gateway (its arbiter writes without a queue) can stop.
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: drain(read_end, chunks))
        reader.start()
        process.stop()
        reader.join(10)
        output = b"".join(chunks)
    assert answered == REQUESTS
    assert b"log records dropped: the log output did not keep up" in output


def wait_listening(process: GatewayProcess) -> None:
    for _ in range(300):
        assert process.proc is not None and process.proc.poll() is None, "the gateway exited"
        try:
            with socket.create_connection(("127.0.0.1", process.port), timeout=0.5):
                return
        except OSError:
            threading.Event().wait(0.1)
    raise AssertionError("the gateway did not listen")


def drain(fd: int, into: list[bytes]) -> None:
    try:
        while chunk := os.read(fd, 65536):
            into.append(chunk)
    finally:
        os.close(fd)


def test_a_record_that_cannot_be_formatted_is_reported_not_raised(
        loggers: tuple[logging.Logger, logging.Logger], monkeypatch: pytest.MonkeyPatch) -> None:
    mine, _ = loggers
    mine.handlers = [logging.StreamHandler(io.StringIO())]
    writer = LogWriter(CAPACITY)
    writer.start()
    install(writer)
    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(QueuedHandler, "handleError", lambda self, record: reported.append(record))
    try:
        mine.info("%d records", "not a number")      # as logging's own handlers do: reported
    finally:
        writer.stop()
    assert len(reported) == 1
