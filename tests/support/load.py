"""Many concurrent enrollments over real TLS, and what the local CA's record says afterwards."""

from __future__ import annotations

import base64
import http.client
import socket
import sqlite3
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from est_gateway import localmode
from est_gateway.passwords import PasswordHash
from tests.support.gateway import GatewayProcess, local_instance
from tests.support.pki import csr_b64, make_csr, p256_key


class TLSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that holds its TLS socket before any byte goes on the wire.

    http.client connects a plain socket, then wraps it. When the gateway is SIGKILLed with
    the connection still in its accept queue, the kernel resets it in between; CPython
    3.11's ``SSLSocket._create`` has then already moved the descriptor into a new SSLSocket
    (``sock.detach()``), finds it not connected, and its ``recv(1)`` probe raises
    ECONNRESET without closing that SSLSocket. No caller ever holds it, so garbage
    collection reports it as unclosed (a ResourceWarning, an error under pytest) from
    whichever thread runs next. Wrapping a socket that is not yet connected cannot meet a
    peer, and every later failure (connect, handshake) leaves a socket held here to close.
    """

    def connect(self) -> None:
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # the host is always 127.0.0.1
        try:
            tls = self._context.wrap_socket(plain, server_hostname=self.host)   # type: ignore[attr-defined]
        finally:
            plain.close()   # wrapping detached it on success; closes it if wrapping failed first
        try:
            tls.settimeout(self.timeout)
            tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.source_address:              # e.g. ("127.0.0.7", 0): one device of a fleet
                tls.bind(self.source_address)
            tls.connect((self.host, self.port))   # TCP connect, then the TLS handshake
        except BaseException:
            tls.close()
            raise
        self.sock = tls


@dataclass
class Outcome:
    index: int
    status: int | None            # None: no HTTP answer (connection refused/reset, timeout)
    certificate: x509.Certificate | None = None
    error: str = ""


def cheap_password_instance(folder: Path, *, workers: int = 2) -> tuple[localmode.LocalInstance, GatewayProcess]:
    """A local-mode gateway whose password is hashed with scrypt's cheapest accepted cost:
    under load the hash would otherwise be most of the CPU (the tests are about the record)."""
    instance, process = local_instance(folder)
    cheap = PasswordHash.create(instance.password(), log_n=10).render()
    text = instance.config.read_text(encoding="utf-8")
    text = text.replace('password_file = "secrets/est.password"', f'password_hash = "{cheap}"')
    text = text.replace("workers = 2", f"workers = {workers}")
    instance.config.write_text(text, encoding="utf-8")
    return instance, process


def bodies(count: int, prefix: str) -> list[bytes]:
    """One CSR per request, each with its own P-256 key and CN (cheap to make)."""
    return [csr_b64(make_csr(p256_key(), cn=f"{prefix}-{i:04d}")) for i in range(count)]


def enroll_all(port: int, cafile: Path, password: str, payloads: list[bytes], *, concurrency: int = 50,
               timeout: float = 30.0, progress: threading.Semaphore | None = None) -> list[Outcome]:
    """POST every payload to simpleenroll, ``concurrency`` at a time; never raises."""
    context = ssl.create_default_context(cafile=str(cafile))
    auth = "Basic " + base64.b64encode(f"{localmode.USERNAME}:{password}".encode()).decode()

    def one(index: int) -> Outcome:
        try:
            conn = TLSConnection("127.0.0.1", port, context=context, timeout=timeout)
            response = None
            try:
                conn.request("POST", "/.well-known/est/simpleenroll", body=payloads[index],
                             headers={"Content-Type": "application/pkcs10", "Authorization": auth})
                response = conn.getresponse()
                data = response.read()
            finally:
                # The response's file object defers the socket's close until it is closed too.
                if response is not None:
                    response.close()
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(index, None, error=f"{type(exc).__name__}: {exc}")
        if response.status != 200:
            return Outcome(index, response.status, error=data[:200].decode(errors="replace"))
        certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(data))
        leaf = next(c for c in certs if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        if progress is not None:
            progress.release()
        return Outcome(index, 200, leaf)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(len(payloads))))


@dataclass
class Row:
    serial: str
    subject: str
    der: bytes


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=30) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def rows(db: Path) -> list[Row]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return [Row(*r) for r in conn.execute("SELECT serial, subject, der FROM certificates")]
    finally:
        conn.close()
