"""Client-certificate chains must not be a CPU amplifier (issue 10 §2).

The gateway accepts any client certificate in the handshake and decides in the
application, so OpenSSL would otherwise check every signature of whatever chain a client
sends. A 60-certificate chain of 3072-bit keys with 3000-bit public exponents (OpenSSL
accepts any exponent up to 3072-bit moduli) cost 0.57 s of server CPU per handshake.
Now: verify depth, presented count and size are bounded and every presented key must
pass the CSR key limits, so such a handshake is refused cheaply. Real TLS, a real gateway.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support.gateway import GatewayProcess, local_instance
from tests.support.pki import huge_exponent_rsa_key, p256_key, write_pem

pytestmark = pytest.mark.e2e

HOSTILE_ATTEMPTS = 10
#: worker CPU seconds all hostile attempts together may cost (before: about 0.57 s each)
CPU_BOUND_S = 2.0


@dataclass
class Gateway:
    process: GatewayProcess
    trust_anchor: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    instance, process = local_instance(tmp_path_factory.mktemp("chains") / "est-local")
    process.start()
    try:
        yield Gateway(process, instance.trust_anchor)
    finally:
        process.stop()


def chain_of(keys: list[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], prefix: str) -> list[x509.Certificate]:
    """certs[i] is issued by certs[i + 1]'s key; the top one names an issuer nobody sent."""
    now = dt.datetime.now(dt.UTC)
    certs = []
    for i, key in enumerate(keys):
        issuer_key = keys[i + 1] if i + 1 < len(keys) else key
        name = lambda n: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix}-{n}")])  # noqa: E731
        builder = (x509.CertificateBuilder().subject_name(name(i)).issuer_name(name(i + 1))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=i > 0, path_length=None), critical=True))
        certs.append(builder.sign(issuer_key, hashes.SHA256()))
    return certs


def present(gateway: Gateway, tmp: Path, name: str, key: object, certs: list[x509.Certificate]) -> int | None:
    """Connect presenting ``certs`` (leaf first), GET cacerts; the status, or None when the
    gateway refused the connection (TLS alert, reset or close before any answer)."""
    chain_file = write_pem(tmp / f"{name}.pem", *certs)
    key_file = write_pem(tmp / f"{name}.key", key)
    ctx = ssl.create_default_context(cafile=str(gateway.trust_anchor))
    ctx.load_cert_chain(str(chain_file), str(key_file))
    try:
        with socket.create_connection(("127.0.0.1", gateway.process.port), timeout=30) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = tls.recv(4096)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return None
    return int(answer.split()[1]) if answer else None


def worker_cpu_seconds(arbiter: int) -> float:
    """User + system CPU of the gateway's worker processes (from /proc)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == arbiter:
            total += int(fields[11]) + int(fields[12])     # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def test_a_hostile_chain_is_refused_and_cheap(gateway: Gateway, tmp_path: Path) -> None:
    key = huge_exponent_rsa_key()
    certs = chain_of([key] * 60, "hostile")
    assert gateway.process.proc is not None
    before = worker_cpu_seconds(gateway.process.proc.pid)
    statuses = [present(gateway, tmp_path, "hostile", key, certs) for _ in range(HOSTILE_ATTEMPTS)]
    spent = worker_cpu_seconds(gateway.process.proc.pid) - before
    assert statuses == [None] * HOSTILE_ATTEMPTS
    assert spent < CPU_BOUND_S, f"{HOSTILE_ATTEMPTS} hostile handshakes cost {spent:.2f} s of worker CPU"


def test_one_costly_key_anywhere_in_the_chain_is_refused(gateway: Gateway, tmp_path: Path) -> None:
    leaf_key = p256_key()
    certs = chain_of([leaf_key, p256_key(), huge_exponent_rsa_key()], "one-costly")
    assert present(gateway, tmp_path, "one-costly", leaf_key, certs) is None


def test_a_chain_deeper_than_the_bound_is_refused(gateway: Gateway, tmp_path: Path) -> None:
    """10 certificates: within the count bound, 9 above the leaf is beyond the depth bound (8)."""
    keys: list[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = [p256_key() for _ in range(10)]
    assert present(gateway, tmp_path, "deep", keys[0], chain_of(keys, "deep")) is None


def test_more_certificates_than_the_bound_are_refused(gateway: Gateway, tmp_path: Path) -> None:
    """A short chain plus unrelated certificates: the depth is fine, the count is not."""
    keys: list[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = [p256_key(), p256_key()]
    extra = [chain_of([p256_key()], f"extra-{i}")[0] for i in range(10)]
    assert present(gateway, tmp_path, "many", keys[0], chain_of(keys, "many") + extra) is None


def test_positive_control_an_ordinary_chain_is_served(gateway: Gateway, tmp_path: Path) -> None:
    """The same client code with a short chain of ordinary keys gets its answer (the
    foreign certificate is the application's to judge; cacerts needs none)."""
    keys: list[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = [p256_key(), p256_key(), p256_key()]
    assert present(gateway, tmp_path, "ordinary", keys[0], chain_of(keys, "ordinary")) == 200
