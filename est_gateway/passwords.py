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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from est_gateway.errors import ESTError, TooManyRequests
from est_gateway.limits import address_key

SCHEME = "scrypt"
DEFAULT_LOG_N = 14
DEFAULT_R = 8
DEFAULT_P = 1
_DKLEN = 32
#: how long a worker remembers a refused password (an HMAC of it), and how many at most
REFUSED_S = 60.0
REFUSED_ENTRIES = 4096


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


class ChecksBusy(ESTError):
    """Every password check this worker admits is taken (503 + Retry-After, at once)."""

    status = 503
    default_detail = "too many password checks at once; try again shortly"


class PasswordChecker:
    """Verifies alias passwords; remembers a recent success for ``ttl_s`` seconds.

    scrypt is deliberately slow (tens of ms and 16 MiB per check), and every device of
    an alias presents the same password, so each worker keeps, per alias, an HMAC of the
    last verified password under a random key of its own, compared in constant time.
    At most ``max_hashing`` scrypt computations run at once per process, bounding the
    memory they take. ``ttl_s = 0`` turns the memory off.

    Checks waiting for a hash hold a request thread each, so their number is bounded: at
    most ``max_checks`` hashes running or waiting per process, at most ``max_per_address``
    of them for one client address (IPv6: its /64). Beyond either, a check is refused at
    once (503, or 429 for the address) instead of queueing: a flood of wrong passwords
    leaves the other request threads to requests that need no hash. A password refused
    lately (kept as an HMAC for :data:`REFUSED_S`) is refused again without a hash, so a
    flood repeating one guess costs one hash, and no request waits behind it.
    """

    def __init__(self, ttl_s: float, *, max_hashing: int = 2, max_checks: int | None = None,
                 max_per_address: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._key = os.urandom(32)
        self._recent: dict[str, tuple[bytes, float]] = {}
        self._hashing = threading.BoundedSemaphore(max_hashing)
        self.max_checks = max_checks if max_checks is not None else 2 * max_hashing
        self.max_per_address = max_per_address if max_per_address is not None else max(1, self.max_checks // 2)
        #: verifications running, by (scope, HMAC of the password): the same password
        #: presented again meanwhile waits for that result instead of hashing it again
        self._flights: dict[tuple[str, bytes], _Flight] = {}
        #: verifications running or waiting for a hash, by client address key
        self._by_address: dict[bytes, int] = {}
        #: passwords refused lately, by (scope, HMAC of the password): until when
        self._refused: dict[tuple[str, bytes], float] = {}
        self._flights_lock = threading.Lock()

    def verify(self, scope: str, stored: PasswordHash, password: str, *, address: str | None = None,
               before_hashing: Callable[[], None] | None = None) -> bool:
        """Whether ``password`` is the one ``stored`` hashes. ``before_hashing`` runs, and may
        refuse (raise), only when this call is to start a hash of its own."""
        tag = hmac.new(self._key, password.encode("utf-8"), hashlib.sha256).digest()
        if self._remembered(scope, tag):
            return True
        refused_until = self._refused.get((scope, tag))
        if refused_until is not None and refused_until > self._clock():
            return False
        return self._verify_slowly(scope, stored, password, tag, address, before_hashing)

    def _admit(self, who: bytes) -> None:
        """Take a place among the checks of this process (under ``_flights_lock``)."""
        if self._by_address.get(who, 0) >= self.max_per_address:
            raise TooManyRequests("too many password checks from your address at once; try again later",
                                  retry_after=1)
        if len(self._flights) >= self.max_checks:
            raise ChecksBusy(retry_after=1)

    def _verify_slowly(self, scope: str, stored: PasswordHash, password: str, tag: bytes,
                       address: str | None, before_hashing: Callable[[], None] | None) -> bool:
        """One scrypt per password at a time: when the memory expires under load, every
        request presenting the password at once would otherwise hash it, each with its
        16 MiB, as many at once as ``max_hashing`` lets them."""
        key = (scope, tag)
        who = address_key(address) if address else b""
        while True:
            with self._flights_lock:
                flight = self._flights.get(key)
                if flight is None:
                    self._admit(who)
                    if before_hashing is not None:
                        before_hashing()
                    flight = self._flights[key] = _Flight()
                    self._by_address[who] = self._by_address.get(who, 0) + 1
                    break                       # this thread verifies
            flight.done.wait()
            if flight.ok is not None:
                return flight.ok
            # the verification failed with an error (it raised there): try again
        try:
            with self._hashing:
                # A request that missed the memory just before the previous verification of
                # this password stored it (and so started a flight of its own) finds it here.
                if self._remembered(scope, tag):
                    flight.ok = True
                    return True
                ok = stored.verify(password)
                if ok and self.ttl_s > 0:
                    self._recent[scope] = (tag, self._clock() + self.ttl_s)
                elif not ok:
                    if len(self._refused) >= REFUSED_ENTRIES:
                        self._refused.clear()     # bounded memory; a guess repeated is hashed again
                    self._refused[key] = self._clock() + REFUSED_S
            flight.ok = ok
            return ok
        finally:
            with self._flights_lock:
                del self._flights[key]
                left = self._by_address.pop(who) - 1
                if left:
                    self._by_address[who] = left
            flight.done.set()

    def _remembered(self, scope: str, tag: bytes) -> bool:
        remembered = self._recent.get(scope)
        return remembered is not None and remembered[1] > self._clock() and hmac.compare_digest(remembered[0], tag)


class _Flight:
    """One verification running: its result (None if it raised) once ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok: bool | None = None
