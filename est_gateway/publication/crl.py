"""A local CA's CRL (RFC 5280 §5): built by ``cryptography``'s CRL builder from the record,
kept as one file in the CA's folder and made again when a revocation is added or half of
its validity has passed.

Every worker process, and the ``local-ca revoke`` command, share the record; the file and
its lock make every process serve the same CRL, with one CRL number per content."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.local import authority
from est_gateway.backends.local.authority import PrivateKey
from est_gateway.backends.local.store import CertificateStore, RevokedEntry
from est_gateway.publication.files import locked

CRL_FILE = "crl.der"
#: RFC 5280 §5.3.1 reasons by the record's names ("unspecified" is left out, as §5.3.1 asks)
REASONS = {
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


def build_crl(issuer: x509.Certificate, key: PrivateKey, revoked: Iterable[RevokedEntry], *, number: int,
              this_update: dt.datetime, next_update: dt.datetime) -> x509.CertificateRevocationList:
    """A CRL of ``issuer`` listing ``revoked``, with its CRL number and authority key
    identifier (both required by RFC 5280 §5.2), signed by ``key``."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject)
               .last_update(this_update).next_update(next_update)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(authority.authority_key_identifier(issuer), critical=False))
    for entry in revoked:
        item = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        reason = REASONS.get(entry.reason)
        if reason is not None:
            item = item.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(key, authority.signature_hash(key))


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


class PublishedCRL:
    """One CA's current CRL, for every process that serves it.

    A CRL is current while it lists as many certificates as the record has revoked for
    the CA (revocations only grow, so the same count is the same list) and less than half
    of its validity has passed. Otherwise the first process to notice makes the next one
    under the folder's lock, with the next CRL number, and replaces the file; the others
    read that file. Each process keeps the file it read until the file changes."""

    def __init__(self, *, ca_name: str, issuer: x509.Certificate, key: PrivateKey, store: CertificateStore,
                 folder: Path, validity: dt.timedelta, clock: Callable[[], dt.datetime]) -> None:
        self.ca_name, self.issuer, self._key, self.store = ca_name, issuer, key, store
        self.path = folder / CRL_FILE
        self.validity = validity
        self.clock = clock
        self._lock = threading.Lock()
        #: (the file's identity when read, its bytes, the CRL)
        self._read: tuple[tuple[int, int, int], bytes, x509.CertificateRevocationList] | None = None

    def current(self) -> bytes:
        """The DER of the CA's current CRL (made first when it is not current)."""
        revoked = self.store.revoked_count(self.ca_name)
        found = self._from_file()
        if found is not None and self._is_current(found[1], revoked):
            return found[0]
        with self._lock, locked(self.path.with_name(CRL_FILE + ".lock")):
            found = self._from_file()         # another process may have made it meanwhile
            if found is not None and self._is_current(found[1], revoked):
                return found[0]
            return self._make(found[1] if found is not None else None)

    def _is_current(self, crl: x509.CertificateRevocationList, revoked: int) -> bool:
        if crl.issuer != self.issuer.subject or crl.next_update_utc is None:
            return False
        renew_at = crl.last_update_utc + (crl.next_update_utc - crl.last_update_utc) / 2
        return len(crl) == revoked and self.clock() < renew_at

    def _make(self, previous: x509.CertificateRevocationList | None) -> bytes:
        now = self.clock()
        # Numbers only grow: after the previous one, and never below the time in seconds,
        # should the file be lost.
        number = max(crl_number(previous) + 1 if previous is not None else 1, int(now.timestamp()))
        crl = build_crl(self.issuer, self._key, self.store.revocations(self.ca_name), number=number,
                        this_update=now - authority.BACKDATE, next_update=now + self.validity)
        der = crl.public_bytes(Encoding.DER)
        authority.write_public(self.path, der)
        self._read = (_identity(self.path), der, crl)
        return der

    def _from_file(self) -> tuple[bytes, x509.CertificateRevocationList] | None:
        try:
            identity = _identity(self.path)
        except FileNotFoundError:
            return None
        read = self._read
        if read is None or read[0] != identity:
            try:
                der = self.path.read_bytes()
                read = (identity, der, x509.load_der_x509_crl(der))
            except (OSError, ValueError):
                return None                   # made again, under the lock
            self._read = read
        return read[1], read[2]


def _identity(path: Path) -> tuple[int, int, int]:
    """What tells one version of a file from the next (it is replaced, never rewritten)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size
