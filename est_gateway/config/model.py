"""Validated, frozen settings of the gateway (built by ``est_gateway.config.load``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from est_gateway.csrattrs import CsrAttrsPolicy
from est_gateway.limits import Limits
from est_gateway.passwords import PasswordHash
from est_gateway.publication.settings import PublicationSettings

if TYPE_CHECKING:
    from est_gateway.backends.base import CABackend

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: values of [server] log_format (est_gateway.logformat)
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class ServerSettings:
    """How the gateway listens: terminating TLS itself, or plain HTTP behind a proxy."""

    host: str = "127.0.0.1"
    port: int = 8443
    #: listen = "unix:<path>": plain HTTP on a Unix socket for a local proxy (mode 0660)
    unix_socket: Path | None = None
    #: group id given the socket, so the proxy's user (e.g. www-data) can connect
    unix_socket_group: int | None = None
    tls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_min_version: str = "1.2"
    workers: int = 2
    max_body_bytes: int = 64 * 1024
    #: longest header field and most header fields; more → 431 (the request line: 4094 → 414)
    max_header_bytes: int = 16 * 1024
    max_header_fields: int = 100
    request_timeout_s: float = 30.0
    keepalive_s: float = 2.0
    max_requests_per_connection: int = 100
    #: from accept until the TLS handshake is complete
    handshake_timeout_s: float = 5.0
    #: open connections per worker process; new ones above it are closed at once
    max_connections: int = 4096
    #: open connections per worker from one client address (IPv6: its /64); 0 = no cap
    max_connections_per_address: int = 64
    #: client-certificate chain: depth OpenSSL follows, certificates and DER bytes presented
    client_cert_max_depth: int = 8
    client_cert_max_count: int = 10
    client_cert_max_bytes: int = 32 * 1024
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: trusted_proxies holds "unix": peers on the Unix socket may forward client certificates
    trusted_unix_socket: bool = False
    client_cert_header: str = "X-SSL-Client-Cert"
    client_chain_header_prefix: str = "X-SSL-Client-Chain-"
    #: where client certificates come from without our own TLS: "header" (a trusted proxy's
    #: client_cert_header) or "mod_ssl" (SSL_CLIENT_CERT[_CHAIN_n] of Apache running the app)
    client_cert_source: str = "header"
    log_level: str = "info"
    #: bytes of unfinished requests a worker's connections hold together; more → 503
    max_buffered_request_bytes: int = 32 * 1024 * 1024
    #: log and audit records a worker holds while its log output is slow; more are dropped
    log_queue_records: int = 4096
    #: every stderr line (the gateway's, gunicorn's, the audit's): "text" or "json"
    log_format: str = "text"
    #: where the arbiter writes its pid (``est-gateway reload`` reads it); None: nowhere
    pid_file: Path | None = None

    @property
    def url(self) -> str:
        """Where the gateway serves EST, for messages."""
        if self.unix_socket is not None:
            return f"http+unix:{self.unix_socket} /.well-known/est"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/.well-known/est"


@dataclass(frozen=True)
class AliasSettings:
    """One EST label: its authentication policy, and what it asks of its backend."""

    name: str
    backend: str
    #: what the backend's ``parse_target`` made of the alias's CA-side keys (opaque here)
    target: object
    require_client_cert: bool
    username: str | None
    password: PasswordHash | None
    allow_same_key_renewal: bool
    #: extra CAs whose certificates authenticate simpleenroll (e.g. a device maker's), read at start-up
    trusted_client_cas: tuple[x509.Certificate, ...] = ()
    csrattrs: CsrAttrsPolicy = field(default_factory=CsrAttrsPolicy)
    #: what a CSR's challengePassword means: "none" (ignored), "channel-binding"
    #: (RFC 7030 §3.5, required) or "enrollment-code" (checked by the CA itself)
    challenge_password: str = "none"
    serverkeygen: bool = True
    #: key type for serverkeygen: a fixed type, or "csr" (follow the CSR's key). RSA by
    #: default: libest's client refuses key parts under 256 bytes, e.g. any P-256 key.
    serverkeygen_key_type: str = "rsa-2048"
    #: other labels whose certificates may renew here (a certificate renews on its own label)
    accept_renewals_from: tuple[str, ...] = ()
    #: after a successful renewal the renewed certificate can no longer renew
    supersede_on_renewal: bool = True
    #: during a rotation: the password devices used until now, accepted before ``previous_password_until``
    previous_password: PasswordHash | None = None
    previous_password_until: dt.datetime | None = None

    def accepts_previous_password(self, now: dt.datetime) -> bool:
        """The previous password still authenticates at ``now`` (its window has not ended)."""
        return (self.previous_password is not None and self.previous_password_until is not None
                and now < self.previous_password_until)

    @property
    def realm(self) -> str:
        return f"est-gateway {self.name}"


@dataclass(frozen=True)
class ConsoleSettings:
    """The operator console (``[console]``): off unless enabled, on its own listen address."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8444
    #: CAs whose client certificates authenticate admins (read at start-up)
    admin_cas: tuple[x509.Certificate, ...] = ()
    admin_username: str | None = None
    admin_password: PasswordHash | None = None
    session_idle_timeout_s: float = 900.0
    #: signs the session cookies; shared by every worker (read from ``secret_file``)
    secret: bytes = field(default=b"", repr=False)
    #: where every worker appends the audit lines, so that the console can read them back
    audit_file: Path | None = None
    audit_file_max_bytes: int = 8 * 1024 * 1024

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}/"


@dataclass(frozen=True)
class GatewayConfig:
    """The whole validated configuration; backends are built but not started."""

    server: ServerSettings
    backends: Mapping[str, CABackend[Any]]
    aliases: Mapping[str, AliasSettings]
    source: Path | None = None
    limits: Limits = field(default_factory=Limits)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    #: where the local CAs publish CRLs and OCSP answers (``[publication]``)
    publication: PublicationSettings = field(default_factory=PublicationSettings)
