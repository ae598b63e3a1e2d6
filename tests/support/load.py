"""Many concurrent enrollments over real TLS, and what the local CA's record says afterwards."""

from __future__ import annotations

import base64
import http.client
import os
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


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection that really closes its TLS socket in :meth:`release`.

    When a read is cut off (the SIGKILL), a file object made by http.client can still
    hold the socket, and ``close()`` then leaves it to garbage collection, which reports
    it as unclosed (a ResourceWarning, an error under pytest) from wherever it runs.
    """

    tls: ssl.SSLSocket | None = None

    def connect(self) -> None:
        super().connect()
        self.tls = self.sock   # type: ignore[assignment]

    def release(self) -> None:
        self.close()
        if self.tls is not None and self.tls.fileno() != -1:
            os.close(self.tls.detach())   # the file object's reference no longer defers the close


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
            conn = _Connection("127.0.0.1", port, context=context, timeout=timeout)
            response = None
            try:
                conn.request("POST", "/.well-known/est/simpleenroll", body=payloads[index],
                             headers={"Content-Type": "application/pkcs10", "Authorization": auth})
                response = conn.getresponse()
                data = response.read()
            finally:
                # A read cut off by the SIGKILL leaves the response's file object open, and
                # it keeps the TLS socket alive past conn.close() until garbage collection
                # reports it as unclosed (a ResourceWarning, an error under pytest).
                if response is not None:
                    response.close()
                conn.release()
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
