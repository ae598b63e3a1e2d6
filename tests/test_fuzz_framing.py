"""HTTP framing over real TLS: chunked encodings, conflicting lengths, odd request lines and
headers, slow and silent clients. What the in-process tests cannot reach (the framing is
the server's, not the WSGI app's).

Invariant: every malformed request gets an HTTP answer whose status is a 4xx (or 501/505
for a transfer coding or HTTP version not offered) with a text/plain reason, or, for a
client that stops sending, the connection is closed within a bound; never a 500, never a
held connection. The gateway here runs one worker with request_timeout_s = 1.5.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from est_gateway import localmode
from tests.support.gateway import GatewayProcess
from tests.support.load import cheap_password_instance
from tests.support.pki import csr_b64, make_csr, p256_key

pytestmark = pytest.mark.e2e

TIMEOUT = 1.5
THREADS = 8          # est_gateway.server.runner's default per worker
ANSWER_STATUSES = set(range(400, 500)) | {501, 505}


@dataclass
class Server:
    process: GatewayProcess
    trust_anchor: Path
    auth: str

    @property
    def port(self) -> int:
        return self.process.port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance, process = cheap_password_instance(tmp_path_factory.mktemp("framing") / "est-local", workers=1)
    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(text.replace("workers = 1", f"workers = 1\nrequest_timeout_s = {TIMEOUT}"),
                               encoding="utf-8")
    token = base64.b64encode(f"{localmode.USERNAME}:{instance.password()}".encode()).decode()
    process.start()
    try:
        yield Server(process, instance.trust_anchor, f"Basic {token}")
    finally:
        process.stop()


def connect(server: Server) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(server.trust_anchor))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


@dataclass
class Reply:
    status: int | None
    head: str
    body: bytes
    seconds: float


def exchange(server: Server, data: bytes, *, wait: float = TIMEOUT + 5) -> Reply:
    """Send ``data`` on a fresh TLS connection; read until the server closes (bounded)."""
    started = time.monotonic()
    with connect(server) as tls:
        tls.settimeout(wait)
        tls.sendall(data)
        raw = b""
        try:
            while chunk := tls.recv(65536):
                raw += chunk
        except TimeoutError:
            pytest.fail(f"connection still open after {wait}s; got {raw[:200]!r}")
        except (ConnectionResetError, ssl.SSLError):
            pass
    head, _, body = raw.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].split()
    status = int(first[1]) if len(first) > 1 and first[1].isdigit() else None
    return Reply(status, head.decode("latin-1"), body, time.monotonic() - started)


def assert_refused(reply: Reply, what: object) -> None:
    assert reply.status in ANSWER_STATUSES, (what, reply.head, reply.body[:200])
    assert "content-type: text/plain" in reply.head.lower(), (what, reply.head)
    assert reply.body.strip() and b"Traceback" not in reply.body and len(reply.body) < 1024, (what, reply.body)


@pytest.fixture(scope="module")
def csr() -> bytes:
    return csr_b64(make_csr(p256_key(), cn="framing-device"))


def request(server: Server, headers: list[str], body: bytes = b"", *,
            line: str = "POST /.well-known/est/simpleenroll HTTP/1.1") -> bytes:
    head = [line, "Host: localhost", "Connection: close", f"Authorization: {server.auth}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, sizes: list[int], *, ext: str = "", upper: bool = False, pad: int = 0) -> bytes:
    out, pos, i = b"", 0, 0
    while pos < len(body):
        n = min(sizes[i % len(sizes)], len(body) - pos)
        size = format(n, "X" if upper else "x").rjust(pad + 1, "0")
        out += f"{size}{ext}\r\n".encode() + body[pos:pos + n] + b"\r\n"
        pos, i = pos + n, i + 1
    return out + b"0\r\n\r\n"


PKCS10 = "Content-Type: application/pkcs10"
TE = "Transfer-Encoding: chunked"


def _cases(csr: bytes) -> dict[str, tuple[list[str], bytes, str]]:
    good = chunked(csr, [100])
    return {
        "chunk size not hex": ([PKCS10, TE], b"zz\r\n" + csr + b"\r\n0\r\n\r\n", ""),
        "negative chunk size": ([PKCS10, TE], b"-1\r\n" + csr + b"\r\n0\r\n\r\n", ""),
        "chunk size 2^80": ([PKCS10, TE], b"ffffffffffffffffffff\r\n" + csr + b"\r\n0\r\n\r\n", ""),
        "chunk size over the body limit": ([PKCS10, TE], b"100000\r\n" + b"A" * 70000 + b"\r\n0\r\n\r\n", ""),
        "chunk without CRLF after data": ([PKCS10, TE], b"4\r\nABCDEFGH\r\n0\r\n\r\n", ""),
        "chunked and Content-Length": ([PKCS10, TE, f"Content-Length: {len(csr)}"], good, ""),
        "chunked twice": ([PKCS10, TE, TE], good, ""),
        "gzip, chunked": ([PKCS10, "Transfer-Encoding: gzip, chunked"], good, ""),
        "chunked, identity": ([PKCS10, "Transfer-Encoding: chunked, identity"], good, ""),
        "unknown coding only": ([PKCS10, "Transfer-Encoding: x-custom"], csr, ""),
        "Content-Length negative": ([PKCS10, "Content-Length: -1"], csr, ""),
        "Content-Length not a number": ([PKCS10, "Content-Length: 1e3"], csr, ""),
        "Content-Length 10^20": ([PKCS10, "Content-Length: 100000000000000000000"], csr, ""),
        "two different Content-Lengths": ([PKCS10, f"Content-Length: {len(csr)}", "Content-Length: 5"], csr, ""),
        "Content-Length with a plus sign": ([PKCS10, f"Content-Length: +{len(csr)}"], csr, ""),
        "obsolete line folding": ([PKCS10, "X-Folded: a", " b", f"Content-Length: {len(csr)}"], csr, ""),
        "NUL in a header value": ([PKCS10, "X-Nul: a\x00b", f"Content-Length: {len(csr)}"], csr, ""),
        "space before the colon": ([PKCS10, f"Content-Length : {len(csr)}"], csr, ""),
        "header without a colon": ([PKCS10, "NoColonHere", f"Content-Length: {len(csr)}"], csr, ""),
        "101 header fields": ([PKCS10, *[f"X-F{i}: v" for i in range(101)]], b"", ""),
        "request line over the limit": ([], b"", "GET /.well-known/est/" + "a" * 5000 + "/cacerts HTTP/1.1"),
        "HTTP/2.0 on the request line": ([], b"", "GET /.well-known/est/cacerts HTTP/2.0"),
        "HTTP/1.1x": ([], b"", "GET /.well-known/est/cacerts HTTP/1.1x"),
        "lower-case method": ([], b"", "get /.well-known/est/cacerts HTTP/1.1"),
        "method with a slash": ([], b"", "GE/T /.well-known/est/cacerts HTTP/1.1"),
        "no path": ([], b"", "GET  HTTP/1.1"),
        "path with NUL": ([], b"", "GET /.well-known/est/%00/cacerts HTTP/1.1"),
        "path with a raw non-ASCII byte": ([], b"", "GET /.well-known/est/\xe9/cacerts HTTP/1.1"),
        "asterisk form": ([], b"", "OPTIONS * HTTP/1.1"),
        "absolute form to another host": ([], b"", "GET https://attacker.example/.well-known/est/x HTTP/1.1"),
    }


CASE_NAMES = list(_cases(b"x"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_malformed_framing_gets_a_plain_text_4xx(server: Server, csr: bytes, name: str) -> None:
    headers, body, line = _cases(csr)[name]
    data = request(server, headers, body, **({"line": line} if line else {}))
    assert_refused(exchange(server, data), name)


@pytest.mark.parametrize("version, status", [("HTTP/9.9", 505), ("HTTP/2.0", 505), ("HTTP/1.1x", 400),
                                             ("HTTP/1", 400)])
def test_an_http_version_not_offered_gets_505(server: Server, version: str, status: int) -> None:
    """RFC 9110 §15.6.6: a well-formed version the server does not speak gets 505; a
    malformed one is a malformed request (400)."""
    reply = exchange(server, request(server, [], line=f"GET /.well-known/est/cacerts {version}"))
    assert_refused(reply, version)
    assert reply.status == status, (version, reply.head)


# -- valid chunked bodies in any shape are accepted ---------------------------------------

@given(st.lists(st.integers(1, 700), min_size=1, max_size=8), st.sampled_from(["", ";a=b", ";x", ";n=\"q\""]),
       st.booleans(), st.integers(0, 6))
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_valid_chunking_of_a_csr_enrolls(server: Server, csr: bytes, sizes: list[int], ext: str,
                                             upper: bool, pad: int) -> None:
    reply = exchange(server, request(server, [PKCS10, TE], chunked(csr, sizes, ext=ext, upper=upper, pad=pad)))
    assert reply.status == 200, (sizes, ext, reply.head, reply.body[:200])


def test_positive_control_content_length(server: Server, csr: bytes) -> None:
    reply = exchange(server, request(server, [PKCS10, f"Content-Length: {len(csr)}"], csr))
    assert reply.status == 200, reply.body


# -- slow and silent clients -----------------------------------------------------------------

BOUND = TIMEOUT + 3


def test_a_silent_client_after_the_handshake_is_closed(server: Server) -> None:
    reply = exchange(server, b"", wait=BOUND)
    assert reply.status is None or reply.status in ANSWER_STATUSES
    assert reply.seconds < BOUND


def test_a_tcp_client_that_never_starts_tls_is_closed(server: Server) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND) as sock:
        try:
            assert sock.recv(1024) == b""
        except ConnectionResetError:
            pass
    assert time.monotonic() - started < BOUND


@pytest.mark.parametrize("stall_after", ["half the headers", "the headers, half the body",
                                         "a chunk size, no chunk"])
def test_a_client_that_stalls_is_answered_or_closed_within_the_timeout(server: Server, csr: bytes,
                                                                       stall_after: str) -> None:
    full = request(server, [PKCS10, f"Content-Length: {len(csr)}"], csr)
    data = {"half the headers": full[:40],
            "the headers, half the body": full[:len(full) - len(csr) // 2],
            "a chunk size, no chunk": request(server, [PKCS10, TE], b"100\r\nAAAA")}[stall_after]
    reply = exchange(server, data, wait=BOUND)
    assert reply.status is None or reply.status in ANSWER_STATUSES, reply.head
    assert reply.seconds < BOUND


def test_a_client_dripping_its_headers_is_cut_off(server: Server) -> None:
    """Slowloris: one byte every TIMEOUT/3 s never trips a per-read timeout; the request
    as a whole must still be bounded (here: closed within 4x request_timeout_s)."""
    data = request(server, [PKCS10, "Content-Length: 10"], b"0123456789")
    deadline = time.monotonic() + 4 * TIMEOUT
    with connect(server) as tls:
        tls.settimeout(0.05)
        sent, closed = 0, False
        while time.monotonic() < deadline and sent < len(data):
            try:
                tls.sendall(data[sent:sent + 1])
                sent += 1
                if tls.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                closed = True
                break
            time.sleep(TIMEOUT / 3)
    assert closed or sent == len(data), \
        f"still connected after {4 * TIMEOUT}s having sent {sent} of {len(data)} bytes one by one"


def test_idle_connections_do_not_lock_out_a_real_client(server: Server, csr: bytes) -> None:
    """More silent connections than the worker has threads: a real client waits at most
    about one request timeout, then is served."""
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(THREADS + 4)]
    try:
        started = time.monotonic()
        reply = exchange(server, request(server, [PKCS10, f"Content-Length: {len(csr)}"], csr), wait=3 * BOUND)
        waited = time.monotonic() - started
    finally:
        for conn in idle:
            conn.close()
    assert reply.status == 200, reply.head
    assert waited < 2 * BOUND


def test_no_traceback_in_the_gateway_log(server: Server) -> None:
    """Runs last in this module: nothing above made the gateway log an unexpected error."""
    log = server.process.output()
    assert "Traceback" not in log, log[log.find("Traceback") - 300:][:3000]
