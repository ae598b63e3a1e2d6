"""Clients that never read their answers against a real gateway process: no pool thread
ever waits on a client socket (the event loop writes every answer as the socket drains),
so they hold no thread a legitimate request needs, and an answer not drained by its
deadline closes the connection. Bounds asserted here are generous success bounds."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.support.gateway import curl
from tests.test_hostile_connections import GENEROUS, LONG_DEADLINES, enroll, read_answers, start

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's socket queues")]

SLOW_READERS = 24
#: answers pipelined per connection: some MiB, more than loopback's socket buffers take (~3 MiB)
PIPELINED = 300
METRICS = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"


def grow_metrics(url: str, cafile: Path) -> None:
    """Every label and operation once: /metrics grows to some 20 KB."""
    for label in ("", "newkey/"):
        for operation in ("cacerts", "csrattrs", "simpleenroll", "simplereenroll", "serverkeygen", "fullcmc"):
            curl(f"{url}/{label}{operation}", cacert=cafile)


def queued_to(sockets: list[ssl.SSLSocket]) -> int:
    """Bytes the kernel holds unsent towards these client sockets (/proc/net/tcp: the
    gateway's side of each connection)."""
    ports = {f"{sock.getsockname()[1]:04X}" for sock in sockets}
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2].rpartition(":")[2] in ports:
            total += int(fields[4].partition(":")[0], 16)
    return total


def until_full(sockets: list[ssl.SSLSocket]) -> None:
    """Wait until what the kernel holds for these readers has stopped growing: every socket
    is full, and the rest of the answers wait in the gateway."""
    end, last = time.monotonic() + 120, -1
    while (now := queued_to(sockets)) != last or now == 0:
        assert time.monotonic() < end, "the readers' sockets never filled"
        last = now
        time.sleep(1)


def slow_reader(port: int, cafile: Path) -> ssl.SSLSocket:
    """A TLS connection with a tiny receive window that pipelines many /metrics and reads nothing."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(GENEROUS)
    raw.connect(("127.0.0.1", port))
    tls = ssl.create_default_context(cafile=str(cafile)).wrap_socket(raw, server_hostname="localhost")
    tls.sendall(METRICS * PIPELINED)
    return tls


def test_clients_that_never_read_hold_no_pool_thread(tmp_path: Path) -> None:
    """24 connections to a worker of 8 threads pipelining 300 /metrics each and never
    reading (before, they held every pool thread in a blocking write until
    request_timeout_s, and an enrollment waited as long); an enrollment and cacerts are
    answered while all 24 are still connected."""
    instance, process = start(tmp_path, f"max_requests_per_connection = 1000\n{LONG_DEADLINES}", workers=1)
    readers: list[ssl.SSLSocket] = []
    try:
        grow_metrics(process.url, instance.trust_anchor)
        readers = [slow_reader(process.port, instance.trust_anchor) for _ in range(SLOW_READERS)]
        until_full(readers)
        assert enroll(instance, process, tmp_path, "beside-slow-readers") == 200
        assert curl(f"{process.url}/cacerts", cacert=instance.trust_anchor, timeout=GENEROUS).status == 200
        for tls in readers:      # each still connected, its answers whole and in order
            assert [status for status, _ in read_answers(tls, 3)] == [200, 200, 200]
    finally:
        for tls in readers:
            tls.close()
        process.stop()
    log = process.output()
    assert "Traceback" not in log, log[log.find("Traceback") - 300:][:3000]


def test_an_answer_not_drained_by_its_deadline_closes_the_connection(tmp_path: Path) -> None:
    instance, process = start(tmp_path, "max_requests_per_connection = 1000\nrequest_timeout_s = 2", workers=1)
    try:
        grow_metrics(process.url, instance.trust_anchor)
        tls = slow_reader(process.port, instance.trust_anchor)
        with tls:
            time.sleep(6)        # the deadline of the answer the socket cannot take passes
            received = bytearray()
            try:                 # read what the gateway wrote before it closed
                while chunk := tls.recv(65536):
                    received += chunk
            except (ConnectionResetError, ssl.SSLError):
                pass
        assert 0 < received.count(b"HTTP/1.1 200 OK") < PIPELINED
        assert curl(f"{process.url}/cacerts", cacert=instance.trust_anchor, timeout=GENEROUS).status == 200
    finally:
        process.stop()
