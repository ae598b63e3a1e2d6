"""Upstream faults of a CFSSL backend, mapped like EJBCA's, with the same circuit breaker.

Refused and "CA stopped" use the real ``cfssl serve`` (stopped, then started again on the
same port). Resets, hangs and garbage need a server that misbehaves on purpose: a small
HTTPS server holding CFSSL's own TLS certificate (so the gateway trusts it) and requiring
a client certificate like ``-mutual-tls-ca`` does.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from est_gateway.backends.base import EnrollRequest, Requester
from est_gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway_cfssl import CfsslBackend
from tests.cfssl.conftest import TARGET
from tests.support.cfssl import CfsslCA
from tests.support.gateway import free_port
from tests.support.httpd import BackgroundServer, QuietHandler
from tests.support.pki import CA, make_csr, p256_key, write_pem

MakeBackend = Callable[..., CfsslBackend]
READ_TIMEOUT = 1.0


def enroll(backend: CfsslBackend) -> object:
    csr = make_csr(p256_key(), cn=f"fault-{uuid.uuid4().hex[:8]}")
    return backend.enroll(EnrollRequest(csr=csr, alias="est", target=TARGET, requester=Requester(username="u"),
                                        request_id="t"))


class _Misbehaving(BackgroundServer):
    fault = "garbage"
    calls = 0
    info = b""


class _Handler(QuietHandler):
    server: _Misbehaving

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/info"):         # cacerts works: the fault is in signing
            return self.send_body(200, self.server.info, "application/json")
        self.server.calls += 1
        fault = self.server.fault
        if fault == "hang":
            time.sleep(3 * READ_TIMEOUT)
            return None
        if fault in ("reset", "reset-mid-response"):
            if fault == "reset-mid-response":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{\"success\":true,\"res")
                self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        bodies = {"garbage": (200, b"<html>proxy error</html>"),
                  "not-a-certificate": (200, b'{"success":true,"result":{"certificate":"MII..."},"errors":[]}'),
                  "500": (500, b'{"success":false,"result":null,"errors":[{"code":1000,"message":"boom"}]}')}
        status, body = bodies[fault]
        return self.send_body(status, body, "application/json")


@pytest.fixture
def misbehaving(ca: CfsslCA) -> Iterator[_Misbehaving]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.folder / "tls.pem", ca.folder / "tls-key.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca.folder / "ca.pem"))
    server = _Misbehaving(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with ca.session() as session:
        server.info = session.post(f"{ca.url}/api/v1/cfssl/info", json={"profile": "est-client"}).content
    yield server.run()
    server.stop()


@pytest.mark.parametrize(("fault", "error", "status"), [
    ("garbage", UpstreamError, 502),
    ("not-a-certificate", UpstreamError, 502),
    ("500", UpstreamUnavailable, 503),
    ("reset", UpstreamUnavailable, 503),
    ("reset-mid-response", (UpstreamError, UpstreamUnavailable), None),
    ("hang", UpstreamTimeout, 504),
])
def test_faults_map_to_documented_errors_without_replaying_a_signing(
        make_backend: MakeBackend, misbehaving: _Misbehaving, fault: str, error: Any, status: int | None) -> None:
    misbehaving.fault = fault
    backend = make_backend(url=f"https://127.0.0.1:{misbehaving.port}",
                           read_timeout_s=READ_TIMEOUT, retries=2)
    started = time.monotonic()
    with pytest.raises(error) as caught:
        enroll(backend)
    assert time.monotonic() - started < 2 * READ_TIMEOUT + 1
    if status is not None:
        assert caught.value.status == status
    assert "Traceback" not in caught.value.detail
    assert misbehaving.calls == 1, "a signing request must never be sent twice (it may have been issued)"


def test_nothing_listening_is_503(make_backend: MakeBackend) -> None:
    backend = make_backend(url=f"https://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamUnavailable) as caught:
        backend.ca_certs(TARGET)
    assert caught.value.retry_after is not None


def test_an_untrusted_upstream_certificate_is_503_and_logged(make_backend: MakeBackend, ca: CfsslCA,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    other = ca.folder / "other-ca.pem"
    other.write_bytes((ca.folder / "ocsp.pem").read_bytes())   # any certificate but CFSSL's CA
    backend = make_backend(ca_bundle=str(other))
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamUnavailable, match="TLS"):
        backend.ca_certs(TARGET)
    assert "TLS with the upstream CA" in caplog.text and "ca_bundle" in caplog.text


def test_plain_http_where_tls_is_expected_is_503(make_backend: MakeBackend, ca: CfsslCA) -> None:
    backend = make_backend(url=f"https://127.0.0.1:{ca.ocsp_port}")   # ocspserve speaks plain HTTP
    with pytest.raises(UpstreamUnavailable):
        backend.ca_certs(TARGET)


def test_ca_stopped_opens_the_breaker_and_recovers_without_restart(make_backend: MakeBackend, ca: CfsslCA) -> None:
    backend = make_backend(circuit_breaker_failures=2, circuit_breaker_cooldown_s=1, retries=0)
    assert enroll(backend) is not None
    ca.serve.stop()
    try:
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable, match="cannot connect"):
                enroll(backend)
        with pytest.raises(UpstreamUnavailable, match="not asking it again") as caught:
            enroll(backend)
        assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    finally:
        ca.serve.start()
    time.sleep(1.1)                                   # the cooldown
    assert enroll(backend) is not None


def test_a_client_certificate_cfssl_does_not_trust_is_503_and_logged(
        make_backend: MakeBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """CFSSL's Go TLS server ends the handshake for a client certificate not issued by
    -mutual-tls-ca: no HTTP answer, so it is a TLS failure like an untrusted server."""
    stranger = CA.create("Stranger CA")
    key = p256_key()
    write_pem(tmp_path / "stranger.pem", stranger.issue(key, cn="est-gateway"))
    write_pem(tmp_path / "stranger.key", key)
    backend = make_backend(client_cert=str(tmp_path / "stranger.pem"), client_key=str(tmp_path / "stranger.key"))
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamUnavailable, match="TLS"):
        backend.ca_certs(TARGET)
    assert "client_cert" in caplog.text


def test_a_url_that_is_not_the_base_of_cfssl_serve_is_502_naming_the_fix(
        make_backend: MakeBackend, ca: CfsslCA, caplog: pytest.LogCaptureFixture) -> None:
    """Go's router answers an unknown path with a plain-text 404, not CFSSL's envelope."""
    backend = make_backend(url=f"{ca.url}/cfssl")
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError, match="HTTP 404"):
        backend.ca_certs(TARGET)
    assert "url must be the base of cfssl serve" in caplog.text
