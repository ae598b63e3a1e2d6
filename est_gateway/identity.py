"""Who is calling: the client certificate (from our own TLS session, a trusted proxy's
header or, when Apache runs the app, mod_ssl's variables), verified by the gateway
itself, the client's address and the HTTP Basic credentials.

This is the only module that reads client-certificate data and forwarded addresses from
the WSGI environ; proxy headers count only when the TCP peer is a trusted proxy.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import logging
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from est_gateway.config.model import ServerSettings
from est_gateway.limits import Limits
from est_gateway.wire import extension_refusal

log = logging.getLogger(__name__)

#: environ key under which the TLS server puts a :class:`TLSInfo` (see est_gateway.server)
TLS_ENVIRON_KEY = "est_gateway.tls"
#: environ key set (True) for requests that came over the gateway's Unix socket
UNIX_ENVIRON_KEY = "est_gateway.unix_socket"
MAX_CHAIN_DEPTH = 8
#: what mod_ssl gives an application Apache runs itself (mod_wsgi; SSLOptions +ExportCertData)
MOD_SSL_CERT = "SSL_CLIENT_CERT"
MOD_SSL_CHAIN_PREFIX = "SSL_CLIENT_CERT_CHAIN_"
_PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True)
class TLSInfo:
    """What our own TLS endpoint learnt about the connection a request came on."""

    version: str                       # "TLSv1.2", "TLSv1.3"
    peer_chain: tuple[bytes, ...] = ()  # DER, leaf first, as the client sent it
    tls_unique: bytes | None = None     # RFC 5929, TLS ≤ 1.2 only
    tls_exporter: bytes | None = None   # RFC 9266, TLS 1.3


@dataclass(frozen=True)
class PresentedCertificate:
    """A client certificate as presented (not yet trusted) and how it reached us."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    via: str  # "tls", "proxy" or "mod_ssl"


class UntrustedCertificate(Exception):
    """The presented client certificate cannot authenticate anyone; ``str()`` says why."""


def tls_info(environ: Mapping[str, Any]) -> TLSInfo | None:
    """What our own TLS endpoint recorded for this request's connection (None behind a proxy)."""
    info = environ.get(TLS_ENVIRON_KEY)
    return info if isinstance(info, TLSInfo) else None


def presented_certificate(environ: Mapping[str, Any], server: ServerSettings) -> PresentedCertificate | None:
    """The client certificate of this request, or None.

    From our TLS session when we terminate TLS; otherwise from mod_ssl's variables when
    ``server.client_cert_source`` says so, else from the proxy header, which is believed
    only when the request comes from one of ``server.trusted_proxies``.
    """
    tls = environ.get(TLS_ENVIRON_KEY)
    if isinstance(tls, TLSInfo):
        if not tls.peer_chain:
            return None
        certs = [_load_der(der) for der in tls.peer_chain]
        if any(c is None for c in certs):
            return None
        return PresentedCertificate(certs[0], tuple(c for c in certs[1:] if c), "tls")  # type: ignore[arg-type]
    if server.client_cert_source == "mod_ssl":
        return _from_mod_ssl(environ, server)
    header_key = "HTTP_" + server.client_cert_header.upper().replace("-", "_")
    raw = environ.get(header_key)
    if raw is None:
        return None
    if not from_trusted_proxy(environ, server):
        log.warning("ignored %s header from untrusted address %s", server.client_cert_header,
                    environ.get("REMOTE_ADDR"))
        return None
    leaf = parse_forwarded_pem(raw)
    if leaf is None:
        return None
    prefix = "HTTP_" + server.client_chain_header_prefix.upper().replace("-", "_")
    chain = []
    for i in range(MAX_CHAIN_DEPTH):
        cert = parse_forwarded_pem(environ.get(f"{prefix}{i}", ""))
        if cert is not None:
            chain.append(cert)
    return PresentedCertificate(leaf, tuple(chain), "proxy")


def _from_mod_ssl(environ: Mapping[str, Any], server: ServerSettings) -> PresentedCertificate | None:
    """The certificate (and the chain the client sent) Apache's mod_ssl put in the environ,
    held to the bounds of our own TLS endpoint. A client's headers never become these
    names (they arrive as ``HTTP_*``); no other server sets them."""
    from est_gateway.server.tls import ClientChainLimits  # imports this module

    names = [MOD_SSL_CERT, *(f"{MOD_SSL_CHAIN_PREFIX}{i}" for i in range(server.client_cert_max_count))]
    ders = []
    for name in names:
        value = environ.get(name)
        if value is None:
            break
        der = _pem_der(str(value))
        if der is None:     # none ("(null)", empty), or unreadable: as on our own TLS session
            return None
        ders.append(der)
    if not ders:
        return None
    limits = ClientChainLimits(max_depth=server.client_cert_max_depth, max_certs=server.client_cert_max_count,
                               max_bytes=server.client_cert_max_bytes)
    refusal = limits.refusal(TLSInfo("", peer_chain=tuple(ders)))
    if refusal is not None:
        log.warning("client certificate from mod_ssl ignored: %s", refusal)
        return None
    certs = [_load_der(der) for der in ders]
    if any(c is None for c in certs):
        return None
    return PresentedCertificate(certs[0], tuple(c for c in certs[1:] if c), "mod_ssl")  # type: ignore[arg-type]


def from_trusted_proxy(environ: Mapping[str, Any], server: ServerSettings) -> bool:
    """Whether the TCP peer of this request is a configured trusted proxy (never when we
    terminate TLS ourselves: then there is no proxy)."""
    if environ.get(TLS_ENVIRON_KEY) is not None:
        return False
    if environ.get(UNIX_ENVIRON_KEY):
        return server.trusted_unix_socket
    peer = _ip(str(environ.get("REMOTE_ADDR", "")))
    return peer is not None and _is_trusted(peer, server)


def client_address(environ: Mapping[str, Any], server: ServerSettings) -> str | None:
    """The client's address for logs and records.

    The TCP peer, unless that is a trusted proxy: then the right-most ``X-Forwarded-For``
    entry that is not itself a trusted proxy. Each proxy appends the address it saw, so
    everything left of the first untrusted hop is the client's own claim and ignored; an
    unreadable entry stops the walk at the last hop believed.
    """
    peer = str(environ.get("REMOTE_ADDR") or "") or None
    if not from_trusted_proxy(environ, server):
        return peer
    address = peer
    for entry in reversed(str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")):
        hop = _ip(entry)
        if hop is None:
            break
        address = str(hop)
        if not _is_trusted(hop, server):
            break
    return address


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    """An address as proxies write it ("192.0.2.1", "192.0.2.1:4711", "[2001:db8::1]:4711"),
    IPv4-mapped IPv6 as IPv4 (a dual-stack socket reports 127.0.0.1 that way)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, server: ServerSettings) -> bool:
    return any(address in net for net in server.trusted_proxies)


def parse_forwarded_pem(value: str) -> x509.Certificate | None:
    """A certificate forwarded by a proxy: PEM whose newlines Apache turned into spaces,
    or URL-encoded PEM (nginx). Apache's ``(null)`` and empty values mean "none"."""
    der = _pem_der(value)
    return None if der is None else _load_der(der)


def _pem_der(value: str) -> bytes | None:
    """The DER of the first PEM certificate in ``value`` (see :func:`parse_forwarded_pem`)."""
    text = value.strip()
    if not text or text == "(null)":
        return None
    if "%" in text:
        text = urllib.parse.unquote(text)
    match = _PEM_BODY.search(text)
    if match is None:
        return None
    try:
        return base64.b64decode(re.sub(r"\s+", "", match.group(1)), validate=True)
    except (binascii.Error, ValueError):
        return None


def _load_der(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def verify_client_certificate(presented: PresentedCertificate, anchors: Sequence[x509.Certificate],
                              now: dt.datetime, *, keys: Limits | None = None) -> x509.Certificate:
    """Chain ``presented`` to one of ``anchors`` at time ``now``; require clientAuth, and
    of every presented certificate a key within ``keys`` (our TLS endpoint refuses others
    in the handshake; certificates from a proxy or mod_ssl are held to the same).

    Raises :class:`UntrustedCertificate` with a short reason. Revocation is the
    caller's question to the backend.
    """
    leaf = presented.leaf
    if now < leaf.not_valid_before_utc:
        raise UntrustedCertificate("client certificate is not yet valid")
    if now > leaf.not_valid_after_utc:
        raise UntrustedCertificate("client certificate has expired")
    refusal = extension_refusal(leaf)
    if refusal is not None:
        raise UntrustedCertificate(f"client certificate has {refusal}")
    try:
        ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
            raise UntrustedCertificate("client certificate lacks the clientAuth extended key usage")
    except x509.ExtensionNotFound:
        pass
    if keys is not None:
        for cert in (leaf, *presented.intermediates):
            try:
                refusal = keys.public_key_refusal(cert.public_key())
            except Exception:  # a key type cryptography cannot load (UnsupportedAlgorithm)
                refusal = "only RSA and EC keys are accepted"
            if refusal is not None:
                raise UntrustedCertificate(f"client certificate chain has a refused key: {refusal}")
    if not anchors:
        raise UntrustedCertificate("no trusted CA is configured for client certificates")
    verifier = (
        PolicyBuilder().store(Store(list(anchors))).time(now).max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                            ee_policy=ExtensionPolicy.permit_all())
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(presented.intermediates))
    except VerificationError:
        raise UntrustedCertificate("client certificate does not chain to a CA trusted by this alias") from None
    except ValueError:
        raise UntrustedCertificate("client certificate could not be verified") from None
    return leaf


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password=<redacted>)"


class MalformedAuthorization(Exception):
    """The Authorization header is present but cannot be read."""


def basic_credentials(headers: Sequence[tuple[str, str]]) -> BasicCredentials | None:
    """HTTP Basic credentials (RFC 7617) of a request; None when there is no Authorization."""
    values = [v for k, v in headers if k.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise MalformedAuthorization("more than one Authorization header")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        raise MalformedAuthorization("only HTTP Basic authentication is supported")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise MalformedAuthorization("Basic credentials are not valid base64 UTF-8") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise MalformedAuthorization("Basic credentials lack the ':' separator")
    return BasicCredentials(username, password)
