"""The EST protocol core: alias policy, authentication and RFC 7030 rules, then the backend.

Views call one method per EST operation with what they parsed from HTTP; everything a
backend receives has already passed these checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway import channel_binding, keygen, keywrap, wire
from est_gateway.audit import AuditEvent
from est_gateway.backends.base import (
    CABackend,
    EnrollRequest,
    Issued,
    Pending,
    ReenrollRequest,
    Requester,
    RevocationStatus,
)
from est_gateway.config.model import AliasSettings, GatewayConfig
from est_gateway.errors import (
    BadRequest,
    ConfigError,
    ESTError,
    Forbidden,
    NotFound,
    NotSupported,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from est_gateway.identity import (
    BasicCredentials,
    PresentedCertificate,
    TLSInfo,
    UntrustedCertificate,
    verify_client_certificate,
)
from est_gateway.limits import FailureThrottle, Limits
from est_gateway.metrics import Metrics
from est_gateway.passwords import PasswordChecker
from est_gateway.renewals import Claim, RenewalClaims

log = logging.getLogger(__name__)
R = TypeVar("R", bound=EnrollRequest[Any])
T = TypeVar("T")

#: how a username that is not the configured one appears in logs (it may be a password)
UNKNOWN_USER = "<unknown>"
#: CA chains whose certs-only PKCS#7 is kept (one per label is the usual need)
CHAIN_PKCS7_ENTRIES = 64
#: password checks running or waiting per worker process (half of its 8 request threads)
MAX_PASSWORD_CHECKS = 4
#: The alias that is also served without a label, at /.well-known/est/<operation>.
DEFAULT_ALIAS = "est"


@dataclass(frozen=True)
class Caller:
    """What the web layer learnt about the caller of one request."""

    credentials: BasicCredentials | None
    certificate: PresentedCertificate | None
    address: str | None
    request_id: str
    tls: TLSInfo | None = None
    audit: AuditEvent = dataclasses.field(default_factory=lambda: AuditEvent("", "", "", ""))


@dataclass(frozen=True)
class ServerGeneratedKey:
    """The answer of serverkeygen: the key part (PKCS#8, or CMS when the client asked for
    encryption) and the certificate."""

    key_part: tuple[str, bytes]
    certificate: x509.Certificate
    approval_reference: str = ""


class ESTService:
    """One instance per application. Besides its configuration it holds only the failure
    throttle (shared memory across workers) and each worker's memory of a verified password."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], dt.datetime], metrics: Metrics | None = None,
                 key_signer: keywrap.KeySigner | None = None) -> None:
        problems = check_client_ca_names(config)
        if problems:
            raise ConfigError(problems)
        self.config = config
        self.key_signer = key_signer
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.metrics.admit(aliases=config.aliases, backends=config.backends)
        limits = config.limits
        self.throttle = FailureThrottle(limits.auth_failures_per_minute, scopes=tuple(config.aliases),
                                        per_label=limits.auth_failure_scope == "label",
                                        entries=limits.auth_failure_entries)
        # scrypt takes 16 MiB per run: as many runs at once as this process's share of the
        # cores keeps them CPU-bound without letting each worker's peak memory grow by 32 MiB.
        share = max(1, (os.cpu_count() or 1) // max(1, config.server.workers))
        # Checks waiting for a hash hold a request thread each: at most half of a worker's
        # threads (est_gateway.server.worker) go to them, the rest stay free for the others.
        self.passwords = PasswordChecker(config.limits.password_cache_s, max_hashing=share,
                                         max_checks=min(2 * share, MAX_PASSWORD_CHECKS))
        #: certs-only PKCS#7 of the CA chains answered lately, by the chain itself (a backend
        #: that learns a new chain gets a new entry, never the old answer)
        self._chain_pkcs7: dict[tuple[x509.Certificate, ...], bytes] = {}
        #: the CA names of those chains, as loosely as a relying party might match them
        self._ca_names: dict[tuple[x509.Certificate, ...], frozenset[tuple[tuple[str, str], ...]]] = {}
        #: one renewal of a certificate at a time, where the CA's record cannot make it so
        #: (shared memory, made before the workers fork)
        self.renewal_claims = RenewalClaims() if any(
            a.supersede_on_renewal and not getattr(config.backends.get(a.backend), "supersedes_in_record", True)
            for a in config.aliases.values()) else None

    # -- lookup --------------------------------------------------------------------------

    def alias(self, name: str | None) -> AliasSettings:
        alias = self.config.aliases.get(name or DEFAULT_ALIAS)
        if alias is None:
            shown = name if name is None or len(name) <= 64 else name[:64] + "..."
            raise NotFound(f'unknown EST label "{shown}"' if name else "no default EST label is configured")
        return alias

    def backend(self, alias: AliasSettings) -> CABackend[Any]:
        return self.config.backends[alias.backend]

    # -- operations ----------------------------------------------------------------------

    def cacerts(self, alias: AliasSettings) -> bytes:
        """RFC 7030 §4.1: the CA chain as certs-only PKCS#7, base64-encoded as the answer's
        body (kept per chain: encoded once, and a changed chain gets its own)."""
        chain = tuple(self._call(alias, "ca_certs", lambda b: b.ca_certs(alias.target)))
        body = self._chain_pkcs7.get(chain)
        if body is None:
            if len(self._chain_pkcs7) >= CHAIN_PKCS7_ENTRIES:
                self._chain_pkcs7.clear()
            body = self._chain_pkcs7[chain] = wire.encode_base64_body(wire.certs_only(list(chain)))
        return body

    def csrattrs(self, alias: AliasSettings) -> bytes | None:
        """RFC 7030 §4.5: DER CsrAttrs, or None when the alias asks for nothing (→ 204)."""
        return None if alias.csrattrs.empty else alias.csrattrs.encode()

    def simpleenroll(self, alias: AliasSettings, body: bytes, caller: Caller) -> Issued | Pending:
        """RFC 7030 §4.2.1: authenticate by the alias policy, verify the CSR, issue."""
        requester = self._authenticate_enroll(alias, caller)
        csr, subject = parse_csr_body(body, self.config.limits)
        caller.audit.csr_subject = subject_text = subject.rfc4514_string()
        self._check_not_a_ca_name(alias, subject)
        alias.csrattrs.check(csr)
        self._check_binding(alias, csr, caller, requester.certificate)
        request = self._request(EnrollRequest, "simpleenroll", alias, csr, requester, caller, csr)
        _made_already(request, subject, subject_text)
        return self._call(alias, "enroll", lambda b: b.enroll(request))

    def simplereenroll(self, alias: AliasSettings, body: bytes, caller: Caller) -> Issued | Pending:
        """RFC 7030 §4.2.2: the current, valid, unrevoked certificate authenticates; no password."""
        current, issued_on = self._current_certificate(alias, caller)
        csr, subject = parse_csr_body(body, self.config.limits)
        caller.audit.csr_subject = subject_text = subject.rfc4514_string()
        self._check_not_a_ca_name(alias, subject)
        check_renewal_matches(csr, current, allow_same_key=alias.allow_same_key_renewal)
        if not alias.allow_same_key_renewal:
            # K1 → K2 → K1 must not pass: every key the record links to this certificate
            earlier = self._call(alias, "lineage_keys", lambda b: b.lineage_keys(current, alias.target))
            if wire.spki(csr.public_key()) in earlier:
                raise Forbidden("this EST label does not allow renewal with a key this certificate or "
                                "one before it had; generate a new key")
        if issued_on is not None and issued_on not in (alias.name, *alias.accept_renewals_from):
            raise Forbidden(f'client certificate was issued on EST label "{issued_on}"; renew it there')
        alias.csrattrs.check(csr)
        self._check_binding(alias, csr, caller, current)
        requester = Requester(certificate=current, address=caller.address)
        request = self._request(ReenrollRequest, "simplereenroll", alias, csr, requester, caller, csr,
                                current=current, supersede=alias.supersede_on_renewal)
        _made_already(request, subject, subject_text)
        if self.renewal_claims is None or not alias.supersede_on_renewal or self.backend(alias).supersedes_in_record:
            return self._renew(alias, request, current)
        fingerprint = current.fingerprint(hashes.SHA256())
        found = self.renewal_claims.claim(fingerprint)
        if found is Claim.IN_FLIGHT:
            raise Forbidden("a renewal of this client certificate is in progress; renew with its successor")
        if found is Claim.RENEWED:
            raise Forbidden("client certificate was already renewed; renew with its newest successor")
        renewed = False
        try:
            result = self._renew(alias, request, current)
            renewed = isinstance(result, Issued)
            return result
        finally:
            self.renewal_claims.release(fingerprint, renewed=renewed)

    def _renew(self, alias: AliasSettings, request: ReenrollRequest[Any], current: x509.Certificate
               ) -> Issued | Pending:
        """The backend's renewal, then, on a label that supersedes, the supersede."""
        result = self._call(alias, "reenroll", lambda b: b.reenroll(request))
        if isinstance(result, Issued) and alias.supersede_on_renewal:
            try:
                self._call(alias, "supersede", lambda b: b.supersede(current, alias.target))
            except ESTError as exc:
                # The renewal is issued: the device gets it. The old certificate stays able
                # to renew until the operator revokes it (counted in upstream_errors).
                log.error("alias %s: renewed certificate serial %X was not superseded (%s); revoke it "
                          "at the CA", alias.name, current.serial_number, exc.detail)
        return result

    def serverkeygen(self, alias: AliasSettings, body: bytes, caller: Caller) -> ServerGeneratedKey | Pending:
        """RFC 7030 §4.4: generate the key here, have the backend issue for it, return both."""
        if not alias.serverkeygen:
            raise NotSupported("serverkeygen is disabled for this EST label")
        requester = self._authenticate_enroll(alias, caller)
        client_csr, subject = parse_csr_body(body, self.config.limits)
        caller.audit.csr_subject = subject.rfc4514_string()
        self._check_not_a_ca_name(alias, subject)
        self._check_binding(alias, client_csr, caller, requester.certificate)
        encrypt_to = keywrap.recipient(client_csr, requester.certificate)
        if encrypt_to is not None and self.key_signer is None:
            raise NotSupported("encrypted key delivery needs the gateway to terminate TLS (its TLS key signs)")
        key, csr = keygen.generate(client_csr, keygen.choose_key_type(client_csr, alias.serverkeygen_key_type))
        request = self._request(EnrollRequest, "serverkeygen", alias, csr, requester, caller, client_csr)
        result = self._call(alias, "enroll", lambda b: b.enroll(request))
        if isinstance(result, Pending):
            return result
        if wire.spki(result.certificate.public_key()) != wire.spki(key.public_key()):
            # A repeat of a request that was already answered: the key went with that answer.
            raise Forbidden("this serverkeygen request was already answered; send a new CSR")
        if encrypt_to is not None and self.key_signer is not None:
            wrapped = keywrap.wrap(key, encrypt_to, self.key_signer, self.clock())
            return ServerGeneratedKey((keywrap.CT_SERVER_GENERATED_KEY, wrapped), result.certificate,
                                      result.approval_reference)
        return ServerGeneratedKey(keygen.plain_key_part(key), result.certificate, result.approval_reference)

    def _check_not_a_ca_name(self, alias: AliasSettings, subject: x509.Name) -> None:
        """400 for a subject named like a CA of the label (even in case or spacing): a
        certificate with its CA's name as subject would pass for the CA itself."""
        if len(subject) == 0:
            return
        try:
            chain = tuple(self._ca_chain(alias))
        except UpstreamTimeout:
            raise   # a CA that hangs would make the enrollment wait for it once more
        except ESTError:
            # a chain not known yet (an upstream CA that offers no download: learnt from the
            # first enrollment) or not reachable now: nothing to compare with
            return
        known = self._ca_names.get(chain)
        if known is None:
            if len(self._ca_names) >= CHAIN_PKCS7_ENTRIES:
                self._ca_names.clear()
            known = self._ca_names[chain] = frozenset(_loose_name(c.subject) for c in chain)
        if _loose_name(subject) in known:
            raise BadRequest("CSR subject is the name of a CA of this EST label; a certificate needs a name of its own")

    def _call(self, alias: AliasSettings, call: str, fn: Callable[[CABackend[Any]], T]) -> T:
        """Every backend call, timed and its failures counted for /metrics."""
        started = time.monotonic()
        try:
            return fn(self.backend(alias))
        except ESTError as exc:
            self.metrics.upstream_error(alias.backend, call, str(exc.status)).inc()
            raise
        finally:
            self.metrics.upstream_call(alias.backend, call).observe(time.monotonic() - started)

    def health(self) -> dict[str, str | None]:
        """Each backend an alias uses: None when healthy, else the reason (for /healthz)."""
        report: dict[str, str | None] = {}
        for name in sorted({a.backend for a in self.config.aliases.values()}):
            try:
                self.config.backends[name].health()
                report[name] = None
            except ESTError as exc:
                report[name] = f"{exc.status} {exc.detail}"
        return report

    def _request(self, kind: type[R], operation: str, alias: AliasSettings,
                 csr: x509.CertificateSigningRequest, requester: Requester, caller: Caller,
                 client_csr: x509.CertificateSigningRequest, **more: Any) -> R:
        key = retry_key(operation, alias.name, requester, client_csr)
        return kind(csr=csr, alias=alias.name, target=alias.target, requester=requester,
                    request_id=caller.request_id, retry_key=key, **more)

    def _check_binding(self, alias: AliasSettings, csr: x509.CertificateSigningRequest, caller: Caller,
                       verified: x509.Certificate | None) -> None:
        if alias.challenge_password == "channel-binding":
            channel_binding.check(csr, caller.tls, verified,
                                  realm=alias.realm if alias.password is not None else None)

    # -- authentication ------------------------------------------------------------------

    def trust_anchors(self, alias: AliasSettings) -> list[x509.Certificate]:
        """CAs whose certificates authenticate simpleenroll on this alias: its own CA chain
        plus any extra client CAs the operator configured."""
        return self._ca_chain(alias) + list(alias.trusted_client_cas)

    def renewal_anchors(self, alias: AliasSettings) -> list[x509.Certificate]:
        """CAs whose certificates may renew on this alias: its own CA chain and those of the
        labels it accepts renewals from, never ``trusted_client_cas`` (a device maker's CA
        may name itself like ours; it must not be able to mint renewable certificates)."""
        anchors = self._ca_chain(alias)
        for label in alias.accept_renewals_from:
            anchors += self._ca_chain(self.alias(label))
        return anchors

    def _ca_chain(self, alias: AliasSettings) -> list[x509.Certificate]:
        return list(self._call(alias, "ca_certs", lambda b: b.ca_certs(alias.target)))

    def _verified(self, alias: AliasSettings, presented: PresentedCertificate,
                  anchors: list[x509.Certificate], audit: AuditEvent | None = None
                  ) -> tuple[x509.Certificate, RevocationStatus]:
        """Chain to ``anchors``, validity, clientAuth, then revocation as the backend knows it.
        A verified certificate goes into ``audit`` before any refusal, so the operator sees
        which certificate was refused."""
        cert = verify_client_certificate(presented, anchors, self.clock(), keys=self.config.limits)
        if audit is not None:
            audit.client_certificate(cert)
        status = self._call(alias, "revocation_status", lambda b: b.revocation_status(cert, alias.target))
        if status.revoked:
            raise Forbidden("client certificate is revoked")
        return cert, status

    def _authenticate_enroll(self, alias: AliasSettings, caller: Caller) -> Requester:
        """simpleenroll/serverkeygen authentication; failures count towards the throttle."""
        attempt = self.throttle.begin(caller.address, alias.name)
        failed = False

        def reserve() -> None:
            # counted before the hash runs, so concurrent guesses never pass the limit
            nonlocal attempt
            attempt = self.throttle.reserve(attempt)

        try:
            return self._check_enroll_credentials(alias, caller, reserve)
        except Unauthorized:
            # libest's first request carries no credentials by design: that is no failure.
            failed = caller.credentials is not None or caller.certificate is not None
            raise
        finally:
            self.throttle.end(attempt, failed=failed)

    def _check_enroll_credentials(self, alias: AliasSettings, caller: Caller,
                                  before_hashing: Callable[[], None]) -> Requester:
        realm = alias.realm if alias.password is not None else None
        cert = None
        if caller.certificate is not None and not alias.require_client_cert:
            # Not needed to authenticate here, but a valid one identifies the caller (audit,
            # and the RA exemption from channel binding).
            try:
                cert, _ = self._verified(alias, caller.certificate, self.trust_anchors(alias))
            except (UntrustedCertificate, Forbidden):
                cert = None
            except (UpstreamError, UpstreamUnavailable, UpstreamTimeout) as exc:
                # An optional check: the CA's chain or revocation answer being unavailable
                # must not fail a request that authenticates without the certificate.
                log.info("alias %s: client certificate not checked (%s)", alias.name, exc.detail)
                cert = None
        if alias.require_client_cert:
            if caller.certificate is None:
                raise Unauthorized("this EST label requires a TLS client certificate", realm=realm)
            try:
                cert, _ = self._verified(alias, caller.certificate, self.trust_anchors(alias), caller.audit)
            except UntrustedCertificate as exc:
                raise Unauthorized(str(exc), realm=realm) from None
        if alias.password is not None:
            creds = caller.credentials
            if creds is None:
                raise Unauthorized("HTTP Basic credentials are required", realm=realm)
            # A username that is not the configured one may be a password typed in the
            # wrong field: it is never logged.
            shown = creds.username if hmac.compare_digest(creds.username.encode(), (alias.username or "").encode()) \
                else UNKNOWN_USER
            caller.audit.username = shown
            # Always run the hash, so a wrong username costs the same time as a wrong password.
            password_ok = self.passwords.verify(alias.name, alias.password, creds.password,
                                                address=caller.address, before_hashing=before_hashing)
            if not password_ok and alias.accepts_previous_password(self.clock()):
                # A rotation's window: checked (and remembered) apart from the current
                # one, and only while the window lasts, so the memory never outlives it.
                assert alias.previous_password is not None
                password_ok = self.passwords.verify(f"{alias.name} previous", alias.previous_password,
                                                    creds.password, address=caller.address,
                                                    before_hashing=before_hashing)
            if not (password_ok and shown != UNKNOWN_USER):
                log.info("rejected credentials for user %s on alias %s", shown, alias.name)
                raise Unauthorized("invalid username or password", realm=realm)
        caller.audit.client_certificate(cert)
        return Requester(username=alias.username if alias.password else None, certificate=cert,
                         address=caller.address)

    def _current_certificate(self, alias: AliasSettings, caller: Caller) -> tuple[x509.Certificate, str | None]:
        """The certificate being renewed, verified against this label's own CA chain, the
        exact certificate on the CA's record, not revoked nor superseded; and the label it
        was issued on, if the CA records that (the caller checks it after the CSR's own
        checks, so a same-key CSR on a stricter label is told about the key first)."""
        if caller.certificate is None:
            raise Forbidden("simplereenroll needs the certificate being renewed as TLS client certificate")
        try:
            current, status = self._verified(alias, caller.certificate, self.renewal_anchors(alias), caller.audit)
        except UntrustedCertificate as exc:
            raise Forbidden(str(exc)) from None
        if not status.known:
            raise Forbidden("client certificate was not issued by this EST label's CA; it cannot be renewed here")
        if status.superseded:
            raise Forbidden("client certificate was already renewed; renew with its newest successor")
        return current, status.label


def check_client_ca_names(config: GatewayConfig) -> list[str]:
    """Start-up check: a ``trusted_client_cas_file`` CA named like a CA of its label (even
    in case or spacing) is refused, so no client CA can pass for the label's own CA."""
    problems = []
    for alias in config.aliases.values():
        if not alias.trusted_client_cas:
            continue
        try:
            own = {_loose_name(c.subject) for c in config.backends[alias.backend].ca_certs(alias.target)}
        except ESTError as exc:
            log.warning("cannot compare aliases.%s.trusted_client_cas_file with its CA now: %s",
                        alias.name, exc.detail)
            continue
        for cert in alias.trusted_client_cas:
            if _loose_name(cert.subject) in own:
                problems.append(f"aliases.{alias.name}.trusted_client_cas_file: the CA "
                                f'"{cert.subject.rfc4514_string()}" has the name of this label\'s own CA; '
                                "a client CA must have a name of its own")
    return problems


def retry_key(operation: str, alias: str, requester: Requester,
              csr: x509.CertificateSigningRequest) -> str:
    """Same operation, alias, identity and CSR → same key (how a 202'd client is recognised)."""
    identity = requester.username or ""
    if requester.certificate is not None:
        identity += "|" + requester.certificate.fingerprint(hashes.SHA256()).hex()
    digest = hashlib.sha256(f"{operation}|{alias}|{identity}|".encode())
    digest.update(csr.public_bytes(Encoding.DER))
    return digest.hexdigest()


def parse_csr_body(body: bytes, limits: Limits) -> tuple[x509.CertificateSigningRequest, x509.Name]:
    """base64 → DER → PKCS#10 within the limits → verified signature; each failure a 400.
    Returns the CSR and its subject (parsed once: ``csr.subject`` parses it on every access)."""
    try:
        csr = wire.load_csr(wire.decode_base64_body(body))
        limits.check_csr_key(csr)        # before the signature: no 16k-bit RSA verification
        subject = limits.check_csr_names(csr)
        wire.verify_csr_signature(csr)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return csr, subject


def _made_already(request: EnrollRequest[Any], subject: x509.Name, subject_text: str) -> None:
    """Give ``request`` the CSR subject (and its text) the core made already, which its
    backend would otherwise make again (EnrollRequest.subject, .subject_text)."""
    vars(request).update(subject=subject, subject_text=subject_text)


def check_renewal_matches(csr: x509.CertificateSigningRequest, current: x509.Certificate, *,
                          allow_same_key: bool) -> None:
    """RFC 7030 §4.2.2: the Subject and the subjectAltName (a set of exact values)
    identical; the alias's same-key policy."""
    if _exact_name(csr.subject) != _exact_name(current.subject):
        raise Forbidden("re-enrollment must keep the subject of the current certificate exactly "
                        f"({current.subject.rfc4514_string()})")
    requested = [_san_key(n) for n in wire.requested_sans(csr)]
    if len(requested) != len(set(requested)) or set(requested) != {_san_key(n) for n in wire.certificate_sans(current)}:
        raise Forbidden("re-enrollment must keep the subjectAltName of the current certificate exactly")
    if not allow_same_key and wire.spki(csr.public_key()) == wire.spki(current.public_key()):
        raise Forbidden("this EST label does not allow renewal with the same key; generate a new key")


def _exact_name(name: x509.Name) -> list[list[tuple[str, object]]]:
    """A Subject for the renewal comparison: the RDNs in their order, each RDN's attributes
    with their exact values (no case folding, no space trimming, no Unicode folding). Only
    the ASN.1 string type may differ: CAs re-encode it (CFSSL, like Go's crypto/x509, issues
    a CSR's UTF8String as PrintableString), and the renewal carries the current Subject as
    it is anyway. Stricter than RFC 5280 §7.1, whose caseIgnoreMatch would let case pass."""
    return [sorted(((a.oid.dotted_string, a.value) for a in rdn), key=repr) for rdn in name.rdns]


def _loose_name(name: x509.Name) -> tuple[tuple[str, str], ...]:
    """A name as loosely as any relying party might match it (for conflict checks only)."""
    return tuple(sorted((a.oid.dotted_string, " ".join(str(a.value).split()).casefold()) for a in name))


def _san_key(name: x509.GeneralName) -> tuple[str, object]:
    """One subjectAltName as an exact value: its type and its value (a directory name by DER)."""
    value = name.value
    if isinstance(value, x509.Name):
        value = value.public_bytes()
    elif isinstance(name, x509.OtherName):
        value = (name.type_id.dotted_string, name.value)
    return type(name).__name__, value
