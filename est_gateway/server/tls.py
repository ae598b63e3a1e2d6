"""TLS termination with pyOpenSSL.

Python's ``ssl`` cannot accept an untrusted client certificate and let the application
decide (the gateway must answer a foreign or expired certificate with an HTTP status,
not a TLS alert), has no RFC 9266 exporter, and reports a wrong tls-unique under TLS 1.3.
pyOpenSSL gives all three. :class:`TLSSocket` makes a pyOpenSSL connection look like the
blocking socket gunicorn's HTTP parser reads from.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from est_gateway.identity import TLSInfo
from est_gateway.server.connection import Connection

# TLS 1.2 suites: forward secret AEAD only (no NULL, anonymous, export, RC4 or 3DES).
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!DSS"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


def server_context(cert_file: Path, key_file: Path, *, min_version: str = "1.2") -> SSL.Context:
    """A server context that asks for a client certificate, accepts any, and leaves the
    verdict to the application (``est_gateway.identity.verify_client_certificate``)."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(VERSIONS[min_version])
    ctx.set_cipher_list(TLS12_CIPHERS)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
                    | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
    # Every connection is a full handshake, so channel bindings and the client
    # certificate always belong to this very connection.
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_certificate_chain_file(str(cert_file))
    ctx.use_privatekey_file(str(key_file))
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
    return ctx


def _accept_any(conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
    return True


class TLSSocket(Connection):
    """A server-side pyOpenSSL connection with the socket methods gunicorn uses."""

    WANT_READ = (SSL.WantReadError,)
    WANT_WRITE = (SSL.WantWriteError,)

    def __init__(self, raw: socket.socket, context: SSL.Context) -> None:
        super().__init__(raw)
        self._conn = SSL.Connection(context, raw)
        self._conn.set_accept_state()

    # -- handshake -----------------------------------------------------------------------

    def handshake(self, timeout: float) -> TLSInfo:
        """Complete the handshake within ``timeout`` seconds and record what it gave."""
        self._timeout = timeout
        self._io(self._conn.do_handshake, reading=True)
        info = self._describe()
        self.info = info
        return info

    def _describe(self) -> TLSInfo:
        conn = self._conn
        version = conn.get_protocol_version_name()
        chain: list[bytes] = []
        leaf = conn.get_peer_certificate(as_cryptography=True)
        if leaf is not None:
            chain.append(leaf.public_bytes(Encoding.DER))
            for cert in conn.get_peer_cert_chain(as_cryptography=True) or []:
                der = cert.public_bytes(Encoding.DER)
                if der not in chain:
                    chain.append(der)
        unique = exporter = None
        if version == "TLSv1.3":
            exporter = conn.export_keying_material(EXPORTER_LABEL, 32, b"")
        else:
            # RFC 5929 §3.1: the first Finished message of the handshake; in a full
            # handshake (no resumption here) that is the client's.
            unique = conn.get_peer_finished()
        return TLSInfo(version=version, peer_chain=tuple(chain), tls_unique=unique,
                       tls_exporter=exporter)

    # -- socket API used by gunicorn -----------------------------------------------------

    def recv(self, size: int) -> bytes:
        try:
            return self._io(self._conn.recv, size, reading=True)
        except SSL.ZeroReturnError:
            return b""
        except SSL.SysCallError as exc:
            if exc.args and exc.args[0] in (-1, 0):  # EOF without close_notify
                return b""
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer") from None
        except SSL.Error as exc:
            raise ConnectionResetError(errno.ECONNRESET, f"TLS error: {exc}") from None

    def send(self, data: bytes | memoryview) -> int:
        try:
            return self._io(self._conn.send, bytes(data), reading=False)
        except SSL.Error as exc:
            raise BrokenPipeError(errno.EPIPE, f"TLS error: {exc}") from None

    def shutdown(self, how: int) -> None:
        try:
            self._conn.shutdown()  # close_notify; do not wait for the peer's
        except SSL.Error:
            pass
        self._raw.shutdown(how)
