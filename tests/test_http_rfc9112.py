"""What RFC 9112 asks of a server that llhttp lets through: one space between the parts of
a request line (§3), exactly one Host in HTTP/1.1 (§3.2), HTTP/1.0 with a transfer coding
closed after its answer (§6.1), and chunk extensions bounded. The reader on its own (whole,
byte by byte, pipelined), then over TLS against a real gateway."""

from __future__ import annotations

import ssl

import pytest

from est_gateway.server.http11 import Limits, Refusal, Request, RequestReader
from tests.test_e2e_http import CACERTS, Gateway, Reader, gateway, tls  # noqa: F401  (fixtures)
from tests.test_http11 import taken

LIMITS = Limits(max_fields=20, max_field_bytes=1024, max_body=1000)
GET = b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n"
POSTED = b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"

REFUSED = {
    "two spaces after the method": b"GET  /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "two spaces before the version": b"GET /.well-known/est/cacerts  HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "a space before the method": b" GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "a space after the version": b"GET /.well-known/est/cacerts HTTP/1.1 \r\nHost: localhost\r\n\r\n",
    "HTTP/1.1 without Host": b"GET /.well-known/est/cacerts HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "two Host fields": b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nhost: attacker.example\r\n\r\n",
    "two Host fields in HTTP/1.0": b"GET /.well-known/est/cacerts HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    "a Host that is no host": b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: a b/c\r\n\r\n",
}


def fed(*chunks: bytes, limits: Limits = LIMITS) -> list[Request | Refusal]:
    """Every request the reader gives, taken as the loop takes them."""
    reader = RequestReader(limits)
    for chunk in chunks:
        reader.feed(chunk)
    return taken(reader)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_400_whole_and_byte_by_byte(name: str) -> None:
    for chunks in ([REFUSED[name]], bytewise(REFUSED[name])):
        items = fed(*chunks)
        assert len(items) == 1 and isinstance(items[0], Refusal), (name, items)
        assert items[0].status == 400 and "\n" not in items[0].reason


@pytest.mark.parametrize("name", list(REFUSED))
@pytest.mark.parametrize("before", [GET, POSTED, b"\r\n"], ids=["behind a GET", "behind a POST", "behind CRLF"])
def test_refused_when_pipelined_in_one_read_and_at_any_split(name: str, before: bytes) -> None:
    data = before + REFUSED[name]
    served = 0 if before == b"\r\n" else 1
    for cut in range(len(data) + 1):
        items = fed(data[:cut], data[cut:])
        assert [type(item) for item in items] == [Request] * served + [Refusal], (name, cut, items)
        assert items[-1].status == 400     # type: ignore[union-attr]


@pytest.mark.parametrize("data", [
    GET, POSTED, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n", b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n\r\n",
    b"GET /a?b=c%20d HTTP/1.1\r\nHost: localhost\r\nX-Spaces: a  b  \r\n\r\n",
], ids=["GET", "POST", "HTTP/1.0 without Host", "empty Host", "IPv6 literal", "IPv4 and port", "A-label",
        "spaces in a value"])
def test_positive_control_well_formed_requests_are_parsed(data: bytes) -> None:
    for chunks in ([data], bytewise(data), [data + data]):
        items = fed(*chunks)
        assert items and all(isinstance(item, Request) for item in items), items


def test_http10_with_a_transfer_coding_is_answered_then_closed() -> None:
    data = (b"POST /.well-known/est/simpleenroll HTTP/1.0\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    (request,) = fed(data)
    assert isinstance(request, Request) and request.body == b"hello"
    assert request.keep_alive is False
    (kept,) = fed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")     # the control: no coding
    assert isinstance(kept, Request) and kept.keep_alive is True


CHUNKED = b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_chunk_extension_growing_without_end_is_refused() -> None:
    """llhttp passes extensions over without a callback: they count against the framing
    bound (max_body_bytes), however they arrive."""
    reader = RequestReader(LIMITS)
    reader.feed(CHUNKED + b"5;name=")
    sent = 0
    while not reader.ready and sent < 100 * LIMITS.max_body:
        reader.feed(b"v" * 100)
        sent += 100
    (refused,) = reader.ready
    assert isinstance(refused, Refusal) and refused.status == 413 and "extensions" in refused.reason
    assert sent <= LIMITS.max_body + 200


def test_many_small_chunks_with_extensions_within_the_bound_are_accepted() -> None:
    body = b"".join(b"1;e=x\r\n" + bytes([65 + i % 26]) + b"\r\n" for i in range(100)) + b"0\r\n\r\n"
    items = fed(CHUNKED, *[body[i:i + 10] for i in range(0, len(body), 10)])
    assert len(items) == 1 and isinstance(items[0], Request) and len(items[0].body) == 100


# -- on the wire -------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_on_the_wire_with_a_reason_and_closed(gateway: Gateway, tls: ssl.SSLSocket,  # noqa: F811
                                                     name: str) -> None:
    tls.sendall(REFUSED[name] + CACERTS)
    reader = Reader(tls)
    refused = reader.answer()
    assert refused.status == 400, (name, refused)
    assert refused.headers["content-type"].startswith("text/plain") and refused.headers["connection"] == "close"
    assert reader.closed(), name


@pytest.mark.e2e
def test_a_double_space_pipelined_behind_a_good_request_is_refused(gateway: Gateway,  # noqa: F811
                                                                 tls: ssl.SSLSocket) -> None:  # noqa: F811
    tls.sendall(CACERTS + REFUSED["two spaces after the method"])
    reader = Reader(tls)
    assert reader.answer().status == 200
    assert reader.answer().status == 400
    assert reader.closed()


@pytest.mark.e2e
def test_http10_chunked_with_keep_alive_is_answered_then_closed(gateway: Gateway,  # noqa: F811
                                                                tls: ssl.SSLSocket) -> None:  # noqa: F811
    tls.sendall(b"GET /.well-known/est/cacerts HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\n" + CACERTS)
    reader = Reader(tls)
    answer = reader.answer()
    assert answer.status == 200 and answer.headers.get("connection") != "keep-alive"
    assert reader.closed()


@pytest.mark.e2e
def test_an_endless_chunk_extension_is_refused_on_the_wire(gateway: Gateway, tls: ssl.SSLSocket) -> None:  # noqa: F811
    tls.sendall(CHUNKED + b"5;name=")
    reader = Reader(tls)
    try:
        for _ in range(64):            # 1 MiB of extension at most; the bound is 64 KiB
            tls.sendall(b"v" * 16384)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass                           # the gateway answered and closed meanwhile
    refused = reader.answer()
    assert refused.status == 413 and b"extensions" in refused.body
