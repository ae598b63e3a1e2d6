"""A gunicorn worker: an event loop for connections, a thread pool for requests.

Gunicorn's arbiter gives us pre-forked processes (every core), worker restarts and
graceful shutdown on SIGTERM. In each worker the main thread runs
:class:`~est_gateway.server.loop.ConnectionLoop` (accept, non-blocking pyOpenSSL
handshake, reading until the request is complete) and a bounded thread pool parses each
complete request with gunicorn's HTTP parser and runs the WSGI application. A thread is
therefore only ever busy with a request that has fully arrived: idle or dripping clients
cost a file descriptor each, and at most ``max_connections`` of them.

Gunicorn internals used here (pyproject.toml's floor has them all): ``workers.base.Worker``,
``http.RequestParser`` and its unreader's ``take_buffered``, ``http.wsgi.create``,
``http.errors``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

from gunicorn.http import RequestParser, errors, wsgi
from gunicorn.workers.base import Worker

from est_gateway.server.framing import framing_error
from est_gateway.server.loop import Client, ConnectionLoop, raise_fd_limit
from est_gateway.server.tls import ClientChainLimits, server_context

#: descriptors a worker keeps for itself (listeners, logs, database, upstream connections)
RESERVED_FDS = 256


class ESTWorker(Worker):  # type: ignore[misc]
    """Pre-forked worker: connections in the event loop, complete requests on threads."""

    alive: bool      # gunicorn's: False after SIGTERM
    ppid: int        # gunicorn's: the arbiter's pid

    def init_process(self) -> None:
        _tune_malloc()
        settings = self.app.gateway_config.server
        self.server_settings = settings
        self.chain_limits = ClientChainLimits(max_depth=settings.client_cert_max_depth,
                                              max_certs=settings.client_cert_max_count,
                                              max_bytes=settings.client_cert_max_bytes)
        self.tls_context = (server_context(settings.tls_cert, settings.tls_key,
                                           min_version=settings.tls_min_version, chain=self.chain_limits,
                                           keys=self.app.gateway_config.limits)
                            if settings.tls else None)
        fd_limit = raise_fd_limit()
        self.max_connections = min(settings.max_connections, max(16, fd_limit - RESERVED_FDS))
        if self.max_connections < settings.max_connections:
            self.log.warning("server.max_connections = %d, but this process may open only %d descriptors: "
                             "at most %d connections per worker (raise the hard limit, ulimit -Hn)",
                             settings.max_connections, fd_limit, self.max_connections)
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="est")
        super().init_process()

    def run(self) -> None:
        self.loop = ConnectionLoop(
            self.sockets, self.server_settings, tls_context=self.tls_context, chain_limits=self.chain_limits,
            dispatch=lambda client: self.pool.submit(self._serve, client),
            alive=self._keep_running, heartbeat=self.notify, wakeup_fds=[self.PIPE[0]],
            log=self.log, max_connections=self.max_connections)
        try:
            self.loop.run()
        finally:
            # Graceful stop: requests already complete are answered before the process exits.
            self.pool.shutdown(wait=True)
            self.loop.close_wakeup()

    def _keep_running(self) -> bool:
        """Until SIGTERM, or until the arbiter is gone (SIGKILLed: a new one may need the port)."""
        if self.alive and self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False
        return bool(self.alive)

    def _serve(self, client: Client) -> None:
        """On a pool thread: answer the request, then give the connection back to the loop."""
        keep_alive = False
        try:
            keep_alive = self._serve_request(client)
        except Exception:
            self.log.exception("error serving a connection")
        finally:
            if not keep_alive:
                try:   # TLS close_notify and TCP FIN now; the loop drains what still arrives
                    client.conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            self.loop.give_back(client, keep_alive=keep_alive)

    def _serve_request(self, client: Client) -> bool:
        """Parse and answer one request; True when the connection may carry another."""
        settings = self.server_settings
        conn, addr = client.conn, client.addr
        conn.settimeout(settings.request_timeout_s)
        parser = RequestParser(self.cfg, conn, addr)
        req = None
        try:
            req = next(parser)
            client.served += 1
            last = client.served >= settings.max_requests_per_connection or not self.alive
            if not self._answer(client, req, close=last):
                return False
            # The rest of this request's body, then keep what the client pipelined behind it.
            conn.deadline = time.monotonic() + settings.request_timeout_s
            while req.body.read(8192):
                pass
            client.buffer = bytearray(parser.unreader.take_buffered())
            return True
        except (StopIteration, errors.NoMoreData, TimeoutError):
            return False   # the client closed, or was too slow
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.debug("socket error on %s: %s", addr, exc)
            return False
        except Exception as exc:
            self.handle_error(req, conn, addr, exc)
            return False

    def _answer(self, client: Client, req: Any, *, close: bool) -> bool:
        """Run the application for one request; True when the connection may carry another."""
        conn = client.conn
        resp, environ = wsgi.create(req, conn, client.addr, client.server, self.cfg)
        if close or self.server_settings.keepalive_s <= 0:
            resp.force_close()
        self.nr += 1
        respiter = self.wsgi(environ, resp.start_response)
        # The answer gets its own time to be written, whatever the request took.
        conn.deadline = time.monotonic() + self.server_settings.request_timeout_s
        conn.cork()
        try:
            for item in respiter:
                resp.write(item)
            resp.close()
        finally:
            if hasattr(respiter, "close"):
                respiter.close()
            conn.uncork()
        # After an error the request body may be unread (413): never reuse such a connection.
        return bool(not resp.should_close() and int(resp.status_code) < 400)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """HTTP framing errors gunicorn detects before the application: answered, like every
        error of the gateway, with a short text/plain reason instead of gunicorn's HTML page."""
        status, reason = framing_error(exc)
        if status >= 500 and status not in (501, 505):
            self.log.exception("error handling request")
        else:
            self.log.warning("invalid request from %s: %s", addr[0] if addr else "?", reason)
        body = (reason + "\n").encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            client.sendall(head.encode("latin-1") + body)
        except Exception:
            self.log.debug("failed to send the error answer")


def _tune_malloc(arenas: int = 2, mmap_threshold: int = 1024 * 1024) -> None:
    """glibc gives every thread its own malloc arena, which grows a worker's resident
    memory with its thread count; two arenas keep it near that of a single thread.

    A fixed mmap threshold keeps glibc from raising it after a large block is freed (its
    default): otherwise the first scrypt check's 16 MiB buffer is mapped and unmapped, but
    every later one comes from an arena and stays resident after it is freed. Blocks above
    the threshold are mapped for their lifetime and returned to the system when freed.
    Must run before the worker's threads start; a no-op where glibc is absent."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)            # M_ARENA_MAX
        libc.mallopt(-3, mmap_threshold)    # M_MMAP_THRESHOLD (also stops its dynamic raise)
    except (OSError, AttributeError):
        pass
