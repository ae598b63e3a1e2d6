"""The worker's event loop: connections cost a file descriptor, not a thread, until a
complete request has arrived, and a thread is never lent to a client socket.

One thread per worker process runs a ``selectors`` loop that accepts, drives each TLS
handshake without blocking, and parses each request as its bytes arrive
(:class:`~est_gateway.server.http11.RequestReader`, which also enforces the limits). Only a
complete request is handed to the thread pool, which runs the application and hands the
answer's bytes back (:meth:`ConnectionLoop.answer`); the loop writes them as the socket
drains, and so the refusals it makes itself. While a connection's answer is unsent, none
of its pipelined requests is read, parsed or dispatched. Idle sockets, handshake drippers,
header drippers and clients that do not read their answers therefore wait in the kernel
and in this loop's table, never in a thread that a legitimate request needs.

Every connection the loop holds has a deadline (handshake: ``handshake_timeout_s``, never
more than ``request_timeout_s``; request: ``request_timeout_s``; an answer being written:
``request_timeout_s`` from when it is ready; keep-alive idle: ``keepalive_s``): past it the
connection is closed. A worker holds at most ``max_connections``, at most
``max_connections_per_address`` from one client address (an IPv6 client by its /64;
trusted proxies and the Unix socket exempt): new connections above either bound are closed
at once, before any TLS work, because answering 429 would need the handshake whose cost the
bound is there to refuse.

Bytes buffered are bounded too: per connection one answer, at most ``READ_BYTES`` of
pipelined input unparsed and ``PARSE_SLICE`` parsed ahead; per worker at most
``max_serving`` requests handed to the pool at a time and ``max_unsent_bytes`` of answers
unsent. Beyond either worker bound a complete request waits in the loop, unanswered but
without a deadline of its own (the answers holding the bound have theirs), and its
connection is not read: what its client sends meanwhile waits in the kernel.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL

from est_gateway.config.model import IPNetwork, ServerSettings
from est_gateway.server.connection import Connection, PlainSocket
from est_gateway.server.http11 import CONTINUE, BufferBudget, Limits, Refusal, Request, RequestReader, error_answer
from est_gateway.server.tls import ClientChainLimits, TLSSocket

HANDSHAKE, REQUEST, IDLE, SERVING, WRITING, HELD, CLOSING, CLOSED = (
    "handshake", "request", "idle", "serving", "writing", "held", "closing", "closed")
#: bytes read from a socket at a time: a connection's pipelined input waits unparsed in at most one
READ_BYTES = 65536
#: answers a worker holds unsent, in bytes, before it dispatches no more requests
MAX_UNSENT_BYTES = 16 * 1024 * 1024
#: requests a worker hands to its pool at a time (each may add an answer to the unsent bytes)
MAX_SERVING = 64
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
    """One accepted connection, owned by the loop except while a pool thread answers it."""

    conn: Connection
    addr: Any
    server: Any                  # the listener's address (WSGI SERVER_NAME/PORT)
    key: str | None              # per-address count key; None: exempt
    phase: str
    deadline: float
    reader: RequestReader | None = None      # made when the client first sends a request byte
    request: Request | None = None           # handed to the serving thread (or held)
    served: int = 0
    event: int = 0               # registered selector event, 0 when not registered
    drained: int = 0
    keep_alive: bool = False     # after the answer being written
    counted: int = 0             # its unsent bytes, as counted in the loop's total


def address_key(addr: Any, trusted_proxies: Iterable[IPNetwork]) -> str | None:
    """The per-address count key of a peer address: an IPv4 address, an IPv6 client's /64
    (one subscriber's prefix); None (exempt) for a trusted proxy or a Unix socket."""
    if not isinstance(addr, tuple) or not addr:
        return None     # Unix socket: its file permissions decide who connects
    try:
        ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in trusted_proxies):
        return None     # a proxy carries many clients on its own connections
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class ConnectionLoop:
    """Accept, handshake, read and write without threads; hand complete requests to ``dispatch``."""

    def __init__(self, listeners: list[Any], settings: ServerSettings, *, tls_context: SSL.Context | None,
                 chain_limits: ClientChainLimits, dispatch: Callable[[Client], object],
                 alive: Callable[[], bool], heartbeat: Callable[[], None], wakeup_fds: list[int],
                 log: logging.Logger | Any, max_connections: int, limits: Limits,
                 max_serving: int = MAX_SERVING, max_unsent_bytes: int = MAX_UNSENT_BYTES,
                 plain: frozenset[int] = frozenset()) -> None:
        self.settings = settings
        self.limits = limits
        self.tls_context = tls_context
        #: descriptors of listeners served without TLS even where ``tls_context`` is set
        self.plain = plain
        self.chain_limits = chain_limits
        self.dispatch = dispatch
        self.alive = alive
        self.heartbeat = heartbeat
        self.log = log
        self.max_connections = max_connections
        self.max_serving = max_serving
        self.max_unsent_bytes = max_unsent_bytes
        self.listeners = listeners
        self.selector = selectors.DefaultSelector()
        self.count = 0
        self.per_address: Counter[str] = Counter()
        #: the bytes of unfinished requests all connections hold together
        self.buffered = BufferBudget(settings.max_buffered_request_bytes)
        self.waiting: dict[int, Client] = {}         # id(client) → client, while the loop owns it
        #: requests handed to the pool and not answered yet
        self.serving = 0
        #: bytes of answers queued on connections and not yet written
        self.unsent = 0
        #: connections with a complete request that waits for the worker's bounds
        self.held: deque[Client] = deque()
        self._returned: list[tuple[Client, bytes, bool]] = []
        self._lock = threading.Lock()
        self._stopping = False       # told to stop: answers in progress are finished
        self._stopped = False        # the loop has ended: answers are dropped
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
        """Serve until the worker is told to stop; then finish the requests handed to the
        pool and the answers being written (each within its deadline), and close the rest."""
        next_sweep = 0.0
        try:
            while True:
                if not self._stopping and not self.alive():
                    self._stop_serving()
                if self._stopping and not self.serving and not self._writing():
                    break
                for key, _ in self.selector.select(timeout=0.25):
                    data = key.data
                    if data is None:
                        self._drain_wakeup(key.fd)
                    elif isinstance(data, Client):
                        self._advance(data)
                    else:
                        self._accept(data)
                self._take_back()
                self._release_held()
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
            for client, _, _ in returned:
                client.conn.close()
            for client in list(self.waiting.values()):
                self._close(client)
            self.selector.close()
            os.close(self._wake_r)

    def answer(self, client: Client, data: bytes, *, keep_alive: bool) -> None:
        """From a pool thread: the answer to ``client.request`` is ``data``; the loop writes
        it, then waits for the next request (keep-alive) or drains and closes. After the
        loop has ended, the connection is closed here."""
        with self._lock:
            if self._stopped:
                client.conn.close()
                return
            # one wake-up for the answers that come back before the loop takes them
            first = not self._returned
            self._returned.append((client, data, keep_alive))
        if first:
            self.wake()

    def wake(self) -> None:
        """From any thread: end the loop's wait in select now."""
        try:
            os.write(self._wake_w, b".")
        except BlockingIOError:
            pass   # the loop has wake-ups pending already

    def close_wakeup(self) -> None:
        """After every thread is done (no more answer)."""
        os.close(self._wake_w)

    def _stop_serving(self) -> None:
        """Told to stop (shutdown, or a reload's new workers took over): accept no more and
        close the idle keep-alive connections. The others were accepted for a request, so
        they are served within their deadlines (a reload must not drop them); one that has
        sent no request byte yet gets at most ``handshake_timeout_s`` more to begin."""
        self._stopping = True
        self._pause_accepting(math.inf)
        begin_by = time.monotonic() + self.settings.handshake_timeout_s
        for client in list(self.waiting.values()):
            if client.phase == IDLE:
                self._close(client)
            elif client.phase == REQUEST and client.reader is None:
                client.deadline = min(client.deadline, begin_by)

    def _writing(self) -> bool:
        """Some connection is still owed an answer (or is sending its request)."""
        return any(client.phase in (HANDSHAKE, REQUEST, HELD, WRITING) for client in self.waiting.values())

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
            key = address_key(addr, self.settings.trusted_proxies)
            cap = self.settings.max_connections_per_address
            if key is not None and cap and self.per_address[key] >= cap:
                self._warn(f"addr:{key}", "closing new connections from %s: %d open "
                           "(server.max_connections_per_address)", key, self.per_address[key])
                sock.close()
                continue
            settings = self.settings
            conn: Connection
            if self.tls_context is not None and listener.fileno() not in self.plain:
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

    def _pause_accepting(self, until: float) -> None:
        if not self._accept_paused_until:
            for listener in self.listeners:
                self.selector.unregister(listener)
        self._accept_paused_until = max(until, self._accept_paused_until)

    def _resume_accepting(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            for listener in self.listeners:
                self.selector.register(listener, selectors.EVENT_READ, listener)

    # -- driving one connection --------------------------------------------------------------

    def _advance(self, client: Client) -> None:
        """Make what progress the socket allows now; never blocks."""
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
            if client.phase == WRITING:
                self._write(client)
                return
            if client.phase == CLOSING:
                self._linger(client)
                return
            if self._next_request(client):
                return
            if client.reader is not None and client.reader.take_continue():   # the request behind one served
                self._interim(client)
            while (data := conn.read_nowait(READ_BYTES)) is not None:
                if not data:
                    self._close(client)
                    return
                if client.phase == IDLE:   # the next request begins: it gets the whole request time
                    client.phase, client.deadline = REQUEST, time.monotonic() + self.settings.request_timeout_s
                reader = client.reader
                if reader is None:
                    reader = client.reader = RequestReader(self.limits, self.buffered)
                reader.feed(data)
                if self._next_request(client):
                    return
                if reader.take_continue():
                    self._interim(client)
            self._watch(client, conn.wants)
        except (SSL.Error, OSError) as exc:
            self.log.debug("connection from %s ended: %s", client.addr, exc)
            self._close(client)

    def _next_request(self, client: Client) -> bool:
        """Hand the next complete request to the pool (or hold it), or write the refusal of
        one; False when no request is complete yet."""
        reader = client.reader
        item = reader.take() if reader is not None else None
        if item is None:
            return False
        self._unwatch(client)
        if isinstance(item, Refusal):
            self._refuse(client, item)
            return True
        client.request = item
        if self._may_dispatch():
            self._dispatch(client)
        else:
            client.phase, client.deadline = HELD, math.inf
            self.held.append(client)
        return True

    def _may_dispatch(self) -> bool:
        return self.serving < self.max_serving and self.unsent < self.max_unsent_bytes

    def _dispatch(self, client: Client) -> None:
        self.waiting.pop(id(client), None)
        client.phase = SERVING
        self.serving += 1
        self.dispatch(client)

    def _release_held(self) -> None:
        """Dispatch held requests, oldest first, while the worker's bounds allow."""
        while self.held and self._may_dispatch():
            client = self.held.popleft()
            if client.phase == HELD:
                self._dispatch(client)

    def _refuse(self, client: Client, refusal: Refusal) -> None:
        """A request the reader refused: the gateway's one error answer (a short text/plain
        reason), then the connection closes; nothing pipelined behind it is served."""
        self.log.warning("invalid request from %s: %s%s", client.addr[0] if isinstance(client.addr, tuple) else "unix",
                         refusal.reason, f" ({refusal.detail})" if refusal.detail else "")
        self._send(client, error_answer(refusal.status, refusal.reason), keep_alive=False)

    def _send(self, client: Client, data: bytes, *, keep_alive: bool) -> None:
        """Queue an answer on the connection and write what the socket takes now; the rest
        as it drains, by the answer's deadline."""
        client.conn.queue(data)
        client.keep_alive = keep_alive and not self._stopping
        client.phase, client.deadline = WRITING, time.monotonic() + self.settings.request_timeout_s
        self.waiting[id(client)] = client
        self._advance(client)

    def _write(self, client: Client) -> None:
        conn = client.conn
        done = conn.flush()
        self._account(client)
        if not done:
            self._watch(client, conn.wants)
            return
        now = time.monotonic()
        if not client.keep_alive:
            try:   # TLS close_notify and TCP FIN now; what still arrives is drained
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            client.phase, client.deadline = CLOSING, now + LINGER_S
            self._linger(client)
            return
        client.phase, client.deadline = IDLE, now + self.settings.keepalive_s
        reader = client.reader
        if reader is not None and (reader.ready or reader.unparsed or reader.in_progress):   # pipelined
            client.phase, client.deadline = REQUEST, now + self.settings.request_timeout_s
        self._advance(client)

    def _interim(self, client: Client) -> None:
        client.conn.send_interim(CONTINUE)
        self._account(client)

    def _account(self, client: Client) -> None:
        """Keep the worker's total of unsent bytes up to date with this connection's."""
        unsent = client.conn.unsent
        self.unsent += unsent - client.counted
        client.counted = unsent

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
        for client, data, keep_alive in returned:
            self.serving -= 1
            self._send(client, data, keep_alive=keep_alive)

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
        if client.phase == CLOSED:
            return
        self._unwatch(client)
        self.waiting.pop(id(client), None)
        client.phase = CLOSED
        self.unsent -= client.counted
        client.counted = 0
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

