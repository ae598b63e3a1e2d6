"""TLS termination with pyOpenSSL.

Python's ``ssl`` cannot accept an untrusted client certificate and let the application
decide (the gateway must answer a foreign or expired certificate with an HTTP status,
not a TLS alert), has no RFC 9266 exporter, and reports a wrong tls-unique under TLS 1.3.
pyOpenSSL gives all three. :class:`TLSSocket` is a pyOpenSSL connection driven by the
worker's event loop: handshake, reads and writes, none of them blocking.
"""

from __future__ import annotations

import errno
import selectors
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from est_gateway.identity import TLSInfo
from est_gateway.limits import Limits
from est_gateway.server.connection import Connection

# TLS 1.2 suites: forward secret AEAD only (no NULL, anonymous, export, RC4 or 3DES).
TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!MD5:!DSS"
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}


#: OpenSSL's X509_V_ERR_CERT_CHAIN_TOO_LONG: the presented chain is deeper than the verify depth
CHAIN_TOO_LONG = 22
#: checking one signature with a key of each curve, in checks with an RSA-2048 key (e = 65537);
#: measured with OpenSSL 3 on x86-64, where P-256 has its own fast code and P-384 and P-521 not
EC_CHECK_COST = {"secp256r1": 4.0, "secp384r1": 32.0, "secp521r1": 25.0}


def check_cost(key: object) -> float:
    """What checking one signature with ``key`` costs, in checks with an RSA-2048 key of
    exponent 65537: an RSA check grows with the square of the modulus and with the
    exponent's square-and-multiply steps (65537: 17)."""
    if isinstance(key, rsa.RSAPublicKey):
        e = key.public_numbers().e
        return (key.key_size / 2048) ** 2 * (e.bit_length() + e.bit_count() - 2) / 17
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_CHECK_COST.get(key.curve.name, max(EC_CHECK_COST.values()))
    return float("inf")


@dataclass(frozen=True)
class ClientChainLimits:
    """Bounds on the client-certificate chain a TLS client presents (issue: a chain is a CPU
    amplifier when OpenSSL checks every signature of whatever a client sends)."""

    #: certificates OpenSSL follows above the leaf while checking signatures
    max_depth: int = 8
    #: certificates presented (the leaf included); more: the connection is closed
    max_certs: int = 10
    #: total DER bytes of the presented certificates; more: the connection is closed
    max_bytes: int = 32 * 1024
    #: what the keys of the chain OpenSSL checks may cost together, in RSA-2048 signature
    #: checks (:func:`check_cost`): four P-384 keys, eight RSA-4096 or two RSA-8192 and
    #: more; beyond it the handshake fails before the costly key is used
    max_check_cost: float = 128.0

    def refusal(self, info: TLSInfo) -> str | None:
        """Why a completed handshake's chain is refused, or None."""
        if len(info.peer_chain) > self.max_certs:
            return f"{len(info.peer_chain)} client certificates presented; at most {self.max_certs}"
        size = sum(len(der) for der in info.peer_chain)
        if size > self.max_bytes:
            return f"client certificates of {size} bytes presented; at most {self.max_bytes}"
        return None


def server_context(cert_file: Path, key_file: Path, *, min_version: str = "1.2",
                   chain: ClientChainLimits | None = None, keys: Limits | None = None) -> SSL.Context:
    """A server context that asks for a client certificate, accepts any, and leaves the
    verdict to the application (``est_gateway.identity.verify_client_certificate``).

    What "any" may cost is bounded: OpenSSL builds the chain no deeper than
    ``chain.max_depth`` (deeper: the handshake fails), and every presented certificate
    whose key breaks ``keys`` (the CSR key limits: RSA size and public exponent, curves)
    fails the handshake, and so does a chain whose keys together cost more than
    ``chain.max_check_cost`` to check with. OpenSSL reports each certificate to the callback
    before using its key to check the signature below it (the leaf's: the client's
    CertificateVerify), so a hostile key is refused before any signature is checked with it."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(VERSIONS[min_version])
    ctx.set_cipher_list(TLS12_CIPHERS)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE
                    | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET)
    # Every connection is a full handshake, so channel bindings and the client
    # certificate always belong to this very connection.
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # Idle connections (keep-alive, slow clients) hold no TLS read/write buffers.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.use_certificate_chain_file(str(cert_file))
    ctx.use_privatekey_file(str(key_file))
    ctx.check_privatekey()
    chain = chain or ClientChainLimits()
    keys = keys or Limits()
    ctx.set_verify_depth(chain.max_depth)

    def accept_within_limits(conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int) -> bool:
        if errnum == CHAIN_TOO_LONG:
            return False
        try:
            key = cert.to_cryptography().public_key()
        except Exception:   # a key type cryptography cannot load
            return False
        if keys.public_key_refusal(key) is not None:
            return False
        # Each depth is reported once or more (once per error at it): its key is counted once.
        costs: dict[int, float] | None = conn.get_app_data()
        if costs is None:
            costs = {}
            conn.set_app_data(costs)
        costs[depth] = check_cost(key)
        return sum(costs.values()) <= chain.max_check_cost

    ctx.set_verify(SSL.VERIFY_PEER, accept_within_limits)
    return ctx


class TLSSocket(Connection):
    """A server-side pyOpenSSL connection: non-blocking handshake, reads and writes."""

    WANT_READ = (SSL.WantReadError,)
    WANT_WRITE = (SSL.WantWriteError,)

    def __init__(self, raw: socket.socket, context: SSL.Context) -> None:
        super().__init__(raw)
        self._context = context
        self._tls: SSL.Connection | None = None

    @property
    def _conn(self) -> SSL.Connection:
        """The pyOpenSSL connection, made when the client first sends (a ClientHello): a
        socket that never sends costs no TLS state (about 45 KiB each)."""
        if self._tls is None:
            self._tls = SSL.Connection(self._context, self._raw)
            self._tls.set_accept_state()
        return self._tls

    # -- handshake -----------------------------------------------------------------------

    def handshake_step(self) -> int:
        if self._tls is None:
            try:
                first = self._raw.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return selectors.EVENT_READ
            if not first:   # closed before sending anything: no TLS state is made for it
                raise ConnectionAbortedError(errno.ECONNABORTED, "closed before the TLS handshake")
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return selectors.EVENT_READ
        except SSL.WantWriteError:
            return selectors.EVENT_WRITE
        self.info = self._describe()
        return 0

    def read_nowait(self, size: int) -> bytes | None:
        try:
            self.wants = selectors.EVENT_READ
            return self._conn.recv(size)
        except SSL.WantReadError:
            return None
        except SSL.WantWriteError:
            self.wants = selectors.EVENT_WRITE
            return None
        except (SSL.Error, OSError):   # close_notify, EOF without it, reset, TLS alert
            return b""

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

    # -- writing ------------------------------------------------------------------------

    def _send_nowait(self, data: bytes | memoryview) -> int:
        try:
            return int(self._conn.send(data))
        except SSL.SysCallError as exc:
            raise BrokenPipeError(errno.EPIPE, f"TLS error: {exc}") from None
        except (SSL.WantReadError, SSL.WantWriteError):
            raise
        except SSL.Error as exc:
            raise BrokenPipeError(errno.EPIPE, f"TLS error: {exc}") from None

    def _retry_unsent(self, data: bytes) -> bytes:
        """OpenSSL may hold part of the record already: the same bytes must be written again."""
        return data

    def shutdown(self, how: int) -> None:
        try:
            self._conn.shutdown()  # close_notify; do not wait for the peer's
        except SSL.Error:
            pass
        self._raw.shutdown(how)
