"""Key types the gateway knows by name (configuration, csrattrs, serverkeygen, local CA)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KEY_TYPES = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384")
_CURVES = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}


def new_key(key_type: str) -> PrivateKey:
    """A fresh private key of one of :data:`KEY_TYPES`."""
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    return ec.generate_private_key(_CURVES[key_type]())


def key_type_of(key: object) -> str | None:
    """The :data:`KEY_TYPES` name of a public key, None for anything else."""
    if isinstance(key, rsa.RSAPublicKey):
        name = f"rsa-{key.key_size}"
        return name if name in KEY_TYPES else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name)
    return None


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for P-384 keys, SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()
