"""The django-ca backend in process against the real django-ca: what it sends, what it
checks, and how each of django-ca's answers and faults is mapped."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from est_gateway.backends.base import EnrollRequest, Issued, Pending, Requester, RevocationStatus
from est_gateway.errors import BadRequest, ConfigError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway_django_ca.backend import DjangoCaBackend
from est_gateway_django_ca.extensions import Profile, check_issued
from est_gateway_django_ca.target import DjangoCaTarget
from tests.django_ca.helpers import TARGET, make_backend
from tests.support.django_ca import READONLY, DjangoCa, FaultyUpstream, free_port
from tests.support.pki import CA, make_csr, p256_key, rsa_key


def request(csr: x509.CertificateSigningRequest, target: DjangoCaTarget = TARGET,
            retry_key: str = "") -> EnrollRequest[DjangoCaTarget]:
    return EnrollRequest(csr=csr, alias="est", target=target, requester=Requester(username="estuser"),
                         request_id=uuid.uuid4().hex, retry_key=retry_key)


def issued(answer: Issued | Pending) -> x509.Certificate:
    assert isinstance(answer, Issued), answer
    return answer.certificate


def test_the_profile_extensions_and_the_csr_sans_are_on_the_certificate(django_ca: DjangoCa, tmp_path: Path) -> None:
    """django-ca's REST sign applies none of the profile's extensions: the adapter sends them."""
    sans = [x509.DNSName("dev-a.example.org"), x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
            x509.UniformResourceIdentifier("https://dev-a.example.org/id"), x509.RFC822Name("dev-a@example.org")]
    csr = make_csr(rsa_key(), cn="dev-a", sans=sans, attrs=[("ORGANIZATION_NAME", "Example")])
    answer = make_backend(django_ca, tmp_path).enroll(request(csr))
    cert = issued(answer)
    assert cert.subject == csr.subject
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == set(sans)
    assert isinstance(answer, Issued)
    assert [c.subject.rfc4514_string() for c in answer.chain] == \
        ["O=est-gateway tests,CN=django-ca Test Issuing CA", "O=est-gateway tests,CN=django-ca Test Root"]
    # the profile's lifetime (client: 100 days), which django-ca's REST sign ignores as well
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=99) < lifetime < dt.timedelta(days=101)


def test_validity_days_sets_the_lifetime(django_ca: DjangoCa, tmp_path: Path) -> None:
    target = DjangoCaTarget(ca=django_ca.issuing_serial, profile="client", validity_days=7)
    cert = issued(make_backend(django_ca, tmp_path, target=target).enroll(request(make_csr(p256_key(), cn="dev-b"),
                                                                                  target)))
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=6) < lifetime < dt.timedelta(days=8)


def test_the_lifetime_never_outlasts_the_issuing_ca(django_ca: DjangoCa, tmp_path: Path) -> None:
    """django-ca signs past its CA's expiry when asked; the gateway asks for at most that."""
    target = DjangoCaTarget(ca="Test Issuing", profile="client", validity_days=3650)
    answer = make_backend(django_ca, tmp_path, target=target).enroll(request(make_csr(p256_key(), cn="dev-long"),
                                                                             target))
    assert isinstance(answer, Issued)
    issuing = answer.chain[0]
    assert issuing.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)
    assert answer.certificate.not_valid_after_utc == issuing.not_valid_after_utc


def test_a_pending_order_is_202_and_the_repeat_collects_it(django_ca: DjangoCa, tmp_path: Path) -> None:
    """order_wait_s = 0: no polling, so the order is still pending; the client's repeat
    (same retry key) asks for the same order instead of signing again."""
    backend = make_backend(django_ca, tmp_path, order_wait_s=0, pending_retry_after_s=42)
    cn = f"dev-pending-{uuid.uuid4().hex[:8]}"
    csr = make_csr(p256_key(), cn=cn)
    first = backend.enroll(request(csr, retry_key="k1"))
    assert isinstance(first, Pending) and first.retry_after == 42
    cert = issued(backend.enroll(request(csr, retry_key="k1")))
    assert cert.subject == csr.subject
    signed = [c for c in django_ca.api("GET", f"/ca/{django_ca.issuing_serial}/certs/")
              if {"oid": NameOID.COMMON_NAME.dotted_string, "value": cn} in c["certificate"]["subject"]]
    assert len(signed) == 1, "the repeat must not have signed a second certificate"


def test_polling_a_pending_order_is_bounded_by_order_wait_s(django_ca: DjangoCa, tmp_path: Path) -> None:
    busy = FaultyUpstream(django_ca, "busy-queue")
    with busy as url:
        backend = make_backend(django_ca, tmp_path, url=url, order_wait_s=0.5, pending_retry_after_s=9)
        started = time.monotonic()
        answer = backend.enroll(request(make_csr(p256_key(), cn="dev-busy"), retry_key="busy"))
        elapsed = time.monotonic() - started
    assert isinstance(answer, Pending) and answer.retry_after == 9
    assert busy.order_polls >= 2     # it polled more than once, then gave up:
    assert elapsed < 10              # a generous bound on 0.5 s of polling plus the calls


def test_an_unknown_profile_is_refused_although_django_ca_would_accept_it(
        django_ca: DjangoCa, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = DjangoCaTarget(ca="Test Issuing", profile="no-such-profile")
    backend = make_backend(django_ca, tmp_path, target=target)
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError) as info:
        backend.enroll(request(make_csr(p256_key(), cn="dev-c"), target))
    assert info.value.status == 502
    assert 'no profile "no-such-profile"' in caplog.text and "certificate_profile" in caplog.text


def test_an_unknown_ca_names_the_cas_there_are(django_ca: DjangoCa, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    target = DjangoCaTarget(ca="Nope", profile="client")
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError):
        make_backend(django_ca, tmp_path, target=target).ca_certs(target)
    assert "Test Issuing" in caplog.text and "--api-enable" in caplog.text


@pytest.mark.parametrize(("san", "reason"), [
    (x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")), "cannot pass a RegisteredID"),
    # django-ca 3.2 refuses URIs without a network location (an RFC 3986 URN is one)
    (x509.UniformResourceIdentifier("urn:dev:d"), "the CA refused the request: Value error, URL requires"),
])
def test_subject_alt_names_django_ca_cannot_take_are_400(django_ca: DjangoCa, tmp_path: Path,
                                                         san: x509.GeneralName, reason: str) -> None:
    csr = make_csr(p256_key(), cn="dev-d", sans=[san])
    with pytest.raises(BadRequest) as info:
        make_backend(django_ca, tmp_path).enroll(request(csr))
    assert reason in info.value.detail


def test_a_failed_order_is_a_502(django_ca: DjangoCa, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The keyless CA accepts the sign request; its order fails (the key cannot be loaded)."""
    target = DjangoCaTarget(ca="Keyless Issuing", profile="client")
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError) as info:
        make_backend(django_ca, tmp_path, target=target).enroll(request(make_csr(p256_key(), cn="dev-h"), target))
    assert info.value.status == 502 and info.value.detail.startswith("the upstream CA failed to sign (order ")
    assert "failed (django-ca's own log says why" in caplog.text


def test_a_certificate_from_a_look_alike_ca_is_unknown(django_ca: DjangoCa, tmp_path: Path) -> None:
    """Same issuer name as django-ca's issuing CA, another key: not asked about (and not 'known')."""
    impostor = CA.create("django-ca Test Issuing CA")
    impostor_cert = impostor.cert
    key = p256_key()
    twin = x509.CertificateBuilder().subject_name(impostor_cert.subject).issuer_name(
        x509.Name.from_rfc4514_string("O=est-gateway tests,CN=django-ca Test Issuing CA")).public_key(
        key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(
        dt.datetime.now(dt.UTC)).not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).sign(
        impostor.key, hashes.SHA256())
    status = make_backend(django_ca, tmp_path).revocation_status(twin, TARGET)
    assert status == RevocationStatus(known=False, revoked=False)


def test_revocation_reason_and_date_come_from_the_api(django_ca: DjangoCa, tmp_path: Path) -> None:
    backend = make_backend(django_ca, tmp_path)
    cert = issued(backend.enroll(request(make_csr(p256_key(), cn="dev-e"))))
    django_ca.revoke(cert, "superseded")
    status = backend.revocation_status(cert, TARGET)
    assert status.known and status.revoked and status.reason == "superseded"
    assert status.revoked_at is not None and abs(status.revoked_at - dt.datetime.now(dt.UTC)) < dt.timedelta(hours=1)


def test_revoke_superseded_revokes_the_renewed_certificate_at_django_ca(django_ca: DjangoCa, tmp_path: Path) -> None:
    """Off by default: nothing happens; on: django-ca revokes it with reason superseded, and a
    repeat (django-ca's 400 "already revoked") is done."""
    off = make_backend(django_ca, tmp_path)
    kept = issued(off.enroll(request(make_csr(p256_key(), cn="dev-kept"))))
    off.supersede(kept, TARGET)
    assert not off.revocation_status(kept, TARGET).revoked
    backend = make_backend(django_ca, tmp_path, revoke_superseded=True)
    cert = issued(backend.enroll(request(make_csr(p256_key(), cn="dev-superseded"))))
    backend.supersede(cert, TARGET)
    status = backend.revocation_status(cert, TARGET)
    assert (status.known, status.revoked, status.reason) == (True, True, "superseded")
    backend.supersede(cert, TARGET)
    foreign = CA.create("Look-alike").issue(p256_key(), cn="dev-foreign")
    with pytest.raises(UpstreamError, match="not signed by this alias's CA"):
        backend.supersede(foreign, TARGET)


def test_with_a_revocation_table_ocsp_answers_not_the_api(django_ca: DjangoCa, tmp_path: Path) -> None:
    """The read-only user may not view certificates through the API; OCSP needs no permission."""
    cert = issued(make_backend(django_ca, tmp_path).enroll(request(make_csr(p256_key(), cn="dev-ocsp"))))
    secret = tmp_path / "readonly.password"
    secret.write_text(django_ca.readonly_password)
    secret.chmod(0o600)                # secret files others can read are refused
    viewer = make_backend(django_ca, tmp_path, username=READONLY, password_file=str(secret))
    with pytest.raises(UpstreamError):
        viewer.revocation_status(cert, TARGET)            # the API: 403
    ocsp = make_backend(django_ca, tmp_path, username=READONLY, password_file=str(secret),
                        revocation={"methods": ["ocsp"], "max_cache_s": 0})
    assert ocsp.revocation_status(cert, TARGET) == RevocationStatus(known=True, revoked=False)
    django_ca.revoke(cert, "superseded")
    status = ocsp.revocation_status(cert, TARGET)
    assert status.known and status.revoked and status.revoked_at is not None


def test_wrong_password_is_a_502_and_the_log_says_what_to_fix(
        django_ca: DjangoCa, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    backend = make_backend(django_ca, tmp_path, password_file=str(wrong))
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError) as info:
        backend.enroll(request(make_csr(p256_key(), cn="dev-f")))
    assert info.value.status == 502 and "credentials" in info.value.detail
    assert "HTTP 401" in caplog.text and "password_file" in caplog.text
    assert "not-the-password" not in caplog.text


def test_a_user_without_sign_permission_is_a_502_naming_the_permission(
        django_ca: DjangoCa, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "readonly.password"
    secret.write_text(django_ca.readonly_password)
    secret.chmod(0o600)                # secret files others can read are refused
    backend = make_backend(django_ca, tmp_path, username=READONLY, password_file=str(secret))
    assert backend.ca_certs(TARGET)            # it may list CAs...
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError):
        backend.enroll(request(make_csr(p256_key(), cn="dev-g")))   # ...but not read profiles or sign
    assert "HTTP 403" in caplog.text and "lacks the permission sign_certificate" in caplog.text
    with pytest.raises(UpstreamError):
        backend.health()


def test_health_proves_credentials_ca_and_profile(django_ca: DjangoCa, tmp_path: Path) -> None:
    make_backend(django_ca, tmp_path).health()
    target = DjangoCaTarget(ca="Test Issuing", profile="no-such-profile")
    with pytest.raises(UpstreamError):
        make_backend(django_ca, tmp_path, target=target).health()


def test_a_certificate_other_than_asked_is_refused() -> None:
    """The guard behind every enrollment, on certificates django-ca would never sign wrongly on
    purpose: another EKU, missing SANs, another key."""
    profile = Profile.from_api("client", {"expires": "P100DT00H00M00S", "extensions": {
        "key_usage": {"type": "key_usage", "critical": True, "value": ["digital_signature"]},
        "extended_key_usage": {"type": "extended_key_usage", "value": ["1.3.6.1.5.5.7.3.2"]}}})
    ca, key = CA.create("Check CA"), p256_key()
    sans = [x509.DNSName("a.example")]
    csr = make_csr(key, cn="device-1", sans=sans)
    good = ca.issue(key, cn="device-1", eku=("clientAuth",), sans=sans)
    assert check_issued(good, csr, sans, profile) == []
    server = ca.issue(key, cn="device-1", eku=("serverAuth",), sans=sans)
    assert check_issued(server, csr, sans, profile) == ["no extended key usage clientAuth"]
    assert check_issued(ca.issue(key, cn="device-1", sans=[]), csr, sans, profile) == \
        ["other subjectAltNames than the CSR's"]
    assert check_issued(ca.issue(p256_key(), cn="device-1", sans=sans), csr, sans, profile) == ["another public key"]


@pytest.mark.parametrize(("keys", "problem"), [
    ({"url": "http://127.0.0.1:1/django_ca/api"}, "backends.x.url"),
    ({"password": "inline"}, "backends.x.password: inline secrets are not accepted"),
    ({"order_wait_s": -1}, "backends.x.order_wait_s"),
])
def test_configuration_problems_name_their_key(django_ca: DjangoCa, tmp_path: Path, keys: dict[str, object],
                                               problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_backend(django_ca, tmp_path, **keys)
    assert problem in str(info.value)


@pytest.mark.parametrize(("target", "problem"), [
    ({"ca": "Test Issuing", "certificate_profile": "default"},
     "aliases.est.certificate_profile: is required"),
    ({"ca": "Test Issuing", "certificate_profile": "client", "end_entity_profile": "EE"},
     "aliases.est.end_entity_profile: django-ca has no end-entity profiles"),
    ({"ca": "Test Issuing", "certificate_profile": "client", "upstream": {"validity": 3}},
     "aliases.est.upstream.validity: unknown setting"),
])
def test_alias_problems_name_their_key(django_ca: DjangoCa, tmp_path: Path, target: dict[str, Any],
                                      problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_backend(django_ca, tmp_path, target=target)
    assert problem in str(info.value)


@pytest.mark.parametrize(("fault", "error"), [("garbage", UpstreamError), ("hang", UpstreamTimeout),
                                             ("html-404", UpstreamError)])
def test_faults_between_the_gateway_and_django_ca(django_ca: DjangoCa, tmp_path: Path, fault: str,
                                                  error: type[Exception]) -> None:
    """Faults a healthy django-ca does not produce, from a TLS server in its place."""
    with FaultyUpstream(django_ca, fault) as url:
        backend = make_backend(django_ca, tmp_path, url=url, read_timeout_s=0.5, retries=0)
        with pytest.raises(error):
            backend.ca_certs(TARGET)


def test_refused_opens_the_breaker(django_ca: DjangoCa, tmp_path: Path) -> None:
    backend: DjangoCaBackend = make_backend(django_ca, tmp_path, url=f"https://127.0.0.1:{free_port()}/api",
                                            retries=0, circuit_breaker_failures=2)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable) as info:
            backend.ca_certs(TARGET)
        assert "cannot connect" in info.value.detail
    with pytest.raises(UpstreamUnavailable) as info:
        backend.ca_certs(TARGET)
    assert "not asking it again" in info.value.detail and info.value.retry_after

