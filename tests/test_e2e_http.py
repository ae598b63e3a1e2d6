"""HTTP/1.1 on the wire against a real gateway over TLS: pipelining, 100-continue, HEAD,
HTTP/1.0, refusals made while parsing (and that they close the connection)."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from est_gateway import localmode
from tests.support.gateway import GatewayProcess, certificates
from tests.support.load import cheap_password_instance
from tests.support.pki import csr_b64, make_csr, p256_key

pytestmark = pytest.mark.e2e

WAIT = 10.0
CACERTS = b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n"


@dataclass
class Gateway:
    process: GatewayProcess
    trust_anchor: Path
    auth: bytes


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    instance, process = cheap_password_instance(tmp_path_factory.mktemp("http") / "est-local", workers=1)
    token = base64.b64encode(f"{localmode.USERNAME}:{instance.password()}".encode())
    process.start()
    try:
        yield Gateway(process, instance.trust_anchor, b"Authorization: Basic " + token)
    finally:
        process.stop()


@pytest.fixture
def tls(gateway: Gateway) -> Iterator[ssl.SSLSocket]:
    context = ssl.create_default_context(cafile=str(gateway.trust_anchor))
    with socket.create_connection(("127.0.0.1", gateway.process.port), timeout=WAIT) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as conn:
        yield conn


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Reader:
    """Answers off one connection, in order."""

    def __init__(self, conn: ssl.SSLSocket) -> None:
        self.conn, self.buf = conn, b""

    def _more(self) -> None:
        chunk = self.conn.recv(65536)
        assert chunk, f"closed by the server; holding {self.buf[:200]!r}"
        self.buf += chunk

    def answer(self, *, head_only: bool = False) -> Answer:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Answer(int(lines[0].split()[1]), headers, body)

    def closed(self) -> bool:
        """True when the server closes the connection (with nothing more sent) within WAIT."""
        try:
            return self.buf == b"" and self.conn.recv(65536) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True


def enroll_request(gateway: Gateway, cn: str, *, extra: bytes = b"") -> tuple[bytes, bytes]:
    body = csr_b64(make_csr(p256_key(), cn=cn))
    head = (b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n" + gateway.auth + b"\r\n"
            b"Content-Type: application/pkcs10\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body))
    return head, body


def test_two_requests_pipelined_in_one_write_are_both_answered_in_order(gateway: Gateway,
                                                                        tls: ssl.SSLSocket) -> None:
    head, body = enroll_request(gateway, "pipelined")
    tls.sendall(head + body + CACERTS)
    reader = Reader(tls)
    enrolled, cacerts = reader.answer(), reader.answer()
    assert enrolled.status == 200, enrolled
    assert certificates(enrolled.body)[0].subject.rfc4514_string() == "CN=pipelined"
    assert cacerts.status == 200 and certificates(cacerts.body)
    tls.sendall(CACERTS)                               # and the connection serves on
    assert reader.answer().body == cacerts.body


def test_100_continue_comes_before_the_body_is_sent(gateway: Gateway, tls: ssl.SSLSocket) -> None:
    head, body = enroll_request(gateway, "continued", extra=b"Expect: 100-continue\r\n")
    tls.sendall(head)
    reader = Reader(tls)
    interim = reader.answer()
    assert interim.status == 100
    tls.sendall(body)
    final = reader.answer()
    assert final.status == 200, final
    assert certificates(final.body)[0].subject.rfc4514_string() == "CN=continued"


def test_100_continue_for_a_request_pipelined_behind_one_already_served(gateway: Gateway,
                                                                       tls: ssl.SSLSocket) -> None:
    head, body = enroll_request(gateway, "continued-behind", extra=b"Expect: 100-continue\r\n")
    tls.sendall(CACERTS + head)
    reader = Reader(tls)
    assert reader.answer().status == 200
    assert reader.answer().status == 100
    tls.sendall(body)
    assert reader.answer().status == 200


def test_head_gets_the_length_of_get_and_no_body(gateway: Gateway, tls: ssl.SSLSocket) -> None:
    reader = Reader(tls)
    tls.sendall(CACERTS)
    got = reader.answer()
    tls.sendall(CACERTS.replace(b"GET", b"HEAD", 1) + CACERTS)
    head = reader.answer(head_only=True)
    assert head.status == 200 and head.headers["content-length"] == str(len(got.body))
    after = reader.answer()        # a body after HEAD's head would be read here as an answer
    assert after.status == 200 and after.body == got.body


def test_http10_closes_unless_asked_to_keep_alive(gateway: Gateway, tls: ssl.SSLSocket) -> None:
    reader = Reader(tls)
    tls.sendall(b"GET /.well-known/est/cacerts HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    kept = reader.answer()
    assert kept.status == 200 and kept.headers.get("connection") == "keep-alive"
    tls.sendall(b"GET /.well-known/est/cacerts HTTP/1.0\r\n\r\n")
    last = reader.answer()
    assert last.status == 200 and last.body == kept.body
    assert reader.closed()


@pytest.mark.parametrize("name, data, status, reason", [
    ("a chunked body over the limit",
     b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"8000\r\n" + b"A" * 0x8000 + b"\r\n" + b"8000\r\n" + b"A" * 0x8000 + b"\r\n1\r\nA\r\n", 413,
     b"request body too large (limit 65536 bytes)"),
    ("Upgrade: h2c", b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n"
     b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", 400,
     b"protocol upgrade not supported"),
    ("CONNECT", b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n", 501, b"CONNECT not supported"),
    ("HTTP/2.0", b"GET /.well-known/est/cacerts HTTP/2.0\r\nHost: localhost\r\n\r\n", 505,
     b"HTTP version not supported; use HTTP/1.1"),
])
def test_a_refusal_made_while_parsing_is_answered_and_closes(gateway: Gateway, tls: ssl.SSLSocket, name: str,
                                                              data: bytes, status: int, reason: bytes) -> None:
    """The valid request pipelined behind the refused one is never answered."""
    tls.sendall(data + CACERTS)
    reader = Reader(tls)
    refused = reader.answer()
    assert refused.status == status, (name, refused)
    assert refused.headers["content-type"].startswith("text/plain") and refused.headers["connection"] == "close"
    assert refused.body.strip() == reason
    assert reader.closed(), name


def test_no_traceback_in_the_gateway_log(gateway: Gateway) -> None:
    log = gateway.process.output()
    assert "Traceback" not in log, log[log.find("Traceback") - 300:][:3000]


def test_a_connection_carries_at_most_max_requests_per_connection(tmp_path: Path) -> None:
    instance, process = cheap_password_instance(tmp_path / "est-local", workers=1)
    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(text.replace("workers = 1", "workers = 1\nmax_requests_per_connection = 2"),
                               encoding="utf-8")
    process.start()
    try:
        context = ssl.create_default_context(cafile=str(instance.trust_anchor))
        with socket.create_connection(("127.0.0.1", process.port), timeout=WAIT) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(CACERTS * 3)
            reader = Reader(tls)
            first, second = reader.answer(), reader.answer()
            assert first.status == second.status == 200
            assert "connection" not in first.headers and second.headers["connection"] == "close"
            assert reader.closed()
    finally:
        process.stop()
