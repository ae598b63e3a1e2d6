"""HTTP/1.1 framing as far as the event loop and the error answers need it.

The loop does not parse requests (gunicorn's parser does, on a thread); it only decides
when the bytes it holds let a thread parse and answer without waiting for the client.
Deciding too early is safe (the thread reads the rest within the request deadline);
deciding too late is not possible: whatever the parser would refuse is handed over.
"""

from __future__ import annotations

import re

from gunicorn.http import errors

#: the loop holds at most this much of a request head; beyond, a thread's parser decides
#: (431 when over max_header_bytes/max_header_fields, else it reads on within the deadline)
HEAD_BUFFER_LIMIT = 64 * 1024
#: a chunked body's framing (sizes, extensions, CRLFs) on top of its data
CHUNKED_OVERHEAD = 8 * 1024

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([^\r]*)", re.IGNORECASE)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:[ \t]*([^\r]*)", re.IGNORECASE)
_EXPECT = re.compile(rb"\r\nexpect:", re.IGNORECASE)
_HTTP_VERSION = re.compile(r"HTTP/\d\.\d")


def request_ready(data: bytes | bytearray, *, max_body: int) -> bool:
    """True when ``data`` holds a complete request head and, for a body of a declared
    length up to ``max_body``, the body; or when the bytes already make the request one
    the parser refuses (too large, conflicting lengths)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > HEAD_BUFFER_LIMIT
    head = bytes(data[:end])
    body = len(data) - end - 4
    if _EXPECT.search(head):
        return True      # the client waits for "100 Continue", which the thread sends
    codings = _TRANSFER_ENCODING.findall(head)
    if codings:
        if len(codings) != 1 or codings[0].strip().lower() != b"chunked":
            return True  # framing the parser refuses (501, 400)
        # chunked: the last chunk and the trailer end with an empty line
        return body > max_body + CHUNKED_OVERHEAD or (body >= 5 and data.endswith(b"\r\n\r\n"))
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1 or not lengths[0].strip().isdigit():
        return True      # no body, or framing the parser refuses
    length = int(lengths[0].strip())
    return length > max_body or body >= length


def framing_error(exc: BaseException) -> tuple[int, str]:
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
    if isinstance(exc, errors.InvalidHTTPVersion) and _well_formed_version(exc.version):
        # RFC 9110 §15.6.6: a well-formed version the server does not support (HTTP/2.0, HTTP/9.9)
        return 505, "HTTP version not supported; use HTTP/1.1"
    if isinstance(exc, errors.ParseException):
        return 400, "malformed HTTP request"
    return 500, "internal error; the gateway's log has the details"


def _well_formed_version(version: object) -> bool:
    """gunicorn's parser gives the version as a (major, minor) tuple when it was well
    formed but unsupported, and as the raw text when it did not match HTTP/<d>.<d>."""
    if isinstance(version, tuple):
        return True
    return bool(_HTTP_VERSION.fullmatch(str(version)))
