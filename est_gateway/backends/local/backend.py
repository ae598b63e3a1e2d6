"""The built-in CA (``type = "local"``): CA keys on disk, every issued certificate on record."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.base import (
    CABackend,
    EnrollRequest,
    Issued,
    Pending,
    ReenrollRequest,
    RevocationStatus,
)
from est_gateway.backends.local import authority
from est_gateway.backends.local.authority import Clock, PrivateKey, utcnow
from est_gateway.backends.local.options import (
    SUBJECT_FIELDS,
    CASettings,
    CertificateProfile,
    EndEntityProfile,
    LocalOptions,
    LocalTarget,
    parse_options,
)
from est_gateway.backends.local.store import (
    AlreadyRenewed,
    CertificateStore,
    DuplicateSerial,
    RecordNames,
    describe_general_name,
    serial_hex,
)
from est_gateway.config.reader import Section
from est_gateway.errors import BadRequest, ESTError, Forbidden, Rejected, UpstreamUnavailable
from est_gateway.wire import certificate_sans, requested_sans, spki

log = logging.getLogger(__name__)
_SAN_KIND: dict[type, str] = {x509.DNSName: "dns", x509.IPAddress: "ip", x509.RFC822Name: "email",
             x509.UniformResourceIdentifier: "uri"}
_FIELD_BY_OID = {oid: short for short, oid in SUBJECT_FIELDS.items()}


class LoadedCA:
    """A CA ready to sign: its key and its chain (issuing CA first, root last)."""

    def __init__(self, name: str, key: PrivateKey, chain: list[x509.Certificate],
                 settings: CASettings | None = None) -> None:
        self.name, self.key, self.chain = name, key, chain
        self.certificate = chain[0]
        #: no certificate it signs outlives it
        self.not_after = self.certificate.not_valid_after_utc
        published = settings or CASettings()
        self.signer = authority.LeafSigner(self.certificate, key, publication=authority.publication_extensions(
            published.crl_url, published.ocsp_url))
        #: the issuer of every certificate it signs, as its record names it
        self.issuer_text = self.certificate.subject.rfc4514_string()


class LocalCABackend(CABackend[LocalTarget]):
    """Issues from CAs it creates on first start; records before it returns."""

    supersedes_in_record = True  # CertificateStore.add(renews=..., supersede=True)

    def __init__(self, name: str, options: LocalOptions, *, clock: Clock = utcnow) -> None:
        super().__init__(name)
        self.options = options
        self.clock = clock
        self.store = CertificateStore(options.state_dir / "certificates.sqlite3")
        self._cas: dict[str, LoadedCA] = {}

    @classmethod
    def from_options(cls, name: str, options: Section) -> LocalCABackend:
        return cls(name, parse_options(options))

    def parse_target(self, alias: Section) -> LocalTarget:
        """``ca``, ``certificate_profile`` and ``end_entity_profile``, each one of this backend's."""
        target = LocalTarget(ca=alias.str("ca"),
                             certificate_profile=alias.str("certificate_profile", "default"),
                             end_entity_profile=alias.str("end_entity_profile", "default"))
        checks = (("ca", target.ca, self.options.cas),
                  ("certificate_profile", target.certificate_profile, self.options.certificate_profiles),
                  ("end_entity_profile", target.end_entity_profile, self.options.end_entity_profiles))
        for key, value, known in checks:
            if value and value not in known:
                alias.error(key, f'backend "{self.name}" has no {key.replace("_", " ")} '
                                 f'"{value}"; known: {", ".join(sorted(known))}')
        return target

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Create missing CAs and the record (under a file lock: instances may share a folder)."""
        state = self.options.state_dir
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(state / ".init.lock"):
            self.store.initialise()
            for ca_name, settings in self.options.cas.items():
                self._cas[ca_name] = self._load_or_create(ca_name, settings)

    def start_changes_state(self) -> bool:
        """A first start creates the record and the CAs; later starts only load them."""
        files = [self.store.path, self.options.state_dir / ".init.lock"]
        for ca_name in self.options.cas:
            files += [self._ca_dir(ca_name) / "signing.key", self._ca_dir(ca_name) / "chain.pem"]
        return not all(path.exists() for path in files)

    def close(self) -> None:
        self.store.close()

    def _ca_dir(self, ca_name: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", ca_name).strip("-") or "ca"
        return self.options.state_dir / "cas" / slug

    def _load_or_create(self, ca_name: str, settings: CASettings) -> LoadedCA:
        folder = self._ca_dir(ca_name)
        key_path, chain_path = folder / "signing.key", folder / "chain.pem"
        if key_path.exists() and chain_path.exists():
            return LoadedCA(ca_name, authority.load_key(key_path),
                            x509.load_pem_x509_certificates(chain_path.read_bytes()), settings)
        now = self.clock()
        root_key = authority.new_key(settings.key_type)
        root_name = authority.name(settings.common_name if settings.hierarchy == "root"
                                   else f"{settings.common_name} Root", settings.organization)
        root = authority.build_ca(root_name, root_key, issuer=None, issuer_key=None,
                                  days=settings.validity_days, now=now)
        chain, signing_key = [root], root_key
        if settings.hierarchy == "root+issuing":
            authority.write_private(folder / "root.key", authority.key_pem(root_key))
            signing_key = authority.new_key(settings.key_type)
            issuing = authority.build_ca(authority.name(settings.common_name, settings.organization),
                                         signing_key, issuer=root, issuer_key=root_key,
                                         days=settings.validity_days - 1, now=now, path_length=0)
            chain = [issuing, root]
        authority.write_private(key_path, authority.key_pem(signing_key))
        authority.write_public(chain_path, authority.cert_pem(*chain))
        return LoadedCA(ca_name, signing_key, chain, settings)

    def loaded_ca(self, ca_name: str) -> LoadedCA:
        """A started CA, its key and chain (what its CRL and OCSP answers are signed with)."""
        return self._ca(ca_name)

    def ca_folder(self, ca_name: str) -> Path:
        """The folder of a CA's keys and chain (and of what it publishes)."""
        return self._ca_dir(ca_name)

    def _ca(self, ca_name: str) -> LoadedCA:
        try:
            return self._cas[ca_name]
        except KeyError:
            raise ESTError(f'local CA "{ca_name}" is not started') from None

    def health(self) -> None:
        try:
            self.store.ping()
        except sqlite3.Error:
            raise UpstreamUnavailable("the local CA's certificate record cannot be read") from None
        if set(self._cas) != set(self.options.cas):
            raise UpstreamUnavailable("the local CA is not started")

    def describe_state(self) -> dict[str, str]:
        facts = {"state folder": str(self.options.state_dir)}
        for ca_name, ca in self._cas.items():
            facts[f"CA {ca_name}"] = ca.certificate.subject.rfc4514_string()
        return facts

    # -- EST operations ------------------------------------------------------------------

    def ca_certs(self, target: LocalTarget) -> list[x509.Certificate]:
        return list(self._ca(target.ca).chain)

    def enroll(self, request: EnrollRequest[LocalTarget]) -> Issued | Pending:
        return self._approved_or_queued(request)

    def reenroll(self, request: ReenrollRequest[LocalTarget]) -> Issued | Pending:
        return self._approved_or_queued(request)

    def _approved_or_queued(self, request: EnrollRequest[LocalTarget]) -> Issued | Pending:
        """With approval = "manual", a request waits for the operator (RFC 7030 §4.2.3); the
        client's repeat of the same request finds the decision."""
        if self.options.approval == "auto":
            return self.issue(request)
        # Profile violations are refused at once rather than queued for a human.
        self._check_profiles(request)
        retry = self.options.retry_after_s
        queued = self.store.pending_lookup(request.retry_key)
        if queued is None:
            queued = self.store.pending_add(
                secrets.token_hex(8), request.retry_key, alias=request.alias,
                subject=request.subject_text, requester=request.requester.describe(),
                csr=request.csr.public_bytes(Encoding.DER), at=self.clock())
        if queued.status == "rejected":
            raise Rejected(f"request {queued.id} was rejected by the CA operator"
                           + (f": {queued.reason}" if queued.reason else ""), reference=queued.id)
        if queued.status == "issued" and queued.serial:
            record = self.store.get(queued.serial)
            if record is not None:
                return Issued(record.certificate(), tuple(self._ca(request.target.ca).chain),
                              approval_reference=queued.id)
        if queued.status == "approved" and self.store.pending_claim(queued.id):
            try:
                issued = self.issue(request)
            except BaseException:
                self.store.pending_finish(queued.id, None)
                raise
            self.store.pending_finish(queued.id, serial_hex(issued.certificate.serial_number))
            return replace(issued, approval_reference=queued.id)
        return Pending(retry_after=retry, reference=queued.id)

    def revocation_status(self, certificate: x509.Certificate, target: LocalTarget) -> RevocationStatus:
        """Known only as the exact certificate on record: another CA's certificate with the
        same issuer name and a copied serial is unknown."""
        record = self.store.get(serial_hex(certificate.serial_number))
        if record is None or record.der != certificate.public_bytes(Encoding.DER):
            return RevocationStatus(known=False, revoked=False)
        if record.status != "revoked":
            return RevocationStatus(known=True, revoked=False, label=record.alias,
                                    superseded=record.status == "superseded")
        return RevocationStatus(known=True, revoked=True, reason=record.revocation_reason,
                                revoked_at=None, label=record.alias)

    def issues_alike(self, a: LocalTarget, b: LocalTarget) -> bool:
        """Never: every record holds the label it was issued on (``RevocationStatus.label``)."""
        return False

    def supersede(self, certificate: x509.Certificate, target: LocalTarget) -> None:
        self.store.supersede(serial_hex(certificate.serial_number))

    def lineage_keys(self, certificate: x509.Certificate, target: LocalTarget) -> list[bytes]:
        """The keys of every certificate the record links to ``certificate`` by renewal."""
        return [spki(x509.load_der_x509_certificate(der).public_key())
                for der in self.store.lineage(serial_hex(certificate.serial_number))]

    def issue(self, request: EnrollRequest[LocalTarget], *,
              public_key: CertificatePublicKeyTypes | None = None) -> Issued:
        """Sign the CSR by the alias's profiles and commit the record before returning."""
        target = request.target
        ca = self._ca(target.ca)
        cert_profile = self.options.certificate_profiles[target.certificate_profile]
        csr = request.csr
        subject, sans = self._check_profiles(request)
        subject_text = request.subject_text
        renews, supersede = None, False
        if isinstance(request, ReenrollRequest) and request.current is not None:
            # RFC 7030 §4.2.2: the renewal carries the current certificate's names exactly
            # (the core has checked the CSR asks for the same).
            subject, sans = request.current.subject, certificate_sans(request.current)
            subject_text = subject.rfc4514_string()
            renews, supersede = serial_hex(request.current.serial_number), request.supersede
        now = self.clock()
        not_after = min(now + dt.timedelta(days=cert_profile.validity_days), ca.not_after)
        # the names of every attempt's certificate, for its record
        names = RecordNames(ca.issuer_text, subject_text, [describe_general_name(n) for n in sans])
        for _attempt in range(5):
            cert = ca.signer.build(
                subject=subject, public_key=public_key or csr.public_key(), sans=sans,
                not_before=now - authority.BACKDATE, not_after=not_after,
                key_usage=cert_profile.key_usage, extended_key_usage=cert_profile.extended_key_usage,
                serial=authority.random_serial(),
            )
            try:
                self.store.add(cert, ca=target.ca, alias=request.alias,
                               certificate_profile=target.certificate_profile,
                               requester=request.requester.describe(),
                               request_id=request.request_id, issued_at=now, names=names,
                               renews=renews, supersede=supersede)
            except DuplicateSerial:
                continue
            except AlreadyRenewed:
                raise Forbidden("client certificate was already renewed; renew with its newest successor") from None
            except sqlite3.Error:
                log.exception("could not record a certificate; it was not issued")
                raise UpstreamUnavailable("the local CA cannot write its certificate record; "
                                          "nothing was issued, try again later", retry_after=30) from None
            return Issued(cert, tuple(ca.chain))
        raise ESTError("could not allocate a unique serial number")

    def _check_profiles(self, request: EnrollRequest[LocalTarget]) -> tuple[x509.Name, list[x509.GeneralName]]:
        """Refuse (400) a CSR its profiles do not allow; return its subject and the SANs to copy."""
        target, csr = request.target, request.csr
        subject = request.subject
        check_subject(subject, self.options.end_entity_profiles[target.end_entity_profile])
        sans = allowed_sans(csr, self.options.certificate_profiles[target.certificate_profile])
        if len(subject) == 0 and not sans:
            raise BadRequest("CSR has neither a subject nor a subjectAltName")
        return subject, sans


def check_subject(subject: x509.Name, profile: EndEntityProfile) -> None:
    """Enforce the end-entity profile's required and allowed subject fields (400 otherwise)."""
    present: list[str] = []
    for attr in subject:
        short = _FIELD_BY_OID.get(attr.oid)
        label = short or attr.oid.dotted_string
        if short is None or short not in profile.allowed_subject:
            raise BadRequest(f"subject field {label} is not allowed by the end-entity profile; "
                             f"allowed: {', '.join(profile.allowed_subject)}")
        value = attr.value if isinstance(attr.value, str) else ""
        if not value.strip():
            raise BadRequest(f"subject field {label} is empty")
        if len(value) > profile.max_value_length:
            raise BadRequest(f"subject field {label} is longer than {profile.max_value_length} characters")
        present.append(short)
    missing = [f for f in profile.required_subject if f not in present]
    if missing:
        raise BadRequest(f"subject lacks required field(s): {', '.join(missing)}")


def allowed_sans(csr: x509.CertificateSigningRequest, profile: CertificateProfile) -> list[x509.GeneralName]:
    """The CSR's requested SANs, refused (400) where the certificate profile does not allow them."""
    requested = requested_sans(csr)
    for gn in requested:
        kind = _SAN_KIND.get(type(gn))
        if kind is None or kind not in profile.san_types:
            raise BadRequest(f"subjectAltName {describe_general_name(gn)} is not allowed by the "
                             f"certificate profile; allowed types: {', '.join(profile.san_types) or 'none'}")
        if isinstance(gn, x509.DNSName) and gn.value.startswith("*") and not profile.allow_wildcard_dns:
            raise BadRequest(f"wildcard subjectAltName {describe_general_name(gn)} is not allowed by the "
                             "certificate profile (allow_wildcard_dns)")
    if len(requested) > profile.max_sans:
        raise BadRequest(f"CSR asks for {len(requested)} subjectAltNames; the profile allows {profile.max_sans}")
    return requested


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
