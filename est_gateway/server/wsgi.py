"""A parsed request into a WSGI environ (PEP 3333), and the application's answer onto the wire.

Only the WSGI contract is relied on: any WSGI application can be served. The answer is
written as one piece (head and body in one write: one TLS record for a small answer),
framed by Content-Length, which the whole body gives.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

from est_gateway.identity import TLS_ENVIRON_KEY, UNIX_ENVIRON_KEY, TLSInfo
from est_gateway.server.http11 import Request

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: connection-level fields an application does not set (RFC 9110 §7.6.1)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailer", "transfer-encoding", "upgrade"})


def base_environ(*, multiprocess: bool) -> dict[str, Any]:
    """The keys every request's environ shares (built once per worker)."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "SCRIPT_NAME": "",
        "SERVER_SOFTWARE": "est-gateway",
    }


def build_environ(request: Request, base: dict[str, Any], *, info: object, family: int, peer: Any,
                  server: Any) -> dict[str, Any]:
    """The WSGI environ of ``request``; ``info`` is the connection's TLSInfo (None: plain),
    ``peer`` and ``server`` the socket addresses (a str for a Unix socket)."""
    environ = base.copy()
    target = request.target
    path, _, query = target.partition(b"?")
    path = path.partition(b"#")[0]
    query = query.partition(b"#")[0]
    environ["REQUEST_METHOD"] = request.method
    environ["RAW_URI"] = target.decode("latin-1")
    # PEP 3333: PATH_INFO holds the percent-decoded bytes, each as one latin-1 character
    environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + request.version
    environ["wsgi.input"] = BytesIO(request.body)
    host = ""
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            continue   # X_SSL_CLIENT_CERT must not pass for X-SSL-Client-Cert
        value = raw_value.decode("latin-1")
        if name == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = value
            continue
        if name == "HOST":
            host = value
        key = "HTTP_" + name.replace("-", "_")
        environ[key] = environ[key] + "," + value if key in environ else value
    if request.chunked:    # the body is decoded already: its length is known, its coding gone
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["CONTENT_LENGTH"] = str(len(request.body))
    if isinstance(info, TLSInfo):
        environ[TLS_ENVIRON_KEY] = info
        environ["wsgi.url_scheme"] = "https"
    else:
        environ["wsgi.url_scheme"] = "http"
        if family == socket.AF_UNIX:
            environ[UNIX_ENVIRON_KEY] = True
    if isinstance(peer, tuple):
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer[0], str(peer[1])
    else:
        environ["REMOTE_ADDR"] = peer.decode() if isinstance(peer, bytes) else str(peer or "")
    if isinstance(server, tuple):
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
    else:   # a Unix socket: the Host field names the server, as gunicorn did
        name, _, port = host.rpartition(":") if host.rpartition(":")[2].isdigit() else (host, "", "")
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port or ("443" if environ["wsgi.url_scheme"] == "https" else "80")
    return environ


class Answer:
    """Collects one application answer (start_response, write, the iterable) and renders it."""

    __slots__ = ("status", "headers", "body")

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes],
                                                                                                        None]:
        # Nothing is sent before the application returns, so an error answer may always
        # replace the one started (PEP 3333's exc_info).
        if self.status and exc_info is None:
            raise RuntimeError("start_response called twice without exc_info")
        self.status, self.headers = status, headers
        return self.body.append

    def run(self, app: WSGIApp, environ: dict[str, Any]) -> None:
        """Call ``app`` and take its whole body."""
        result = app(environ, self.start_response)
        try:
            body = self.body
            for chunk in result:
                if chunk:
                    body.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not self.status:
            raise RuntimeError("the application returned without calling start_response")

    @property
    def code(self) -> int:
        return int(self.status[:3])

    def render(self, *, head_only: bool, close: bool, version: str, date: str) -> tuple[bytes, bool]:
        """The answer's bytes and whether the connection closes after it. ``close``: the
        server closes (the client's wish, limits); the application may ask for it too."""
        code = self.code
        close = close or code >= 400
        lines = ["HTTP/1.1 ", self.status, "\r\nDate: ", date]
        length = None
        for name, value in self.headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"invalid response header {name!r}")
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                close = close or (lower == "connection" and "close" in value.lower())
                continue
            if lower == "content-length":
                length = value
                continue
            lines += ("\r\n", name, ": ", value)
        body = b"".join(self.body) if code >= 200 and code not in (204, 304) else b""
        if code >= 200 and code not in (204, 304):
            # HEAD: the length the application gave (that of a GET); otherwise the body's own
            if not head_only:
                length = str(len(body))
            if length is not None:
                lines += ("\r\nContent-Length: ", length)
        if close:
            lines.append("\r\nConnection: close")
        elif version == "1.0":
            lines.append("\r\nConnection: keep-alive")
        lines.append("\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        return (head if head_only else head + body), close


class HttpDate:
    """The Date field's value (RFC 9110 §6.6.1), formatted at most once a second."""

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (0, "")

    def now(self) -> str:
        second = int(time.time())
        cached = self._cached
        if cached[0] != second:
            cached = self._cached = (second, formatdate(second, usegmt=True))
        return cached[1]
