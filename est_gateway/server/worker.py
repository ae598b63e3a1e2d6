"""A gunicorn worker: an event loop for connections, a thread pool for requests.

Gunicorn's arbiter gives us pre-forked processes (every core), worker restarts and
graceful shutdown on SIGTERM. In each worker the main thread runs
:class:`~est_gateway.server.loop.ConnectionLoop` (accept, non-blocking pyOpenSSL
handshake, parsing each request as its bytes arrive: :mod:`est_gateway.server.http11`),
and a bounded thread pool runs the WSGI application on each complete request and writes
the answer (:mod:`est_gateway.server.wsgi`), or writes the refusal of one the loop
refused. Two kinds of request stay on the loop's thread, which spares the hand-offs
between threads: one the application answers from memory alone (``answers_at_once``:
``cacerts`` of the local CA, ``csrattrs``) is answered in the loop, and a local-CA
enrollment (``runs_in_loop``) runs in a greenlet of the loop whose waits are handed to
threads (:mod:`est_gateway.server.cooperative`). The part of an answer the socket does not
take at once is written by a pool thread, so the loop never waits on a client. A thread
is therefore only ever busy with a request that has fully arrived: idle or dripping
clients cost a file descriptor each, and at most ``max_connections`` of them.

Gunicorn internals used here (pyproject.toml's floor has them all): ``workers.base.Worker``
(its ``init_process``, ``notify``, ``PIPE``, ``sockets``, ``wsgi``, ``cfg``, ``log``,
``alive``, ``ppid`` and ``nr``).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from gunicorn.workers.base import Worker

from est_gateway.identity import TLSInfo
from est_gateway.server.cooperative import RequestHub
from est_gateway.server.http11 import Limits, Refusal, Request, error_answer
from est_gateway.server.loop import Client, ConnectionLoop, raise_fd_limit
from est_gateway.server.memory import tune_malloc
from est_gateway.server.tls import ClientChainLimits, server_context
from est_gateway.server.wsgi import Answer, HttpDate, base_environ, build_environ

#: descriptors a worker keeps for itself (listeners, logs, database, upstream connections)
RESERVED_FDS = 256
#: (question, method, target) answers of the application kept per worker (see _app_says)
APP_ANSWERS_KEPT = 1024


class ESTWorker(Worker):  # type: ignore[misc]
    """Pre-forked worker: connections in the event loop, complete requests on threads."""

    alive: bool      # gunicorn's: False after SIGTERM
    ppid: int        # gunicorn's: the arbiter's pid

    def init_process(self) -> None:
        tune_malloc()
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
        self._forwarded_header = settings.client_cert_header.lower().encode("latin-1")
        self._app_answers: dict[tuple[str, str, bytes], bool] = {}
        self.pool = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="est")
        super().init_process()

    def run(self) -> None:
        self.loop = ConnectionLoop(
            self.sockets, self.server_settings, tls_context=self.tls_context, chain_limits=self.chain_limits,
            dispatch=self._dispatch,
            alive=self._keep_running, heartbeat=self.notify, wakeup_fds=[self.PIPE[0]],
            log=self.log, max_connections=self.max_connections, limits=self.limits,
            after_pass=lambda: self.hub.after_pass())
        self.hub = RequestHub(self.pool, self.loop.wake)
        try:
            self.loop.run()
        finally:
            # Graceful stop: requests already complete are answered before the process exits,
            # those waiting in greenlets included.
            while self.hub.busy():
                self.hub.after_pass()
                time.sleep(0.005)
            self.hub.close()
            self.pool.shutdown(wait=True)
            self.loop.close_wakeup()

    def _keep_running(self) -> bool:
        """Until SIGTERM, or until the arbiter is gone (SIGKILLed: a new one may need the port)."""
        if self.alive and self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            self.alive = False
        return bool(self.alive)

    def _dispatch(self, client: Client) -> None:
        """From the loop: a request whose answer the application makes from memory alone
        (``answers_at_once``: cacerts of the local CA, csrattrs) is answered here, in the
        loop; a local-CA enrollment (``runs_in_loop``) runs in a greenlet of the loop, its
        waits handed to threads; every other request goes to a pool thread. In the loop an
        answer is written as far as the socket takes it at once, the rest by a pool thread."""
        request = client.request
        if isinstance(request, Request) and self._answers_at_once(request):
            self._serve(client, in_loop=True)
        elif isinstance(request, Request) and self._runs_in_loop(client, request):
            self.hub.start(lambda: self._serve(client, in_loop=True))
        else:
            self.pool.submit(self._serve, client)

    def _answers_at_once(self, request: Request) -> bool:
        return self._app_says("answers_at_once", request)

    def _runs_in_loop(self, client: Client, request: Request) -> bool:
        """A request the application runs in a greenlet of the loop (its waits handed off:
        est_gateway.waits); one with a client certificate is not (its revocation check reads
        the record on the way)."""
        info: TLSInfo | None = client.conn.info
        if info is not None and info.peer_chain:
            return False
        forwarded = self._forwarded_header
        if any(name.lower() == forwarded for name, _ in request.headers):
            return False     # a certificate forwarded by a proxy: the same check
        return self._app_says("runs_in_loop", request)

    def _app_says(self, question: str, request: Request) -> bool:
        """The application's answer for this method and path, kept: a client sends the same
        few paths over and over (at most ``APP_ANSWERS_KEPT`` kept, then forgotten at once)."""
        key = (question, request.method, request.target)
        said = self._app_answers.get(key)
        if said is None:
            said = self._ask_app(question, request)
            if len(self._app_answers) >= APP_ANSWERS_KEPT:
                self._app_answers.clear()
            self._app_answers[key] = said
        return said

    def _ask_app(self, question: str, request: Request) -> bool:
        decide = getattr(self.wsgi, question, None)
        path = request.target.partition(b"?")[0]
        if decide is None or not path.isascii() or b"%" in path or b"#" in path or path.startswith(b"//"):
            return False    # the application's own reading of the path decides on a thread
        return bool(decide(request.method, path.decode("ascii")))

    def _serve(self, client: Client, *, in_loop: bool = False) -> None:
        """On a pool thread (or, ``in_loop``, in the loop): answer the request, then give the
        connection back to the loop."""
        keep_alive = False
        try:
            keep_alive = self._serve_request(client, in_loop=in_loop)
        except Exception:
            self.log.exception("error serving a connection")
        if in_loop and client.conn.unsent:
            self.pool.submit(self._finish_answer, client, keep_alive)
        else:
            self._release(client, keep_alive)

    def _finish_answer(self, client: Client, keep_alive: bool) -> None:
        """On a pool thread: write what the socket did not take in the loop (bounded by the
        connection's deadline, as every answer)."""
        try:
            client.conn.sendall(b"")
        except (OSError, TimeoutError):
            keep_alive = False
        except Exception:
            self.log.exception("error serving a connection")
            keep_alive = False
        self._release(client, keep_alive)

    def _release(self, client: Client, keep_alive: bool) -> None:
        if not keep_alive:
            try:   # TLS close_notify and TCP FIN now; the loop drains what still arrives
                client.conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.loop.give_back(client, keep_alive=keep_alive)

    def _serve_request(self, client: Client, *, in_loop: bool = False) -> bool:
        """Answer the request (or refusal) the loop handed over; True when the connection may
        carry another."""
        settings = self.server_settings
        conn, item = client.conn, client.request
        client.request = None
        conn.settimeout(settings.request_timeout_s)
        # The answer gets its own time to be written, whatever the request took.
        conn.deadline = time.monotonic() + settings.request_timeout_s
        try:
            if isinstance(item, Refusal):
                self._refuse(client, item)
                return False
            if item is None:
                return False
            return self._answer(client, item, in_loop=in_loop)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.debug("socket error on %s: %s", client.addr, exc)
            return False
        except TimeoutError:
            return False   # the client does not read its answer

    def _answer(self, client: Client, request: Request, *, in_loop: bool = False) -> bool:
        """Run the application for one request; True when the connection may carry another.
        ``in_loop``: the answer is written as far as the socket takes it now (the rest by
        :meth:`_finish_answer`)."""
        settings, conn = self.server_settings, client.conn
        client.served += 1
        self.nr += 1
        close = (not request.keep_alive or client.served >= settings.max_requests_per_connection
                 or settings.keepalive_s <= 0 or not self.alive)
        environ = build_environ(request, self.base_environ, info=conn.info, family=conn.family,
                                peer=client.addr, server=client.server)
        answer = Answer()
        try:
            answer.run(self.wsgi, environ)
            data, close = answer.render(head_only=request.method == "HEAD", close=close,
                                        version=request.version, date=self.dates.now())
        except Exception:
            self.log.exception("error handling request")
            data, close = error_answer(500, "internal error; the gateway's log has the details"), True
        if in_loop:
            conn.write_nowait(data)
        else:
            conn.sendall(data)
        return not close

    def _refuse(self, client: Client, refusal: Refusal) -> None:
        """A request the loop refused while parsing: the gateway's one error answer (a short
        text/plain reason), then the connection closes."""
        self.log.warning("invalid request from %s: %s%s", client.addr[0] if isinstance(client.addr, tuple) else "unix",
                         refusal.reason, f" ({refusal.detail})" if refusal.detail else "")
        client.conn.sendall(error_answer(refusal.status, refusal.reason))
