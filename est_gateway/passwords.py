"""Client passwords, kept only as salted scrypt hashes and compared in constant time.

A hash string looks like ``scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>``; make one with
``est-gateway hash-password``. Passwords given as a file or an environment variable
are hashed once at start-up, so the plain text is never kept beyond configuration load.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

SCHEME = "scrypt"
DEFAULT_LOG_N = 14
DEFAULT_R = 8
DEFAULT_P = 1
_DKLEN = 32


@dataclass(frozen=True)
class PasswordHash:
    """A salted scrypt hash of one password."""

    log_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def create(cls, password: str, *, log_n: int = DEFAULT_LOG_N) -> PasswordHash:
        salt = os.urandom(16)
        return cls(log_n, DEFAULT_R, DEFAULT_P, salt, _scrypt(password, salt, log_n, DEFAULT_R, DEFAULT_P))

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Parse the textual form; raises ValueError with a reason an operator understands."""
        parts = text.strip().split("$")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError('expected "scrypt$<log2 N>$<r>$<p>$<salt>$<hash>" '
                             "as printed by est-gateway hash-password")
        try:
            log_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt = base64.b64decode(parts[4], validate=True)
            digest = base64.b64decode(parts[5], validate=True)
        except ValueError:
            raise ValueError("the numbers or base64 fields of the hash are malformed") from None
        if not 10 <= log_n <= 20 or not 1 <= r <= 32 or not 1 <= p <= 16:
            raise ValueError("scrypt parameters out of range (log2 N 10..20, r 1..32, p 1..16)")
        if len(salt) < 8 or len(digest) != _DKLEN:
            raise ValueError("salt must be at least 8 bytes and the hash 32 bytes")
        return cls(log_n, r, p, salt, digest)

    def render(self) -> str:
        b64 = base64.b64encode
        return (f"{SCHEME}${self.log_n}${self.r}${self.p}$"
                f"{b64(self.salt).decode()}${b64(self.digest).decode()}")

    def verify(self, password: str) -> bool:
        """Constant-time comparison of the candidate's hash with the stored one."""
        candidate = _scrypt(password, self.salt, self.log_n, self.r, self.p)
        return hmac.compare_digest(candidate, self.digest)

    def __repr__(self) -> str:  # never show even the hash in logs or tracebacks
        return "PasswordHash(<redacted>)"


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r + (1 << 20), dklen=_DKLEN)
