"""The WSGI side of the server on its own (no sockets): the environ a parsed request gives
and the bytes an application's answer becomes."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from est_gateway.identity import TLS_ENVIRON_KEY, UNIX_ENVIRON_KEY, TLSInfo
from est_gateway.server.http11 import Limits, Request, RequestReader
from est_gateway.server.wsgi import Answer, HttpDate, base_environ, build_environ

BASE = base_environ(multiprocess=True)
TCP = {"info": None, "family": socket.AF_INET, "peer": ("192.0.2.7", 40000), "server": ("127.0.0.1", 8443)}


def parse(data: bytes) -> Request:
    reader = RequestReader(Limits(max_fields=100, max_field_bytes=8192, max_body=65536))
    reader.feed(data)
    (request,) = reader.ready
    assert isinstance(request, Request)
    return request


def environ_of(data: bytes, **where: Any) -> dict[str, Any]:
    return build_environ(parse(data), BASE, **{**TCP, **where})


def test_the_environ_of_a_plain_request() -> None:
    env = environ_of(b"POST /.well-known/est/a%20b%2Fc/simpleenroll?x=1&y=%41 HTTP/1.1\r\nHost: est.example:8443\r\n"
                     b"Content-Type: application/pkcs10\r\nContent-Length: 3\r\nAccept: a\r\naccept: b\r\n\r\nabc")
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/.well-known/est/a b/c/simpleenroll"      # percent-decoded (PEP 3333)
    assert env["RAW_URI"] == "/.well-known/est/a%20b%2Fc/simpleenroll?x=1&y=%41"
    assert env["QUERY_STRING"] == "x=1&y=%41"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", "8443")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.7", "40000")
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("application/pkcs10", "3")
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_HOST"] == "est.example:8443"
    assert env["HTTP_ACCEPT"] == "a,b"                                     # repeated fields joined
    assert env["wsgi.input"].read() == b"abc"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == (1, 0) and env["wsgi.multithread"] and env["wsgi.multiprocess"]
    assert TLS_ENVIRON_KEY not in env and UNIX_ENVIRON_KEY not in env


def test_a_non_utf8_path_byte_is_one_latin1_character() -> None:
    assert environ_of(b"GET /caf%E9 HTTP/1.1\r\nHost: x\r\n\r\n")["PATH_INFO"] == "/caf\xe9"


def test_field_names_with_an_underscore_are_dropped() -> None:
    """X_SSL_CLIENT_CERT would collapse onto the key of the proxy's X-SSL-Client-Cert."""
    env = environ_of(b"GET / HTTP/1.1\r\nHost: x\r\nX_SSL_CLIENT_CERT: forged\r\nX-SSL-Client-Cert: real\r\n"
                     b"Content_Length: 5\r\n\r\n")
    assert env["HTTP_X_SSL_CLIENT_CERT"] == "real"
    assert "CONTENT_LENGTH" not in env


def test_a_chunked_body_is_given_with_its_decoded_length_and_no_coding() -> None:
    env = environ_of(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert env["CONTENT_LENGTH"] == "5" and env["wsgi.input"].read() == b"abcde"
    assert "HTTP_TRANSFER_ENCODING" not in env


def test_tls_and_unix_connections_are_marked_for_the_identity_code() -> None:
    info = TLSInfo(version="TLSv1.3", peer_chain=(), tls_unique=None, tls_exporter=b"e" * 32)
    tls = environ_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", info=info)
    assert tls[TLS_ENVIRON_KEY] is info and tls["wsgi.url_scheme"] == "https"
    unix = environ_of(b"GET / HTTP/1.1\r\nHost: est.example:8080\r\n\r\n", family=socket.AF_UNIX, peer="",
                      server="/run/est.sock")
    assert unix[UNIX_ENVIRON_KEY] is True and unix["REMOTE_ADDR"] == "" and "REMOTE_PORT" not in unix
    assert (unix["SERVER_NAME"], unix["SERVER_PORT"]) == ("est.example", "8080")
    bare = environ_of(b"GET / HTTP/1.1\r\nHost: est.example\r\n\r\n", family=socket.AF_UNIX, peer="", server="/s")
    assert (bare["SERVER_NAME"], bare["SERVER_PORT"]) == ("est.example", "80")


# -- the answer ------------------------------------------------------------------------------

def app(status: str, headers: list[tuple[str, str]], body: Iterable[bytes]) -> Callable[..., Iterable[bytes]]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, headers)
        return body
    return wsgi


def render(application: Callable[..., Iterable[bytes]], *, method: str = "GET", close: bool = False,
           version: str = "1.1") -> tuple[bytes, bytes, bool]:
    answer = Answer()
    answer.run(application, {})
    data, closes = answer.render(head_only=method == "HEAD", close=close, version=version, date="D")
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, closes


def test_the_content_length_is_the_body_s_and_the_connection_stays() -> None:
    head, body, closes = render(app("200 OK", [("Content-Type", "text/plain")], iter([b"ab", b"", b"cd"])))
    assert head.split(b"\r\n") == [b"HTTP/1.1 200 OK", b"Date: D", b"Content-Type: text/plain", b"Content-Length: 4"]
    assert body == b"abcd" and not closes


def test_head_gets_the_applications_length_and_no_body() -> None:
    head, body, _ = render(app("200 OK", [("Content-Length", "1234")], [b""]), method="HEAD")
    assert b"Content-Length: 1234" in head and body == b""


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_and_no_length_for_204_and_304(status: str) -> None:
    head, body, _ = render(app(status, [], [b"ignored"]))
    assert b"Content-Length" not in head and body == b""


def test_errors_and_the_server_s_reasons_close_the_connection() -> None:
    head, _, closes = render(app("404 Not Found", [], [b"no"]))
    assert closes and b"Connection: close" in head
    head, _, closes = render(app("200 OK", [], [b"ok"]), close=True)
    assert closes and b"Connection: close" in head


def test_hop_by_hop_fields_of_the_application_are_not_passed_and_its_close_is_kept() -> None:
    head, _, closes = render(app("200 OK", [("Connection", "close"), ("Transfer-Encoding", "chunked")], [b"x"]))
    assert closes and b"Transfer-Encoding" not in head and head.count(b"Connection") == 1


def test_an_http10_client_is_told_the_connection_stays() -> None:
    head, _, closes = render(app("200 OK", [], [b"x"]), version="1.0")
    assert not closes and b"Connection: keep-alive" in head


def test_a_header_value_with_a_line_break_is_never_written() -> None:
    with pytest.raises(ValueError):
        render(app("200 OK", [("X-Echo", "a\r\nSet-Cookie: x=y")], [b"x"]))


def test_an_error_answer_may_replace_the_one_started_and_the_iterable_is_closed() -> None:
    closed = []

    class Body(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [])
        try:
            raise RuntimeError("late failure")
        except RuntimeError as exc:
            start_response("500 Internal Server Error", [], (type(exc), exc, exc.__traceback__))
        return Body([b"failed"])

    head, body, closes = render(wsgi)
    assert head.startswith(b"HTTP/1.1 500 ") and body == b"failed" and closes and closed == [True]


def test_the_date_field_is_an_http_date() -> None:
    value = HttpDate().now()
    assert value.endswith(" GMT") and len(value) == 29, value
