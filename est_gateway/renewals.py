"""One renewal of a certificate at a time, across a gateway's threads and worker processes.

For a CA whose record cannot make "renewed already?" and "record the successor" one step
(an upstream CA, where the gateway supersedes by revoking after the renewal), the core
claims the certificate before it asks the CA: while a renewal of it is in flight, and for
a while after one was issued, another renewal of the same certificate is refused, so
concurrent renewals issue once.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import struct
import time
from collections.abc import Callable
from enum import IntEnum

from est_gateway.errors import ESTError

FREE, IN_FLIGHT, RENEWED = 0, 1, 2


class Claim(IntEnum):
    """What :meth:`RenewalClaims.claim` found."""

    TAKEN = 0          # this renewal may go on; settle it with release()
    IN_FLIGHT = 1      # another renewal of the certificate is running
    RENEWED = 2        # the certificate was renewed a moment ago


class ClaimsFull(ESTError):
    """Every place for a renewal in flight is taken (503 + Retry-After)."""

    status = 503
    default_detail = "too many renewals at once; try again shortly"


class RenewalClaims:
    """A fixed table in shared memory (created before the workers fork), ``WAYS`` entries
    per set, the set chosen by a keyed hash of the certificate's fingerprint. A claim in
    flight is forgotten after ``stale_s`` (a worker that died holding it), a renewal's
    mark after ``renewed_s`` (longer than a request takes from its revocation lookup to
    its claim; by then the CA answers "superseded" or "revoked" itself, where it does)."""

    WAYS = 8
    _ENTRY = struct.Struct("=32sId")     # fingerprint, state, since

    def __init__(self, entries: int = 4096, *, stale_s: float = 300.0, renewed_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sets = max(1, entries // self.WAYS)
        self._table = multiprocessing.RawArray("c", self._ENTRY.size * self._sets * self.WAYS)
        self._lock = multiprocessing.Lock()
        self._stale_s, self._renewed_s, self._now = stale_s, renewed_s, clock

    def claim(self, fingerprint: bytes) -> Claim:
        now = self._now()
        with self._lock:
            free = None
            for slot in self._slots(fingerprint):
                key, state, since = self._ENTRY.unpack_from(self._table, slot)
                live = self._live(state, since, now)
                if live and key == fingerprint:
                    return Claim.IN_FLIGHT if state == IN_FLIGHT else Claim.RENEWED
                if not live and free is None:
                    free = slot
            if free is None:
                free = self._oldest_renewed(fingerprint)
            if free is None:
                raise ClaimsFull(retry_after=1)
            self._ENTRY.pack_into(self._table, free, fingerprint, IN_FLIGHT, now)
        return Claim.TAKEN

    def release(self, fingerprint: bytes, *, renewed: bool) -> None:
        """End a claim: ``renewed`` marks the certificate renewed for ``renewed_s``."""
        now = self._now()
        with self._lock:
            for slot in self._slots(fingerprint):
                key, state, _ = self._ENTRY.unpack_from(self._table, slot)
                if key == fingerprint and state == IN_FLIGHT:
                    self._ENTRY.pack_into(self._table, slot, fingerprint, RENEWED if renewed else FREE, now)
                    return

    def _live(self, state: int, since: float, now: float) -> bool:
        if state == IN_FLIGHT:
            return now - since < self._stale_s
        return state == RENEWED and now - since < self._renewed_s

    def _oldest_renewed(self, fingerprint: bytes) -> int | None:
        """A full set: the mark of the renewal longest ago makes room (never a claim in flight)."""
        oldest, oldest_at = None, float("inf")
        for slot in self._slots(fingerprint):
            _, state, since = self._ENTRY.unpack_from(self._table, slot)
            if state == RENEWED and since < oldest_at:
                oldest, oldest_at = slot, since
        return oldest

    def _slots(self, fingerprint: bytes) -> range:
        digest = hashlib.blake2b(fingerprint, digest_size=8, key=_HASH_KEY).digest()
        first = (int.from_bytes(digest, "big") % self._sets) * self.WAYS
        return range(first * self._ENTRY.size, (first + self.WAYS) * self._ENTRY.size, self._ENTRY.size)


#: per-process-tree key: a client cannot aim its certificates at another's set
_HASH_KEY = os.urandom(16)
