"""The little HTTP the gateway needs on top of WSGI (PEP 3333): what a request says, what an
answer is. Reads the environ exactly as the server hands it over; nothing is parsed twice."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Protocol

from est_gateway.wire import CT_TEXT

Environ = dict[str, Any]

#: status code → WSGI status line
STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
_PLAIN_INT = re.compile(r"-?\d+", re.ASCII)


class StartResponse(Protocol):
    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = ..., /) -> Any: ...


class Response:
    """A whole answer: status, headers (Content-Length is added when it is sent), body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = [("Content-Type", content_type)] if content_type else []
        self.headers.extend(headers)

    def send(self, start_response: StartResponse, *, head: bool = False) -> list[bytes]:
        """Start the WSGI answer; HEAD gets GET's headers (Content-Length included) and no body."""
        headers = self.headers
        if self.status != 204:    # RFC 9110 §8.6: never a Content-Length on a 204
            headers = [*headers, ("Content-Length", str(len(self.body)))]
        start_response(STATUS_LINES.get(self.status) or f"{self.status} Unknown", headers)
        return [] if head else [self.body]


def text_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    """A short ``text/plain`` reason (RFC 8951 §5)."""
    body = (reason.rstrip("\n") + "\n").encode("utf-8")
    return Response(status, body, CT_TEXT, (headers or {}).items())


def request_method(environ: Environ) -> str:
    return str(environ.get("REQUEST_METHOD") or "GET").upper()


def request_path(environ: Environ) -> str:
    """PATH_INFO as text: the server's latin-1 string holds the raw UTF-8 bytes (PEP 3333);
    leading slashes count as one ("//x" is "/x", as it always was here)."""
    raw = str(environ.get("PATH_INFO") or "")
    path = raw.encode("latin-1", "replace").decode("utf-8", "replace")
    return "/" + path.lstrip("/") if path else ""


def mimetype(environ: Environ) -> str:
    """The Content-Type without its parameters, lower case; "" when there is none."""
    return str(environ.get("CONTENT_TYPE") or "").partition(";")[0].strip().lower()


def content_length(environ: Environ) -> int | None:
    """The declared body length: None without one (or when chunked), 0 when unreadable."""
    value = environ.get("CONTENT_LENGTH")
    if value is None or environ.get("HTTP_TRANSFER_ENCODING") == "chunked":
        return None
    text = str(value).strip()
    return max(0, int(text)) if _PLAIN_INT.fullmatch(text) else 0


def header(environ: Environ, name: str) -> str | None:
    """A request header as the server passed it (repeated headers joined by the server)."""
    value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return None if value is None else str(value)
