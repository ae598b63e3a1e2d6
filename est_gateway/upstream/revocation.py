"""Revocation status from a CA's OCSP responder (RFC 6960) or CRL (RFC 5280), for any backend.

A CA that publishes OCSP or CRLs needs no vendor API for revocation: ``cryptography``
builds the OCSP request and parses responses and CRLs; this module fetches them over
HTTP, checks their signatures and freshness, and caches what it learnt until the
answer's ``nextUpdate`` (never longer than ``max_cache_s``). Backends call
:meth:`RevocationChecker.check` with the certificate and its issuer, and turn the
:class:`Revocation` into their :class:`~est_gateway.backends.base.RevocationStatus`
with :func:`to_status`. Thread-safe; it keeps no connection, so it survives a fork.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from est_gateway.backends.base import RevocationStatus
from est_gateway.config.reader import Section
from est_gateway.errors import ESTError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway.upstream.session import timed_out, upstream_session

log = logging.getLogger(__name__)

METHODS = ("ocsp", "crl")
#: what a responder's "I do not know this certificate" means for a certificate the CA signed
UNKNOWN_MEANINGS = ("good", "unavailable")
OCSP_REQUEST = "application/ocsp-request"
MAX_OCSP_BYTES = 64 * 1024
MAX_CRL_BYTES = 16 * 1024 * 1024
#: cached answers kept at most (expired ones are dropped first)
MAX_CACHE_ENTRIES = 10_000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertStatus(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    #: the responder does not know the certificate (OCSP "unknown" or "unauthorized")
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Revocation:
    """One answer about one certificate, and where it came from (for logs)."""

    status: CertStatus
    source: str
    reason: str | None = None
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True)
class RevocationSettings:
    """``[backends.<name>.revocation]``: where to ask and how long answers are trusted."""

    #: in order of preference; the next is asked when one fails or does not know
    methods: tuple[str, ...] = ("ocsp",)
    #: override the certificate's AIA OCSP URL / CRL distribution point
    ocsp_url: str | None = None
    crl_url: str | None = None
    timeout_s: float = 5.0
    #: upper bound on caching an answer (it is also never kept past its nextUpdate)
    max_cache_s: float = 300.0
    #: tolerated clock difference when checking thisUpdate/nextUpdate
    clock_skew_s: float = 300.0
    unknown: str = "good"

    @classmethod
    def from_section(cls, sec: Section) -> RevocationSettings:
        """Read the table (problems go to ``sec.problems`` with their key paths)."""
        methods = sec.str_list("methods", ["ocsp"], choices=METHODS)
        if isinstance(methods, list) and not methods and sec.has("methods"):
            sec.error("methods", f"name at least one of: {', '.join(METHODS)}")
        urls = {}
        for key in ("ocsp_url", "crl_url"):
            url = sec.str(key, None)
            if isinstance(url, str) and urlsplit(url).scheme not in ("http", "https"):
                sec.error(key, f'"{url}" must be an http:// or https:// URL')
            urls[key] = url if isinstance(url, str) else None
        settings = cls(
            methods=tuple(methods) if isinstance(methods, list) and methods else ("ocsp",),
            ocsp_url=urls["ocsp_url"], crl_url=urls["crl_url"],
            timeout_s=sec.number("timeout_s", 5.0),
            max_cache_s=sec.number("max_cache_s", 300.0, allow_zero=True),
            clock_skew_s=sec.number("clock_skew_s", 300.0, allow_zero=True),
            unknown=sec.str("unknown", "good", choices=UNKNOWN_MEANINGS),
        )
        sec.check_unknown()
        return settings


def to_status(answer: Revocation, settings: RevocationSettings) -> RevocationStatus:
    """The backend answer for a certificate *this CA signed* (the caller checked that).

    A responder that does not know such a certificate yet (CFSSL's ``ocspserve`` answers
    "unauthorized" until its responses are refreshed) means "not revoked as far as the
    CA has published" with ``unknown = "good"`` (what a CRL that does not list it says
    too), or 503 + Retry-After with ``unknown = "unavailable"``.
    """
    if answer.status is CertStatus.REVOKED:
        return RevocationStatus(known=True, revoked=True, reason=answer.reason, revoked_at=answer.revoked_at)
    if answer.status is CertStatus.UNKNOWN:
        if settings.unknown == "unavailable":
            raise UpstreamUnavailable("the CA's revocation service does not know this certificate yet",
                                      retry_after=int(max(settings.max_cache_s, 60)))
        log.warning("%s does not know a certificate the CA signed; taken as not revoked "
                    "(publish revocation data more often to shorten this window)", answer.source)
    return RevocationStatus(known=True, revoked=False)


class RevocationChecker:
    """Asks OCSP and/or CRL as configured; caches each answer until it must be asked again."""

    def __init__(self, settings: RevocationSettings, *,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, bytes, int], tuple[dt.datetime, Revocation]] = {}
        self._crls: dict[str, tuple[dt.datetime, x509.CertificateRevocationList]] = {}

    def check(self, certificate: x509.Certificate, issuer: x509.Certificate) -> Revocation:
        """The status of ``certificate`` (issued by ``issuer``); raises ``ESTError`` when no
        configured method could answer."""
        failure: ESTError | None = None
        unknown: Revocation | None = None
        for method in self.settings.methods:
            try:
                answer = self._ocsp(certificate, issuer) if method == "ocsp" else self._crl(certificate, issuer)
            except ESTError as exc:
                failure = failure or exc
                continue
            if answer.status is not CertStatus.UNKNOWN:
                return answer
            unknown = unknown or answer
        if unknown is not None:
            return unknown
        assert failure is not None
        raise failure

    # -- OCSP --------------------------------------------------------------------------------

    def _ocsp(self, certificate: x509.Certificate, issuer: x509.Certificate) -> Revocation:
        url = self.settings.ocsp_url or _aia_ocsp_url(certificate)
        if url is None:
            raise UpstreamError("the certificate names no OCSP responder and no ocsp_url is configured")
        key = ("ocsp", _key_hash(issuer), certificate.serial_number)
        cached = self._cached(key)
        if cached is not None:
            return cached
        # SHA-1 CertID: what RFC 5019 responders (CFSSL's ocspserve among them) index by.
        request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).build()
        body = _fetch("POST", url, "OCSP responder", self.settings.timeout_s, MAX_OCSP_BYTES,
                      body=request.public_bytes(serialization.Encoding.DER),
                      headers={"Content-Type": OCSP_REQUEST})
        try:
            response = ocsp.load_der_ocsp_response(body)
        except ValueError:
            raise UpstreamError("the OCSP responder sent an unreadable response") from None
        answer, next_update = self._interpret(response, certificate, issuer, f"OCSP responder {url}")
        if next_update is not None:
            self._remember(key, answer, next_update)
        return answer

    def _interpret(self, response: ocsp.OCSPResponse, certificate: x509.Certificate,
                   issuer: x509.Certificate, source: str) -> tuple[Revocation, dt.datetime | None]:
        status = response.response_status
        if status is ocsp.OCSPResponseStatus.UNAUTHORIZED:
            return Revocation(CertStatus.UNKNOWN, source), None
        if status in (ocsp.OCSPResponseStatus.TRY_LATER, ocsp.OCSPResponseStatus.INTERNAL_ERROR):
            raise UpstreamUnavailable(f"the OCSP responder answered {status.name.lower().replace('_', ' ')}")
        if status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise UpstreamError(f"the OCSP responder refused the request ({status.name.lower()})")
        _check_ocsp_signature(response, issuer, self._clock())
        single = _single_response(response, certificate, issuer)
        now = self._clock()
        skew = dt.timedelta(seconds=self.settings.clock_skew_s)
        if single.this_update_utc > now + skew:
            raise UpstreamError("the OCSP response is dated in the future (check the clocks)")
        if single.next_update_utc is not None and single.next_update_utc < now - skew:
            raise UpstreamError("the OCSP response is stale: its nextUpdate has passed")
        if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
            reason = single.revocation_reason
            answer = Revocation(CertStatus.REVOKED, source, reason.name if reason else None,
                                single.revocation_time_utc)
        elif single.certificate_status is ocsp.OCSPCertStatus.GOOD:
            answer = Revocation(CertStatus.GOOD, source)
        else:
            answer = Revocation(CertStatus.UNKNOWN, source)
        return answer, single.next_update_utc

    # -- CRL ---------------------------------------------------------------------------------

    def _crl(self, certificate: x509.Certificate, issuer: x509.Certificate) -> Revocation:
        url = self.settings.crl_url or _crl_distribution_point(certificate)
        if url is None:
            raise UpstreamError("the certificate names no CRL distribution point and no crl_url is configured")
        crl = self._cached_crl(url, issuer)
        entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
        if entry is None:
            return Revocation(CertStatus.GOOD, f"CRL {url}")
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            reason = None
        return Revocation(CertStatus.REVOKED, f"CRL {url}", reason, entry.revocation_date_utc)

    def _cached_crl(self, url: str, issuer: x509.Certificate) -> x509.CertificateRevocationList:
        now = self._clock()
        with self._lock:
            hit = self._crls.get(url)
            if hit is not None and hit[0] > now:
                return hit[1]
        body = _fetch("GET", url, "CRL distribution point", self.settings.timeout_s, MAX_CRL_BYTES)
        try:
            crl = x509.load_der_x509_crl(body) if body[:1] == b"\x30" else x509.load_pem_x509_crl(body)
        except ValueError:
            raise UpstreamError("the CRL distribution point sent an unreadable CRL") from None
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise UpstreamError("the CRL is not signed by the certificate's issuer")
        skew = dt.timedelta(seconds=self.settings.clock_skew_s)
        if crl.next_update_utc is None or crl.next_update_utc < now - skew:
            raise UpstreamError("the CRL is stale: its nextUpdate has passed")
        until = min(crl.next_update_utc, now + dt.timedelta(seconds=self.settings.max_cache_s))
        with self._lock:
            self._crls[url] = (until, crl)
        return crl

    # -- cache -------------------------------------------------------------------------------

    def _cached(self, key: tuple[str, bytes, int]) -> Revocation | None:
        with self._lock:
            hit = self._answers.get(key)
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    def _remember(self, key: tuple[str, bytes, int], answer: Revocation, next_update: dt.datetime) -> None:
        now = self._clock()
        until = min(next_update, now + dt.timedelta(seconds=self.settings.max_cache_s))
        if until <= now:
            return
        with self._lock:
            if len(self._answers) >= MAX_CACHE_ENTRIES:
                self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
                if len(self._answers) >= MAX_CACHE_ENTRIES:
                    self._answers.clear()
            self._answers[key] = (until, answer)


# -- fetching ------------------------------------------------------------------------------

def _fetch(method: str, url: str, what: str, timeout_s: float, limit: int, *, body: bytes | None = None,
           headers: dict[str, str] | None = None) -> bytes:
    """One bounded HTTP exchange on a session of its own: ``timeout_s`` to connect and
    between reads, at most ``limit`` bytes, no redirect followed. The session reads no proxy
    or CA variable from the environment; https:// is verified against the system's trust store."""
    try:
        with upstream_session(ssl.create_default_context(), pool_size=1) as session:
            response = session.request(method, url, data=body, headers=headers, timeout=(timeout_s, timeout_s),
                                       allow_redirects=False, stream=True)
            try:
                if response.status_code != 200:
                    raise UpstreamError(f"the {what} answered HTTP {response.status_code}")
                content = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    content += chunk
                    if len(content) > limit:
                        break
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
                log.warning("the %s %s broke off: %s", what, url, exc.__class__.__name__)
                raise UpstreamUnavailable(f"the {what} broke off its answer") from None
            finally:
                response.close()   # the connection served this exchange only
    except requests.RequestException as exc:
        if timed_out(exc):
            raise UpstreamTimeout(f"the {what} did not answer within {timeout_s:g} s") from None
        log.warning("cannot reach the %s %s: %s", what, url, exc.__class__.__name__)
        raise UpstreamUnavailable(f"cannot reach the {what}") from None
    if len(content) > limit:
        raise UpstreamError(f"the {what} sent more than {limit} bytes")
    return bytes(content)


# -- certificate fields and signatures -----------------------------------------------------

def _aia_ocsp_url(certificate: x509.Certificate) -> str | None:
    try:
        aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in aia:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and \
                isinstance(location, x509.UniformResourceIdentifier):
            return str(location.value)
    return None


def _crl_distribution_point(certificate: x509.Certificate) -> str | None:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(("http://", "https://")):
                return str(name.value)
    return None


def _key_hash(certificate: x509.Certificate, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """Hash (SHA-1 unless told) of the subjectPublicKey BIT STRING's key bits (RFC 6960
    ``issuerKeyHash`` and the responder's ``byKey``)."""
    from asn1crypto import keys  # loaded when first needed: asn1crypto's key modules take 0.4 MiB

    der = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(algorithm or hashes.SHA1())
    digest.update(bytes(keys.PublicKeyInfo.load(der)["public_key"].contents[1:]))  # after the unused-bits byte
    return digest.finalize()


def _single_response(response: ocsp.OCSPResponse, certificate: x509.Certificate,
                     issuer: x509.Certificate) -> ocsp.OCSPSingleResponse:
    """The answer about this certificate: serial, issuer name hash and issuer key hash match."""
    for single in response.responses:
        if single.serial_number != certificate.serial_number:
            continue
        name_hash = hashes.Hash(single.hash_algorithm)
        name_hash.update(issuer.subject.public_bytes())
        if single.issuer_name_hash == name_hash.finalize() and \
                single.issuer_key_hash == _key_hash(issuer, single.hash_algorithm):
            return single
    raise UpstreamError("the OCSP response is about another certificate")


def _check_ocsp_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime) -> None:
    """RFC 6960 §4.2.2.2: signed by the issuer itself, or by a responder certificate the
    issuer issued for OCSP signing (id-kp-OCSPSigning) that is valid now."""
    signer = issuer
    if not _is_responder(response, issuer):
        delegates = [c for c in response.certificates if _is_responder(response, c)]
        if not delegates:
            raise UpstreamError("the OCSP response is signed by an unknown responder")
        signer = delegates[0]
        try:
            signer.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise UpstreamError("the OCSP responder's certificate is not authorised by the issuer") from None
        try:
            usages = list(signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            usages = []
        if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            raise UpstreamError("the OCSP responder's certificate lacks the OCSPSigning usage")
        if not signer.not_valid_before_utc <= now <= signer.not_valid_after_utc:
            raise UpstreamError("the OCSP responder's certificate is not valid now")
    if not _signature_valid(signer, response.signature, response.tbs_response_bytes,
                            response.signature_hash_algorithm):
        raise UpstreamError("the OCSP response's signature is invalid")


def _is_responder(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == certificate.subject
    return response.responder_key_hash == _key_hash(certificate)


def _signature_valid(signer: x509.Certificate, signature: bytes, data: bytes,
                     algorithm: hashes.HashAlgorithm | None) -> bool:
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm):
        return False
    return True
