"""The one CA-backend interface every issuer implements (built-in local CA and plugins).

The core has enforced the EST protocol and the alias policy before a backend is
called (authentication, CSR signature, RFC 7030 §4.2.2 Subject/SAN equality, same-key
policy). A backend only translates to its CA and translates the CA's faults back into
``est_gateway.errors``. Backends never see the WSGI environ nor the HTTP request.

Plugin authors import all of this from :mod:`est_gateway.plugin` (see docs/plugins.md).

Lifecycle of a backend, as the server drives it:

1. **Configuration** (at start-up, in the arbiter): :meth:`CABackend.from_options` parses
   ``[backends.<name>]``; then :meth:`CABackend.parse_target` parses this backend's keys
   of every ``[aliases.<name>]`` that names it. Both record problems on the
   :class:`~est_gateway.config.reader.Section` they get (never raise for a bad setting):
   the operator sees every problem of the file at once, with its key path. A backend with
   problems is not used; nothing is contacted yet.
2. :meth:`CABackend.start` once, in the arbiter, **before** the worker processes are
   forked: create local state, check files; open no connection that a fork would share
   (open them lazily, per process and thread).
3. **Serving**: each of N forked worker processes calls the operations concurrently from
   several threads, so a backend is thread-safe. Every upstream call is bounded in time
   (connect and read timeouts): a hung CA must become a 503/504, never a hung worker.
   Faults are raised as ``est_gateway.errors`` classes (an upstream that cannot be
   reached: :class:`~est_gateway.errors.UpstreamUnavailable` → 503 + Retry-After).
4. :meth:`CABackend.close` at shutdown, in every worker process as it exits and in the
   arbiter: release pools, files and threads. It must not raise and must not block.
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cryptography import x509

if TYPE_CHECKING:
    from typing import Self

    from est_gateway.config.reader import Section

#: a backend's own description of what an alias asks of its CA (a frozen dataclass)
TargetT = TypeVar("TargetT")


@dataclass(frozen=True)
class Requester:
    """Who asked, as authenticated by the core (for records and audit)."""

    username: str | None = None
    certificate: x509.Certificate | None = None
    address: str | None = None

    def describe(self) -> str:
        parts = []
        if self.username:
            parts.append(f"user={self.username}")
        if self.certificate is not None:
            parts.append(f"cert={self.certificate.subject.rfc4514_string()}"
                         f"#{self.certificate.serial_number:x}")
        if self.address:
            parts.append(f"addr={self.address}")
        return " ".join(parts) or "anonymous"


@dataclass(frozen=True)
class EnrollRequest(Generic[TargetT]):
    """A verified PKCS#10 request for ``simpleenroll`` (RFC 7030 §4.2.1).

    ``target`` is what the backend's own :meth:`CABackend.parse_target` returned for
    the alias; the core never looks inside it.
    """

    csr: x509.CertificateSigningRequest
    alias: str
    target: TargetT
    requester: Requester
    request_id: str
    #: identical for a repeated request (same operation, alias, identity and client CSR):
    #: how a backend recognises the client polling after a 202 (RFC 7030 §4.2.3)
    retry_key: str = ""

    @functools.cached_property
    def subject(self) -> x509.Name:
        """``csr``'s subject, made once per request (``csr.subject`` builds it anew, with
        every attribute, on each access); the core hands it over already made."""
        return self.csr.subject

    @functools.cached_property
    def subject_text(self) -> str:
        """:attr:`subject` as RFC 4514 text."""
        return self.subject.rfc4514_string()


@dataclass(frozen=True)
class ReenrollRequest(EnrollRequest[TargetT]):
    """A ``simplereenroll`` (RFC 7030 §4.2.2); ``current`` is the verified client certificate.

    The renewal carries ``current``'s Subject and subjectAltName exactly (the core has
    checked the CSR asks for the same); an upstream adapter names the end entity from
    ``current``, never from the CSR."""

    current: x509.Certificate | None = None
    #: the alias supersedes a renewed certificate: a backend whose record can, records the
    #: renewal and marks ``current`` superseded in one step, refusing (403) when ``current``
    #: was renewed already, so that concurrent renewals of one certificate issue once
    supersede: bool = False


@dataclass(frozen=True)
class Issued:
    """A certificate and the CA chain above it (issuer first, root last)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    #: the approval request this answers, when the CA made the request wait (for the audit)
    approval_reference: str = ""


@dataclass(frozen=True)
class Pending:
    """The CA accepted the request but has not decided yet (RFC 7030 §4.2.3 → 202)."""

    retry_after: int
    reference: str = ""


@dataclass(frozen=True)
class RevocationStatus:
    """What the CA knows of a certificate it issued.

    ``known`` means this exact certificate (not merely its issuer name and serial) is on
    the CA's record. ``label`` is the EST label it was issued on, when the CA records
    that (None: the CA does not know). ``superseded``: a renewal replaced it, so it may no
    longer renew (RFC 7030 §4.2.2 leaves this policy to the server).
    """

    known: bool
    revoked: bool
    reason: str | None = None
    revoked_at: dt.datetime | None = None
    label: str | None = None
    superseded: bool = False


class CABackend(abc.ABC, Generic[TargetT]):
    """One configured issuer; ``TargetT`` is the backend's own per-alias settings type.

    See the module docstring for the lifecycle (configuration, ``start`` before fork,
    concurrent calls from threads in N processes, bounded upstream calls, ``close``).
    Optional operations have defaults: :meth:`health` passes, the rest must exist.
    """

    #: the ``type`` name it is registered under (set by the registry)
    type_name: str = ""
    #: :meth:`reenroll` with ``request.supersede`` records the renewal and supersedes the
    #: current certificate in one step of the CA's record (refusing a certificate renewed
    #: meanwhile); when False the core lets one renewal of a certificate run at a time
    supersedes_in_record: bool = False

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    @abc.abstractmethod
    def from_options(cls, name: str, options: Section) -> Self:
        """Parse and validate ``[backends.<name>]``; report problems on ``options``.

        Read every key through ``options`` (its typed getters, :meth:`Section.secret`
        for credentials, :meth:`Section.table` for sub-tables and ``check_unknown`` on
        those): the core reports the keys nobody read as unknown, with a "did you mean".
        """

    @abc.abstractmethod
    def parse_target(self, alias: Section) -> TargetT:
        """Parse this backend's keys of ``[aliases.<name>]`` into its own frozen target.

        ``alias`` is the whole alias table: read only the keys that belong to the CA side
        (e.g. ``ca``, ``certificate_profile``, a sub-table ``[aliases.<name>.upstream]``)
        and record problems on it (``alias.error(key, message)``); the core reads its own
        keys (authentication, csrattrs, ...) and reports unread keys afterwards. Called
        once per alias at start-up, after :meth:`from_options`; the returned value is
        stored on the alias and handed back in every request (``request.target``, the
        ``target`` argument). Return a frozen, hashable value even when a problem was
        recorded (the alias is then rejected and the value never used).
        """

    def checks_enrollment_code(self, target: TargetT) -> bool:
        """Capability: the CA itself checks the CSR's challengePassword as a one-time
        enrollment code registered beforehand for this subject (``target``'s alias may
        then say ``challenge_password = "enrollment-code"``). Default: no."""
        return False

    def issues_alike(self, a: TargetT, b: TargetT) -> bool:
        """Capability: whether a certificate issued for target ``a`` can pass
        :meth:`revocation_status` for target ``b`` with nothing telling which issued it
        (no ``RevocationStatus.label``), so that it would renew on either label.

        The core refuses at start-up two labels of one backend whose targets issue alike
        unless each lists the other in ``accept_renewals_from`` (one declared renewal
        domain). Default: equal targets issue alike. A backend whose CA records the label
        returns False; one whose targets differ only in what the CA does not record (a
        profile on the same CA) returns True for them."""
        return bool(a == b)

    def start(self) -> None:
        """Prepare for service (create a local CA, load files). Called once, before forking."""

    def start_changes_state(self) -> bool:
        """Whether :meth:`start` would create or change anything (a CA, a record, a file).
        ``check-config`` starts only backends that would not, to run serve's start-up
        checks on them. Default: no (:meth:`start` loads and checks only)."""
        return False

    def close(self) -> None:
        """Release resources at shutdown; called in each worker process and in the arbiter.
        Must not raise nor block; may be called without :meth:`start` having run."""

    @abc.abstractmethod
    def ca_certs(self, target: TargetT) -> list[x509.Certificate]:
        """The CA chain for ``cacerts`` (RFC 7030 §4.1): issuing CA first, root last."""

    @abc.abstractmethod
    def enroll(self, request: EnrollRequest[TargetT]) -> Issued | Pending:
        """Issue for ``simpleenroll``."""

    @abc.abstractmethod
    def reenroll(self, request: ReenrollRequest[TargetT]) -> Issued | Pending:
        """Issue for ``simplereenroll``; the core has already checked revocation."""

    @abc.abstractmethod
    def revocation_status(self, certificate: x509.Certificate, target: TargetT) -> RevocationStatus:
        """Whether the CA has revoked ``certificate`` (asked before every re-enrollment)."""

    def supersede(self, certificate: x509.Certificate, target: TargetT) -> None:
        """After a successful renewal of ``certificate`` on an alias with
        ``supersede_on_renewal``: make it unable to renew again (the local CA marks its
        record; an upstream CA may revoke it with reason superseded where its adapter
        offers that). The default does nothing: the CA keeps no such state."""

    def lineage_keys(self, certificate: x509.Certificate, target: TargetT) -> list[bytes]:
        """The SubjectPublicKeyInfo (DER) of every certificate on record in ``certificate``'s
        renewal lineage (its predecessors and their other renewals), for an alias that
        refuses renewal with a key used before. Default: none known (the core compares
        the current certificate's key only)."""
        return []

    def health(self) -> None:
        """Raise an ``ESTError`` if the CA cannot be reached right now."""

    def describe_state(self) -> dict[str, str]:
        """Facts to print at start-up (state folder, upstream URL); never secrets."""
        return {}


#: any backend, as the core holds them (it never looks inside a target)
AnyBackend = CABackend[Any]
