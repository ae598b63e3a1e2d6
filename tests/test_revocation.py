"""The generic revocation checker (est_gateway.upstream.revocation) against OCSP responses and CRLs
that ``cryptography`` builds and a loopback HTTP server serves: signatures, freshness,
caching bounded by nextUpdate, and every failure as a documented upstream error.

(The same checker against CFSSL's real ``ocspserve`` and ``gencrl``: tests/cfssl/.)
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from est_gateway.config.reader import Problems, Section
from est_gateway.errors import ConfigError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway.upstream.revocation import CertStatus, Revocation, RevocationChecker, RevocationSettings, to_status
from tests.support.httpd import BackgroundServer, QuietHandler
from tests.support.pki import CA, p256_key

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Responder:
    """What the loopback server answers, and what it was asked."""

    body: bytes = b""
    status: int = 200
    delay_s: float = 0.0
    requests: list[bytes] = field(default_factory=list)


class _Server(BackgroundServer):
    responder: Responder


class _Handler(QuietHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.responder.requests.append(self.rfile.read(length) if length else b"")
        time.sleep(self.server.responder.delay_s)
        self.send_body(self.server.responder.status, self.server.responder.body)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's naming


@pytest.fixture
def responder() -> Iterator[tuple[Responder, str]]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.responder = Responder()
    server.run()
    yield server.responder, f"http://127.0.0.1:{server.port}/"
    server.stop()


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.create("Revocation Test CA")


@pytest.fixture(scope="module")
def leaf(ca: CA) -> x509.Certificate:
    return ca.issue(p256_key(), cn="device-rev")


def responder_cert(ca: CA, key: Any, *, ocsp_signing: bool = True, issuer: CA | None = None) -> x509.Certificate:
    signer = issuer or ca
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCSP")]))
               .issuer_name(signer.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(T0 - dt.timedelta(days=1)).not_valid_after(T0 + dt.timedelta(days=30)))
    if ocsp_signing:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
    return builder.sign(signer.key, hashes.SHA256())  # type: ignore[arg-type]


def ocsp_response(ca: CA, cert: x509.Certificate, *, status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
                  this_update: dt.datetime = T0 - dt.timedelta(hours=1),
                  next_update: dt.datetime | None = T0 + dt.timedelta(hours=1),
                  signer: tuple[x509.Certificate, Any] | None = None, about: x509.Certificate | None = None,
                  issuer: CA | None = None, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=about or cert, issuer=(issuer or ca).cert, algorithm=algorithm or hashes.SHA1(), cert_status=status,
        this_update=this_update, next_update=next_update,
        revocation_time=T0 - dt.timedelta(days=1) if revoked else None,
        revocation_reason=x509.ReasonFlags.key_compromise if revoked else None)
    responder_cert_, key = signer or (ca.cert, ca.key)
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responder_cert_)
    if signer is not None:
        builder = builder.certificates([responder_cert_])
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def checker(url: str, clock: Clock, **settings: Any) -> RevocationChecker:
    methods = settings.pop("methods", ("ocsp",))
    key = "crl_url" if methods == ("crl",) else "ocsp_url"
    return RevocationChecker(RevocationSettings(methods=methods, **{key: url}, timeout_s=1, **settings), clock=clock)


@pytest.mark.parametrize(("status", "expected"), [(ocsp.OCSPCertStatus.GOOD, CertStatus.GOOD),
                                                  (ocsp.OCSPCertStatus.REVOKED, CertStatus.REVOKED),
                                                  (ocsp.OCSPCertStatus.UNKNOWN, CertStatus.UNKNOWN)])
def test_ocsp_statuses(ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str],
                       status: ocsp.OCSPCertStatus, expected: CertStatus) -> None:
    server, url = responder
    server.body = ocsp_response(ca, leaf, status=status)
    answer = checker(url, Clock()).check(leaf, ca.cert)
    assert answer.status is expected
    if expected is CertStatus.REVOKED:
        assert answer.reason == "key_compromise" and answer.revoked_at == T0 - dt.timedelta(days=1)
    request = ocsp.load_der_ocsp_request(server.requests[0])
    assert request.serial_number == leaf.serial_number


def test_a_delegated_responder_must_be_issued_by_the_ca_for_ocsp_signing(
        ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str]) -> None:
    server, url = responder
    key = p256_key()
    server.body = ocsp_response(ca, leaf, signer=(responder_cert(ca, key), key))
    assert checker(url, Clock()).check(leaf, ca.cert).status is CertStatus.GOOD
    server.body = ocsp_response(ca, leaf, signer=(responder_cert(ca, key, ocsp_signing=False), key))
    with pytest.raises(UpstreamError, match="lacks the OCSPSigning usage"):
        checker(url, Clock()).check(leaf, ca.cert)
    stranger = CA.create("Stranger CA")
    server.body = ocsp_response(ca, leaf, signer=(responder_cert(ca, key, issuer=stranger), key))
    with pytest.raises(UpstreamError, match="not authorised by the issuer"):
        checker(url, Clock()).check(leaf, ca.cert)


def test_a_response_signed_by_another_key_is_refused(ca: CA, leaf: x509.Certificate,
                                                     responder: tuple[Responder, str]) -> None:
    server, url = responder
    forger = CA.create("Revocation Test CA")          # same name, other key
    server.body = ocsp_response(forger, leaf)
    with pytest.raises(UpstreamError):
        checker(url, Clock()).check(leaf, ca.cert)


def test_a_response_about_another_certificate_is_refused(ca: CA, leaf: x509.Certificate,
                                                         responder: tuple[Responder, str]) -> None:
    server, url = responder
    server.body = ocsp_response(ca, leaf, about=ca.issue(p256_key(), cn="other"))
    with pytest.raises(UpstreamError, match="about another certificate"):
        checker(url, Clock()).check(leaf, ca.cert)


def test_the_cert_id_must_name_this_issuer_by_name_and_key(ca: CA, leaf: x509.Certificate,
                                                           responder: tuple[Responder, str]) -> None:
    """A SHA-256 CertID is as good as SHA-1; one naming a same-named CA with another key is not."""
    server, url = responder
    server.body = ocsp_response(ca, leaf, algorithm=hashes.SHA256())
    assert checker(url, Clock()).check(leaf, ca.cert).status is CertStatus.GOOD
    twin = CA.create("Revocation Test CA")
    server.body = ocsp_response(ca, leaf, issuer=twin, algorithm=hashes.SHA256())
    with pytest.raises(UpstreamError, match="about another certificate"):
        checker(url, Clock()).check(leaf, ca.cert)


@pytest.mark.parametrize(("this_update", "next_update", "match"), [
    (T0 - dt.timedelta(days=2), T0 - dt.timedelta(days=1), "stale"),
    (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2), "in the future"),
])
def test_stale_or_future_responses_are_refused(ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str],
                                               this_update: dt.datetime, next_update: dt.datetime,
                                               match: str) -> None:
    server, url = responder
    server.body = ocsp_response(ca, leaf, this_update=this_update, next_update=next_update)
    with pytest.raises(UpstreamError, match=match):
        checker(url, Clock()).check(leaf, ca.cert)


def test_answers_are_cached_until_next_update_but_never_longer_than_max_cache_s(
        ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str]) -> None:
    server, url = responder
    clock = Clock()
    server.body = ocsp_response(ca, leaf, next_update=T0 + dt.timedelta(minutes=2))
    bounded_by_next_update = checker(url, clock, max_cache_s=3600)
    bounded_by_setting = checker(url, clock, max_cache_s=30)
    for check in (bounded_by_next_update, bounded_by_setting):
        check.check(leaf, ca.cert)
        check.check(leaf, ca.cert)
    assert len(server.requests) == 2                      # one each, the repeat was cached
    clock.now = T0 + dt.timedelta(seconds=31)
    bounded_by_next_update.check(leaf, ca.cert)
    bounded_by_setting.check(leaf, ca.cert)
    assert len(server.requests) == 3                      # max_cache_s over, nextUpdate not yet
    server.body = ocsp_response(ca, leaf, next_update=T0 + dt.timedelta(hours=1))
    clock.now = T0 + dt.timedelta(seconds=121)
    bounded_by_next_update.check(leaf, ca.cert)
    assert len(server.requests) == 4                      # past the first answer's nextUpdate


def test_an_answer_without_next_update_is_not_cached(ca: CA, leaf: x509.Certificate,
                                                     responder: tuple[Responder, str]) -> None:
    server, url = responder
    server.body = ocsp_response(ca, leaf, next_update=None)
    check = checker(url, Clock(), max_cache_s=3600)
    check.check(leaf, ca.cert)
    check.check(leaf, ca.cert)
    assert len(server.requests) == 2


@pytest.mark.parametrize(("status", "error", "match"), [
    (ocsp.OCSPResponseStatus.UNAUTHORIZED, None, None),
    (ocsp.OCSPResponseStatus.TRY_LATER, UpstreamUnavailable, "try later"),
    (ocsp.OCSPResponseStatus.MALFORMED_REQUEST, UpstreamError, "refused the request"),
])
def test_unsuccessful_ocsp_answers(ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str],
                                   status: ocsp.OCSPResponseStatus, error: Any, match: str | None) -> None:
    server, url = responder
    server.body = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
    if error is None:      # CFSSL's ocspserve: "unauthorized" for a certificate it has no response for
        assert checker(url, Clock()).check(leaf, ca.cert).status is CertStatus.UNKNOWN
    else:
        with pytest.raises(error, match=match):
            checker(url, Clock()).check(leaf, ca.cert)


@pytest.mark.parametrize(("body", "status", "error", "match"), [
    (b"<html>", 200, UpstreamError, "unreadable"),
    (b"", 500, UpstreamError, "HTTP 500"),
    (b"\x30" * (70 * 1024), 200, UpstreamError, "more than"),
])
def test_transport_garbage(ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str], body: bytes,
                           status: int, error: Any, match: str) -> None:
    server, url = responder
    server.body, server.status = body, status
    with pytest.raises(error, match=match):
        checker(url, Clock()).check(leaf, ca.cert)


def test_an_unreachable_or_slow_responder(ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str]) -> None:
    server, url = responder
    with pytest.raises(UpstreamUnavailable, match="cannot reach the OCSP responder"):
        checker("http://127.0.0.1:9/", Clock()).check(leaf, ca.cert)
    server.body, server.delay_s = ocsp_response(ca, leaf), 1.5
    with pytest.raises(UpstreamTimeout, match="did not answer within 1 s"):
        checker(url, Clock()).check(leaf, ca.cert)


def test_no_url_anywhere_is_a_configuration_problem(ca: CA, leaf: x509.Certificate) -> None:
    with pytest.raises(UpstreamError, match="no OCSP responder and no ocsp_url"):
        RevocationChecker(RevocationSettings()).check(leaf, ca.cert)


def crl(ca: CA, *revoked: x509.Certificate, next_update: dt.datetime = T0 + dt.timedelta(hours=1),
        encoding: serialization.Encoding = serialization.Encoding.DER, signer: CA | None = None) -> bytes:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
               .last_update(T0 - dt.timedelta(hours=1)).next_update(next_update))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(T0 - dt.timedelta(days=1))
            .add_extension(x509.CRLReason(x509.ReasonFlags.superseded), critical=False).build())
    return builder.sign((signer or ca).key, hashes.SHA256()).public_bytes(encoding)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", [serialization.Encoding.DER, serialization.Encoding.PEM])
def test_crl_lists_or_does_not_list(ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str],
                                    encoding: serialization.Encoding) -> None:
    server, url = responder
    server.body = crl(ca, leaf, encoding=encoding)
    answer = checker(url, Clock(), methods=("crl",)).check(leaf, ca.cert)
    assert (answer.status, answer.reason) == (CertStatus.REVOKED, "superseded")
    server.body = crl(ca)
    assert checker(url, Clock(), methods=("crl",)).check(leaf, ca.cert).status is CertStatus.GOOD


def test_crl_is_cached_per_url_within_its_next_update(ca: CA, leaf: x509.Certificate,
                                                      responder: tuple[Responder, str]) -> None:
    server, url = responder
    clock = Clock()
    server.body = crl(ca, next_update=T0 + dt.timedelta(minutes=1))
    check = checker(url, clock, methods=("crl",), max_cache_s=3600)
    check.check(leaf, ca.cert)
    check.check(ca.issue(p256_key(), cn="another"), ca.cert)
    assert len(server.requests) == 1
    clock.now = T0 + dt.timedelta(minutes=2)
    server.body = crl(ca, leaf, next_update=T0 + dt.timedelta(hours=1))
    assert check.check(leaf, ca.cert).status is CertStatus.REVOKED
    assert len(server.requests) == 2


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"signer": "stranger"}, "not signed by the certificate's issuer"),
    ({"next_update": T0 - dt.timedelta(hours=1)}, "stale"),
])
def test_bad_crls_are_refused(ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str],
                              kwargs: dict[str, Any], match: str) -> None:
    server, url = responder
    if kwargs.get("signer") == "stranger":
        kwargs = {"signer": CA.create("Revocation Test CA")}
    server.body = crl(ca, **kwargs)
    with pytest.raises(UpstreamError, match=match):
        checker(url, Clock(), methods=("crl",)).check(leaf, ca.cert)


def test_the_next_method_answers_when_the_first_fails_or_does_not_know(
        ca: CA, leaf: x509.Certificate, responder: tuple[Responder, str]) -> None:
    server, url = responder
    server.body = crl(ca, leaf)
    down = RevocationChecker(RevocationSettings(methods=("ocsp", "crl"), ocsp_url="http://127.0.0.1:9/",
                                                crl_url=url, timeout_s=1), clock=Clock())
    assert down.check(leaf, ca.cert).status is CertStatus.REVOKED
    with pytest.raises(UpstreamUnavailable):      # every method failed: the first failure
        RevocationChecker(RevocationSettings(methods=("ocsp", "crl"), ocsp_url="http://127.0.0.1:9/",
                                             crl_url="http://127.0.0.1:9/", timeout_s=1)).check(leaf, ca.cert)


def test_to_status_maps_unknown_as_configured() -> None:
    unknown = Revocation(CertStatus.UNKNOWN, "OCSP responder x")
    status = to_status(unknown, RevocationSettings())
    assert status.known and not status.revoked
    with pytest.raises(UpstreamUnavailable):
        to_status(unknown, RevocationSettings(unknown="unavailable"))
    revoked = to_status(Revocation(CertStatus.REVOKED, "x", "key_compromise", T0), RevocationSettings())
    assert (revoked.revoked, revoked.reason, revoked.revoked_at) == (True, "key_compromise", T0)


@pytest.mark.parametrize(("table", "problem"), [
    ({"methods": []}, "r.methods: name at least one of"),
    ({"methods": ["ocsp", "ldap"]}, 'r.methods[1]: "ldap" is not one of'),
    ({"crl_url": "file:///etc/x.crl"}, "r.crl_url: "),
    ({"unknown": "maybe"}, 'r.unknown: "maybe" is not one of'),
    ({"max_cache_s": -1}, "r.max_cache_s: must be zero or more"),
    ({"ocsp": "x"}, "r.ocsp: unknown setting"),
])
def test_settings_problems_carry_their_key_path(table: dict[str, Any], problem: str) -> None:
    problems = Problems()
    RevocationSettings.from_section(Section(table, "r", problems, Path(".")))
    with pytest.raises(ConfigError) as caught:
        problems.raise_if_any()
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
