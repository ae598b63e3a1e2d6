"""Checks every adapter makes on what an upstream CA answered."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature


def clip(text: object, limit: int = 300) -> str:
    """An upstream reason, made safe to show or log: one line, bounded length."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` (by name *and* signature) signed ``certificate`` directly.

    A certificate that merely names the CA, or is signed by another key of the same name,
    or uses an algorithm ``cryptography`` cannot verify, is not.
    """
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
