"""A minimal EST client on pyOpenSSL that computes channel bindings itself (RFC 5929/9266).

It speaks HTTP/1.1 over one TLS connection, so the CSR it sends can carry the binding
of that very connection, the way libest's client does for tls-unique.
"""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from OpenSSL import SSL

T = TypeVar("T")
VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def binding_of(conn: SSL.Connection) -> bytes:
    """The client's own view: tls-unique (its Finished, the first of a full handshake) on
    TLS 1.2; the RFC 9266 exporter on TLS 1.3."""
    if conn.get_protocol_version_name() == "TLSv1.3":
        return conn.export_keying_material(b"EXPORTER-Channel-Binding", 32, b"")
    finished = conn.get_finished()
    assert finished is not None
    return finished


def post(port: int, path: str, body_for: Callable[[bytes], bytes], *, cacert: Path, tls: str,
         headers: dict[str, str] | None = None, cert: Path | None = None, key: Path | None = None,
         ) -> tuple[Response, bytes]:
    """POST the body that ``body_for(binding)`` builds on a fresh TLS connection."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(VERSIONS[tls])
    ctx.set_max_proto_version(VERSIONS[tls])
    ctx.load_verify_locations(str(cacert))
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
    if cert and key:
        ctx.use_certificate_chain_file(str(cert))
        ctx.use_privatekey_file(str(key))
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = SSL.Connection(ctx, sock)
    conn.set_tlsext_host_name(b"localhost")
    conn.set_connect_state()
    _io(sock, conn.do_handshake)
    binding = binding_of(conn)
    body = body_for(binding)
    head = [f"POST {path} HTTP/1.1", "Host: localhost", "Connection: close",
            "Content-Type: application/pkcs10", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    _io(sock, conn.sendall, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
    raw = b""
    while True:
        try:
            chunk = _io(sock, conn.recv, 65536)
        except (SSL.ZeroReturnError, SSL.SysCallError):
            break
        if not chunk:
            break
        raw += chunk
    conn.close()
    head_text, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Response(int(lines[0].split()[1]), parsed, payload), binding


def _io(sock: socket.socket, call: Callable[..., T], *args: object) -> T:
    """Retry a pyOpenSSL call on a socket with a timeout (non-blocking underneath)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return call(*args)
        except SSL.WantReadError:
            wait = select.select([sock], [], [], deadline - time.monotonic())
        except SSL.WantWriteError:
            wait = select.select([], [sock], [], deadline - time.monotonic())
        if not any(wait):
            raise TimeoutError("EST server did not answer within 30 s")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- libest's client-side checks of a serverkeygen answer -------------------------------
#: libest's client refuses a server-generated key part shorter than 256 bytes and a
#: certificate part shorter than 128 bytes (EST_MIN_CLIENT_PKEY_LEN / EST_MIN_CLIENT_CERT_LEN
#: in libest's est.h, checked in est_client_http.c; /work/shared/INTEROP.md): a base64
#: P-256 PKCS#8 key (about 190 bytes) is refused, an RSA key is not.
LIBEST_MIN_KEY_PART = 256
LIBEST_MIN_CERT_PART = 128


class LibestRefusal(Exception):
    """What libest's client would report instead of storing the key and certificate."""


def libest_serverkeygen_parts(content_type: str, body: bytes) -> dict[str, bytes]:
    """The base64 payload of each part (by Content-Type), as libest's client takes it apart,
    raising :class:`LibestRefusal` where libest's client would give up."""
    boundary = content_type.partition("boundary=")[2].strip('"')
    if not boundary:
        raise LibestRefusal("no multipart boundary")
    parts: dict[str, bytes] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:-1]:
        head, sep, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise LibestRefusal("a part without headers")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head.decode("latin-1").split("\r\n"))}
        if headers.get("content-transfer-encoding") != "base64" or "content-type" not in headers:
            continue                       # libest ignores such a part
        parts[headers["content-type"].split(";")[0]] = payload.removesuffix(b"\r\n")
    key, cert = parts.get("application/pkcs8"), parts.get("application/pkcs7-mime")
    if key is None or cert is None:
        raise LibestRefusal(f"missing part: has {sorted(parts)}")
    if len(key) < LIBEST_MIN_KEY_PART:
        raise LibestRefusal(f"key part of {len(key)} bytes is under {LIBEST_MIN_KEY_PART}")
    if len(cert) < LIBEST_MIN_CERT_PART:
        raise LibestRefusal(f"certificate part of {len(cert)} bytes is under {LIBEST_MIN_CERT_PART}")
    return parts
