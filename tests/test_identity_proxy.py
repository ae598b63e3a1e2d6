"""Proxy mode of est_gateway.identity: forwarded PEM parsing and when proxy headers count."""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.config.model import ServerSettings
from est_gateway.identity import (
    TLS_ENVIRON_KEY,
    UNIX_ENVIRON_KEY,
    TLSInfo,
    client_address,
    parse_forwarded_pem,
    presented_certificate,
)
from tests.support import pki

CA = pki.CA.create("Proxy Test CA")
LEAF = CA.issue(pki.p256_key(), cn="device-proxy")
PEM = LEAF.public_bytes(Encoding.PEM).decode()
CA_PEM = CA.cert.public_bytes(Encoding.PEM).decode()
APACHE = PEM.replace("\n", " ")          # mod_headers turns newlines into spaces

BEHIND_APACHE = ServerSettings(tls=False, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),
                                                           ipaddress.ip_network("10.0.0.0/8")))
NO_PROXIES = ServerSettings(tls=False)


def environ(remote: str = "127.0.0.1", **headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REMOTE_ADDR": remote}
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    return env


@pytest.mark.parametrize("value", [
    PEM,                                     # newlines kept (a proxy that keeps them)
    APACHE,                                  # Apache: newlines → spaces
    APACHE.strip() + " ",                    # trailing space after unwrap
    urllib.parse.quote(PEM),                 # nginx $ssl_client_escaped_cert
    PEM.replace("\n", "\r\n"),
], ids=["pem", "apache", "apache-trailing", "url-encoded", "crlf"])
def test_forwarded_pem_forms_are_read(value: str) -> None:
    assert parse_forwarded_pem(value) == LEAF


@pytest.mark.parametrize("value", [
    "", "   ", "(null)", " (null) ", "garbage",
    "-----BEGIN CERTIFICATE----- !!!! -----END CERTIFICATE-----",
    "-----BEGIN CERTIFICATE----- TUlJ -----END CERTIFICATE-----",   # base64, not DER
], ids=["empty", "blank", "null", "null-spaced", "garbage", "bad-base64", "bad-der"])
def test_absent_or_unreadable_forwarded_pem_is_no_certificate(value: str) -> None:
    assert parse_forwarded_pem(value) is None


def test_header_from_trusted_proxy_is_presented_with_its_chain() -> None:
    env = environ(X_SSL_CLIENT_CERT=APACHE, X_SSL_CLIENT_CHAIN_0=CA_PEM.replace("\n", " "),
                  X_SSL_CLIENT_CHAIN_1="(null)")
    presented = presented_certificate(env, BEHIND_APACHE)
    assert presented is not None
    assert (presented.leaf, presented.intermediates, presented.via) == (LEAF, (CA.cert,), "proxy")


@pytest.mark.parametrize("remote, server", [
    ("127.0.0.2", BEHIND_APACHE),            # another loopback address
    ("192.0.2.9", BEHIND_APACHE),
    ("", BEHIND_APACHE),                     # Unix socket peer: no address
    ("not-an-ip", BEHIND_APACHE),
    ("127.0.0.1", NO_PROXIES),               # nobody is trusted by default
])
def test_header_from_anyone_else_is_ignored_and_logged(remote: str, server: ServerSettings,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    assert presented_certificate(environ(remote, X_SSL_CLIENT_CERT=APACHE), server) is None
    assert "ignored X-SSL-Client-Cert header from untrusted address" in caplog.text


def test_header_is_ignored_when_the_gateway_terminates_tls_itself() -> None:
    env = environ(X_SSL_CLIENT_CERT=APACHE)
    env[TLS_ENVIRON_KEY] = TLSInfo(version="TLSv1.3")
    assert presented_certificate(env, BEHIND_APACHE) is None


def test_ipv4_mapped_peer_counts_as_the_ipv4_proxy() -> None:
    presented = presented_certificate(environ("::ffff:127.0.0.1", X_SSL_CLIENT_CERT=APACHE), BEHIND_APACHE)
    assert presented is not None and presented.leaf == LEAF


def test_configured_header_names_are_used() -> None:
    server = ServerSettings(tls=False, trusted_proxies=BEHIND_APACHE.trusted_proxies,
                            client_cert_header="SSL-Client-Cert",
                            client_chain_header_prefix="SSL-Client-Chain-")
    assert presented_certificate(environ(X_SSL_CLIENT_CERT=APACHE), server) is None
    presented = presented_certificate(environ(SSL_CLIENT_CERT=APACHE, SSL_CLIENT_CHAIN_0=CA_PEM), server)
    assert presented is not None and presented.intermediates == (CA.cert,)


@pytest.mark.parametrize("remote, forwarded, expected", [
    # the peer is Apache: the address Apache saw
    ("127.0.0.1", "192.0.2.7", "192.0.2.7"),
    # a client's own claim (left) is skipped; proxies we trust (right) are walked past
    ("127.0.0.1", "203.0.113.1, 192.0.2.7", "192.0.2.7"),
    ("127.0.0.1", "203.0.113.1, 192.0.2.7, 10.1.2.3", "192.0.2.7"),
    # ports and brackets as proxies write them
    ("127.0.0.1", "192.0.2.7:4711", "192.0.2.7"),
    ("127.0.0.1", "[2001:db8::7]:4711", "2001:db8::7"),
    ("127.0.0.1", "2001:db8::7", "2001:db8::7"),
    # nothing usable: stop at the last hop believed
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "unknown", "127.0.0.1"),
    ("127.0.0.1", "192.0.2.7, unknown", "127.0.0.1"),
    ("127.0.0.1", "unknown, 10.9.9.9", "10.9.9.9"),
    # every hop trusted: the client itself sits on a proxy address
    ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
    # from an untrusted peer the header means nothing
    ("127.0.0.2", "192.0.2.7", "127.0.0.2"),
    ("198.51.100.4", "10.0.0.1", "198.51.100.4"),
])
def test_client_address(remote: str, forwarded: str, expected: str) -> None:
    assert client_address(environ(remote, X_FORWARDED_FOR=forwarded), BEHIND_APACHE) == expected


def test_client_address_without_proxies_or_behind_own_tls() -> None:
    assert client_address(environ("127.0.0.1", X_FORWARDED_FOR="192.0.2.7"), NO_PROXIES) == "127.0.0.1"
    env = environ("127.0.0.1", X_FORWARDED_FOR="192.0.2.7")
    env[TLS_ENVIRON_KEY] = TLSInfo(version="TLSv1.3")
    assert client_address(env, BEHIND_APACHE) == "127.0.0.1"
    assert client_address({}, BEHIND_APACHE) is None


def test_unix_socket_peers_are_trusted_only_when_configured() -> None:
    """Over the Unix socket there is no address: trusted_proxies = ["unix"] decides."""
    env = {**environ("", X_SSL_CLIENT_CERT=APACHE, X_FORWARDED_FOR="192.0.2.8"), UNIX_ENVIRON_KEY: True}
    trusting = ServerSettings(tls=False, trusted_unix_socket=True)
    presented = presented_certificate(env, trusting)
    assert presented is not None and presented.leaf == LEAF
    assert client_address(env, trusting) == "192.0.2.8"
    assert presented_certificate(env, NO_PROXIES) is None
    assert client_address(env, NO_PROXIES) is None
    # An address list does not make Unix-socket peers trusted.
    assert presented_certificate(env, BEHIND_APACHE) is None
