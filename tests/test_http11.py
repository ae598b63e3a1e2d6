"""The HTTP/1.1 request reader on its own (no sockets): what is complete, what is refused
with which status, and what stays for the next request."""

from __future__ import annotations

import pytest

from est_gateway.server.http11 import CONTINUE, PARSE_SLICE, Limits, Refusal, Request, RequestReader, error_answer

LIMITS = Limits(max_fields=20, max_field_bytes=1024, max_body=1000)
HOST = b"Host: localhost\r\n"


def reader(*chunks: bytes, limits: Limits = LIMITS) -> RequestReader:
    r = RequestReader(limits)
    for chunk in chunks:
        r.feed(chunk)
    return r


def taken(r: RequestReader) -> list[Request | Refusal]:
    """Every request the reader can give now, in order, as the loop takes them."""
    items = []
    while (item := r.take()) is not None:
        items.append(item)
    return items


def only(r: RequestReader) -> Request | Refusal:
    assert len(r.ready) == 1, list(r.ready)
    return r.ready[0]


def refusal(*chunks: bytes, limits: Limits = LIMITS) -> Refusal:
    item = only(reader(*chunks, limits=limits))
    assert isinstance(item, Refusal), item
    return item


def post(headers: bytes, body: bytes = b"", *, line: bytes = b"POST /.well-known/est/simpleenroll HTTP/1.1") -> bytes:
    return line + b"\r\n" + HOST + headers + b"\r\n" + body


def test_a_request_split_anywhere_is_parsed_once_complete() -> None:
    data = post(b"Content-Type: application/pkcs10\r\nContent-Length: 5\r\nX-Many: a\r\nx-many: b\r\n", b"hello")
    for cut in range(1, len(data)):
        r = reader(data[:cut])
        assert not r.ready and r.in_progress
        r.feed(data[cut:])
        request = only(r)
        assert isinstance(request, Request)
        assert (request.method, request.target, request.version, request.body) == \
            ("POST", b"/.well-known/est/simpleenroll", "1.1", b"hello")
        assert request.headers[-2:] == [(b"X-Many", b"a"), (b"x-many", b"b")]
        assert request.keep_alive and not request.chunked and not r.in_progress


def test_two_pipelined_requests_in_one_write_are_both_parsed_in_order() -> None:
    r = reader(b"GET /a HTTP/1.1\r\n" + HOST + b"\r\nGET /b?x=1 HTTP/1.1\r\n" + HOST + b"\r\nGET /c HT")
    assert [item.target for item in taken(r) if isinstance(item, Request)] == [b"/a", b"/b?x=1"]
    assert r.in_progress                       # the third has begun: it stays for later
    r.feed(b"TP/1.1\r\n" + HOST + b"\r\n")
    assert [item.target for item in taken(r) if isinstance(item, Request)] == [b"/c"]


def test_requests_pipelined_behind_a_complete_one_wait_unparsed_until_taken() -> None:
    """A client that pipelines thousands of requests in one write makes the reader parse at
    most one slice ahead of the request the loop is answering."""
    get = b"GET /p HTTP/1.1\r\n" + HOST + b"\r\n"
    count = 4000
    r = reader(get * count)
    assert 1 <= len(r.ready) <= PARSE_SLICE // len(get) + 1
    assert r.unparsed >= len(get) * count - PARSE_SLICE
    assert len(taken(r)) == count and r.unparsed == 0 and not r.in_progress


def test_a_chunked_body_is_decoded_and_trailers_are_not_passed_on() -> None:
    body = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    request = only(reader(post(b"Transfer-Encoding: chunked\r\n", body)))
    assert isinstance(request, Request)
    assert request.body == b"abcde" and request.chunked
    assert b"X-Trailer" not in [name for name, _ in request.headers]


@pytest.mark.parametrize("version, connection, keep", [
    ("1.1", b"", True), ("1.1", b"Connection: close\r\n", False), ("1.1", b"Connection: keep-alive, Close\r\n", False),
    ("1.0", b"", False), ("1.0", b"Connection: keep-alive\r\n", True)])
def test_keep_alive_follows_the_version_and_connection(version: str, connection: bytes, keep: bool) -> None:
    request = only(reader(f"GET / HTTP/{version}\r\n".encode() + HOST + connection + b"\r\n"))
    assert isinstance(request, Request) and request.version == version
    assert request.keep_alive is keep


# -- refusals: what llhttp refuses and what the reader adds ----------------------------------

CL = b"Content-Length: 3\r\n"
REFUSED = {
    # the limits
    "request target over 4094 bytes": (post(b"", line=b"GET /" + b"a" * 4094 + b" HTTP/1.1"), 414),
    "too many fields": (post(b"".join(b"X-F%d: v\r\n" % i for i in range(20))), 431),
    "one field too long": (post(b"X-Long: " + b"v" * 1020 + b"\r\n"), 431),
    "Content-Length over the body limit": (post(b"Content-Length: 1001\r\n"), 413),
    "chunked body growing over the limit": (post(b"Transfer-Encoding: chunked\r\n", b"3e8\r\n" + b"a" * 1000
                                                  + b"\r\n1\r\nb\r\n"), 413),
    # versions
    "HTTP/2.0": (post(b"", line=b"GET / HTTP/2.0"), 505),
    "HTTP/9.9": (post(b"", line=b"GET / HTTP/9.9"), 505),
    "HTTP/0.9": (post(b"", line=b"GET / HTTP/0.9"), 505),
    "the HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "HTTP/1.1x": (post(b"", line=b"GET / HTTP/1.1x"), 400),
    "HTTP/1": (post(b"", line=b"GET / HTTP/1"), 400),
    # transfer codings and lengths
    "gzip, chunked": (post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    "unknown coding": (post(b"Transfer-Encoding: x-custom\r\n", b"abc"), 501),
    "chunked twice in one field": (post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400),
    "chunked in two fields": (post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    "Content-Length and chunked": (post(CL + b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    "two Content-Lengths": (post(CL + CL, b"abc"), 400),
    "Content-Length +3": (post(b"Content-Length: +3\r\n", b"abc"), 400),
    "Content-Length 10^20": (post(b"Content-Length: 100000000000000000000\r\n", b"abc"), 400),
    "chunk size not hex": (post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"), 400),
    # fields
    "obs-fold": (post(b"X-Folded: a\r\n b\r\n"), 400),
    "NUL in a value": (post(b"X-Nul: a\x00b\r\n"), 400),
    "bare CR in a value": (post(b"X-Cr: a\rb\r\n"), 400),
    "space before the colon": (post(b"Content-Length : 3\r\n", b"abc"), 400),
    # targets, methods, upgrades, expectations
    "absolute form": (post(b"", line=b"GET https://attacker.example/.well-known/est/cacerts HTTP/1.1"), 400),
    "asterisk form": (post(b"", line=b"OPTIONS * HTTP/1.1"), 400),
    "lower-case method": (post(b"", line=b"get / HTTP/1.1"), 400),
    "Upgrade: h2c": (post(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQ\r\n",
                          line=b"GET / HTTP/1.1"), 400),
    "Upgrade: websocket": (post(b"Connection: upgrade\r\nUpgrade: websocket\r\n", line=b"GET / HTTP/1.1"), 400),
    "CONNECT": (b"CONNECT attacker.example:443 HTTP/1.1\r\n" + HOST + b"\r\n", 501),
    "Expect: something else": (post(b"Expect: 200-ok\r\n" + CL, b"abc"), 417),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_the_right_status(name: str) -> None:
    data, status = REFUSED[name]
    refused = refusal(data)
    assert refused.status == status, (name, refused)
    assert refused.reason and "\n" not in refused.reason


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_however_the_bytes_arrive(name: str) -> None:
    """Byte by byte: a refusal does not depend on where the reads split the request."""
    data, status = REFUSED[name]
    r = RequestReader(LIMITS)
    for i in range(len(data)):
        r.feed(data[i:i + 1])
    assert [item.status for item in r.ready if isinstance(item, Refusal)] == [status], name


def test_nothing_after_a_refusal_is_parsed() -> None:
    r = reader(post(b"", line=b"GET / HTTP/9.9"), b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    assert r.failed and len(r.ready) == 1
    r.feed(b"GET /more HTTP/1.1\r\n" + HOST + b"\r\n")
    assert len(r.ready) == 1


def test_a_refused_request_behind_a_good_one_comes_after_it() -> None:
    r = reader(b"GET /a HTTP/1.1\r\n" + HOST + b"\r\nGET /b HTTP/2.0\r\n" + HOST + b"\r\n")
    first, second = taken(r)
    assert isinstance(first, Request) and first.target == b"/a"
    assert isinstance(second, Refusal) and second.status == 505


def test_a_head_that_never_ends_is_refused_before_it_grows_without_bound() -> None:
    """One field value that never ends is only checked by its length once complete; the
    bytes fed to an unfinished head are bounded too (the limit plus at most one read)."""
    r = reader(b"GET / HTTP/1.1\r\nX-Endless: ")
    fed = 0
    while not r.ready:
        r.feed(b"v" * 4096)
        fed += 4096
        assert fed <= LIMITS.max_head + 8192
    refused = only(r)
    assert isinstance(refused, Refusal) and refused.status == 431


def test_a_head_just_under_the_total_bound_is_accepted() -> None:
    limits = Limits(max_fields=100, max_field_bytes=1024, max_body=1000)
    fields = b"".join(b"X-F%02d: " % i + b"v" * 600 + b"\r\n" for i in range(90))   # ~55 KiB
    r = RequestReader(limits)
    data = b"GET / HTTP/1.1\r\n" + HOST + fields + b"\r\n"
    for i in range(0, len(data), 1000):
        r.feed(data[i:i + 1000])
    assert isinstance(only(r), Request)


# -- Expect: 100-continue ------------------------------------------------------------------

def test_100_continue_is_wanted_once_when_the_head_is_complete_and_the_body_awaited() -> None:
    r = reader(post(b"Expect: 100-continue\r\n" + CL))
    assert not r.ready
    assert r.take_continue() and not r.take_continue()
    r.feed(b"abc")
    request = only(r)
    assert isinstance(request, Request) and request.body == b"abc"


@pytest.mark.parametrize("data", [
    post(b"Expect: 100-continue\r\n" + CL, b"abc"),                          # the body came anyway
    post(b"Expect: 100-continue\r\n"),                                       # no body to wait for
    post(b"Expect: 100-continue\r\n" + CL, line=b"POST / HTTP/1.0"),         # RFC 9110 §10.1.1
])
def test_no_100_continue_when_nothing_waits_for_it(data: bytes) -> None:
    assert not reader(data).take_continue()


def test_the_interim_answer_and_the_error_answer_on_the_wire() -> None:
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    answer = error_answer(413, "request body too large (limit 1000 bytes)")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"Connection: close" in head and b"Content-Type: text/plain; charset=utf-8" in head
    assert body == b"request body too large (limit 1000 bytes)\n"
    assert f"Content-Length: {len(body)}".encode() in head
