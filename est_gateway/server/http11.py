"""HTTP/1.1 requests, parsed once as their bytes arrive, within the gateway's limits.

The event loop feeds each connection's bytes to its :class:`RequestReader` (httptools:
llhttp, the C parser of Node.js, strict by default); callbacks collect the request target,
the header fields and the body (llhttp decodes chunked bodies). A request is complete on
``on_message_complete`` and queued as a :class:`Request`; whatever is refused, by llhttp
or by the checks llhttp leaves to the server, is queued as a :class:`Refusal` (status and
a short reason) and nothing after it is parsed. Bytes pipelined behind a complete request
wait unparsed (but for the rest of the ``PARSE_SLICE`` it ended in) until the loop takes
the next request: a client cannot make the gateway parse ahead of its answers.

llhttp refuses in strict mode: malformed request lines, methods and versions; obs-fold;
NUL, CR, LF and other controls in values; whitespace before the colon; Content-Length
that is not digits, duplicated or beside Transfer-Encoding; Transfer-Encoding repeated or
with ``chunked`` not last; malformed chunks. Checked here: the limits (target → 414,
fields and head bytes → 431, body → 413), versions other than 1.0 and 1.1 (→ 505), a
coding other than exactly ``chunked`` (→ 501), targets not in origin form, Upgrade and
CONNECT (never switched), and ``Expect``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from http import HTTPStatus

import httptools

#: the request target's longest length (gunicorn's limit_request_line before); longer → 414
MAX_TARGET_BYTES = 4094
#: a request head's bytes in all, at least (twice the longest field when that is more)
MAX_HEAD_BYTES = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: bytes handed to llhttp at a time (it cannot stop after a request, so it is stopped
#: between slices): at most this much input behind a complete request is parsed ahead
PARSE_SLICE = 512

MALFORMED = "malformed HTTP request"
#: llhttp's reason (its error text) → status and short reason; any other: 400 MALFORMED
_LLHTTP_REFUSALS = {
    "Invalid HTTP version": (505, "HTTP version not supported; use HTTP/1.1"),
    "Pause on PRI/Upgrade": (505, "HTTP version not supported; use HTTP/1.1"),   # the HTTP/2 preface
    "Request has invalid `Transfer-Encoding`": (501, "unsupported transfer coding"),
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may hold (server settings max_header_fields, max_header_bytes and
    max_body_bytes)."""

    max_fields: int
    max_field_bytes: int
    max_body: int
    max_target: int = MAX_TARGET_BYTES

    @property
    def max_head(self) -> int:
        return max(MAX_HEAD_BYTES, 2 * self.max_field_bytes)


@dataclass(slots=True)
class Request:
    """A complete request: the head as it arrived and the (de-chunked) body."""

    method: str
    target: bytes
    version: str                      # "1.0" or "1.1"
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool                  # what the client asked for (Connection, version)
    chunked: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request answered with ``status`` and ``reason`` (text/plain), then the connection closes."""

    status: int
    reason: str
    detail: str = ""                  # for the log: what exactly was wrong

    @property
    def phrase(self) -> str:
        return HTTPStatus(self.status).phrase


def refusal_for(error: BaseException) -> Refusal:
    """The one mapping of llhttp's refusals to a status and a short reason."""
    detail = str(error)
    status, reason = _LLHTTP_REFUSALS.get(detail, (400, MALFORMED))
    return Refusal(status, reason, detail)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal is the reader's."""


class RequestReader:
    """One connection's requests, parsed as the bytes arrive; :meth:`take` gives each in turn."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._max_fields, self._max_field_bytes = limits.max_fields, limits.max_field_bytes
        self._max_head = limits.max_head
        self.ready: deque[Request | Refusal] = deque()
        self._parser = httptools.HttpRequestParser(self)
        self._refusal: Refusal | None = None
        self._messages = 0            # messages begun on this connection
        self._begun = False
        self._head_done = False
        self._head_fed = 0            # bytes fed while this message's head was incomplete
        self._input = b""             # fed, parsed up to _parsed
        self._parsed = 0
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._fields = 0
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._keep_alive = False
        self._chunked = False
        self._continue = False
        self._version = ""
        self._method = b""

    @property
    def failed(self) -> bool:
        """A refusal is queued: nothing after it is parsed."""
        return self._refusal is not None

    @property
    def in_progress(self) -> bool:
        """A request has begun but is not complete."""
        return self._begun

    @property
    def unparsed(self) -> int:
        """Bytes fed and not parsed yet (pipelined behind a complete request)."""
        return len(self._input) - self._parsed

    def feed(self, data: bytes) -> None:
        """Take ``data`` and parse it until a request is complete (or refused): then it is
        in :attr:`ready`, and what follows it waits for :meth:`take`."""
        if self._refusal is not None:
            return
        self._input = self._input[self._parsed:] + data if self.unparsed else data
        self._parsed = 0
        self._parse()

    def take(self) -> Request | Refusal | None:
        """The next complete request (or the refusal), parsing on from what was fed."""
        if not self.ready:
            self._parse()
        return self.ready.popleft() if self.ready else None

    def _parse(self) -> None:
        data = self._input
        view = memoryview(data)
        while self._parsed < len(data) and not self.ready and self._refusal is None:
            start = self._parsed
            self._parsed = min(start + PARSE_SLICE, len(data))
            self._feed_slice(view[start:self._parsed])
        view.release()
        if self._parsed >= len(data) or self._refusal is not None:
            self._input, self._parsed = b"", 0

    def _feed_slice(self, data: memoryview) -> None:
        message, in_head = self._messages, self._begun and not self._head_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:    # never reached: Upgrade is refused in the head
            self._refuse(Refusal(400, "protocol upgrade not supported"))
        except httptools.HttpParserError as exc:
            self._refuse(self._refusal or refusal_for(exc))
        else:
            # One field growing without end is only seen when it is complete: bound the bytes
            # fed to an unfinished head (not counting the slice it began in, so never more than
            # the head's true size).
            if in_head and message == self._messages and self._begun and not self._head_done:
                self._head_fed += len(data)
                if self._head_fed > self._max_head:
                    self._refuse(Refusal(431, "request header fields too large or too many"))

    def take_continue(self) -> bool:
        """True once when the client waits for ``100 Continue`` before sending the body."""
        if self._continue and self._begun and self._refusal is None:
            self._continue = False
            return True
        return False

    def _refuse(self, refusal: Refusal) -> None:
        if self._refusal is None or self._refusal is refusal:
            self._refusal = refusal
            self.ready.append(refusal)
        self._begun = False

    def _stop(self, status: int, reason: str, detail: str = "") -> None:
        self._refusal = Refusal(status, reason, detail)
        raise _Refused(reason)

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._messages += 1
        self._begun, self._head_done, self._head_fed = True, False, 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_target:
            self._stop(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        size = len(name) + len(value)
        self._head_bytes += size + 4
        if self._fields > self._max_fields or size > self._max_field_bytes or self._head_bytes > self._max_head:
            self._stop(431, "request header fields too large or too many")
        if not self._head_done:     # trailer fields are counted, never passed on
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_done = True
        parser = self._parser
        version = self._version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._stop(505, "HTTP version not supported; use HTTP/1.1", f"HTTP/{version}")
        method = self._method = parser.get_method()
        if method == b"CONNECT":
            self._stop(501, "CONNECT not supported")
        if parser.should_upgrade():
            self._stop(400, "protocol upgrade not supported")
        if not self._url.startswith(b"/"):
            self._stop(400, "request target must be a path", self._url[:100].decode("latin-1"))
        codings: list[bytes] = []
        length = b""
        expect: list[bytes] = []
        connection: list[bytes] = []
        for name, value in self._headers:
            if len(name) not in (6, 10, 14, 17):   # none of the names below: skip the lower()
                continue
            lower = name.lower()
            if lower == b"transfer-encoding":
                codings.append(value)
            elif lower == b"content-length":
                length = value
            elif lower == b"expect":
                expect.append(value)
            elif lower == b"connection":
                connection.append(value)
        if codings:
            if len(codings) > 1:
                self._stop(400, "conflicting Transfer-Encoding")
            parts = [part.strip().lower() for part in codings[0].split(b",")]
            if parts != [b"chunked"]:
                if any(part != b"chunked" for part in parts):
                    self._stop(501, "unsupported transfer coding")
                self._stop(400, "conflicting Transfer-Encoding")
            self._chunked = True
        declared = int(length) if length else 0    # llhttp allows digits only, and one field
        if declared > self.limits.max_body:
            self._stop(413, f"request body too large (limit {self.limits.max_body} bytes)")
        if expect:
            if b",".join(expect).strip().lower() != b"100-continue":
                self._stop(417, "expectation not supported")
            # RFC 9110 §10.1.1: an HTTP/1.0 client's 100-continue is ignored
            self._continue = version == "1.1" and (self._chunked or declared > 0)
        tokens = {token.strip().lower() for value in connection for token in value.split(b",")}
        self._keep_alive = b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body:
            self._stop(413, f"request body too large (limit {self.limits.max_body} bytes)")
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self.ready.append(Request(self._method.decode("ascii"), self._url, self._version, self._headers, body,
                                  self._keep_alive, self._chunked))
        self._begun = False
        self._reset()


def error_answer(status: int, reason: str) -> bytes:
    """The gateway's one error answer on the wire: a short text/plain reason, then close."""
    body = (reason + "\n").encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1") + body
