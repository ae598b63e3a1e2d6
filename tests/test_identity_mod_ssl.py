"""Client certificates from Apache's mod_ssl (``[server] client_cert_source = "mod_ssl"``):
read only when configured, held to the bounds of the gateway's own TLS endpoint, and the
setting validated with a message an operator can act on."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.local import authority
from est_gateway.config import load_config
from est_gateway.config.model import ServerSettings
from est_gateway.errors import ConfigError
from est_gateway.identity import (
    PresentedCertificate,
    UntrustedCertificate,
    presented_certificate,
    verify_client_certificate,
)
from est_gateway.limits import Limits
from tests.support import pki
from tests.test_config import GOOD

CA = pki.CA.create("mod_ssl Test CA")
LEAF = CA.issue(pki.p256_key(), cn="device-mod-ssl")
PEM = LEAF.public_bytes(Encoding.PEM).decode()          # mod_ssl exports PEM with its newlines
CA_PEM = CA.cert.public_bytes(Encoding.PEM).decode()

MOD_SSL = ServerSettings(tls=False, client_cert_source="mod_ssl")
#: the default source, even with Apache's address trusted as a proxy
HEADER = ServerSettings(tls=False, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))


def environ(**variables: str) -> dict[str, Any]:
    return {"REMOTE_ADDR": "127.0.0.1", "HTTPS": "on", **variables}


def test_mod_ssl_certificate_and_chain_are_presented() -> None:
    presented = presented_certificate(environ(SSL_CLIENT_CERT=PEM, SSL_CLIENT_CERT_CHAIN_0=CA_PEM), MOD_SSL)
    assert presented is not None
    assert (presented.leaf, presented.intermediates, presented.via) == (LEAF, (CA.cert,), "mod_ssl")


@pytest.mark.parametrize("server", [HEADER, ServerSettings(tls=False)], ids=["trusted-proxy", "no-proxies"])
def test_a_forged_ssl_client_cert_is_not_trusted_without_the_setting(server: ServerSettings) -> None:
    """Another WSGI server (or a bug upstream) may put anything into the environ: without
    the opt-in these names mean nothing."""
    assert presented_certificate(environ(SSL_CLIENT_CERT=PEM, SSL_CLIENT_CERT_CHAIN_0=CA_PEM), server) is None


def test_with_mod_ssl_the_proxy_header_is_not_read() -> None:
    forged = environ(HTTP_X_SSL_CLIENT_CERT=PEM.replace("\n", " "))
    assert presented_certificate(forged, HEADER) is not None          # control: the header path
    assert presented_certificate(forged, MOD_SSL) is None


@pytest.mark.parametrize("variables", [
    {},
    {"SSL_CLIENT_CERT": ""},
    {"SSL_CLIENT_CERT": "(null)"},
    {"SSL_CLIENT_CERT": "-----BEGIN CERTIFICATE-----\nTUlJ\n-----END CERTIFICATE-----\n"},
    {"SSL_CLIENT_CERT": PEM, "SSL_CLIENT_CERT_CHAIN_0": "garbage"},
], ids=["absent", "empty", "null", "not-der", "bad-chain"])
def test_no_or_unreadable_mod_ssl_certificate_is_none(variables: dict[str, str]) -> None:
    assert presented_certificate(environ(**variables), MOD_SSL) is None


def test_the_chain_stops_at_the_first_missing_index() -> None:
    presented = presented_certificate(environ(SSL_CLIENT_CERT=PEM, SSL_CLIENT_CERT_CHAIN_1=CA_PEM), MOD_SSL)
    assert presented is not None and presented.intermediates == ()


def test_more_certificates_than_client_cert_max_count_are_ignored_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    server = ServerSettings(tls=False, client_cert_source="mod_ssl", client_cert_max_count=3)
    chain = {f"SSL_CLIENT_CERT_CHAIN_{i}": CA_PEM for i in range(2)}
    assert presented_certificate(environ(SSL_CLIENT_CERT=PEM, **chain), server) is not None   # 3: the bound
    chain["SSL_CLIENT_CERT_CHAIN_2"] = CA_PEM
    assert presented_certificate(environ(SSL_CLIENT_CERT=PEM, **chain), server) is None
    assert "client certificate from mod_ssl ignored: 4 client certificates presented; at most 3" in caplog.text


def test_more_bytes_than_client_cert_max_bytes_are_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    size = len(LEAF.public_bytes(Encoding.DER)) + len(CA.cert.public_bytes(Encoding.DER))
    variables = environ(SSL_CLIENT_CERT=PEM, SSL_CLIENT_CERT_CHAIN_0=CA_PEM)
    exact = ServerSettings(tls=False, client_cert_source="mod_ssl", client_cert_max_bytes=size)
    assert presented_certificate(variables, exact) is not None
    under = ServerSettings(tls=False, client_cert_source="mod_ssl", client_cert_max_bytes=size - 1)
    assert presented_certificate(variables, under) is None
    assert f"client certificates of {size} bytes presented; at most {size - 1}" in caplog.text


def test_a_presented_key_outside_the_limits_is_refused() -> None:
    """As the TLS handshake refuses it: a 3072-bit RSA intermediate, where only 2048 bits are allowed."""
    weak = pki.rsa_key(3072)
    intermediate = authority.build_ca(authority.name("Weak Intermediate"), weak, issuer=CA.cert,
                                      issuer_key=CA.key, days=30, now=pki.NOW, path_length=0)
    leaf = pki.CA(weak, intermediate).issue(pki.p256_key(), cn="behind-weak")
    presented = PresentedCertificate(leaf, (intermediate,), "mod_ssl")
    now = dt.datetime.now(dt.UTC)
    assert verify_client_certificate(presented, [CA.cert], now) == leaf     # control: it chains
    with pytest.raises(UntrustedCertificate, match="refused key: RSA keys must have 2048 to 2048 bits, not 3072"):
        verify_client_certificate(presented, [CA.cert], now, keys=Limits(max_rsa_bits=2048))


# -- the setting -------------------------------------------------------------------------

PLAIN = GOOD.replace('tls_cert = "server.pem"\ntls_key = "server.key"\n', "tls = false\n")
CERT_ONLY = """
[aliases.devices]
backend = "local"
ca = "EST CA"
require_client_cert = true
"""


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """What GOOD names: TLS files and the password file (private)."""
    for name, text in (("server.pem", "x"), ("server.key", "x"), ("est.password", "s3cret-pass\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    return tmp_path


def _problems(folder: Path, text: str) -> list[str]:
    (folder / "gateway.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(folder / "gateway.toml")
    return info.value.problems


def test_mod_ssl_setting_loads(folder: Path) -> None:
    (folder / "gateway.toml").write_text(PLAIN.replace("tls = false\n", 'tls = false\nclient_cert_source = "mod_ssl"\n')
                                         + CERT_ONLY)
    config = load_config(folder / "gateway.toml")
    assert config.server.client_cert_source == "mod_ssl"
    assert config.aliases["devices"].require_client_cert


def test_without_a_source_a_certificate_alias_behind_plain_http_is_refused(folder: Path) -> None:
    problems = _problems(folder, PLAIN + CERT_ONLY)
    assert any(p.startswith("aliases.devices.require_client_cert: client certificates cannot reach")
               and 'client_cert_source = "mod_ssl"' in p for p in problems)


def test_mod_ssl_with_own_tls_is_refused_with_its_reason(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace('tls_key = "server.key"\n',
                                              'tls_key = "server.key"\nclient_cert_source = "mod_ssl"\n'))
    assert len(problems) == 1
    assert problems[0].startswith('server.client_cert_source: "mod_ssl" takes the client certificate from '
                                  "Apache's mod_ssl")
    assert "set tls = false there" in problems[0]


def test_unknown_source_is_named(folder: Path) -> None:
    problems = _problems(folder, PLAIN.replace("tls = false\n", 'tls = false\nclient_cert_source = "apache"\n'))
    assert problems == ['server.client_cert_source: "apache" is not one of: header, mod_ssl']

