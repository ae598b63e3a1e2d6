"""The worker's event loop: connections cost a file descriptor, not a thread, until a
complete request has arrived.

One thread per worker process runs a ``selectors`` loop that accepts, drives each TLS
handshake without blocking, and parses each request as its bytes arrive
(:class:`~est_gateway.server.http11.RequestReader`, which also enforces the limits). Only a
complete request, or the refusal of one, is handed to the thread pool, which answers it and
gives a keep-alive connection back for its idle wait (and a closing one for the short drain
of what the client still sends). Bytes pipelined behind a request are parsed on and served
in turn. Idle
sockets, handshake drippers and header drippers therefore wait in the kernel and in this
loop's table, never in a thread that a legitimate request needs.

Every waiting connection has a deadline (handshake: ``handshake_timeout_s``, never more
than ``request_timeout_s``; request:
``request_timeout_s``; keep-alive idle: ``keepalive_s``). A worker holds at most
``max_connections``, at most ``max_connections_per_address`` from one client address
(an IPv6 client by its /64; trusted proxies and the Unix socket exempt): new connections
above either bound are closed at once, before any TLS work, because answering 429 would
need the handshake whose cost the bound is there to refuse.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import selectors
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL

from est_gateway.config.model import ServerSettings
from est_gateway.server.connection import Connection, PlainSocket
from est_gateway.server.http11 import CONTINUE, BufferBudget, Limits, Refusal, Request, RequestReader
from est_gateway.server.tls import ClientChainLimits, TLSSocket

HANDSHAKE, REQUEST, IDLE, SERVING, CLOSING = "handshake", "request", "idle", "serving", "closing"
#: how long a closed connection's late bytes are drained before the socket is closed (RFC 9112 §9.6)
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024
#: accepts per readiness event: every worker's loop wakes on a new connection, and taking
#: one each spreads a burst over the processes (a larger batch lets one worker take a whole
#: burst while the other core idles)
ACCEPT_BATCH = 1
#: the same refusal is logged at most this often
WARN_EVERY_S = 10.0


@dataclass(eq=False)
class Client:
    """One accepted connection, owned by the loop except while a thread serves it."""

    conn: Connection
    addr: Any
    server: Any                  # the listener's address (WSGI SERVER_NAME/PORT)
    key: str | None              # per-address count key; None: exempt
    phase: str
    deadline: float
    reader: RequestReader | None = None      # made when the client first sends a request byte
    request: Request | Refusal | None = None   # handed to the serving thread
    served: int = 0
    event: int = 0               # registered selector event, 0 when not registered
    drained: int = 0


class ConnectionLoop:
    """Accept, handshake and read without threads; hand complete requests to ``dispatch``."""

    def __init__(self, listeners: list[Any], settings: ServerSettings, *, tls_context: SSL.Context | None,
                 chain_limits: ClientChainLimits, dispatch: Callable[[Client], object],
                 alive: Callable[[], bool], heartbeat: Callable[[], None], wakeup_fds: list[int],
                 log: logging.Logger | Any, max_connections: int, limits: Limits,
                 after_pass: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.limits = limits
        self.tls_context = tls_context
        self.chain_limits = chain_limits
        self.dispatch = dispatch
        self.alive = alive
        self.heartbeat = heartbeat
        self.log = log
        self.max_connections = max_connections
        self.listeners = listeners
        #: called at the end of every pass (the worker resumes its request greenlets there)
        self.after_pass = after_pass
        self.selector = selectors.DefaultSelector()
        self.count = 0
        self.per_address: Counter[str] = Counter()
        #: the bytes of unfinished requests all connections hold together
        self.buffered = BufferBudget(settings.max_buffered_request_bytes)
        self.waiting: dict[int, Client] = {}         # id(client) → client, while the loop owns it
        self._returned: list[tuple[Client, bool]] = []
        self._lock = threading.Lock()
        #: the thread running the loop (set by run): its own give_back needs no wake-up
        self._loop_thread: int | None = None
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._warned: dict[str, float] = {}
        self._accept_paused_until = 0.0
        for fd in [self._wake_r, *wakeup_fds]:
            self.selector.register(fd, selectors.EVENT_READ, None)
        for listener in listeners:
            listener.setblocking(False)
            self.selector.register(listener, selectors.EVENT_READ, listener)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until the worker is told to stop; then close every connection still waiting
        (requests already handed to threads finish: see :meth:`give_back`)."""
        next_sweep = 0.0
        self._loop_thread = threading.get_ident()
        try:
            while self.alive():
                # A connection given back during the last pass (by this thread, which does not
                # wake itself) is taken back at once, whatever else is ready.
                for key, _ in self.selector.select(timeout=0 if self._returned else 0.25):
                    data = key.data
                    if data is None:
                        self._drain_wakeup(key.fd)
                    elif isinstance(data, Client):
                        self._advance(data)
                    else:
                        self._accept(data)
                self._take_back()
                if self.after_pass is not None:
                    self.after_pass()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + 0.25
                    self._expire(now)
                    self._resume_accepting(now)
                    self.heartbeat()
        finally:
            with self._lock:
                self._stopped = True
                returned, self._returned = self._returned, []
            for client, _ in returned:
                client.conn.close()
            for client in list(self.waiting.values()):
                self._close(client)
            self.selector.close()
            os.close(self._wake_r)

    def give_back(self, client: Client, *, keep_alive: bool) -> None:
        """From a serving thread: the answer is written; wait for the next request (keep-alive)
        or drain and close. After the loop stopped, the connection is closed here. The loop's
        own thread (an answer made in the loop) does not wake itself: its next wait in
        ``select`` does not block while connections are given back (a write to the wake-up
        pipe per request, and a read per pass, saved)."""
        with self._lock:
            if self._stopped:
                client.conn.close()
                return
            self._returned.append((client, keep_alive))
        if threading.get_ident() != self._loop_thread:
            self.wake()

    def wake(self) -> None:
        """From any thread: end the loop's wait in select now."""
        try:
            os.write(self._wake_w, b".")
        except BlockingIOError:
            pass   # the loop has wake-ups pending already

    def close_wakeup(self) -> None:
        """After every thread is done (no more give_back)."""
        os.close(self._wake_w)

    # -- accepting ---------------------------------------------------------------------------

    def _accept(self, listener: Any) -> None:
        now = time.monotonic()
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment instead of spinning on a
                    # listener that stays readable.
                    self._warn("fds", "cannot accept (%s); pausing accepts for 0.5 s", exc)
                    self._pause_accepting(now + 0.5)
                    return
                raise
            if self.count >= self.max_connections:
                self._warn("max", "closing new connections: %d open (server.max_connections)", self.count)
                sock.close()
                continue
            key = self._address_key(addr)
            cap = self.settings.max_connections_per_address
            if key is not None and cap and self.per_address[key] >= cap:
                self._warn(f"addr:{key}", "closing new connections from %s: %d open "
                           "(server.max_connections_per_address)", key, self.per_address[key])
                sock.close()
                continue
            settings = self.settings
            conn: Connection
            if self.tls_context is not None:
                conn = TLSSocket(sock, self.tls_context)
                phase = HANDSHAKE
                deadline = now + min(settings.handshake_timeout_s, settings.request_timeout_s)
            else:
                conn = PlainSocket(sock)
                phase, deadline = REQUEST, now + settings.request_timeout_s
            client = Client(conn, addr, listener.getsockname(), key, phase, deadline)
            self.count += 1
            if key is not None:
                self.per_address[key] += 1
            self.waiting[id(client)] = client
            # Nothing to do until the client sends: the TLS state is made only then.
            self._watch(client, selectors.EVENT_READ)

    def _address_key(self, addr: Any) -> str | None:
        if not isinstance(addr, tuple) or not addr:
            return None     # Unix socket: its file permissions decide who connects
        try:
            ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.settings.trusted_proxies):
            return None     # a proxy carries many clients on its own connections
        if isinstance(ip, ipaddress.IPv6Address):
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))   # one subscriber's prefix
        return str(ip)

    def _pause_accepting(self, until: float) -> None:
        if not self._accept_paused_until:
            for listener in self.listeners:
                self.selector.unregister(listener)
        self._accept_paused_until = until

    def _resume_accepting(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            for listener in self.listeners:
                self.selector.register(listener, selectors.EVENT_READ, listener)

    # -- driving one connection --------------------------------------------------------------

    def _advance(self, client: Client) -> None:
        """Make what progress the socket allows now; never waits."""
        conn = client.conn
        try:
            if client.phase == HANDSHAKE:
                want = conn.handshake_step()
                if want:
                    self._watch(client, want)
                    return
                refusal = self.chain_limits.refusal(conn.info)
                if refusal is not None:
                    self.log.info("TLS client %s refused: %s", client.key or client.addr, refusal)
                    self._close(client)
                    return
                client.phase, client.deadline = REQUEST, time.monotonic() + self.settings.request_timeout_s
            if client.phase == CLOSING:
                self._linger(client)
                return
            if self._ready(client):
                return
            if client.reader is not None and client.reader.take_continue():   # the request behind one served
                conn.send_interim(CONTINUE)
            while (data := conn.read_nowait(65536)) is not None:
                if not data:
                    self._close(client)
                    return
                if client.phase == IDLE:   # the next request begins: it gets the whole request time
                    client.phase, client.deadline = REQUEST, time.monotonic() + self.settings.request_timeout_s
                reader = client.reader
                if reader is None:
                    reader = client.reader = RequestReader(self.limits, self.buffered)
                reader.feed(data)
                if self._ready(client):
                    return
                if reader.take_continue():
                    conn.send_interim(CONTINUE)
            self._watch(client, conn.wants)
        except (SSL.Error, OSError) as exc:
            self.log.debug("connection from %s ended: %s", client.addr, exc)
            self._close(client)

    def _ready(self, client: Client) -> bool:
        """Hand the connection to a thread if a request is complete (or refused)."""
        reader = client.reader
        if reader is None or not reader.ready:
            return False
        self._unwatch(client)
        self.waiting.pop(id(client), None)
        client.phase = SERVING
        client.request = reader.ready.popleft()
        self.dispatch(client)
        return True

    def _linger(self, client: Client) -> None:
        while (data := client.conn.read_nowait(65536)) is not None:
            client.drained += len(data)
            if not data or client.drained > LINGER_BYTES:
                self._close(client)
                return
        self._watch(client, client.conn.wants)

    def _take_back(self) -> None:
        with self._lock:
            returned, self._returned = self._returned, []
        now = time.monotonic()
        for client, keep_alive in returned:
            self.waiting[id(client)] = client
            if keep_alive:
                client.phase, client.deadline = IDLE, now + self.settings.keepalive_s
                reader = client.reader
                if reader is not None and (reader.ready or reader.in_progress):   # pipelined
                    client.phase, client.deadline = REQUEST, now + self.settings.request_timeout_s
            else:
                client.phase, client.deadline = CLOSING, now + LINGER_S
            self._advance(client)

    def _expire(self, now: float) -> None:
        for client in [c for c in self.waiting.values() if c.deadline <= now]:
            self.log.debug("closing %s connection from %s: deadline passed", client.phase, client.addr)
            self._close(client)

    # -- bookkeeping -------------------------------------------------------------------------

    def _watch(self, client: Client, event: int) -> None:
        if client.event == event:
            return
        if client.event:
            self.selector.modify(client.conn, event, client)
        else:
            self.selector.register(client.conn, event, client)
        client.event = event

    def _unwatch(self, client: Client) -> None:
        if client.event:
            self.selector.unregister(client.conn)
            client.event = 0

    def _close(self, client: Client) -> None:
        self._unwatch(client)
        self.waiting.pop(id(client), None)
        if client.reader is not None:
            client.reader.close()
        client.conn.close()
        self.count -= 1
        if client.key is not None:
            self.per_address[client.key] -= 1
            if self.per_address[client.key] <= 0:
                del self.per_address[client.key]

    def _drain_wakeup(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[kind] = now
            if len(self._warned) > 1024:    # per-address kinds: forget old ones
                self._warned = {k: t for k, t in self._warned.items() if now - t < WARN_EVERY_S}
            self.log.warning(message, *args)


def raise_fd_limit() -> int:
    """Lift this process's soft descriptor limit to the hard one (every waiting connection
    is a descriptor); return the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20

