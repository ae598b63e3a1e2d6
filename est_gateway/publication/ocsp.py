"""A local CA's OCSP responder (RFC 6960): answers built by ``cryptography``'s OCSP builder
from the CA's record, signed for each request (so that its nonce is echoed)."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from est_gateway.backends.local import authority
from est_gateway.backends.local.store import CertificateStore, serial_hex
from est_gateway.publication.crl import REASONS
from est_gateway.publication.responder import CASigner, DelegatedSigner

log = logging.getLogger(__name__)

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
#: RFC 8954 §2.1: a nonce is 1 to 32 octets; a longer one is refused as malformed
MAX_NONCE_BYTES = 32
#: the CertID hashes answered (what ``cryptography`` builds answers with)
HASHES: tuple[hashes.HashAlgorithm, ...] = (hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(),
                                            hashes.SHA512())


def unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    """An OCSPResponse with only an error status (RFC 6960 §4.2.1), unsigned as it must be."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


MALFORMED = unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)


class OCSPResponder:
    """Answers for the certificates of one CA: good, revoked or unknown as its record says;
    requests about another issuer are "unauthorized" (RFC 6960 §2.3)."""

    def __init__(self, *, ca_name: str, issuer: x509.Certificate, store: CertificateStore,
                 signer: CASigner | DelegatedSigner, validity: dt.timedelta,
                 clock: Callable[[], dt.datetime]) -> None:
        self.ca_name, self.issuer, self.store, self.signer = ca_name, issuer, store, signer
        self.issuer_text = issuer.subject.rfc4514_string()
        self.validity, self.clock = validity, clock
        # The issuer's CertID hashes per algorithm (RFC 6960 §4.1.1): of its DER name, and of
        # its key as cryptography hashes it for a request (the name it takes from the
        # certificate asked about: here the issuer's own, the issuer of its issuer).
        self._ids = {}
        for algorithm in HASHES:
            name_hash = hashes.Hash(algorithm)
            name_hash.update(issuer.subject.public_bytes())
            probe = ocsp.OCSPRequestBuilder().add_certificate(issuer, issuer, algorithm).build()
            self._ids[algorithm.name] = (name_hash.finalize(), probe.issuer_key_hash)

    def answer(self, der: bytes) -> bytes:
        """The DER OCSPResponse to a DER OCSPRequest; never raises for what a client sends."""
        try:
            request = ocsp.load_der_ocsp_request(der)
            algorithm = request.hash_algorithm
            nonce = _nonce(request)
        except (ValueError, UnsupportedAlgorithm, NotImplementedError):
            # NotImplementedError: more than one certificate asked about (cryptography
            # answers one per response)
            return MALFORMED
        if self._ids.get(algorithm.name) != (request.issuer_name_hash, request.issuer_key_hash):
            return unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        try:
            status, revoked_at, reason = self._status(request.serial_number)
            cert, key = self.signer.current()
        except (sqlite3.Error, OSError) as exc:
            log.warning("OCSP: the local CA's record cannot be read, or its responder certificate not "
                        "made: %s; answered tryLater", exc)
            return unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
        now = self.clock()
        builder = (ocsp.OCSPResponseBuilder()
                   .add_response_by_hash(request.issuer_name_hash, request.issuer_key_hash, request.serial_number,
                                         algorithm, status, now, now + self.validity, revoked_at, reason)
                   .responder_id(ocsp.OCSPResponderEncoding.HASH, cert))
        if self.signer.delegated:
            builder = builder.certificates([cert])
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        return builder.sign(key, authority.signature_hash(key)).public_bytes(Encoding.DER)

    def _status(self, serial: int) -> tuple[ocsp.OCSPCertStatus, dt.datetime | None, x509.ReasonFlags | None]:
        """What the record says of the CA's certificate ``serial``: unknown when it is not
        on record as this CA's."""
        record = self.store.get(serial_hex(serial)) if serial > 0 else None
        if record is None or record.ca != self.ca_name or record.issuer != self.issuer_text:
            return ocsp.OCSPCertStatus.UNKNOWN, None, None
        if record.status != "revoked" or record.revoked_at is None:
            return ocsp.OCSPCertStatus.GOOD, None, None
        return (ocsp.OCSPCertStatus.REVOKED, dt.datetime.fromisoformat(record.revoked_at),
                REASONS.get(record.revocation_reason or ""))


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    """The request's nonce (RFC 8954), to echo; ValueError for one out of bounds."""
    try:
        nonce: bytes = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None
    if not 1 <= len(nonce) <= MAX_NONCE_BYTES:
        raise ValueError("the nonce is not 1 to 32 octets")
    return nonce
