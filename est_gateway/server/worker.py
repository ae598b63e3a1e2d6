"""A gunicorn worker: an event loop for connections, a thread pool for requests.

Gunicorn's arbiter gives us pre-forked processes (every core), worker restarts and
graceful shutdown on SIGTERM. In each worker the main thread runs
:class:`~est_gateway.server.loop.ConnectionLoop` (accept, non-blocking pyOpenSSL
handshake, parsing each request as its bytes arrive: :mod:`est_gateway.server.http11`,
writing every answer as the socket drains), and a bounded thread pool runs the WSGI
application on each complete request (:mod:`est_gateway.server.wsgi`) and hands the
answer's bytes back to the loop. A thread is therefore only ever busy with a request that
has fully arrived, and never with a client: idle, dripping or non-reading clients cost a
file descriptor each and their buffered bytes, within the loop's bounds.

Gunicorn internals used here (pyproject.toml's floor has them all): ``workers.base.Worker``
(its ``init_process``, ``notify``, ``PIPE``, ``sockets``, ``wsgi``, ``cfg``, ``log``,
``alive``, ``ppid`` and ``nr``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gunicorn.util import parse_address
from gunicorn.workers.base import Worker

from est_gateway.server.http11 import Limits, Request, error_answer
from est_gateway.server.loop import Client, ConnectionLoop, raise_fd_limit
from est_gateway.server.tls import ClientChainLimits, server_context
from est_gateway.server.wsgi import Answer, HttpDate, WSGIApp, base_environ, build_environ

#: descriptors a worker keeps for itself (listeners, logs, database, upstream connections)
RESERVED_FDS = 256
#: requests handed to the pool at a time, per thread (the rest wait in the loop, unread)
SERVING_PER_THREAD = 8
INTERNAL_ERROR = "internal error; the gateway's log has the details"


class ESTWorker(Worker):  # type: ignore[misc]
    """Pre-forked worker: connections in the event loop, complete requests on threads."""

    alive: bool      # gunicorn's: False after SIGTERM
    ppid: int        # gunicorn's: the arbiter's pid

    def init_process(self) -> None:
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
        self.limits = Limits(max_fields=settings.max_header_fields, max_field_bytes=settings.max_header_bytes,
                             max_body=settings.max_body_bytes)
        self.base_environ = base_environ(multiprocess=self.cfg.workers > 1)
        self.dates = HttpDate()
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="est")
        self.apps, self.plain = self._listeners()
        super().init_process()

    def _listeners(self) -> tuple[dict[Any, WSGIApp], frozenset[int]]:
        """The app behind each listening address other than EST's, and the descriptors of
        the listeners served in plain HTTP (gunicorn made one socket per ``bind`` entry)."""
        apps: dict[Any, WSGIApp] = {}
        plain: set[int] = set()
        for listener in self.app.more:
            wanted = parse_address(listener.bind)
            for sock in self.sockets:
                # a bound descriptor's address is its getsockname(): an IPv6 one has 4 fields
                if isinstance(sock.cfg_addr, tuple) and tuple(sock.cfg_addr[:2]) == wanted:
                    apps[sock.getsockname()] = listener.app
                    if not listener.tls:
                        plain.add(sock.fileno())
        return apps, frozenset(plain)

    def run(self) -> None:
        self.loop = ConnectionLoop(
            self.sockets, self.server_settings, tls_context=self.tls_context, chain_limits=self.chain_limits,
            dispatch=lambda client: self.pool.submit(self._serve, client),
            alive=self._keep_running, heartbeat=self.notify, wakeup_fds=[self.PIPE[0]],
            log=self.log, max_connections=self.max_connections, limits=self.limits,
            max_serving=SERVING_PER_THREAD * self.cfg.threads, plain=self.plain)
        try:
            # Graceful stop: the loop finishes the requests already handed to the pool and
            # writes their answers before it returns.
            self.loop.run()
        finally:
            self.pool.shutdown(wait=True)
            self.loop.close_wakeup()

    def _keep_running(self) -> bool:
        """Until SIGTERM, or until the arbiter is gone (SIGKILLed: a new one may need the port)."""
        if self.alive and self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False
        return bool(self.alive)

    def _serve(self, client: Client) -> None:
        """On a pool thread: run the application on the connection's request and hand the
        answer to the loop, which writes it (a pool thread never touches a client socket)."""
        request = client.request
        client.request = None
        try:
            assert request is not None
            data, close = self._answer(client, request)
        except Exception:
            self.log.exception("error serving a connection")
            data, close = error_answer(500, INTERNAL_ERROR), True
        self.loop.answer(client, data, keep_alive=not close)

    def _answer(self, client: Client, request: Request) -> tuple[bytes, bool]:
        """The answer's bytes, and whether the connection closes after it."""
        settings, conn = self.server_settings, client.conn
        client.served += 1
        self.nr += 1
        close = (not request.keep_alive or client.served >= settings.max_requests_per_connection
                 or settings.keepalive_s <= 0 or not self.alive)
        environ = build_environ(request, self.base_environ, info=conn.info, family=conn.family,
                                peer=client.addr, server=client.server)
        answer = Answer()
        try:
            answer.run(self.apps.get(client.server, self.wsgi), environ)
            return answer.render(head_only=request.method == "HEAD", close=close,
                                 version=request.version, date=self.dates.now())
        except Exception:
            self.log.exception("error handling request")
            return error_answer(500, INTERNAL_ERROR), True
