"""What the EJBCA REST and SOAP adapters share: options, alias handling, the EST flow.

Subclasses implement the four CA calls (:meth:`EjbcaBackend.issue`,
:meth:`~EjbcaBackend.issue_registered`, :meth:`~EjbcaBackend.fetch_ca_chain`,
:meth:`~EjbcaBackend.revocation_status`) and translate EJBCA's faults in one function each.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from est_gateway.plugin import (
    BadRequest,
    CABackend,
    ChainStore,
    EnrollRequest,
    ESTError,
    ExpiringCache,
    Forbidden,
    Issued,
    Pending,
    ReenrollRequest,
    Section,
    UpstreamError,
    UpstreamSettings,
    UpstreamUnavailable,
    clip,
    parse_upstream,
    spki,
)
from est_gateway.plugin.http import UpstreamClient
from est_gateway_ejbca.alias import AliasUpstream, EjbcaTarget, parse_target

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
    #: a refused login (no such end entity, wrong password, status not NEW) is a normal
    #: answer (``None``)
    login_refused_is_none: bool = False
    #: a resource this EJBCA version lacks is expected (probing for it): no operator error log
    missing_is_quiet: bool = False
    #: revoking: "already revoked" (``AlreadyRevokedException``) is done, e.g. a retried call
    already_revoked_is_done: bool = False
    #: REST enrollment: EJBCA refused it because approvals are enabled for the CA or the
    #: certificate profile (the error to raise)
    approvals_refused: Callable[[str], ESTError] | None = None


@dataclass(frozen=True)
class EjbcaOptions:
    """``[backends.<name>]`` of an EJBCA adapter, beyond the adapter-specific keys."""

    upstream: UpstreamSettings | None
    base_dir: Path
    #: where chains learnt from enrollment answers are kept (``state_dir``; default
    #: ``state/<backend name>`` next to the configuration file)
    state_dir: Path | None = None
    cacerts_cache_s: float = 300.0
    pending_retry_after_s: int = 300
    #: ``approval_secret_file``/``_env`` (SOAP only): makes end-entity passwords derivable
    #: (see :func:`derived_password`), so a client polling after a 202 is recognised by EJBCA
    approval_secret: bytes | None = field(default=None, repr=False)
    #: ``revoke_superseded``: after a renewal, revoke the renewed certificate with reason
    #: SUPERSEDED (on aliases with ``supersede_on_renewal``, the default)
    revoke_superseded: bool = False


#: shortest accepted ``approval_secret`` (characters): it is the key of every derived password
MIN_SECRET_CHARS = 32


def new_password() -> str:
    """A fresh one-time end-entity password (never logged, never reused)."""
    return secrets.token_urlsafe(24)


def derived_password(secret: bytes, retry_key: str) -> str:
    """The end-entity password for one EST request: HMAC-SHA256(secret, retry_key).

    The core gives a client's repeat of the same request (operation, alias, identity,
    CSR) the same ``retry_key``, so every replica sharing the secret computes the same
    password, across restarts, without storing anything; without the secret nobody can.
    """
    mac = hmac.new(secret, b"est-gateway/ejbca-end-entity-password/v1|" + retry_key.encode(),
                   hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")




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


# -- what EJBCA's "not found" and "refused" mean, per call ---------------------------

def unknown_ca_or_profile(reason: str) -> BadRequest:
    return BadRequest(f"the CA does not know the CA or profile this EST label uses: {reason}")


def not_registered(reason: str) -> Forbidden:
    return Forbidden(f"no end entity is registered for this request at the CA: {reason}")


def enrollment_refused(reason: str) -> Forbidden:
    """Client mode: EJBCA refused the login of the pre-registered end entity. It answers the
    same "Wrong username or password" for an unknown end entity as for a wrong code (so as
    not to leak which), and names a status that forbids enrolling; all are the device's
    problem (403), never the gateway's."""
    return Forbidden("the CA refused the enrollment code or the end entity's status")


def approvals_required(backend: str, target: EjbcaTarget, reason: str) -> UpstreamError:
    """EJBCA refused a REST enrollment because an approval profile covers the CA or the
    certificate profile: its REST API cannot create an end entity that waits for approval
    (``CertificateRequestSessionBean.addOrEditUser`` rolls the request back). The device can
    do nothing about it; the operator must change the label's path (502 + an error line)."""
    log.error("backend %s: EJBCA refuses REST enrollments for CA %r, certificate profile %r (end "
              "entity profile %r) because approvals are enabled there (%s); EJBCA's REST API cannot "
              "wait for an approval: use the ejbca-soap adapter for this label (approvals work "
              "there), client mode with pre-registered end entities, or remove the approval profile",
              backend, target.ca, target.certificate_profile, target.end_entity_profile, reason)
    return UpstreamError("the CA requires approvals for this EST label's enrollments, which EJBCA's "
                         "REST API cannot wait for; the operator must switch the label to the SOAP "
                         "adapter or to client mode with pre-registered end entities")


def ca_missing(reason: str) -> UpstreamError:
    return UpstreamError(f"the upstream CA does not know the configured CA: {reason}")


def renewed_unknown(reason: str) -> UpstreamError:
    return UpstreamError(f"the upstream CA does not know the renewed certificate: {reason}")


def _approval_secret(options: Section, *, waits: bool) -> bytes | None:
    if not waits:  # REST: EJBCA refuses enrollments under approvals, there is nothing to wait for
        for key in ("approval_secret_file", "approval_secret_env", "approval_secret"):
            if options.has(key):
                options.error(key, "only the SOAP adapter (ejbca-soap) waits for EJBCA approvals: "
                                   "EJBCA refuses REST enrollments while approvals are enabled")
        return None
    secret = options.secret("approval_secret", required=False)
    if secret is None:
        return None
    if len(secret) < MIN_SECRET_CHARS:
        key = "approval_secret_file" if options.has("approval_secret_file") else "approval_secret_env"
        options.error(key, f"must be at least {MIN_SECRET_CHARS} characters (e.g. the output of "
                           "`openssl rand -base64 48`)")
        return None
    return secret.encode("utf-8")


class ApprovalAlreadyExists(Exception):
    """EJBCA refused to open a second approval request for the same action on an end
    entity (``ApprovalException``, ``APPROVAL_ALREADY_EXISTS``): one is still open."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _naming(result: Issued | Pending, username: str) -> Issued | Pending:
    """A 202's reference with the end entity it is about (as the later 200's reference says)."""
    if isinstance(result, Pending) and username not in result.reference:
        return replace(result, reference=clip(f"{result.reference} (end entity {username})".strip(), 160))
    return result


class EjbcaBackend(CABackend[EjbcaTarget]):
    """The EST flow over EJBCA: RA mode (create/edit the end entity) or client mode."""

    #: whether ``[aliases.<name>.upstream]`` may name the CA's subject DN (REST cacerts)
    alias_subject_dn = False
    #: whether EJBCA can hold this adapter's enrollments for approval (EjbcaWS ``editUser``);
    #: REST ``pkcs10enroll`` is refused instead, so ``approval_secret`` is SOAP's only
    waits_for_approvals = False

    def __init__(self, name: str, options: EjbcaOptions) -> None:
        super().__init__(name)
        self.options = options
        self._chains: ExpiringCache[tuple[x509.Certificate, ...]] = ExpiringCache(options.cacerts_cache_s)
        self.learnt = ChainStore(options.state_dir)
        #: the CA targets of the aliases that use this backend (what health checks)
        self.targets: list[EjbcaTarget] = []
        self.client = UpstreamClient(options.upstream) if options.upstream is not None else None

    @classmethod
    def from_options(cls, name: str, options: Section) -> EjbcaBackend:
        upstream = parse_upstream(options)
        state_dir = options.path_value("state_dir", None)
        common = EjbcaOptions(
            upstream=upstream, base_dir=options.base_dir,
            state_dir=state_dir if state_dir is not None else options.base_dir / "state" / name,
            cacerts_cache_s=options.number("cacerts_cache_s", 300.0),
            pending_retry_after_s=options.int("pending_retry_after_s", 300, minimum=1, maximum=86400),
            approval_secret=_approval_secret(options, waits=cls.waits_for_approvals),
            revoke_superseded=options.bool("revoke_superseded", False),
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

    def parse_target(self, alias: Section) -> EjbcaTarget:
        before = len(alias.problems.items)
        target = parse_target(alias, allow_subject_dn=self.alias_subject_dn)
        if len(alias.problems.items) == before and target not in self.targets:
            self.targets.append(target)
        return target

    def issues_alike(self, a: EjbcaTarget, b: EjbcaTarget) -> bool:
        """Two aliases on the same EJBCA CA: the revocation lookups (``revocationstatus``,
        ``checkRevokationStatus``) answer by issuer and serial only, and the end entity
        records the profiles of its *latest* enrollment, not of a given certificate; so
        the profiles do not tell the labels apart."""
        return a.ca == b.ca

    def checks_enrollment_code(self, target: EjbcaTarget) -> bool:
        """Client mode checks the CSR's challengePassword as the end entity's enrollment code."""
        return target.upstream.mode == "client"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def describe_state(self) -> dict[str, str]:
        facts = self.upstream.describe() if self.options.upstream is not None else {}
        if self.options.upstream is not None:
            facts["version"] = self.describe_upstream()
        facts["state folder"] = str(self.options.state_dir)
        return facts

    def describe_upstream(self) -> str:
        """One start-up line: EJBCA's version, whether it offers a CA download, where the
        ``cacerts`` chain comes from (asks EJBCA once; never fails start-up)."""
        return "unknown"

    def chain_source(self) -> str:
        """Where ``cacerts`` comes from when an alias has no ``ca_chain_file``."""
        files = sorted({t.ca for t in self.targets if t.upstream.ca_chain})
        note = f"; ca_chain_file for CA {', '.join(files)}" if files else ""
        return f"{self.download_source()}{note}"

    def download_source(self) -> str:
        return "the CA download"

    def pending(self, reference: Any) -> Pending:
        return Pending(retry_after=self.options.pending_retry_after_s, reference=clip(reference, 120))

    # -- EST operations -------------------------------------------------------------------

    def ca_certs(self, target: EjbcaTarget) -> list[x509.Certificate]:
        alias = target.upstream
        if alias.ca_chain:
            return list(alias.ca_chain)
        key = (target.ca, alias.ca_subject_dn)
        return list(self._chains.get(key, lambda: tuple(self.fetch_ca_chain(target, alias))))

    def issued(self, request: EnrollRequest[EjbcaTarget], certificate: x509.Certificate,
               chain: tuple[x509.Certificate, ...]) -> Issued:
        """Check the CA certified the CSR's key; remember the chain it came with."""
        if spki(certificate.public_key()) != spki(request.csr.public_key()):
            raise UpstreamError("the upstream CA returned a certificate for another key")
        if chain:
            self.learnt.put(request.target.ca, chain)
        return Issued(certificate, chain)

    def learnt_chain(self, target: EjbcaTarget) -> list[x509.Certificate]:
        """The chain that came with the last certificate of this CA, from any worker or an
        earlier run (the state folder): how ``cacerts`` works on an EJBCA without ``/v1/ca``
        when the label names no ``ca_subject_dn``."""
        chain = self.learnt.get(target.ca)
        if not chain:
            raise UpstreamUnavailable("the CA chain is not known yet: this EJBCA offers no CA "
                                      "download, so the chain is learnt from the first enrollment "
                                      "and kept; configure ca_subject_dn (EJBCA's public webdist) or "
                                      "ca_chain_file for this label to serve it from the start",
                                      retry_after=self.options.pending_retry_after_s)
        return list(chain)

    def enroll(self, request: EnrollRequest[EjbcaTarget]) -> Issued | Pending:
        alias = request.target.upstream
        username = alias.username.derive(request.csr.subject)
        if alias.mode == "client":
            return self.issue_registered(request, username, enrollment_code(request.csr))
        return self.issue(request, username)

    def reenroll(self, request: ReenrollRequest[EjbcaTarget]) -> Issued | Pending:
        """Renewal edits the end entity that holds the current certificate: the username comes
        from the verified client certificate, never from the CSR (whose Subject may differ in
        case or encoding and must not select or create another end entity)."""
        alias = request.target.upstream
        holder = request.current.subject if request.current is not None else request.csr.subject
        return self.issue(request, alias.username.derive(holder))

    def issue(self, request: EnrollRequest[EjbcaTarget], username: str) -> Issued | Pending:
        """RA mode: create or update end entity ``username`` and issue for the CSR.

        Without ``approval_secret`` every request gets a fresh random password. With it,
        the password is derived from the request, which makes a client's repeat after a
        202 idempotent without gateway state:

        1. ``collect``: issue for the end entity with that password. This only succeeds
           when EJBCA executed an approved add/edit of *this* request (status NEW, this
           password); editing it again would open a second approval.
        2. otherwise ``submit`` the add/edit and issue. EJBCA answers "waiting for
           approval" (a new approval request) or APPROVAL_ALREADY_EXISTS (one is still
           open for this end entity): both are 202 again.
        """
        secret = self.options.approval_secret
        if secret is None or not request.retry_key:
            try:
                return self.submit(request, username, new_password())
            except ApprovalAlreadyExists as exc:  # a repeat cannot be recognised without the secret
                raise BadRequest(f"the CA refused the request: {exc.reason}") from None
        password = derived_password(secret, request.retry_key)
        # The audit ties the 202s and the final 200 together by the end entity: the approval
        # request's ID is only in EJBCA's first answer, and EJBCA offers no cheap lookup of it
        # later (the gateway keeps no state).
        issued = self.collect(request, username, password)
        if isinstance(issued, Issued):
            return replace(issued, approval_reference=f"end entity {username}")
        if issued is not None:
            return _naming(issued, username)
        try:
            return _naming(self.submit(request, username, password), username)
        except ApprovalAlreadyExists as exc:
            log.info("backend %s: an approval request for end entity %r is still open (%s)",
                     self.name, username, exc.reason)
            return self.pending(f"approval pending for end entity {username}")

    def supersede(self, certificate: x509.Certificate, target: EjbcaTarget) -> None:
        """With ``revoke_superseded`` (off by default): revoke the renewed certificate at
        EJBCA with reason SUPERSEDED, so neither it nor a copy of its key can renew again.
        Off, EJBCA keeps it valid until it expires and it can still renew."""
        if not self.options.revoke_superseded:
            return
        self.revoke_superseded(certificate)
        log.info("backend %s: revoked serial %X (issuer %s) with reason SUPERSEDED after its renewal",
                 self.name, certificate.serial_number, certificate.issuer.rfc4514_string())

    @abc.abstractmethod
    def revoke_superseded(self, certificate: x509.Certificate) -> None:
        """Revoke ``certificate`` with reason SUPERSEDED (4); already revoked is done."""

    @abc.abstractmethod
    def submit(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Issued | Pending:
        """Create or update the end entity with ``password`` and issue for the CSR; raise
        :class:`ApprovalAlreadyExists` when EJBCA says an approval request is still open."""

    def collect(self, request: EnrollRequest[EjbcaTarget], username: str, password: str) -> Issued | Pending | None:
        """Issue for an existing end entity in status NEW with ``password``; ``None`` when
        it does not exist, has another status or another password (EJBCA refused the
        login: go on and add/edit it). Only asked of adapters that wait for approvals
        (``waits_for_approvals``: the only ones accepting ``approval_secret``)."""
        raise NotImplementedError(f"{type(self).__name__} does not wait for approvals")

    @abc.abstractmethod
    def issue_registered(self, request: EnrollRequest[EjbcaTarget], username: str, code: str) -> Issued | Pending:
        """Issue for a pre-registered end entity with its enrollment code (client mode)."""

    @abc.abstractmethod
    def fetch_ca_chain(self, target: EjbcaTarget, alias: AliasUpstream) -> list[x509.Certificate]:
        """Ask the CA for its chain (issuing CA first, root last)."""
