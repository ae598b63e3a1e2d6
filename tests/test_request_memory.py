"""What a waiting connection's unfinished request may hold: about the bytes it sent (a body
in many small chunks is one growing buffer, not an object per chunk), and all of a
worker's connections together at most ``max_buffered_request_bytes`` (beyond it: 503).
The reader measured with tracemalloc, then the bound over TLS against a real gateway."""

from __future__ import annotations

import socket
import ssl
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from est_gateway.server.http11 import FIELD_OVERHEAD, BufferBudget, Limits, Refusal, Request, RequestReader
from tests.support.gateway import GatewayProcess, local_instance
from tests.test_e2e_http import Reader

LIMITS = Limits(max_fields=100, max_field_bytes=16384, max_body=65536)
CHUNKED = b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
READERS = 20
#: a body in 2-byte chunks (a 1-byte bytes object is a shared singleton, a 2-byte one is not)
CHUNKS = 4000


def held_per_reader(feed: list[bytes]) -> float:
    """Traced bytes each of READERS readers holds after being fed ``feed``."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        readers = [RequestReader(LIMITS) for _ in range(READERS)]
        for reader in readers:
            for data in feed:
                reader.feed(data)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert all(not reader.ready and reader.in_progress for reader in readers)
    return held / READERS


def test_a_body_in_small_chunks_costs_about_its_bytes() -> None:
    body = b"".join(b"2\r\nab\r\n" for _ in range(CHUNKS))          # never ends: the request waits
    feed = [CHUNKED, *(body[i:i + 1000] for i in range(0, len(body), 1000))]
    data = 2 * CHUNKS
    assert held_per_reader(feed) < 2 * data + 8192    # before: ~28 times the data (an object per chunk)


def test_a_waiting_head_costs_about_its_bytes() -> None:
    fields = b"".join(b"X-F%02d: " % i + b"v" * 1000 + b"\r\n" for i in range(50))
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + fields + b"X-Wait"
    pieces = [head[i:i + 1000] for i in range(0, len(head), 1000)]
    assert held_per_reader(pieces) < len(head) + 51 * FIELD_OVERHEAD + 8192


def test_the_budget_bounds_what_all_readers_hold_and_closing_gives_it_back() -> None:
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-F%d: " % i + b"v" * 10000 + b"\r\n"
                                                             for i in range(6)) + b"X-Wait"
    per = 4 + 9 + 6 * (4 + 10000) + 7 * FIELD_OVERHEAD
    budget = BufferBudget(10 * per + per // 2)
    readers = [RequestReader(LIMITS, budget) for _ in range(12)]
    for reader in readers:
        reader.feed(head)
        assert budget.held <= budget.limit
    waiting = [r for r in readers if not r.ready]
    refused = [r.ready[0] for r in readers if r.ready]
    assert len(waiting) == 10 and budget.held == 10 * per
    assert [(item.status, isinstance(item, Refusal)) for item in refused] == [(503, True)] * 2
    waiting[0].close()                               # a connection closed: its bytes come back
    assert budget.held == 9 * per
    late = RequestReader(LIMITS, budget)
    late.feed(head + b": x\r\n\r\n")                 # fits now, and completes: handed over, given back
    assert isinstance(late.ready[0], Request) and budget.held == 9 * per
    for reader in waiting[1:]:
        reader.close()
    assert budget.held == 0


# -- on the wire ------------------------------------------------------------------------------

LIMIT = 1024 * 1024
#: one field: each head fits one TLS record, which the loop has read by the time a later
#: connection's request is answered (a head over several records may interleave with others)
FIELDS = [(b"X-Pad", b"v" * 15000)]
HEAD = (b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n"
        + b"".join(name + b": " + value + b"\r\n" for name, value in FIELDS))
PER_CONNECTION = 4 + 9 + sum(len(n) + len(v) for n, v in FIELDS) + (len(FIELDS) + 1) * FIELD_OVERHEAD
CONNECTIONS = LIMIT // PER_CONNECTION + 3


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    instance, process = local_instance(tmp_path_factory.mktemp("budget") / "est-local")
    text = instance.config.read_text().replace(
        "workers = 2", f"workers = 1\nmax_buffered_request_bytes = {LIMIT}\nmax_connections_per_address = 0")
    instance.config.write_text(text)
    process.start()
    try:
        yield process, instance.trust_anchor
    finally:
        process.stop()


@pytest.mark.e2e
def test_a_worker_holds_at_most_its_budget_of_unfinished_requests(small_budget: tuple[GatewayProcess, Path]) -> None:
    process, anchor = small_budget
    ctx = ssl.create_default_context(cafile=str(anchor))

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", process.port), timeout=20)
        return ctx.wrap_socket(raw, server_hostname="localhost")

    def ping() -> int:
        """A small complete request: once answered, the loop has read what was sent before."""
        with connect() as tls:
            tls.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return Reader(tls).answer().status

    held = [connect() for _ in range(CONNECTIONS)]
    try:
        for tls in held:
            tls.sendall(HEAD + b"X-Wait")           # the head never ends: the request waits
            assert ping() == 200
        fits = LIMIT // PER_CONNECTION
        for tls in held[fits:]:                     # the ones past the budget: 503 and closed
            refused = Reader(tls).answer()
            assert refused.status == 503 and b"too many unfinished requests" in refused.body
        for tls in held[:fits]:                     # closed by their clients: the budget comes back
            tls.close()
        with connect() as tls:
            tls.sendall(HEAD + b"Connection: close\r\n\r\n")
            assert Reader(tls).answer().status == 200
    finally:
        for tls in held:
            tls.close()
