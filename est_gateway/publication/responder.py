"""Who signs a local CA's OCSP answers: the CA itself, or a delegated responder certificate
the CA issues for it (RFC 6960 §4.2.2.2: id-kp-OCSPSigning, and id-pkix-ocsp-nocheck so
that clients do not ask about the responder itself). The delegated certificate is short-
lived, made on first use and again before it expires, by whichever process needs it first."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from est_gateway.backends.local import authority
from est_gateway.backends.local.authority import PrivateKey
from est_gateway.backends.local.store import CertificateStore, DuplicateSerial
from est_gateway.publication.files import locked

RESPONDER_FILE = "ocsp-responder.pem"
RESPONDER_VALIDITY = dt.timedelta(days=30)
#: a responder certificate is replaced once less than this remains of it
RENEW_BEFORE = dt.timedelta(days=10)
#: the label its record holds: no EST label can be called so, so it never renews over EST
RESPONDER_LABEL = "(ocsp-responder)"

Signer = tuple[x509.Certificate, PrivateKey]


class CASigner:
    """The CA signs its OCSP answers itself."""

    def __init__(self, issuer: x509.Certificate, key: PrivateKey) -> None:
        self._signer = (issuer, key)
        self.delegated = False

    def current(self) -> Signer:
        return self._signer


class DelegatedSigner:
    """A responder certificate of the CA, in ``folder`` (its key beside it, mode 0600)."""

    def __init__(self, *, ca_name: str, issuer: x509.Certificate, issuer_key: PrivateKey, key_type: str,
                 store: CertificateStore, folder: Path, clock: Callable[[], dt.datetime]) -> None:
        self.ca_name, self.issuer, self._issuer_key, self.key_type = ca_name, issuer, issuer_key, key_type
        self.store, self.clock = store, clock
        self.path = folder / RESPONDER_FILE
        self.delegated = True
        self._lock = threading.Lock()
        self._signer: Signer | None = None

    def current(self) -> Signer:
        """The responder certificate and key, made first when missing or soon to expire."""
        signer = self._signer
        if signer is not None and self._usable(signer[0]):
            return signer
        with self._lock, locked(self.path.with_name(RESPONDER_FILE + ".lock")):
            signer = self._read()
            if signer is None or not self._usable(signer[0]):
                signer = self._make()
            self._signer = signer
            return signer

    def _usable(self, cert: x509.Certificate) -> bool:
        """Valid now and not soon to expire (unless the CA itself expires first)."""
        now = self.clock()
        ends = cert.not_valid_after_utc
        lasting = now + RENEW_BEFORE < ends or ends >= self.issuer.not_valid_after_utc
        return cert.not_valid_before_utc <= now < ends and lasting

    def _read(self) -> Signer | None:
        try:
            pem = self.path.read_bytes()
            cert = x509.load_pem_x509_certificate(pem)
            key = serialization.load_pem_private_key(pem, password=None)
        except (OSError, ValueError, TypeError):
            return None
        if cert.issuer != self.issuer.subject or cert.public_key() != key.public_key():
            return None
        return cert, key  # type: ignore[return-value]

    def _make(self) -> Signer:
        now = self.clock()
        key = authority.new_key(self.key_type)
        not_after = min(now + RESPONDER_VALIDITY, self.issuer.not_valid_after_utc)
        for _attempt in range(5):
            cert = build_responder(self.issuer, self._issuer_key, key, not_before=now - authority.BACKDATE,
                                   not_after=not_after)
            try:
                # Like everything the CA signs, on record before it is used.
                self.store.add(cert, ca=self.ca_name, alias=RESPONDER_LABEL, certificate_profile="ocsp-responder",
                               requester="est-gateway publication", request_id=secrets.token_hex(8),
                               issued_at=now)
            except DuplicateSerial:
                continue
            authority.write_private(self.path, authority.key_pem(key) + authority.cert_pem(cert))
            return cert, key
        raise RuntimeError("could not allocate a unique serial number for the OCSP responder")


def build_responder(issuer: x509.Certificate, issuer_key: PrivateKey, key: PrivateKey, *,
                    not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    """A delegated OCSP responder certificate of ``issuer`` (RFC 6960 §4.2.2.2, §4.2.2.2.1)."""
    common_name = issuer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    label = str(common_name[0].value) if common_name else "est-gateway local CA"
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{label} OCSP Responder")]))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(authority.random_serial())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
            .add_extension(x509.OCSPNoCheck(), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(authority.authority_key_identifier(issuer), critical=False)
            .sign(issuer_key, authority.signature_hash(issuer_key)))

