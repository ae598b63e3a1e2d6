"""The event loop writes every answer (est_gateway.server.loop): a pool thread hands the
answer's bytes back and never touches a client socket; the worker's bounds on requests
handed out and on unsent bytes hold complete requests in the loop; refusals are the loop's
own; a graceful stop writes the answers still being made. Real sockets on loopback, the
loop on a thread of its own, answers made on other threads; every wait is bounded, and the
assertions are on counts and orders."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from est_gateway.config.model import ServerSettings
from est_gateway.server.http11 import Limits
from est_gateway.server.loop import Client, ConnectionLoop, address_key
from est_gateway.server.tls import ClientChainLimits

BOUND_S = 20.0
#: an answer larger than what the kernel buffers on loopback (a send buffer grows to 4 MiB)
BIG = 6 << 20


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def answer_to(path: bytes, body: bytes = b"") -> bytes:
    body = body or path
    return b"HTTP/1.1 200 OK\r\nX-Path: " + path + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def eventually(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < end, what
        time.sleep(0.01)


class Served:
    """A loop on a plain loopback listener; each request is answered on a thread of its own
    by ``self.make(path)``, after ``self.go`` is set."""

    def __init__(self, *, settings: ServerSettings | None = None, **bounds: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.running = True
        self.dispatched: list[bytes] = []
        self.go = threading.Event()
        self.go.set()
        self.make: Callable[[bytes], bytes] = answer_to
        self.threads: list[threading.Thread] = []
        self.loop = ConnectionLoop(
            [self.listener], settings or ServerSettings(), tls_context=None,
            chain_limits=ClientChainLimits(8, 10, 32768), dispatch=self._dispatch, alive=lambda: self.running,
            heartbeat=lambda: None, wakeup_fds=[], log=logging.getLogger("test-loop"), max_connections=64,
            limits=Limits(max_fields=100, max_field_bytes=16384, max_body=65536), **bounds)
        self.runner = threading.Thread(target=self.loop.run)

    def _dispatch(self, client: Client) -> None:
        assert client.request is not None
        path = client.request.target
        self.dispatched.append(path)

        def answer() -> None:
            assert self.go.wait(BOUND_S)
            self.loop.answer(client, self.make(path), keep_alive=True)
        self.threads.append(threading.Thread(target=answer))
        self.threads[-1].start()

    def connect(self, rcvbuf: int = 0) -> socket.socket:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(BOUND_S)
        sock.connect(self.listener.getsockname())
        return sock


@pytest.fixture
def served() -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(**kw: Any) -> Served:
        it = Served(**kw)
        it.runner.start()
        made.append(it)
        return it
    yield make
    for it in made:
        it.go.set()
        it.running = False
        it.runner.join(BOUND_S)
        for thread in it.threads:
            thread.join(BOUND_S)
        it.loop.close_wakeup()
        it.listener.close()


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """The X-Path of each of ``count`` answers, in order."""
    paths: list[bytes] = []
    buf = bytearray()
    while len(paths) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(paths)} answers"
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf = bytearray(rest)
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"Content-Length"])
        while len(buf) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed inside an answer"
            buf += chunk
        paths.append(fields[b"X-Path"])
        del buf[:length]
    return paths


def test_pipelined_requests_are_dispatched_one_at_a_time_after_each_answer_is_written(
        served: Callable[..., Served]) -> None:
    """The second request of a connection is dispatched only once the first's answer is
    written: a client that does not read holds one answer, not its whole pipeline."""
    it = served()
    it.make = lambda path: answer_to(path, b"x" * BIG)
    with it.connect(rcvbuf=4096) as client:
        client.sendall(b"".join(request(f"/{i}") for i in range(3)))
        eventually(lambda: it.loop.unsent > 0, "the first answer is being written")
        time.sleep(0.2)                         # the loop would dispatch the next one now
        assert it.dispatched == [b"/0"]
        assert read_answers(client, 3) == [b"/0", b"/1", b"/2"]
        # idle again, the connection is watched for its next request, not for writing (which
        # a socket with room always is: the loop would spin)
        eventually(lambda: [(c.phase, c.event) for c in it.loop.waiting.values()] == [("idle", selectors.EVENT_READ)],
                   "idle and watched for reading")
    assert it.dispatched == [b"/0", b"/1", b"/2"]


def test_beyond_the_unsent_bound_complete_requests_wait_in_the_loop(served: Callable[..., Served]) -> None:
    it = served(max_unsent_bytes=1 << 20)
    it.make = lambda path: answer_to(path, b"x" * BIG)
    with it.connect(rcvbuf=4096) as first:
        first.sendall(request("/first"))
        eventually(lambda: it.loop.unsent >= 1 << 20, "the first answer holds the bound")
        others = [it.connect(rcvbuf=4096) for _ in range(4)]
        try:
            for i, sock in enumerate(others):
                sock.sendall(request(f"/held{i}"))
            eventually(lambda: len(it.loop.held) == 4, "the four requests are complete and held")
            assert it.dispatched == [b"/first"]
            assert it.loop.unsent <= BIG
            assert read_answers(first, 1) == [b"/first"]
            for i, sock in enumerate(others):   # one at a time: each answer holds the bound again
                assert read_answers(sock, 1) == [f"/held{i}".encode()]
            assert it.dispatched == [b"/first", b"/held0", b"/held1", b"/held2", b"/held3"]
        finally:
            for sock in others:
                sock.close()


def parsed(it: Served, count: int) -> Callable[[], bool]:
    return lambda: len(it.dispatched) + len(it.loop.held) == count


def test_beyond_the_serving_bound_complete_requests_wait_in_the_loop(served: Callable[..., Served]) -> None:
    it = served(max_serving=2)
    it.go.clear()                               # the pool holds every request it gets
    socks = [it.connect() for _ in range(5)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(request(f"/{i}"))
            eventually(parsed(it, i + 1), "request parsed")
        assert it.dispatched == [b"/0", b"/1"] and len(it.loop.held) == 3
        it.go.set()
        for i, sock in enumerate(socks):
            assert read_answers(sock, 1) == [f"/{i}".encode()]
        assert it.dispatched == [f"/{i}".encode() for i in range(5)]
    finally:
        for sock in socks:
            sock.close()


def test_a_refusal_is_written_by_the_loop_and_closes(served: Callable[..., Served]) -> None:
    it = served()
    with it.connect() as client:
        client.sendall(b"GET / HTTP/9.9\r\nHost: t\r\n\r\n" + request("/never"))
        got = b""
        while chunk := client.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 505 ") and b"Connection: close" in got
    assert it.dispatched == []


@pytest.mark.parametrize("reader", ["never", "steadily"])
def test_an_answer_not_written_by_its_deadline_closes_the_connection(served: Callable[..., Served],
                                                                    reader: str) -> None:
    """The deadline bounds the whole answer, not each write: a client reading steadily (its
    every read lets the loop write more) but too slowly is closed all the same."""
    it = served(settings=ServerSettings(request_timeout_s=1.0))
    size = 16 << 20
    it.make = lambda path: answer_to(path, b"x" * size)
    received = 0
    with it.connect(rcvbuf=4096) as client:
        client.sendall(request("/slow"))
        eventually(lambda: it.loop.unsent > 0, "the answer is being written")
        if reader == "never":
            eventually(lambda: it.loop.count == 0, "the connection is closed at its deadline")
        else:       # at most 8 KiB (the receive buffer) per 2 ms: 16 MiB would take over 4 s
            try:
                while chunk := client.recv(65536):
                    received += len(chunk)
                    time.sleep(0.002)
            except ConnectionResetError:
                pass
            assert received < size
    eventually(lambda: it.loop.count == 0, "closed")
    assert it.loop.unsent == 0


def test_a_keep_alive_connection_idle_past_keepalive_s_is_closed(served: Callable[..., Served]) -> None:
    it = served(settings=ServerSettings(keepalive_s=0.5, request_timeout_s=60.0))
    with it.connect() as client:
        client.sendall(request("/once"))
        assert read_answers(client, 1) == [b"/once"]
        assert client.recv(10) == b""            # closed by the server, long before request_timeout_s
    eventually(lambda: it.loop.count == 0, "closed")


def test_a_graceful_stop_writes_the_answers_still_being_made(served: Callable[..., Served]) -> None:
    it = served()
    it.go.clear()
    with it.connect() as busy, it.connect() as idle:
        busy.sendall(request("/in-flight"))
        eventually(lambda: it.dispatched == [b"/in-flight"], "dispatched")
        eventually(lambda: it.loop.count == 2, "both accepted")
        it.running = False
        eventually(lambda: it.loop.count == 1, "the idle connection is closed at once")
        assert idle.recv(10) == b""
        it.go.set()
        assert read_answers(busy, 1) == [b"/in-flight"]
        assert busy.recv(10) == b""              # then closed: the worker is stopping
        it.runner.join(BOUND_S)
        assert not it.runner.is_alive()


@pytest.mark.parametrize(("addr", "key"), [
    (("2001:db8:1:2::1", 443, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:ffff:ffff:ffff:ffff", 443, 0, 0), "2001:db8:1:2::/64"),   # the same subscriber
    (("2001:db8:1:3::1", 443, 0, 0), "2001:db8:1:3::/64"),
    (("fe80::1%eth0", 443, 0, 2), "fe80::/64"),
    (("::ffff:192.0.2.7", 443, 0, 0), "192.0.2.7"),
    (("192.0.2.7", 443), "192.0.2.7"),
    ("/run/est.sock", None),
])
def test_an_ipv6_client_counts_by_its_64(addr: Any, key: str | None) -> None:
    assert address_key(addr, ()) == key
