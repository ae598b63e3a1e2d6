"""Start real gateway processes on loopback and talk to them with curl/openssl."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7

from est_gateway import localmode

#: gateway processes started and not yet stopped; tests/conftest.py stops what a failed test left
RUNNING: set[GatewayProcess] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port`` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(eq=False)
class GatewayProcess:
    """A running ``est-gateway serve`` (or ``local``) subprocess."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: for listen = "unix:<path>": readiness is a connect to this socket
    unix_socket: Path | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/.well-known/est"

    def start(self, *args: str, timeout: float = 30.0) -> GatewayProcess:
        cmd = list(args) or ["serve", "--config", str(self.config)]
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "est_gateway.cli", *cmd],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **self.env})
        out.close()
        RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if self.unix_socket is not None:
                    with socket.socket(socket.AF_UNIX) as unix:
                        unix.settimeout(0.5)
                        unix.connect(str(self.unix_socket))
                    return self
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway did not listen within {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            RUNNING.discard(self)
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            RUNNING.discard(self)

    def workers(self, count: int, timeout: float = 30.0) -> list[int]:
        """The worker pids once ``count`` are forked: the arbiter listens (and `start` returns)
        before it forks them."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while len(found := children_of(self.proc.pid)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(found) == count, f"{len(found)} workers of {count} after {timeout}s"
        return found

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def local_instance(folder: Path, *, extra_config: str = "", port: int | None = None,
                   ) -> tuple[localmode.LocalInstance, GatewayProcess]:
    """A local-mode instance folder (as `est-gateway local` creates it), plus extra TOML."""
    port = port or free_port()
    instance, _ = localmode.prepare(folder, port=port, publication_port=free_port())
    if extra_config:
        with instance.config.open("a", encoding="utf-8") as fh:
            fh.write("\n" + extra_config)
    return instance, GatewayProcess(instance.config, port, folder / "gateway.log")


@dataclass
class CurlResult:
    status: int
    headers: dict[str, str]
    raw_headers: str
    body: bytes


def curl(*args: str, cacert: Path | None = None, timeout: float = 30.0) -> CurlResult:
    """Run curl; returns the last response's status, headers (lower-case keys) and body."""
    with tempfile.TemporaryDirectory() as tmp:
        head_file, body_file = Path(tmp) / "head", Path(tmp) / "body"
        cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "-D", str(head_file), "-o", str(body_file)]
        if cacert is not None:
            cmd += ["--cacert", str(cacert)]
        done = subprocess.run([*cmd, *args], capture_output=True, timeout=timeout + 5)
        if done.returncode != 0:
            raise RuntimeError(f"curl failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        blocks = [b for b in head_file.read_bytes().decode("latin-1").split("\r\n\r\n") if b.strip()]
        body = body_file.read_bytes() if body_file.exists() else b""
    head = blocks[-1]   # interim (100) and challenge (401) responses come first
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return CurlResult(status, headers, head, body)


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def certificates(body: bytes) -> list[x509.Certificate]:
    """The certificates of an EST answer: base64 of a certs-only PKCS#7."""
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


def leaf(body: bytes) -> x509.Certificate:
    """The one end-entity certificate of an enrollment answer (chains may come with it)."""
    found = [c for c in certificates(body)
             if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]
    assert len(found) == 1
    return found[0]


def serverkeygen_parts(answer: CurlResult) -> tuple[PrivateKeyTypes, x509.Certificate]:
    """The key and the certificate of a serverkeygen answer (RFC 7030 §4.4.2: multipart/mixed
    with exactly two parts, an application/pkcs8 key and a certs-only PKCS#7 of the one issued
    certificate, each base64)."""
    boundary = answer.headers["content-type"].split("boundary=", 1)[1]
    parts = [p for p in answer.body.split(f"--{boundary}".encode()) if b"Content-Type" in p]
    assert len(parts) == 2, parts
    key_part = next(p for p in parts if b"Content-Type: application/pkcs8\r\n" in p)
    cert_part = next(p for p in parts if b"smime-type=certs-only\r\n" in p)
    key = serialization.load_der_private_key(base64.b64decode(key_part.split(b"\r\n\r\n", 1)[1]), None)
    (cert,) = certificates(cert_part.split(b"\r\n\r\n", 1)[1])   # the issued certificate alone
    return key, cert


@dataclass
class UpstreamGateway:
    """A gateway process in front of a vendor CA, as the vendors' end-to-end tests drive it
    with curl: each test file adds its CA (or stand-in) to this."""

    gateway: GatewayProcess
    folder: Path
    trust_anchor: Path
    password: str

    def post(self, alias: str, operation: str, body: bytes | Path, *extra: str) -> CurlResult:
        """POST a base64 PKCS#10 (bytes, or a file holding it) to ``alias``'s ``operation``."""
        if isinstance(body, bytes):
            path = self.folder / "request.b64"
            path.write_bytes(body)
            body = path
        return curl("-H", "Content-Type: application/pkcs10", "--data-binary", f"@{body}", *extra,
                    f"{self.gateway.url}/{alias}/{operation}", cacert=self.trust_anchor)

    def enroll(self, alias: str, body: bytes | Path) -> CurlResult:
        return self.post(alias, "simpleenroll", body, "-u", f"estuser:{self.password}")
