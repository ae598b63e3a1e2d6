"""Idle and slow connections held against a gateway, as an attacker would (issue 10 §1).

Three kinds, all from loopback addresses other than 127.0.0.1 (so a legitimate client on
127.0.0.1 is a different address for the per-address cap):

* idle: a TCP connection that never sends a byte;
* handshake drippers: send a real ClientHello one byte per interval;
* header drippers: complete the TLS handshake, then send a request head one byte per interval.

Used by tests/test_hostile_connections.py (bounded, a few seconds) and by ``python -m bench``
(legitimate latency under attack).
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

HOST = "127.0.0.1"


def source_address(i: int, spread: int) -> str:
    """127.0.0.2 ... 127.0.0.(1 + spread): attackers never share the legitimate client's address."""
    return f"127.0.0.{2 + i % spread}"


def raise_fd_limit(needed: int) -> None:
    """This process holds every attacking socket: lift the soft descriptor limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed + 256:
        limit = hard if hard == resource.RLIM_INFINITY else min(hard, needed + 256)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def client_hello() -> bytes:
    """The first flight of a real TLS client (Python's ssl), to be dripped."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=HOST)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@dataclass
class Attack:
    """``with Attack(port, ...):`` holds the connections until the block ends."""

    port: int
    idle: int = 1000
    handshake_drippers: int = 25
    header_drippers: int = 25
    interval: float = 0.5
    spread: int = 40
    #: connections the server closed (or refused) while the attack ran
    closed_by_server: int = 0
    opened: int = 0
    _socks: list[socket.socket] = field(default_factory=list)
    _drip: list[tuple[socket.socket, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _connect(self, i: int) -> socket.socket | None:
        sock = socket.socket()
        try:
            sock.bind((source_address(i, self.spread), 0))
            sock.settimeout(5)
            sock.connect((HOST, self.port))
        except OSError:
            sock.close()
            self.closed_by_server += 1
            return None
        self.opened += 1
        return sock

    def __enter__(self) -> Attack:
        raise_fd_limit(self.idle + self.handshake_drippers + self.header_drippers)
        try:
            head = (f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: {HOST}\r\n"
                    "Content-Type: application/pkcs10\r\n").encode()   # never the blank line
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            for i in range(self.header_drippers):
                if (sock := self._connect(i)) is None:
                    continue
                sock.settimeout(2)
                try:
                    tls = ctx.wrap_socket(sock, server_hostname=HOST)
                except (OSError, ssl.SSLError):
                    sock.close()    # a server that cannot even complete a handshake now
                    self.closed_by_server += 1
                    continue
                self._socks.append(tls)
                self._drip.append((tls, head))
            hello = client_hello()
            for i in range(self.handshake_drippers):
                if (sock := self._connect(i)) is not None:
                    self._socks.append(sock)
                    self._drip.append((sock, hello))
            for i in range(self.idle):
                if (sock := self._connect(i)) is not None:
                    self._socks.append(sock)
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, name="attack-drip", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        sent = 0
        with selectors.DefaultSelector() as sel:
            for sock in self._socks:
                sel.register(sock, selectors.EVENT_READ)
            while not self._stop.wait(self.interval):
                for sock, data in list(self._drip):
                    try:
                        sock.send(data[sent % len(data):sent % len(data) + 1])
                    except (OSError, ssl.SSLError):
                        self._drip.remove((sock, data))
                sent += 1
                # the server closing a connection shows as readable with EOF (or a reset)
                for key, _ in sel.select(0):
                    sel.unregister(key.fileobj)
                    self.closed_by_server += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._close()

    def _close(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks.clear()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False
