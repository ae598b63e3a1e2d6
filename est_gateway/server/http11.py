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
fields and head bytes → 431, body and a chunked body's framing → 413), versions other
than 1.0 and 1.1 (→ 505), a coding other than exactly ``chunked`` (→ 501), targets not in
origin form, Upgrade and CONNECT (never switched), ``Expect``, and what RFC 9112 asks
of a server that llhttp lets through: a request line whose parts are not separated by
exactly one space (§3: llhttp skips runs of spaces), an HTTP/1.1 request without a Host
field and any request with more than one (§3.2), and an HTTP/1.0 request with a transfer
coding is answered, then its connection closed (§6.1).

To see each request line as it arrived (and to parse nothing ahead), the reader hands
llhttp one message part at a time where it can tell where a message ends (a request line
waits unparsed until its end has come, a head ends at its empty line, a body after its
Content-Length); a request behind a chunked one in the slice that body ends in is parsed
on without that one check (llhttp's own checks of its request line still apply).
"""

from __future__ import annotations

import re
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
#: a request line's longest length beyond its target (method, spaces, version, CRLF)
_LINE_EXTRA = 64
#: RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [ ":" port ] (a reg-name, IPv4 or IP-literal)
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]*|\[[0-9A-Fa-f:.vV]+\])(?::[0-9]*)?")

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


class BufferBudget:
    """The request bytes one worker's connections hold together while their requests
    arrive (server setting max_buffered_request_bytes). Taken and given on the loop's
    thread only, which alone feeds the readers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


#: what a header field costs beyond its bytes (its two bytes objects and their tuple)
FIELD_OVERHEAD = 128


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

    def __init__(self, limits: Limits, budget: BufferBudget | None = None) -> None:
        self.limits = limits
        self._budget = budget
        self._held = 0                # bytes of the unfinished request taken from the budget
        self._max_fields, self._max_field_bytes = limits.max_fields, limits.max_field_bytes
        self._max_head = limits.max_head
        self.ready: deque[Request | Refusal] = deque()
        self._parser = httptools.HttpRequestParser(self)
        self._refusal: Refusal | None = None
        self._messages = 0            # messages begun on this connection
        self._begun = False
        self._head_done = False
        self._head_fed = 0            # bytes fed while this message's head was incomplete
        self._framing = 0             # a chunked body's bytes that are not data (sizes, extensions, CRLFs)
        self._tail = b""              # the last bytes of an unfinished head (its empty line may straddle slices)
        self._input = b""             # fed, parsed up to _parsed
        self._parsed = 0
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._fields = 0
        self._head_bytes = 0
        # the body: its first piece as it came, later ones appended to one growing buffer
        # (a list of pieces would cost an object per chunk: ~40 bytes for a 1-byte chunk)
        self._body: bytes | bytearray = b""
        self._body_bytes = 0
        self._keep_alive = False
        self._chunked = False
        self._continue = False
        self._version = ""
        self._method = b""
        self._declared = 0

    @property
    def failed(self) -> bool:
        """A refusal is queued: nothing after it is parsed."""
        return self._refusal is not None

    @property
    def in_progress(self) -> bool:
        """A request has begun but is not complete (its request line may still be waiting
        for its end, unparsed)."""
        return self._begun or (not self.ready and self._refusal is None and self.unparsed > 0)

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
            stop = self._message_part(data, start)
            if stop < 0 or self._refusal is not None:    # the request line is not complete yet
                break
            stop = max(stop, start + 1)
            if self._chunked:    # where a chunked body ends is llhttp's to find: a slice at a time
                stop = min(stop, start + PARSE_SLICE)
            self._parsed = stop
            self._feed_slice(view[start:self._parsed])
        view.release()
        if self._parsed >= len(data) or self._refusal is not None:
            self._input, self._parsed = b"", 0

    def _feed_slice(self, data: memoryview) -> None:
        message, in_head = self._messages, self._begun and not self._head_done
        in_chunks, body_before = self._begun and self._chunked, self._body_bytes
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:    # never reached: Upgrade is refused in the head
            self._refuse(Refusal(400, "protocol upgrade not supported"))
        except httptools.HttpParserError as exc:
            self._refuse(self._refusal or refusal_for(exc))
        else:
            self._tail = (self._tail + data[-3:].tobytes())[-3:] if self._begun and not self._head_done else b""
            if message != self._messages or not self._begun:
                return
            if in_head and not self._head_done:
                # One field growing without end is only seen when it is complete: bound the
                # bytes fed to an unfinished head (not counting the slice it began in, so
                # never more than the head's true size).
                self._head_fed += len(data)
                if self._head_fed > self._max_head:
                    self._refuse(Refusal(431, "request header fields too large or too many"))
            elif in_chunks:
                # What a chunked body sends besides its data (sizes, extensions, line ends) is
                # bounded like the data (a slice that begins or ends the message not counted).
                self._framing += len(data) - (self._body_bytes - body_before)
                if self._framing > self.limits.max_body:
                    self._refuse(Refusal(413, f"chunk sizes and extensions too large (limit "
                                              f"{self.limits.max_body} bytes)"))

    def _message_part(self, data: bytes, pos: int) -> int:
        """Where llhttp should stop in ``data`` (from ``pos``) so that the next message's
        first byte is known: the end of a head or of a Content-Length body, else the end;
        -1: wait for more (a request line not complete yet). Between messages, the request
        line is checked first."""
        end = len(data)
        if not self._begun:
            return self._request_line(data, pos)
        if not self._head_done:
            straddle = (self._tail + data[pos:pos + 3]).find(b"\r\n\r\n")   # begun in the last slice
            if straddle >= 0:
                return pos + straddle + 4 - len(self._tail)
            found = data.find(b"\r\n\r\n", pos)
            return found + 4 if found >= 0 else end
        if self._chunked:
            return end
        return min(end, pos + self._declared - self._body_bytes)

    def _request_line(self, data: bytes, pos: int) -> int:
        """Between messages: refuse the next request line unless it is ``method SP target
        SP version`` (RFC 9112 §3: one space each). Returns where its head ends, as far as
        ``data`` shows, or -1 while the line is not complete (its bytes wait unparsed)."""
        end, most = len(data), self.limits.max_target + _LINE_EXTRA
        line = pos
        while True:
            lf = data.find(b"\n", line, line + most)
            if lf < 0:     # llhttp refuses a line longer than that (414)
                return -1 if end - line < most else end
            if lf != line + 1 or data[line] != 13:
                break
            line = lf + 1       # an empty line before a request (RFC 9112 §2.2): llhttp skips it too
            if line == end:
                return end
        if data.count(b" ", line, lf) != 2:     # a run of spaces, or one before or after the line
            self._refuse(Refusal(400, MALFORMED, "request line parts not separated by one space: "
                                 + data[line:min(lf, line + 100)].decode("latin-1").rstrip()))
            return end
        found = data.find(b"\r\n\r\n", lf - 1)
        return found + 4 if found >= 0 else end

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
        self.close()

    def close(self) -> None:
        """Give the unfinished request's bytes back to the budget (the connection is done)."""
        if self._held and self._budget is not None:
            self._budget.give(self._held)
        self._held = 0
        self._headers, self._body = [], b""

    def _hold(self, size: int) -> None:
        if self._budget is not None:
            if not self._budget.take(size):
                self._stop(503, "the server holds too many unfinished requests; try again later",
                           f"{self._budget.held} of {self._budget.limit} bytes held")
            self._held += size

    def _stop(self, status: int, reason: str, detail: str = "") -> None:
        self._refusal = Refusal(status, reason, detail)
        raise _Refused(reason)

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._messages += 1
        self._begun, self._head_done, self._head_fed, self._framing, self._tail = True, False, 0, 0, b""

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
        self._hold(size + FIELD_OVERHEAD)
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
        hosts: list[bytes] = []
        for name, value in self._headers:
            if len(name) not in (4, 6, 10, 14, 17):   # none of the names below: skip the lower()
                continue
            lower = name.lower()
            if lower == b"host":
                hosts.append(value)
            elif lower == b"transfer-encoding":
                codings.append(value)
            elif lower == b"content-length":
                length = value
            elif lower == b"expect":
                expect.append(value)
            elif lower == b"connection":
                connection.append(value)
        # RFC 9112 §3.2: no Host in HTTP/1.1, more than one, or one that is no host → 400
        if len(hosts) > 1:
            self._stop(400, "more than one Host header field")
        if not hosts and version == "1.1":
            self._stop(400, "Host header field missing")
        if hosts and not _HOST.fullmatch(hosts[0]):
            self._stop(400, "Host header field is not a host name", hosts[0][:100].decode("latin-1"))
        if codings:
            if len(codings) > 1:
                self._stop(400, "conflicting Transfer-Encoding")
            parts = [part.strip().lower() for part in codings[0].split(b",")]
            if parts != [b"chunked"]:
                if any(part != b"chunked" for part in parts):
                    self._stop(501, "unsupported transfer coding")
                self._stop(400, "conflicting Transfer-Encoding")
            self._chunked = True
        declared = self._declared = int(length) if length else 0    # llhttp allows digits only, and one field
        if declared > self.limits.max_body:
            self._stop(413, f"request body too large (limit {self.limits.max_body} bytes)")
        if expect:
            if b",".join(expect).strip().lower() != b"100-continue":
                self._stop(417, "expectation not supported")
            # RFC 9110 §10.1.1: an HTTP/1.0 client's 100-continue is ignored
            self._continue = version == "1.1" and (self._chunked or declared > 0)
        tokens = {token.strip().lower() for value in connection for token in value.split(b",")}
        self._keep_alive = b"close" not in tokens if version == "1.1" else b"keep-alive" in tokens
        if version == "1.0" and self._chunked:
            # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing;
            # answer it, then close the connection
            self._keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body:
            self._stop(413, f"request body too large (limit {self.limits.max_body} bytes)")
        self._hold(len(body))
        if not self._body:
            self._body = body
        elif isinstance(self._body, bytearray):
            self._body += body
        else:
            self._body = bytearray(self._body) + body

    def on_message_complete(self) -> None:
        body = self._body if isinstance(self._body, bytes) else bytes(self._body)
        if self._held and self._budget is not None:   # handed over: no longer waiting
            self._budget.give(self._held)
        self._held = 0
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
