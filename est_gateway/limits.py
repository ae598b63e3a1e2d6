"""Limits on what a client may send, checked before any expensive work (``[limits]``)."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import multiprocessing
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import idna
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from est_gateway import names
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
    #: "label": failures on one EST label never throttle another's; "gateway": counted together
    auth_failure_scope: str = "label"
    #: addresses the throttle remembers at once (shared memory, 44 bytes each)
    auth_failure_entries: int = 32768
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

    def check_csr_names(self, csr: x509.CertificateSigningRequest) -> x509.Name:
        """Bound subject and subjectAltName counts and lengths (400). Returns the subject
        (``csr.subject`` parses it anew on every access)."""
        subject = csr.subject
        if len(subject) > self.max_subject_attributes:
            raise BadRequest(f"subject has {len(subject)} attributes; at most "
                             f"{self.max_subject_attributes} are accepted")
        for attr in subject:
            if len(str(attr.value)) > self.max_value_length:
                raise BadRequest(f"a subject value is longer than {self.max_value_length} characters")
        names.check_subject(subject)
        sans = requested_sans(csr)
        if len(sans) > self.max_sans:
            raise BadRequest(f"CSR asks for {len(sans)} subjectAltNames; at most {self.max_sans} are accepted")
        for name in sans:
            if len(str(name.value)) > self.max_value_length:
                raise BadRequest(f"a subjectAltName is longer than {self.max_value_length} characters")
            if isinstance(name, x509.DNSName):
                check_dns_name(name.value)
            else:
                names.check_general_name(name)
        return subject


_LDH_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_dns_name(value: str) -> None:
    """A dNSName SAN in the preferred name syntax (RFC 5280 §4.2.1.6, RFC 1034 §3.5):
    ASCII letter-digit-hyphen labels of 1-63 characters, at most 253 in all; an IDN label
    as a valid A-label (RFC 5891, IDNA 2008); a wildcard only as a whole leftmost label
    above at least two labels ("*.example.com"). Whether a wildcard may be issued is the
    certificate profile's decision. Refused with 400."""
    shown = names.shown(value)
    labels = value.split(".")
    if len(value) > 253 or not value.isascii() or not all(labels):
        raise BadRequest(f'dNSName "{shown}" is not a valid DNS name (ASCII labels; IDNs as xn-- A-labels)')
    if labels[0] == "*":
        if len(labels) < 3:
            raise BadRequest(f'wildcard dNSName "{shown}" must stand for names under a domain, e.g. *.example.com')
        labels = labels[1:]
    for label in labels:
        if not _LDH_LABEL.match(label):
            raise BadRequest(f'dNSName "{shown}" is not a valid DNS name (letters, digits and inner hyphens; '
                             "labels of 1-63 characters)")
        if label[:4].lower() == "xn--":
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise BadRequest(f'dNSName "{shown}" has an invalid IDN label "{label}"') from None


class Attempt(NamedTuple):
    """One authentication attempt that passed :meth:`FailureThrottle.begin`."""

    key: bytes
    scope: int
    reserved: bool


class FailureThrottle:
    """Counts failed authentications per client address and EST label, shared by all workers.

    Created before the worker processes fork, its table lives in shared memory. Each entry
    holds one exact key (the address, an IPv6 address by its /64, plus the label unless
    ``per_label`` is off), so failures of one address never count against another; the
    table has a fixed number of entries (bounded memory) and when the set of entries an
    address maps to is full, the entry whose last failure is oldest is dropped. The set is
    chosen by a keyed hash with a per-process-tree secret, so a client cannot aim at the
    set of another address. Each entry counts failures over a one-minute window; after
    ``limit`` failures, requests from that key get 429 with Retry-After until it ends.

    Concurrency: once a key has failed, every attempt in flight counts against the limit
    (:meth:`begin` reserves, :meth:`end` settles), so concurrent guesses from it cannot
    overshoot. A costly check (a password not verified recently) is counted before it runs,
    whether or not the key has failed yet (:meth:`reserve`): of any number of guesses sent
    at once from a fresh key, at most ``limit`` are checked, the rest get 429 at once.
    Attempts that need no costly check (a remembered password, a client certificate) from a
    key with no failure are never refused, so at most the limit plus the requests in flight
    at once (worker threads) fail before the first 429, and none of those costs a hash.

    Until some key has failed within the last window, :meth:`begin` looks nothing up (no
    lock, no hash): timed as a block in a running gateway, that lookup took ~20 µs of the
    loop thread's CPU per enrollment (of ~0.95 ms), always for a key that had never failed
    (``bench.ab``: about −1 %).
    """

    WINDOW_S = 60.0
    WAYS = 8
    _ENTRY = struct.Struct("=16sIddII")   # key, scope, window start, last failure, failures, in flight

    def __init__(self, limit: int, *, scopes: Sequence[str] = (), per_label: bool = True,
                 entries: int = 32768, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._now = clock
        self._scopes = {name: i + 1 for i, name in enumerate(sorted(scopes))} if per_label else {}
        self._sets = max(1, entries // self.WAYS)
        self._table = multiprocessing.RawArray("c", self._ENTRY.size * self._sets * self.WAYS) if limit else None
        self._lock = multiprocessing.Lock()
        #: when any key last failed (shared like the table): once a window has passed
        #: since, no entry can refuse or count an attempt
        self._last_failure = multiprocessing.RawValue("d", -math.inf)

    def begin(self, address: str | None, scope: str = "") -> Attempt | None:
        """Raise 429 if this address has failed too often on ``scope`` (an EST label);
        otherwise start an attempt that :meth:`end` must settle."""
        if not self.limit or not address or self._table is None:
            return None
        key, index = address_key(address), self._scopes.get(scope, 0)
        now = self._now()
        if now - self._last_failure.value > self.WINDOW_S:
            # No key has failed within a window: nothing to look up (no lock, no hash). Read
            # without the lock: a failure recorded meanwhile leaves this one attempt
            # unreserved, within the bound above (attempts in flight when a key first fails).
            return Attempt(key, index, reserved=False)
        with self._lock:
            slot = self._find(key, index)
            if slot is None:
                return Attempt(key, index, reserved=False)    # never failed: nothing to count
            _, _, start, last, failures, pending = self._ENTRY.unpack_from(self._table, slot)
            elapsed = now - start
            if elapsed > self.WINDOW_S:
                start, failures = now, 0    # the attempts in flight stay counted
            elif failures >= self.limit:
                raise TooManyRequests("too many failed authentication attempts; try again later",
                                      retry_after=int(self.WINDOW_S - elapsed) + 1)
            elif failures and failures + pending >= self.limit:
                raise TooManyRequests("too many authentication attempts at once after a failure; "
                                      "try again later", retry_after=1)
            self._ENTRY.pack_into(self._table, slot, key, index, start, last, failures, pending + 1)
        return Attempt(key, index, reserved=True)

    def reserve(self, attempt: Attempt | None) -> Attempt | None:
        """Count ``attempt`` against its key before a costly check runs, atomically across
        threads and processes: 429 when the key's failures and the checks in flight already
        reach the limit. Returns the attempt to settle with :meth:`end` (one reserved)."""
        if attempt is None or attempt.reserved or self._table is None:
            return attempt
        now = self._now()
        with self._lock:
            slot = self._find(attempt.key, attempt.scope)
            if slot is None:
                slot = self._free_or_oldest(attempt.key, attempt.scope, now)
                start, last, failures, pending = now, now, 0, 0
            else:
                _, _, start, last, failures, pending = self._ENTRY.unpack_from(self._table, slot)
            elapsed = now - start
            if elapsed > self.WINDOW_S:
                start, failures, elapsed = now, 0, 0.0
            if failures >= self.limit:
                raise TooManyRequests("too many failed authentication attempts; try again later",
                                      retry_after=int(self.WINDOW_S - elapsed) + 1)
            if failures + pending >= self.limit:
                raise TooManyRequests("too many authentication attempts at once; try again later",
                                      retry_after=1)
            self._ENTRY.pack_into(self._table, slot, attempt.key, attempt.scope, start, last, failures, pending + 1)
        return attempt._replace(reserved=True)

    def end(self, attempt: Attempt | None, *, failed: bool) -> None:
        """Settle an attempt: release its reservation and count it if it ``failed``."""
        if attempt is None or self._table is None or not (attempt.reserved or failed):
            return    # nothing reserved, nothing to count: the common success path
        now = self._now()
        with self._lock:
            slot = self._find(attempt.key, attempt.scope)
            if slot is None:
                if not failed:
                    return
                slot = self._free_or_oldest(attempt.key, attempt.scope, now)
                start, last, failures, pending = now, now, 0, 0
            else:
                _, _, start, last, failures, pending = self._ENTRY.unpack_from(self._table, slot)
            if attempt.reserved and pending:
                pending -= 1
            if failed:
                if now - start > self.WINDOW_S:
                    start, failures = now, 0
                failures, last = failures + 1, now
                self._last_failure.value = now
            self._ENTRY.pack_into(self._table, slot, attempt.key, attempt.scope, start, last, failures, pending)

    def _set_slots(self, key: bytes, scope: int) -> range:
        digest = hashlib.blake2b(key + scope.to_bytes(4, "big"), digest_size=8, key=_HASH_KEY).digest()
        first = (int.from_bytes(digest, "big") % self._sets) * self.WAYS
        return range(first * self._ENTRY.size, (first + self.WAYS) * self._ENTRY.size, self._ENTRY.size)

    def _find(self, key: bytes, scope: int) -> int | None:
        assert self._table is not None
        for slot in self._set_slots(key, scope):
            entry_key, entry_scope, _, _, failures, pending = self._ENTRY.unpack_from(self._table, slot)
            if entry_key == key and entry_scope == scope and (failures or pending):
                return slot
        return None

    def _free_or_oldest(self, key: bytes, scope: int, now: float) -> int:
        """A slot for a new key in its set: an unused or expired one, else the one whose
        last failure is oldest (that address's count is forgotten, never merged)."""
        assert self._table is not None
        oldest, oldest_at = -1, float("inf")
        for slot in self._set_slots(key, scope):
            _, _, start, last, failures, pending = self._ENTRY.unpack_from(self._table, slot)
            if not (failures or pending) or (now - start > self.WINDOW_S and not pending):
                return slot
            if last < oldest_at:
                oldest, oldest_at = slot, last
        return oldest


def address_key(address: str) -> bytes:
    """16 bytes naming one client: an IPv4 address (IPv4-mapped), an IPv6 address's /64
    (one host usually holds all of it), or a keyed hash of anything else."""
    try:    # the usual dotted quad, without ipaddress's parser (the same strict syntax)
        return _MAPPED_V4 + socket.inet_pton(socket.AF_INET, address)
    except (OSError, ValueError):
        pass
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return b"\xfe" + hashlib.blake2b(address.encode(), digest_size=15, key=_HASH_KEY).digest()
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return ip.packed[:8] + bytes(8)
        ip = ip.ipv4_mapped
    return _MAPPED_V4 + ip.packed


_MAPPED_V4 = bytes(10) + b"\xff\xff"


#: per-process-tree key: a client cannot choose addresses that collide with another's bucket
_HASH_KEY = os.urandom(16)
