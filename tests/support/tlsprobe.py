"""Probe a TLS server's protocol and cipher-suite policy.

Two ways, because Debian's OpenSSL 3 cannot even offer some legacy suites:

* ``s_client``: the real openssl client, forced to one protocol version or cipher string
  at ``@SECLEVEL=0``, with ``-msg`` so we can see that the ClientHello left and which
  alert came back. A positive control (:func:`s_server`) proves the same client command
  does negotiate with a server that allows it, so a failure against the gateway is the
  gateway's refusal, not the client's.
* :func:`hello`: a hand-built TLS 1.2-style ClientHello offering exactly the given suite
  code points (export, RC4, 3DES, ...), and the first record the server answers with.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Alert descriptions (RFC 5246 §7.2, RFC 8446 §6)
ALERTS = {40: "handshake_failure", 47: "illegal_parameter", 70: "protocol_version", 71: "insufficient_security",
          80: "internal_error", 86: "inappropriate_fallback", 109: "missing_extension"}


@dataclass
class Answer:
    """The server's first record: a ServerHello (with its suite and version) or an alert."""

    kind: str                     # "server_hello", "alert", "closed"
    suite: int | None = None
    version: int | None = None
    alert: int | None = None

    @property
    def alert_name(self) -> str:
        return ALERTS.get(self.alert or -1, str(self.alert))


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(suites: list[int], *, version: int = 0x0303, host: str = "localhost") -> bytes:
    """A ClientHello record offering ``suites`` (and nothing newer than ``version``)."""
    name = host.encode()
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    groups = struct.pack("!H", 6) + struct.pack("!HHH", 0x001D, 0x0017, 0x0018)   # x25519, P-256, P-384
    sigalgs = [0x0401, 0x0804, 0x0403, 0x0501, 0x0805, 0x0201, 0x0203]
    extensions = (_ext(0x0000, sni) + _ext(0x000A, groups) + _ext(0x000B, b"\x01\x00")
                  + _ext(0x000D, struct.pack("!H", 2 * len(sigalgs)) + struct.pack(f"!{len(sigalgs)}H", *sigalgs))
                  + _ext(0xFF01, b"\x00"))
    body = (struct.pack("!H", version) + os.urandom(32) + b"\x00"
            + struct.pack("!H", 2 * len(suites)) + struct.pack(f"!{len(suites)}H", *suites)
            + b"\x01\x00" + struct.pack("!H", len(extensions)) + extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + struct.pack("!HH", 0x0301, len(handshake)) + handshake


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def hello(port: int, suites: list[int], *, version: int = 0x0303, timeout: float = 10.0) -> Answer:
    """Send one ClientHello to 127.0.0.1:``port``; return what the server answered first."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(client_hello(suites, version=version))
        header = _recv_exact(sock, 5)
        if len(header) < 5:
            return Answer("closed")
        kind, rec_version, length = struct.unpack("!BHH", header)
        payload = _recv_exact(sock, length)
    if kind == 0x15 and len(payload) >= 2:
        return Answer("alert", alert=payload[1], version=rec_version)
    if kind == 0x16 and payload[:1] == b"\x02":
        server_version = struct.unpack("!H", payload[4:6])[0]
        sid_len = payload[38]
        suite = struct.unpack("!H", payload[39 + sid_len:41 + sid_len])[0]
        return Answer("server_hello", suite=suite, version=server_version)
    return Answer(f"record type {kind}")


@dataclass
class ClientRun:
    returncode: int
    output: str

    @property
    def sent_client_hello(self) -> bool:
        return ">>> " in self.output and "ClientHello" in self.output

    @property
    def handshake_done(self) -> bool:
        return "CONNECTION ESTABLISHED" in self.output or "Cipher is " in self.output and \
            "Cipher is (NONE)" not in self.output

    def server_alert(self) -> str | None:
        """The alert the server sent (a ``<<<`` line), if any."""
        for line in self.output.splitlines():
            if line.startswith("<<<") and "Alert" in line:
                return line
        return None


def s_client(port: int, *args: str, cafile: Path | None = None, timeout: float = 15.0) -> ClientRun:
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-msg",
           "-brief", *args]
    if cafile is not None:
        cmd += ["-CAfile", str(cafile)]
    done = subprocess.run(cmd, input=b"", capture_output=True, timeout=timeout)
    return ClientRun(done.returncode, (done.stdout + done.stderr).decode(errors="replace"))


class s_server:  # noqa: N801 - named after the openssl command it runs
    """``openssl s_server`` on a free loopback port, allowing what ``args`` allow: the
    positive control that shows a client command can negotiate at all."""

    def __init__(self, cert: Path, key: Path, *args: str) -> None:
        from tests.support.gateway import free_port
        self.port = free_port()
        self.proc = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", str(cert),
                                      "-key", str(key), "-quiet", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> s_server:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"openssl s_server exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("openssl s_server did not listen")

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=5)
