"""Test PKI: mint CAs, leaves and CSRs with `cryptography` (no fixtures on disk)."""

from __future__ import annotations

import base64
import datetime as dt
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from est_gateway.backends.local import authority

NOW = dt.datetime.now(dt.UTC)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: authority.PrivateKey | None = None, *, cn: str | None = "device-1",
             sans: list[x509.GeneralName] | None = None, attrs: list[tuple[str, str]] | None = None,
             challenge_password: str | None = None,
             hash_alg: hashes.HashAlgorithm | None = None) -> x509.CertificateSigningRequest:
    key = key or rsa_key()
    names = []
    for short, value in attrs or []:
        names.append(x509.NameAttribute(getattr(NameOID, short), value))
    if cn is not None:
        names.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if challenge_password is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD,
                                        challenge_password.encode())
    return builder.sign(key, hash_alg or hashes.SHA256())


def csr_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def csr_b64(csr: x509.CertificateSigningRequest) -> bytes:
    """Base64 wrapped at 64 columns with LF, the way libest sends it."""
    text = base64.b64encode(csr_der(csr))
    return b"\n".join(text[i:i + 64] for i in range(0, len(text), 64)) + b"\n"


@dataclass
class CA:
    """A test CA that can sign leaves (for foreign/expired client certificates)."""

    key: authority.PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str = "Test Foreign CA") -> CA:
        key = rsa_key()
        cert = authority.build_ca(authority.name(cn), key, issuer=None, issuer_key=None,
                                  days=365, now=NOW)
        return cls(key, cert)

    def issue(self, key: authority.PrivateKey, *, cn: str = "device-1",
              not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
              eku: tuple[str, ...] = ("clientAuth",),
              sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
        return authority.build_leaf(
            subject=authority.name(cn), public_key=key.public_key(), sans=sans or [],
            issuer=self.cert, issuer_key=self.key,
            not_before=not_before or NOW - dt.timedelta(minutes=5),
            not_after=not_after or NOW + dt.timedelta(days=30),
            key_usage=["digitalSignature"], extended_key_usage=list(eku),
            serial=authority.random_serial())


def write_pem(path: Path, *items: object) -> Path:
    """Write certificates and/or private keys (unencrypted) as PEM."""
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += authority.key_pem(item)  # type: ignore[arg-type]
    path.write_bytes(out)
    path.chmod(0o600)
    return path


def huge_exponent_rsa_key(bits: int = 3072, exponent_bits: int = 3000) -> rsa.RSAPrivateKey:
    """An RSA key with a huge public exponent (OpenSSL accepts any exponent for moduli up to
    3072 bits): verifying a signature with it costs about exponent_bits/17 times the usual."""
    numbers = rsa.generate_private_key(65537, bits).private_numbers()
    p, q = numbers.p, numbers.q
    phi = (p - 1) * (q - 1)
    while True:
        e = secrets.randbits(exponent_bits) | 1 | (1 << (exponent_bits - 1))
        if math.gcd(e, phi) == 1:
            break
    d = pow(e, -1, phi)
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), rsa.rsa_crt_iqmp(p, q),
                                 rsa.RSAPublicNumbers(e, p * q)).private_key()


__all__ = ["CA", "ExtendedKeyUsageOID", "csr_b64", "csr_der", "huge_exponent_rsa_key", "make_csr", "p256_key",
           "rsa_key", "write_pem"]
