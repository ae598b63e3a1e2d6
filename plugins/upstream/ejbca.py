"""What the EJBCA REST and SOAP adapters share: options, alias handling, the EST flow.

Subclasses implement the four CA calls (:meth:`EjbcaBackend.issue`,
:meth:`~EjbcaBackend.issue_registered`, :meth:`~EjbcaBackend.fetch_ca_chain`,
:meth:`~EjbcaBackend.revocation_status`) and translate EJBCA's faults in one function each.
"""

from __future__ import annotations

import abc
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from est_gateway.backends.base import (
    CABackend,
    EnrollRequest,
    Issued,
    Pending,
    ReenrollRequest,
)
from est_gateway.config.model import CATarget
from est_gateway.config.reader import Section
from est_gateway.errors import BadRequest, ESTError, Forbidden, UpstreamError, UpstreamUnavailable
from plugins.upstream.alias import AliasSettingsCache, AliasUpstream
from plugins.upstream.cache import ExpiringCache
from plugins.upstream.credentials import spki
from plugins.upstream.session import UpstreamClient
from plugins.upstream.settings import UpstreamSettings, parse_upstream

log = logging.getLogger(__name__)

#: RFC 5280 §5.3.1 reason codes under EJBCA's names (cesecore ``RevocationReasons``)
REVOCATION_REASONS = {-1: "NOT_REVOKED", 0: "UNSPECIFIED", 1: "KEY_COMPROMISE", 2: "CA_COMPROMISE",
                      3: "AFFILIATION_CHANGED", 4: "SUPERSEDED", 5: "CESSATION_OF_OPERATION",
                      6: "CERTIFICATE_HOLD", 8: "REMOVE_FROM_CRL", 9: "PRIVILEGES_WITHDRAWN",
                      10: "AA_COMPROMISE"}


@dataclass(frozen=True)
class Meaning:
    """What "not found" and "refused" mean for one EJBCA call.

    ``not_found=None`` makes "not found" a normal answer (``None``); ``refused=None`` makes
    a refusal mean the gateway's own credentials were refused (502 + operator log).
    """

    not_found: Callable[[str], ESTError] | None
    refused: Callable[[str], ESTError] | None = None
    pending_allowed: bool = False


@dataclass(frozen=True)
class EjbcaOptions:
    """``[backends.<name>]`` of an EJBCA adapter, beyond the adapter-specific keys."""

    upstream: UpstreamSettings | None
    base_dir: Path
    cacerts_cache_s: float = 300.0
    pending_retry_after_s: int = 300


def new_password() -> str:
    """A fresh one-time end-entity password (never logged, never reused)."""
    return secrets.token_urlsafe(24)


def enrollment_code(csr: x509.CertificateSigningRequest) -> str:
    """EJBCA client mode: the pre-registered end entity's enrollment code, from challengePassword."""
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        raise BadRequest("this EST label needs the enrollment code in the CSR's "
                         "challengePassword attribute") from None
    code = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if not code.strip():
        raise BadRequest("the CSR's challengePassword (enrollment code) is empty")
    return code


def credentials_refused(backend: str, url: str, detail: str) -> UpstreamError:
    """The CA refused the gateway's own identity: tell the operator, give the client a 502."""
    log.error("backend %s: the upstream CA %s refused the gateway's credentials (%s); check that "
              "its client certificate is in an EJBCA role with RA administrator rights for this "
              "CA and these profiles", backend, url, detail)
    return UpstreamError("the upstream CA refused the gateway's credentials")


def clip(text: object, limit: int = 300) -> str:
    """An upstream reason, made safe to show: one line, bounded length."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


# -- what EJBCA's "not found" and "refused" mean, per call ---------------------------

def unknown_ca_or_profile(reason: str) -> BadRequest:
    return BadRequest(f"the CA does not know the CA or profile this EST label uses: {reason}")


def not_registered(reason: str) -> Forbidden:
    return Forbidden(f"no end entity is registered for this request at the CA: {reason}")


def enrollment_refused(reason: str) -> Forbidden:
    """Client mode: a wrong enrollment code, or an end entity not in status NEW."""
    return Forbidden("the CA refused the enrollment code or the end entity's status")


def ca_missing(reason: str) -> UpstreamError:
    return UpstreamError(f"the upstream CA does not know the configured CA: {reason}")


class EjbcaBackend(CABackend):
    """The EST flow over EJBCA: RA mode (create/edit the end entity) or client mode."""

    #: whether ``[aliases.<name>.upstream]`` may name the CA's subject DN (REST cacerts)
    alias_subject_dn = False

    def __init__(self, name: str, options: EjbcaOptions) -> None:
        super().__init__(name)
        self.options = options
        self.aliases = AliasSettingsCache(options.base_dir, allow_subject_dn=self.alias_subject_dn)
        self._chains: ExpiringCache[tuple[x509.Certificate, ...]] = ExpiringCache(options.cacerts_cache_s)
        self._learnt: dict[str, tuple[x509.Certificate, ...]] = {}
        self.client = UpstreamClient(options.upstream) if options.upstream is not None else None

    @classmethod
    def from_options(cls, name: str, options: Section) -> CABackend:
        upstream = parse_upstream(options)
        common = EjbcaOptions(
            upstream=upstream, base_dir=options.base_dir,
            cacerts_cache_s=options.number("cacerts_cache_s", 300.0),
            pending_retry_after_s=options.int("pending_retry_after_s", 300, minimum=1, maximum=86400),
        )
        return cls.build(name, common, options)

    @classmethod
    @abc.abstractmethod
    def build(cls, name: str, common: EjbcaOptions, options: Section) -> EjbcaBackend:
        """Read the adapter-specific keys of ``options`` and construct."""

    @property
    def upstream(self) -> UpstreamSettings:
        if self.options.upstream is None:  # only reachable for a configuration that failed
            raise UpstreamError(f"backend {self.name} has no valid upstream settings")
        return self.options.upstream

    @property
    def http(self) -> UpstreamClient:
        if self.client is None:
            raise UpstreamError(f"backend {self.name} has no valid upstream settings")
        return self.client

    def check_target(self, target: CATarget, path: str) -> list[str]:
        return self.aliases.check(target.extra, path)

    def accepts_enrollment_code(self, target: CATarget) -> bool:
        """Client mode checks the CSR's challengePassword as the end entity's enrollment code."""
        return self.aliases.get(target.extra).mode == "client"

    def describe_state(self) -> dict[str, str]:
        return self.upstream.describe() if self.options.upstream is not None else {}

    def pending(self, reference: Any) -> Pending:
        return Pending(retry_after=self.options.pending_retry_after_s, reference=clip(reference, 120))

    # -- EST operations -------------------------------------------------------------------

    def ca_certs(self, target: CATarget) -> list[x509.Certificate]:
        alias = self.aliases.get(target.extra)
        if alias.ca_chain:
            return list(alias.ca_chain)
        key = (target.ca, alias.ca_subject_dn)
        return list(self._chains.get(key, lambda: tuple(self.fetch_ca_chain(target, alias))))

    def issued(self, request: EnrollRequest, certificate: x509.Certificate,
               chain: tuple[x509.Certificate, ...]) -> Issued:
        """Check the CA certified the CSR's key; remember the chain it came with."""
        if spki(certificate.public_key()) != spki(request.csr.public_key()):
            raise UpstreamError("the upstream CA returned a certificate for another key")
        if chain:
            self._learnt[request.target.ca] = chain
        return Issued(certificate, chain)

    def learnt_chain(self, target: CATarget) -> list[x509.Certificate]:
        """The chain that came with the last certificate of this CA (for EJBCA before 8.1)."""
        chain = self._learnt.get(target.ca)
        if not chain:
            raise UpstreamUnavailable("the CA chain is not known yet: it is learnt from the first "
                                      "enrollment; configure ca_chain_file for this label")
        return list(chain)

    def enroll(self, request: EnrollRequest) -> Issued | Pending:
        alias = self.aliases.get(request.target.extra)
        username = alias.username.derive(request.csr.subject)
        if alias.mode == "client":
            return self.issue_registered(request, username, enrollment_code(request.csr))
        return self.issue(request, username)

    def reenroll(self, request: ReenrollRequest) -> Issued | Pending:
        """Renewal edits the same end entity (the core checked Subject/SAN and revocation)."""
        alias = self.aliases.get(request.target.extra)
        return self.issue(request, alias.username.derive(request.csr.subject))

    @abc.abstractmethod
    def issue(self, request: EnrollRequest, username: str) -> Issued | Pending:
        """Create or update end entity ``username`` and issue for the CSR (RA mode)."""

    @abc.abstractmethod
    def issue_registered(self, request: EnrollRequest, username: str, code: str) -> Issued | Pending:
        """Issue for a pre-registered end entity with its enrollment code (client mode)."""

    @abc.abstractmethod
    def fetch_ca_chain(self, target: CATarget, alias: AliasUpstream) -> list[x509.Certificate]:
        """Ask the CA for its chain (issuing CA first, root last)."""
