"""A gunicorn worker that terminates TLS with pyOpenSSL and serves connections on threads.

Gunicorn's arbiter gives us pre-forked processes (both cores), worker restarts and
graceful shutdown on SIGTERM. Its sync worker serves one connection at a time, so a
slow TLS client would block a whole process; this worker hands each accepted
connection to a bounded thread pool instead, with deadlines on the handshake and on
every read and write.
"""

from __future__ import annotations

import ctypes
import errno
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

from gunicorn import http, util
from gunicorn.http import errors, wsgi
from gunicorn.workers.sync import SyncWorker
from OpenSSL import SSL

from est_gateway.server.connection import Connection, PlainSocket
from est_gateway.server.tls import TLSSocket, server_context


class ESTWorker(SyncWorker):  # type: ignore[misc]
    """Pre-forked worker: accept in the main loop, handshake and serve in a thread."""

    def init_process(self) -> None:
        _limit_malloc_arenas()
        settings = self.app.gateway_config.server
        self.server_settings = settings
        self.tls_context = (server_context(settings.tls_cert, settings.tls_key,
                                           min_version=settings.tls_min_version)
                            if settings.tls else None)
        self.slots = threading.BoundedSemaphore(self.cfg.threads)
        self.active = 0
        self.active_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="est")
        super().init_process()

    def run(self) -> None:
        try:
            super().run()
        finally:
            # Graceful stop: requests already accepted are finished before the process exits.
            self.pool.shutdown(wait=True)

    def accept(self, listener: socket.socket) -> None:
        # Wait for a free thread before taking a connection off the backlog, telling the
        # arbiter we are alive meanwhile.
        while not self.slots.acquire(timeout=1.0):
            self.notify()
            if not self.alive:
                return
        try:
            client, addr = listener.accept()
        except BaseException:
            self.slots.release()
            raise
        util.close_on_exec(client)
        self.pool.submit(self._serve, listener, client, addr)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """HTTP framing errors gunicorn detects before the application: answered, like every
        error of the gateway, with a short text/plain reason instead of gunicorn's HTML page."""
        status, reason = _framing_error(exc)
        if status >= 500 and status != 501:
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

    def _serve(self, listener: socket.socket, client: socket.socket, addr: Any) -> None:
        with self.active_lock:
            self.active += 1
        try:
            timeout = self.server_settings.request_timeout_s
            conn: Connection = PlainSocket(client)
            conn.deadline = time.monotonic() + timeout
            if self.tls_context is not None:
                conn = TLSSocket(client, self.tls_context)
                conn.deadline = time.monotonic() + timeout
                try:
                    conn.handshake(timeout)
                except (SSL.Error, OSError) as exc:
                    self.log.debug("TLS handshake with %s failed: %s", addr, exc)
                    client.close()
                    return
            conn.settimeout(timeout)
            self.handle(listener, conn, addr)
        except Exception:
            self.log.exception("error serving a connection")
        finally:
            with self.active_lock:
                self.active -= 1
            self.slots.release()

    def handle(self, listener: socket.socket, client: Any, addr: Any) -> None:
        """Serve the requests of one connection: several with HTTP/1.1 keep-alive (new TLS
        handshakes are the dominant cost of a short request), until the client closes, the
        connection idles past ``keepalive_s``, or ``max_requests_per_connection``."""
        settings = self.server_settings
        req = None
        try:
            parser = http.get_parser(self.cfg, client, addr)
            for served in range(1, settings.max_requests_per_connection + 1):
                # The whole request (headers and body) must arrive within request_timeout_s,
                # after at most keepalive_s of idling between requests.
                idle = settings.keepalive_s if served > 1 else 0.0
                client.deadline = time.monotonic() + idle + settings.request_timeout_s
                if served > 1:
                    client.settimeout(settings.keepalive_s)   # idle wait for the next request
                req = next(parser)
                client.settimeout(settings.request_timeout_s)
                last = served == settings.max_requests_per_connection or not self.alive
                if not self._answer(listener, req, client, addr, close=last or self._saturated(listener)):
                    break
        except (StopIteration, http.errors.NoMoreData, TimeoutError):
            pass   # the client closed, or idled past keepalive_s / request_timeout_s
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.debug("socket error on %s: %s", addr, exc)
        except Exception as exc:
            self.handle_error(req, client, addr, exc)
        finally:
            util.close_graceful(client)

    def _saturated(self, listener: socket.socket) -> bool:
        """Every thread busy and a connection waiting to be accepted: close after this answer
        rather than keep the thread for this client. Without a waiting connection, closing
        only costs this client a new handshake (a 16-client keep-alive run against 2 x 8
        threads paid one on 83 % of its requests)."""
        if self.active < self.cfg.threads:
            return False
        try:
            return bool(select.select([listener], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _answer(self, listener: socket.socket, req: Any, client: Any, addr: Any, *, close: bool) -> bool:
        """Run the application for one request; True when the connection may carry another."""
        resp, environ = wsgi.create(req, client, addr, listener.getsockname(), self.cfg)
        if close or self.server_settings.keepalive_s <= 0:
            resp.force_close()
        self.nr += 1
        respiter = self.wsgi(environ, resp.start_response)
        # The answer gets its own time to be written, whatever the request took.
        client.deadline = time.monotonic() + self.server_settings.request_timeout_s
        try:
            for item in respiter:
                resp.write(item)
            resp.close()
        finally:
            if hasattr(respiter, "close"):
                respiter.close()
        # After an error the request body may be unread (413): never reuse such a connection.
        return bool(not resp.should_close() and int(resp.status_code) < 400)


def _framing_error(exc: BaseException) -> tuple[int, str]:
    """Status and reason for an exception raised while parsing the HTTP request."""
    if isinstance(exc, (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)):
        return 500, "internal error; the gateway's log has the details"
    if isinstance(exc, errors.LimitRequestLine):
        return 414, "request line too long"
    if isinstance(exc, errors.LimitRequestHeaders):
        return 431, "request header fields too large or too many"
    if isinstance(exc, errors.UnsupportedTransferCoding):
        return 501, "unsupported transfer coding"
    if isinstance(exc, errors.ExpectationFailed):
        return 417, "expectation failed"
    if isinstance(exc, errors.ParseException):
        return 400, "malformed HTTP request"
    return 500, "internal error; the gateway's log has the details"


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread its own malloc arena, which grows a worker's resident
    memory with its thread count; two arenas keep it near that of a single thread.
    Must run before the worker's threads start; a no-op where glibc is absent."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)   # M_ARENA_MAX
    except (OSError, AttributeError):
        pass
