"""A presented chain within every other limit (count, depth, bytes, each key's size and
exponent) must still not cost much to check: the keys OpenSSL checks signatures with are
costed together (``ClientChainLimits.max_check_cost``) and a chain over the budget fails
its handshake. Real TLS, a real gateway (the fixtures of test_client_chain_limits)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.limits import MAX_RSA_EXPONENT, Limits
from est_gateway.server.tls import ClientChainLimits, check_cost
from tests.support.pki import p256_key
from tests.test_client_chain_limits import Gateway, chain_of, gateway, present  # noqa: F401  (fixture)

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.cache
def primes_8192() -> tuple[int, int]:
    numbers = rsa.generate_private_key(65537, 8192).private_numbers()
    return numbers.p, numbers.q


@functools.cache
def rsa_8192(exponent: int) -> rsa.RSAPrivateKey:
    """An RSA-8192 key with public exponent ``exponent`` (cryptography makes only 3 and 65537)."""
    p, q = primes_8192()
    d = pow(exponent, -1, (p - 1) * (q - 1))     # 2^31 - 1 is prime: coprime to phi but by a miracle
    return rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), rsa.rsa_crt_iqmp(p, q),
                                 rsa.RSAPublicNumbers(exponent, p * q)).private_key(
        unsafe_skip_rsa_key_validation=True)    # made from a valid key's primes here


def test_the_costly_chain_is_within_every_other_limit() -> None:
    """The chain the budget is for: each key passes the CSR key limits, and count, depth and
    DER size are within the chain limits."""
    key = rsa_8192(MAX_RSA_EXPONENT)
    assert Limits().public_key_refusal(key.public_key()) is None
    certs = chain_of([p256_key(), *[key] * 8], "costly-within")
    limits = ClientChainLimits()
    assert len(certs) <= limits.max_certs and len(certs) - 1 <= limits.max_depth
    assert sum(len(cert.public_bytes(Encoding.DER)) for cert in certs) <= limits.max_bytes


@pytest.mark.parametrize("key, cost", [
    (lambda: rsa.generate_private_key(65537, 2048), 1.0),
    (lambda: rsa.generate_private_key(65537, 4096), 4.0),
    (lambda: rsa_8192(65537), 16.0),
    (lambda: rsa_8192(MAX_RSA_EXPONENT), 16.0 * 60 / 17),
    (lambda: ec.generate_private_key(ec.SECP256R1()), 4.0),
    (lambda: ec.generate_private_key(ec.SECP384R1()), 32.0),
], ids=["RSA-2048", "RSA-4096", "RSA-8192", "RSA-8192 e=2^31-1", "P-256", "P-384"])
def test_check_costs(key: object, cost: float) -> None:
    assert check_cost(key().public_key()) == pytest.approx(cost)  # type: ignore[operator]


@pytest.mark.e2e
@pytest.mark.parametrize("name, keys", [
    ("8 RSA-8192 CAs with e = 2^31-1", lambda: [p256_key(), *[rsa_8192(MAX_RSA_EXPONENT)] * 8]),
    ("8 RSA-8192 CAs", lambda: [p256_key(), *[rsa_8192(65537)] * 8]),
    ("9 P-384 keys", lambda: [ec.generate_private_key(ec.SECP384R1()) for _ in range(9)]),
])
def test_a_chain_over_the_check_budget_is_refused(gateway: Gateway, tmp_path: Path,  # noqa: F811
                                                  name: str, keys: object) -> None:
    chain: list[Key] = keys()  # type: ignore[operator]
    assert sum(check_cost(key.public_key()) for key in chain) > ClientChainLimits().max_check_cost
    assert present(gateway, tmp_path, "over-budget", chain[0], chain_of(chain, "over-budget")) is None, name


@pytest.mark.e2e
@pytest.mark.parametrize("name, keys", [
    ("2 RSA-8192 CAs", lambda: [p256_key(), rsa_8192(65537), rsa_8192(65537)]),
    ("3 P-384 keys", lambda: [ec.generate_private_key(ec.SECP384R1()) for _ in range(3)]),
    ("RSA-4096 leaf and 2 CAs", lambda: [rsa.generate_private_key(65537, 4096) for _ in range(3)]),
])
def test_positive_control_a_chain_within_the_budget_is_served(gateway: Gateway, tmp_path: Path,  # noqa: F811
                                                              name: str, keys: object) -> None:
    chain: list[Key] = keys()  # type: ignore[operator]
    assert present(gateway, tmp_path, "in-budget", chain[0], chain_of(chain, "in-budget")) == 200, name
