"""Limits on what a client may send, checked before any expensive work (``[limits]``)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from est_gateway.errors import BadRequest, TooManyRequests
from est_gateway.wire import requested_sans

CURVES = ("secp256r1", "secp384r1", "secp521r1")
#: RSA public exponents above this cost signature checks proportionally more and are used
#: by no real CA or device (65537 is the norm); the same bound as Go's crypto/rsa.
MAX_RSA_EXPONENT = 2**31 - 1
WEAK_HASHES = ("md5", "sha1")


@dataclass(frozen=True)
class Limits:
    """Defaults are what an experienced PKI operator would set; all are configurable."""

    min_rsa_bits: int = 2048
    max_rsa_bits: int = 8192
    allowed_curves: tuple[str, ...] = CURVES
    max_subject_attributes: int = 16
    max_sans: int = 32
    max_value_length: int = 256
    #: failed authentications from one address within a minute before 429 (0 = off)
    auth_failures_per_minute: int = 10
    #: seconds a worker remembers a verified password (as an HMAC) to skip scrypt (0 = off)
    password_cache_s: int = 60

    def public_key_refusal(self, key: object) -> str | None:
        """Why ``key`` is refused (weak, costly to verify with, or of another type), or None.
        Applied to CSR keys and to every key of a presented client-certificate chain."""
        if isinstance(key, rsa.RSAPublicKey):
            if not self.min_rsa_bits <= key.key_size <= self.max_rsa_bits:
                return f"RSA keys must have {self.min_rsa_bits} to {self.max_rsa_bits} bits, not {key.key_size}"
            exponent = key.public_numbers().e
            if exponent < 3 or exponent % 2 == 0 or exponent > MAX_RSA_EXPONENT:
                return f"RSA public exponents must be odd, from 3 to {MAX_RSA_EXPONENT}"
            return None
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in self.allowed_curves:
                return f"EC curve {key.curve.name} is not accepted; use one of {', '.join(self.allowed_curves)}"
            return None
        return "only RSA and EC keys are accepted"

    def check_csr_key(self, csr: x509.CertificateSigningRequest) -> None:
        """Refuse weak or unsupported keys and hashes (400) before verifying the signature."""
        try:
            key = csr.public_key()
        except Exception:  # ValueError, or UnsupportedAlgorithm for unknown key OIDs
            raise BadRequest("CSR public key is malformed or of an unsupported type") from None
        if (refusal := self.public_key_refusal(key)) is not None:
            raise BadRequest(refusal)
        try:
            algo = csr.signature_hash_algorithm
        except Exception:  # cryptography raises UnsupportedAlgorithm for exotic OIDs
            raise BadRequest("CSR signature algorithm is not supported") from None
        if algo is not None and algo.name in WEAK_HASHES:
            raise BadRequest(f"CSR is signed with {algo.name.upper()}, which is not accepted; use SHA-256 or better")

    def check_csr_names(self, csr: x509.CertificateSigningRequest) -> None:
        """Bound subject and subjectAltName counts and lengths (400)."""
        if len(csr.subject) > self.max_subject_attributes:
            raise BadRequest(f"subject has {len(csr.subject)} attributes; at most "
                             f"{self.max_subject_attributes} are accepted")
        for attr in csr.subject:
            if len(str(attr.value)) > self.max_value_length:
                raise BadRequest(f"a subject value is longer than {self.max_value_length} characters")
        sans = requested_sans(csr)
        if len(sans) > self.max_sans:
            raise BadRequest(f"CSR asks for {len(sans)} subjectAltNames; at most {self.max_sans} are accepted")
        for name in sans:
            if len(str(name.value)) > self.max_value_length:
                raise BadRequest(f"a subjectAltName is longer than {self.max_value_length} characters")


class FailureThrottle:
    """Counts failed authentications per source address, shared by all worker processes.

    Created before gunicorn forks, its counters live in shared memory: addresses hash
    into a fixed number of buckets (bounded memory whatever the number of addresses),
    each counting failures over a fixed one-minute window. After ``limit`` failures in
    the window, requests from that address get 429 with Retry-After until it ends, so
    password guessing is slowed without locking a legitimate client out for long.
    """

    WINDOW_S = 60.0
    BUCKETS = 4096

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._now = clock
        # [window start, failures] per bucket; a fresh bucket has window start 0.
        self._table = multiprocessing.RawArray("d", 2 * self.BUCKETS)
        self._lock = multiprocessing.Lock()

    def _bucket(self, address: str) -> int:
        digest = hashlib.blake2b(address.encode(), digest_size=8, key=_HASH_KEY).digest()
        return 2 * (int.from_bytes(digest, "big") % self.BUCKETS)

    def check(self, address: str | None) -> None:
        """Raise 429 if ``address`` has failed too often in the current window."""
        if not self.limit or not address:
            return
        i = self._bucket(address)
        with self._lock:
            start, count = self._table[i], self._table[i + 1]
        elapsed = self._now() - start
        if elapsed <= self.WINDOW_S and count >= self.limit:
            raise TooManyRequests("too many failed authentication attempts; try again later",
                                  retry_after=int(self.WINDOW_S - elapsed) + 1)

    def failed(self, address: str | None) -> None:
        if not self.limit or not address:
            return
        i = self._bucket(address)
        now = self._now()
        with self._lock:
            if now - self._table[i] > self.WINDOW_S:
                self._table[i], self._table[i + 1] = now, 1.0
            else:
                self._table[i + 1] += 1.0


#: per-process-tree key: a client cannot choose addresses that collide with another's bucket
_HASH_KEY = os.urandom(16)
