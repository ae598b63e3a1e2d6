"""A scripted HTTPS upstream on 127.0.0.1 for adapter tests that need exact vendor answers.

It runs on the stand-in EJBCA's server plumbing (real TLS, a client certificate from the
upstream PKI required) and answers what a test registered per (method, path), the way
``responses`` did for ``requests``: answers registered for the same route are served in
order and the last one repeats. Every request is recorded (method, URL, headers, body);
one nobody scripted gets a 599 and is listed in :attr:`ScriptedUpstream.unscripted`.
"""

from __future__ import annotations

import json as jsonlib
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from tests.support.ejbca_standin import StandinServer, _Handler


@dataclass(frozen=True)
class Scripted:
    """One answer: status, body and type, extra headers; ``delay_s`` before it (a slow CA);
    ``missing`` bytes announced in Content-Length but never sent (the connection closes)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    missing: int = 0


@dataclass(frozen=True)
class Recorded:
    """A request as the upstream received it."""

    method: str
    url: str
    headers: Message = field(repr=False)
    body: bytes = field(repr=False)
    #: the client's source port: the same one again means a kept-alive connection was reused
    client_port: int = 0

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class ScriptedUpstream:
    """The running server; :meth:`add` (or :meth:`get`/:meth:`post`) scripts, :attr:`calls` records."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._routes: dict[tuple[str, str], deque[Scripted]] = {}
        self._lock = threading.Lock()
        self.calls: list[Recorded] = []
        self.unscripted: list[Recorded] = []
        self.server = StandinServer(self, context, handler=_ScriptedHandler)  # type: ignore[arg-type]

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def __enter__(self) -> ScriptedUpstream:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def reset(self) -> None:
        with self._lock:
            self._routes.clear()
            self.calls.clear()
            self.unscripted.clear()

    def add(self, method: str, url: str, *, status: int = 200, json: Any = None, body: bytes = b"",
            content_type: str | None = None, headers: dict[str, str] | None = None, delay_s: float = 0.0,
            missing: int = 0) -> None:
        """Answer ``method url`` (the path counts, the query does not) like this, after what is
        already scripted for it; ``json`` is sent as ``application/json``."""
        if json is not None:
            body = jsonlib.dumps(json).encode()
        answer = Scripted(status, body, content_type or "application/json",
                          tuple((headers or {}).items()), delay_s, missing)
        with self._lock:
            self._routes.setdefault((method, urlsplit(url).path), deque()).append(answer)

    def get(self, url: str, **answer: Any) -> None:
        self.add("GET", url, **answer)

    def post(self, url: str, **answer: Any) -> None:
        self.add("POST", url, **answer)

    def _answer(self, recorded: Recorded) -> Scripted | None:
        with self._lock:
            self.calls.append(recorded)
            queue = self._routes.get((recorded.method, recorded.path))
            if not queue:
                self.unscripted.append(recorded)
                return None
            return queue.popleft() if len(queue) > 1 else queue[0]



class _ScriptedHandler(_Handler):
    def _dispatch(self) -> None:
        upstream: ScriptedUpstream = self.server.standin  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = upstream._answer(Recorded(self.command, upstream.base + self.path, self.headers, body,
                                           self.client_address[1]))
        if answer is None:
            return self._send(599, "text/plain", b"nothing scripted for this request")
        time.sleep(answer.delay_s)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body) + answer.missing))
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)
        if answer.missing:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        return None
