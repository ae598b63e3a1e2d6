"""The CFSSL adapter against a real ``cfssl serve``: what it issues, what it refuses, and why.

Each refusal is what the real server did when asked (CFSSL 1.2.0+git20160825 from Debian):
an unknown profile name signs with the default profile, subject attributes outside CFSSL's
name fields are dropped, a wrong HMAC key is "invalid token", a client certificate whose
CN is not allow-listed is a plain-text 403.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from est_gateway.backends.base import EnrollRequest, Issued, Requester
from est_gateway.errors import BadRequest, ConfigError, UpstreamError, UpstreamUnavailable
from est_gateway_cfssl import CfsslBackend
from est_gateway_cfssl.options import CfsslTarget
from tests.cfssl.conftest import TARGET, build_backend
from tests.support.cfssl import UNAUTHENTICATED_PROFILE, CfsslCA
from tests.support.pki import make_csr, p256_key, rsa_key

MakeBackend = Callable[..., CfsslBackend]


def request(csr: x509.CertificateSigningRequest, target: CfsslTarget = TARGET) -> EnrollRequest[CfsslTarget]:
    return EnrollRequest(csr=csr, alias="est", target=target, requester=Requester(username="estuser"),
                         request_id=uuid.uuid4().hex)


def issued_count(ca: CfsslCA) -> int:
    with sqlite3.connect(ca.folder / "certs.db") as db:
        count = int(db.execute("SELECT COUNT(*) FROM certificates").fetchone()[0])
    db.close()
    return count


@pytest.mark.parametrize("key", [rsa_key, p256_key], ids=["rsa", "p256"])
def test_enroll_keeps_the_csr_key_subject_and_sans(make_backend: MakeBackend, ca: CfsslCA,
                                                   key: Callable[[], object]) -> None:
    sans = [x509.DNSName("dev.example"), x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
            x509.RFC822Name("ops@example.org")]
    # serialNumber before CN: CFSSL writes the subject in its own order, the adapter
    # compares attributes, not order.
    csr = make_csr(key(), cn="device-sans", sans=sans, attrs=[("SERIAL_NUMBER", "SN-1"), ("ORGANIZATION_NAME", "Ex")])
    answer = make_backend().enroll(request(csr))
    assert isinstance(answer, Issued)
    cert = answer.certificate
    assert cert.public_key() == csr.public_key()
    assert sorted(a.rfc4514_string() for a in cert.subject) == sorted(a.rfc4514_string() for a in csr.subject)
    assert set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == set(sans)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert answer.chain == (ca.ca_cert,)


def test_an_unknown_profile_is_refused_not_silently_served_by_the_default(
        make_backend: MakeBackend, ca: CfsslCA, caplog: pytest.LogCaptureFixture) -> None:
    typo = CfsslTarget(label="primary", profile="est-clinet")
    backend = make_backend(typo)
    before = issued_count(ca)
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError) as caught:
        backend.enroll(request(make_csr(p256_key(), cn="device-typo"), typo))
    assert caught.value.status == 502
    assert "extended key usage clientAuth" in caught.value.detail
    # CFSSL did sign (with its serverAuth default profile): the operator learns the serial.
    assert issued_count(ca) == before + 1
    assert "'est-clinet'" in caplog.text and "serial" in caplog.text


def test_health_detects_an_unknown_profile_without_issuing(make_backend: MakeBackend, ca: CfsslCA) -> None:
    typo = CfsslTarget(label="primary", profile="est-clinet")
    backend = make_backend(typo)
    before = issued_count(ca)
    with pytest.raises(UpstreamError, match="does not give clientAuth"):
        backend.health()
    assert issued_count(ca) == before


def test_an_alias_may_require_server_auth_from_the_default_profile(make_backend: MakeBackend) -> None:
    server = CfsslTarget(label="primary", profile="default", usages=("serverAuth",))
    answer = make_backend(server).enroll(request(make_csr(p256_key(), cn="server-1"), server))
    assert isinstance(answer, Issued)


def test_subject_attributes_cfssl_drops_are_refused(make_backend: MakeBackend) -> None:
    csr = make_csr(p256_key(), cn="device-uid", attrs=[("USER_ID", "u-17")])
    with pytest.raises(UpstreamError, match="subject differs from the CSR's in UID"):
        make_backend().enroll(request(csr))


def test_health_proves_tls_the_cn_and_the_auth_key_without_issuing(make_backend: MakeBackend, ca: CfsslCA) -> None:
    backend = make_backend()
    before = issued_count(ca)
    backend.health()
    assert issued_count(ca) == before


def test_a_wrong_auth_key_is_502_and_tells_the_operator_which_key(
        make_backend: MakeBackend, ca: CfsslCA, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("ab" * 32)
    wrong.chmod(0o600)                 # secret files others can read are refused
    backend = make_backend(auth_key_file=str(wrong))
    with caplog.at_level(logging.ERROR):
        with pytest.raises(UpstreamError) as caught:
            backend.enroll(request(make_csr(p256_key(), cn="device-wrong-key")))
        with pytest.raises(UpstreamError):
            backend.health()
    assert caught.value.status == 502 and caught.value.detail == "the upstream CA refused the gateway's credentials"
    assert "invalid token" in caplog.text and "auth_key_file" in caplog.text
    assert "ab" * 32 not in caplog.text and ca.auth_key_file.read_text() not in caplog.text


def test_a_profile_without_auth_key_is_502_naming_the_fix(make_backend: MakeBackend,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    open_profile = CfsslTarget(label="primary", profile=UNAUTHENTICATED_PROFILE)
    backend = make_backend(open_profile)
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError):
        backend.enroll(request(make_csr(p256_key(), cn="device-open"), open_profile))
    assert f"CFSSL profile '{UNAUTHENTICATED_PROFILE}'" in caplog.text and '"auth_key"' in caplog.text


def test_a_client_cn_outside_the_allow_list_is_502_naming_the_fix(
        make_backend: MakeBackend, ca: CfsslCA, caplog: pytest.LogCaptureFixture) -> None:
    backend = make_backend(client_cert=str(ca.folder / "intruder.pem"),
                           client_key=str(ca.folder / "intruder-key.pem"))
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError) as caught:
        backend.ca_certs(TARGET)
    assert caught.value.status == 502
    assert "-mutual-tls-cn" in caplog.text


def test_a_key_cfssl_cannot_sign_is_a_400_from_the_ca(make_backend: MakeBackend) -> None:
    """CFSSL 1.2 knows no Ed25519: its CSR parser refuses (a 9xxx CSRError code)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-ed")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        ed25519.Ed25519PrivateKey.generate(), None)
    with pytest.raises(BadRequest, match="the CA refused the request"):
        make_backend().enroll(request(csr))


def test_a_certificate_the_responder_does_not_know_yet(make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    """ocspserve answers "unauthorized" for a certificate issued after its last refresh:
    by default "not revoked as far as published" (with a warning), or 503 if configured."""
    lenient = make_backend()
    fresh = lenient.enroll(request(make_csr(p256_key(), cn="device-fresh")))
    assert isinstance(fresh, Issued)
    with caplog.at_level(logging.WARNING):
        status = lenient.revocation_status(fresh.certificate, TARGET)
    assert status.known and not status.revoked
    assert "does not know a certificate the CA signed" in caplog.text
    strict = make_backend(revocation={"methods": ["ocsp"], "unknown": "unavailable"})
    with pytest.raises(UpstreamUnavailable) as caught:
        strict.revocation_status(fresh.certificate, TARGET)
    assert caught.value.retry_after is not None


def test_ocsp_answers_are_cached_within_max_cache_s(make_backend: MakeBackend, ca: CfsslCA) -> None:
    backend = make_backend(revocation={"methods": ["ocsp"], "max_cache_s": 3600})
    cert = backend.enroll(request(make_csr(p256_key(), cn="device-cached")))
    assert isinstance(cert, Issued)
    ca.publish_revocations()
    assert not backend.revocation_status(cert.certificate, TARGET).revoked
    ca.revoke(cert.certificate)
    assert not backend.revocation_status(cert.certificate, TARGET).revoked   # the cached answer
    assert make_backend().revocation_status(cert.certificate, TARGET).revoked  # no cache: revoked


def test_ocsp_falls_back_to_the_crl_when_the_responder_is_down(make_backend: MakeBackend, ca: CfsslCA) -> None:
    backend = make_backend(revocation={"methods": ["ocsp", "crl"], "crl_url": ca.crl_url,
                                       "ocsp_url": "http://127.0.0.1:9/", "max_cache_s": 0, "timeout_s": 1})
    cert = backend.enroll(request(make_csr(p256_key(), cn="device-fallback")))
    assert isinstance(cert, Issued)
    ca.revoke(cert.certificate)
    status = backend.revocation_status(cert.certificate, TARGET)
    assert status.known and status.revoked


@pytest.mark.parametrize(("options", "problem"), [
    ({"auth_key": "00" * 32}, "backends.cfssl.auth_key: inline secrets are not accepted"),
    ({"auth_key_file": None}, "backends.cfssl.auth_key_file: is required"),
    ({"auth_key_env": "CFSSL_TEST_NO_SUCH_VARIABLE"}, "backends.cfssl.auth_key_env: environment variable"),
    ({"revocation": {"methods": ["ldap"]}}, 'backends.cfssl.revocation.methods[0]: "ldap" is not one of'),
    ({"revocation": {"ocsp_url": "ftp://x"}}, "backends.cfssl.revocation.ocsp_url: "),
    ({"url": "http://127.0.0.1:1"}, "backends.cfssl.url: "),
])
def test_option_problems_name_their_key(ca: CfsslCA, tmp_path: Path, options: dict[str, object],
                                        problem: str) -> None:
    merged = {**ca.backend_options(), **options}
    if "auth_key" in options or "auth_key_env" in options or options.get("auth_key_file", "") is None:
        merged.pop("auth_key_file")
    with pytest.raises(ConfigError) as caught:
        build_backend({k: v for k, v in merged.items() if v is not None}, tmp_path)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_a_non_hex_auth_key_is_refused_at_start(ca: CfsslCA, tmp_path: Path) -> None:
    key = tmp_path / "auth.key"
    key.write_text("not hex at all")
    key.chmod(0o600)
    with pytest.raises(ConfigError, match="backends.cfssl.auth_key_file: must hold CFSSL's auth key as hex"):
        build_backend(ca.backend_options(auth_key_file=str(key)), tmp_path)


@pytest.mark.parametrize(("target", "problem"), [
    ({"ca": "primary", "certificate_profile": "est-client", "end_entity_profile": "EMPTY"},
     "aliases.est.end_entity_profile: CFSSL has no end-entity profiles"),
    ({"ca": "primary", "certificate_profile": "est-client", "upstream": {"usages": ["anyUsage"]}},
     'aliases.est.upstream.usages[0]: "anyUsage" is not one of'),
    ({"ca": "primary", "certificate_profile": "est-client", "upstream": {"usages": []}},
     "aliases.est.upstream.usages: name at least one"),
    ({"ca": "primary", "certificate_profile": "est-client", "upstream": {"usage": ["clientAuth"]}},
     'aliases.est.upstream.usage: unknown setting; did you mean "usages"'),
    ({"ca": "primary", "certificate_profil": "est-client"},
     'aliases.est.certificate_profil: unknown setting; did you mean "certificate_profile"'),
])
def test_alias_problems_name_their_key(ca: CfsslCA, tmp_path: Path, target: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_backend(ca.backend_options(), tmp_path, target)
    assert problem in caught.value.problems[0], caught.value.problems


def test_describe_state_names_the_upstream_and_revocation_but_no_secret(make_backend: MakeBackend,
                                                                        ca: CfsslCA) -> None:
    facts = make_backend().describe_state()
    assert facts["upstream"] == ca.url and facts["revocation"].startswith("ocsp")
    assert ca.auth_key_file.read_text() not in repr(facts) and ca.auth_key_file.read_text() not in repr(
        make_backend().options)


def test_cfssl_reorders_the_subject_and_the_adapter_accepts_it(make_backend: MakeBackend) -> None:
    """A documented-by-observation difference: CFSSL writes C, ST, L, O, OU, CN, serialNumber
    in its own order; an order-only difference is the same subject (RFC 7030 §4.2.2 compares
    attribute sets in the core too)."""
    csr = make_csr(p256_key(), cn="device-order", attrs=[("SERIAL_NUMBER", "S-9")])
    cert = make_backend().enroll(request(csr))
    assert isinstance(cert, Issued)
    order = [a.oid for a in cert.certificate.subject]
    assert order.index(NameOID.COMMON_NAME) < order.index(NameOID.SERIAL_NUMBER)
