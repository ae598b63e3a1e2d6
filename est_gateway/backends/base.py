"""The one CA-backend interface every issuer implements (built-in local CA and plugins).

The core has enforced the EST protocol and the alias policy before a backend is
called (authentication, CSR signature, RFC 7030 §4.2.2 Subject/SAN equality, same-key
policy). A backend only translates to its CA and translates the CA's faults back into
``est_gateway.errors``. Backends never import Flask nor see the HTTP request.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

if TYPE_CHECKING:
    from est_gateway.config.model import CATarget
    from est_gateway.config.reader import Section


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
class EnrollRequest:
    """A verified PKCS#10 request for ``simpleenroll`` (RFC 7030 §4.2.1)."""

    csr: x509.CertificateSigningRequest
    alias: str
    target: CATarget
    requester: Requester
    request_id: str
    #: identical for a repeated request (same operation, alias, identity and client CSR):
    #: how a backend recognises the client polling after a 202 (RFC 7030 §4.2.3)
    retry_key: str = ""


@dataclass(frozen=True)
class ReenrollRequest(EnrollRequest):
    """A ``simplereenroll`` (RFC 7030 §4.2.2); ``current`` is the verified client certificate.

    The renewal carries ``current``'s Subject and subjectAltName exactly (the core has
    checked the CSR asks for the same); an upstream adapter names the end entity from
    ``current``, never from the CSR."""

    current: x509.Certificate | None = None


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


class CABackend(abc.ABC):
    """One configured issuer. Constructed from its options, then :meth:`start`-ed once."""

    #: the ``type`` name it is registered under (set by the registry)
    type_name: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    @abc.abstractmethod
    def from_options(cls, name: str, options: Section) -> CABackend:
        """Parse and validate ``[backends.<name>]``; report problems on ``options``."""

    def check_target(self, target: CATarget, path: str) -> list[str]:
        """Problems with an alias's CA/profile names, as ``"<key path>: <message>"``."""
        return []

    def accepts_enrollment_code(self, target: CATarget) -> bool:
        """Whether the CSR's challengePassword is an enrollment code this CA checks for
        ``target`` (EJBCA client mode); aliases with ``challenge_password =
        "enrollment-code"`` need it."""
        return False

    def start(self) -> None:
        """Prepare for service (create a local CA, open pools). Called once, before forking."""

    def close(self) -> None:
        """Release resources at shutdown."""

    @abc.abstractmethod
    def ca_certs(self, target: CATarget) -> list[x509.Certificate]:
        """The CA chain for ``cacerts`` (RFC 7030 §4.1): issuing CA first, root last."""

    @abc.abstractmethod
    def enroll(self, request: EnrollRequest) -> Issued | Pending:
        """Issue for ``simpleenroll``."""

    @abc.abstractmethod
    def reenroll(self, request: ReenrollRequest) -> Issued | Pending:
        """Issue for ``simplereenroll``; the core has already checked revocation."""

    @abc.abstractmethod
    def revocation_status(self, certificate: x509.Certificate, target: CATarget) -> RevocationStatus:
        """Whether the CA has revoked ``certificate`` (asked before every re-enrollment)."""

    def supersede(self, certificate: x509.Certificate, target: CATarget) -> None:
        """After a successful renewal of ``certificate`` on an alias with
        ``supersede_on_renewal``: make it unable to renew again (the local CA marks its
        record; an upstream CA may revoke it with reason superseded where its adapter
        offers that). The default does nothing: the CA keeps no such state."""

    def health(self) -> None:
        """Raise an ``ESTError`` if the CA cannot be reached right now."""

    def describe_state(self) -> dict[str, str]:
        """Facts to print at start-up (state folder, upstream URL); never secrets."""
        return {}

