"""Two TLS guards that other tests reach only behind another limit:

* the presented chain's byte bound (``client_cert_max_bytes``), with a chain within the
  count and depth bounds, its size made by a large non-critical extension;
* the minimum protocol version, with the gateway's OpenSSL at ``@SECLEVEL=0`` through
  ``OPENSSL_CONF`` (as an operator's system configuration may set it): the security level
  no longer refuses TLS 1.1 by itself, so only the gateway's minimum version answers a TLS
  1.1 ClientHello with ``protocol_version`` (without it: ``handshake_failure``, for want of
  a shared suite, and a TLS 1.1 suite added to the list would let the client in).

Real TLS, a real gateway; the TLS 1.1 client is ``openssl s_client``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.server.tls import ClientChainLimits
from tests.support import tlsprobe
from tests.support.gateway import GatewayProcess, local_instance
from tests.support.pki import p256_key
from tests.test_client_chain_limits import Gateway, chain_of, gateway, present  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

#: a private OID (the example arc of RFC 7229)
PADDING_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.13.99")
#: OpenSSL's configuration at security level 0, the protocol floor at TLS 1.0
LEGACY_CONF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
CipherString = DEFAULT@SECLEVEL=0
"""


def padded_chain(size: int) -> tuple[object, list[x509.Certificate]]:
    """Leaf and two CAs of P-256 keys (cheap to check), each CA carrying ``size`` bytes of
    a non-critical extension."""
    keys = [p256_key() for _ in range(3)]
    certs = chain_of(list(keys), f"padded-{size}")
    padded = [certs[0]]
    for i, cert in enumerate(certs[1:], start=1):
        issuer_key = keys[i + 1] if i + 1 < len(keys) else keys[i]
        builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
                   .public_key(cert.public_key()).serial_number(cert.serial_number)
                   .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.UnrecognizedExtension(PADDING_OID, b"\x04" + b"\x82" + size.to_bytes(2, "big")
                                                             + b"p" * size), critical=False))
        padded.append(builder.sign(issuer_key, hashes.SHA256()))    # the same keys: the chain still verifies
    return keys[0], padded


def test_a_chain_within_count_and_depth_but_over_the_byte_bound_is_refused(gateway: Gateway,  # noqa: F811
                                                                            tmp_path: Path) -> None:
    limits = ClientChainLimits()
    key, certs = padded_chain(17000)
    assert len(certs) <= limits.max_certs and len(certs) - 1 <= limits.max_depth
    assert sum(len(cert.public_bytes(Encoding.DER)) for cert in certs) > limits.max_bytes
    assert present(gateway, tmp_path, "over-bytes", key, certs) is None


def test_positive_control_the_same_chain_under_the_byte_bound_is_served(gateway: Gateway,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    key, certs = padded_chain(8000)
    assert sum(len(cert.public_bytes(Encoding.DER)) for cert in certs) < ClientChainLimits().max_bytes
    assert present(gateway, tmp_path, "under-bytes", key, certs) == 200


@pytest.fixture(scope="module")
def legacy_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("legacy-openssl")
    conf = folder / "openssl.cnf"
    conf.write_text(LEGACY_CONF)
    instance, process = local_instance(folder / "est-local")
    process.env = {"OPENSSL_CONF": str(conf)}
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_tls_1_1_at_security_level_0_is_refused_by_the_minimum_version(legacy_gateway: GatewayProcess) -> None:
    refused = tlsprobe.s_client(legacy_gateway.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert refused.sent_client_hello and not refused.handshake_done, refused.output
    alert = refused.server_alert()
    assert alert and "protocol_version" in alert, refused.output


def test_positive_control_tls_1_2_is_served_at_security_level_0(legacy_gateway: GatewayProcess) -> None:
    run = tlsprobe.s_client(legacy_gateway.port, "-tls1_2", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert run.handshake_done and "Protocol version: TLSv1.2" in run.output, run.output
