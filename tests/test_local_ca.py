"""The built-in CA: issuance rules, profiles, and durable records."""

from __future__ import annotations

import datetime as dt
import ipaddress
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from est_gateway.backends.base import EnrollRequest, Issued, Requester
from est_gateway.backends.local import LocalCABackend, authority
from est_gateway.backends.local.options import LocalTarget
from est_gateway.backends.local.store import RecordNames
from est_gateway.config.reader import Problems, Section
from est_gateway.errors import BadRequest, ConfigError, UpstreamUnavailable
from tests.support.pki import make_csr, p256_key, rsa_key

TARGET = LocalTarget(ca="EST CA", certificate_profile="default", end_entity_profile="default")


def make_backend(state: Path, extra: dict[str, Any] | None = None, **ca: Any) -> LocalCABackend:
    options = {"type": "local", "state_dir": str(state),
               "cas": {"EST CA": {"key_type": "ec-p256", **ca}}, **(extra or {})}
    problems = Problems()
    backend = LocalCABackend.from_options("local", Section(options, "backends.local", problems, state))
    problems.raise_if_any()
    backend.start()
    return backend


def enroll(backend: LocalCABackend, csr: x509.CertificateSigningRequest,
           target: LocalTarget = TARGET) -> x509.Certificate:
    result = backend.enroll(EnrollRequest(csr=csr, alias="est", target=target,
                                          requester=Requester(username="estuser"), request_id="t1"))
    assert isinstance(result, Issued)
    return result.certificate


@pytest.fixture()
def backend(tmp_path: Path) -> LocalCABackend:
    return make_backend(tmp_path / "state", hierarchy="root+issuing")


def test_issued_certificate_follows_the_default_profile(backend: LocalCABackend) -> None:
    key = rsa_key()
    sans = [x509.DNSName("dev.example"), x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]
    cert = enroll(backend, make_csr(key, cn="dev-1", sans=sans))
    issuing, root = backend.ca_certs(TARGET)
    assert cert.issuer == issuing.subject and issuing.issuer == root.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == sans
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=365) <= lifetime <= dt.timedelta(days=365, minutes=6)
    cert.verify_directly_issued_by(issuing)


def test_ec_keys_get_no_key_encipherment(backend: LocalCABackend) -> None:
    cert = enroll(backend, make_csr(p256_key(), cn="ec-dev"))
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment


def test_serials_are_positive_at_most_20_octets_and_random(backend: LocalCABackend) -> None:
    serials = [enroll(backend, make_csr(p256_key(), cn=f"s{i}")).serial_number for i in range(20)]
    assert len(set(serials)) == 20
    assert all(0 < s < 2**159 and s.bit_length() > 64 for s in serials)


def test_every_issued_certificate_is_on_record(backend: LocalCABackend) -> None:
    cert = enroll(backend, make_csr(p256_key(), cn="recorded"))
    record = backend.store.get(format(cert.serial_number, "x"))
    assert record is not None
    assert record.certificate() == cert
    assert record.subject == "CN=recorded" and record.alias == "est"
    assert record.requester == "user=estuser" and record.status == "valid"
    assert backend.store.count() == 1


def test_the_record_names_the_certificate_as_issued(backend: LocalCABackend) -> None:
    """The backend gives the store the names it signed (sparing a parse of the new
    certificate); they are the certificate's own, escaping and SAN kinds included."""
    sans = [x509.DNSName("dev.example"), x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
            x509.RFC822Name("dev@example.com"), x509.UniformResourceIdentifier("urn:dev:7")]
    csr = make_csr(rsa_key(), cn="dév, \"7\"+", attrs=[("ORGANIZATION_NAME", "Acme; Ünïcode"),
                                                     ("COUNTRY_NAME", "DE")], sans=sans)
    cert = enroll(backend, csr)
    record = backend.store.get(format(cert.serial_number, "x"))
    assert record is not None and record.der == cert.public_bytes(Encoding.DER)
    assert (record.issuer, record.subject, record.sans) == tuple(RecordNames.of(cert))
    assert record.sans == ["dns:dev.example", "ip:2001:db8::7", "email:dev@example.com", "uri:urn:dev:7"]


@pytest.mark.parametrize("key_factory, usages", [(rsa_key, (True, True)), (p256_key, (True, False))])
def test_leaf_extensions_keep_their_order_and_criticality(
        backend: LocalCABackend, key_factory: Any, usages: tuple[bool, bool]) -> None:
    """The extensions a CA builds once and reuses come out as before, in the same order,
    for every certificate (the second from the kept ones)."""
    for cn in ("order-1", "order-2"):
        cert = enroll(backend, make_csr(key_factory(), cn=cn, sans=[x509.DNSName("o.example")]))
        assert [(e.oid, e.critical) for e in cert.extensions] == [
            (ExtensionOID.BASIC_CONSTRAINTS, True), (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
            (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False), (ExtensionOID.KEY_USAGE, True),
            (ExtensionOID.EXTENDED_KEY_USAGE, False), (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False)]
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert (ku.digital_signature, ku.key_encipherment) == usages


@pytest.mark.parametrize("csr_kwargs, reason", [
    ({"cn": None, "attrs": [("ORGANIZATION_NAME", "Acme")]}, "lacks required field(s): CN"),
    ({"attrs": [("TITLE", "boss")]}, "subject field 2.5.4.12 is not allowed"),
    ({"sans": [x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4"))]}, "is not allowed by the certificate profile"),
])
def test_csrs_that_break_the_profiles_are_refused(backend: LocalCABackend, csr_kwargs: dict[str, Any],
                                                  reason: str) -> None:
    with pytest.raises(BadRequest, match=reason.replace("(", r"\(").replace(")", r"\)")):
        enroll(backend, make_csr(p256_key(), **csr_kwargs))
    assert backend.store.count() == 0          # nothing issued, nothing recorded


def test_custom_profiles(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, {
        "certificate_profiles": {"server": {"validity_days": 30, "extended_key_usage": ["serverAuth"],
                                            "san_types": ["dns"], "max_sans": 1}},
        "end_entity_profiles": {"org": {"required_subject": ["CN", "O"], "allowed_subject": ["CN", "O"],
                                         "max_value_length": 8}},
    })
    target = LocalTarget("EST CA", "server", "org")
    cert = enroll(backend, make_csr(p256_key(), cn="web", attrs=[("ORGANIZATION_NAME", "Acme")],
                                    sans=[x509.DNSName("web.example")]), target)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=30, minutes=6)
    with pytest.raises(BadRequest, match="asks for 2 subjectAltNames; the profile allows 1"):
        enroll(backend, make_csr(p256_key(), cn="web", attrs=[("ORGANIZATION_NAME", "Acme")],
                                 sans=[x509.DNSName("a.example"), x509.DNSName("b.example")]), target)
    with pytest.raises(BadRequest, match="lacks required field"):
        enroll(backend, make_csr(p256_key(), cn="web"), target)
    with pytest.raises(BadRequest, match="subject field CN is longer than 8 characters"):
        enroll(backend, make_csr(p256_key(), cn="much-too-long", attrs=[("ORGANIZATION_NAME", "Acme")]),
               target)


def test_ca_key_files_are_private_and_the_ca_survives_a_restart(tmp_path: Path) -> None:
    first = make_backend(tmp_path / "s", key_type="rsa-2048", hierarchy="root+issuing")
    cert = enroll(first, make_csr(p256_key(), cn="persist"))
    for key_file in (tmp_path / "s").rglob("*.key"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    second = make_backend(tmp_path / "s", key_type="rsa-2048", hierarchy="root+issuing")
    assert second.ca_certs(TARGET) == first.ca_certs(TARGET)
    assert second.store.get(format(cert.serial_number, "x")) is not None
    assert second.revocation_status(cert, TARGET).known


def test_revocation_is_recorded_and_reported(backend: LocalCABackend) -> None:
    cert = enroll(backend, make_csr(p256_key(), cn="to-revoke"))
    assert not backend.revocation_status(cert, TARGET).revoked
    backend.store.revoke(f"0x{cert.serial_number:X}", "keyCompromise", dt.datetime.now(dt.UTC))
    status = backend.revocation_status(cert, TARGET)
    assert status.revoked and status.reason == "keyCompromise"
    with pytest.raises(ValueError, match="already revoked"):
        backend.store.revoke(format(cert.serial_number, "x"), "unspecified", dt.datetime.now(dt.UTC))
    with pytest.raises(LookupError):
        backend.store.revoke("abcdef", "unspecified", dt.datetime.now(dt.UTC))


def test_certificate_from_elsewhere_is_unknown(backend: LocalCABackend, tmp_path: Path) -> None:
    other = make_backend(tmp_path / "other")
    foreign = enroll(other, make_csr(p256_key(), cn="elsewhere"))
    assert backend.revocation_status(foreign, TARGET).known is False


def test_local_options_are_validated_with_key_paths(tmp_path: Path) -> None:
    options = {"type": "local", "state_dir": str(tmp_path),
               "cas": {"A": {"key_type": "rsa-1024", "hierarchy": "flat"}},
               "certificate_profiles": {"p": {"extended_key_usage": ["clientAuth", "fooAuth"]}},
               "end_entity_profiles": {"e": {"required_subject": ["O"], "allowed_subject": ["CN"]}}}
    problems = Problems()
    LocalCABackend.from_options("local", Section(options, "backends.local", problems, tmp_path))
    with pytest.raises(ConfigError) as info:
        problems.raise_if_any()
    text = "\n".join(info.value.problems)
    assert 'backends.local.cas.A.key_type: "rsa-1024" is not one of' in text
    assert 'backends.local.cas.A.hierarchy: "flat" is not one of: root, root+issuing' in text
    assert 'backends.local.certificate_profiles.p.extended_key_usage[1]: "fooAuth" is not one of' in text
    assert "backends.local.end_entity_profiles.e.required_subject: O must also be in allowed_subject" in text


def test_the_record_and_its_wal_are_private(tmp_path: Path) -> None:
    """Issue 10 §5: certificates.sqlite3 and its -wal/-shm files are created 0600."""
    backend = make_backend(tmp_path / "s")
    enroll(backend, make_csr(p256_key(), cn="private-record"))
    parts = sorted((tmp_path / "s").glob("certificates.sqlite3*"))
    names = {p.name for p in parts}
    assert {"certificates.sqlite3", "certificates.sqlite3-wal"} <= names
    for part in parts:
        if not part.name.endswith(".lock"):
            assert stat.S_IMODE(part.stat().st_mode) == 0o600, part


def test_an_existing_record_is_made_private_at_start(tmp_path: Path) -> None:
    make_backend(tmp_path / "s")
    (tmp_path / "s" / "certificates.sqlite3").chmod(0o644)
    make_backend(tmp_path / "s")
    assert stat.S_IMODE((tmp_path / "s" / "certificates.sqlite3").stat().st_mode) == 0o600


def test_wildcard_dns_names_only_where_the_profile_allows_them(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, {"certificate_profiles": {"web": {"allow_wildcard_dns": True}}})
    wildcard = [x509.DNSName("*.example.com")]
    with pytest.raises(BadRequest, match=r"wildcard subjectAltName dns:\*.example.com is not allowed"):
        enroll(backend, make_csr(p256_key(), cn="w", sans=wildcard))
    cert = enroll(backend, make_csr(p256_key(), cn="w", sans=wildcard), LocalTarget("EST CA", "web", "default"))
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == wildcard


def test_csr_requested_extensions_are_never_copied(backend: LocalCABackend) -> None:
    """Issue 10 §6: a CSR asking for CA:TRUE, keyCertSign and other EKUs gets CA:FALSE and
    only the profile's key usage and extended key usage."""
    key = p256_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wants-to-be-a-ca")]))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                        data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                        crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING,
                                                 ExtendedKeyUsageOID.SERVER_AUTH,
                                                 ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
           .add_extension(x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")],
                                               excluded_subtrees=None), critical=True)
           .sign(key, hashes.SHA256()))
    cert = enroll(backend, csr)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    assert not usage.content_commitment
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert {e.oid for e in ext} == {x509.BasicConstraints.oid, x509.KeyUsage.oid, x509.ExtendedKeyUsage.oid,
                                    x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid}


def test_a_failed_record_write_issues_nothing(backend: LocalCABackend) -> None:
    """Issue 10 §6: when the record cannot be written, no certificate leaves the CA (503).
    A trigger makes SQLite refuse the insert, as a read-only or full database does."""
    conn = sqlite3.connect(backend.store.path)
    try:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON certificates "
                     "BEGIN SELECT RAISE(ABORT, 'attempt to write a readonly database'); END")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(UpstreamUnavailable) as info:
        enroll(backend, make_csr(p256_key(), cn="unrecorded"))
    assert info.value.status == 503
    assert info.value.detail == ("the local CA cannot write its certificate record; nothing was issued, "
                                 "try again later")
    assert backend.store.count() == 0


@pytest.mark.parametrize("change, reason", [
    ({"not_after": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}, "invalid validity period"),
    ({"not_before": dt.datetime(1949, 12, 31, tzinfo=dt.UTC)}, "invalid validity period"),
    ({"serial": 0}, "serial numbers must be positive"),
    ({"serial": 2**160}, "at most 20 octets"),
])
def test_a_leaf_with_impossible_values_is_refused(change: dict[str, Any], reason: str) -> None:
    """The checks of CertificateBuilder's setters hold though the builder is made in one step
    (an expired CA's leaf would end before it begins)."""
    key = p256_key()
    ca = authority.build_ca(authority.name("Check CA"), key, issuer=None, issuer_key=None, days=30,
                            now=authority.utcnow())
    values: dict[str, Any] = {"subject": authority.name("leaf"), "public_key": p256_key().public_key(),
                              "sans": [], "not_before": dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
                              "not_after": dt.datetime(2022, 1, 1, tzinfo=dt.UTC), "key_usage": (),
                              "extended_key_usage": (), "serial": 1, **change}
    with pytest.raises(ValueError, match=reason):
        authority.LeafSigner(ca, key).build(**values)


def test_a_leaf_is_byte_for_byte_what_the_builders_setters_make() -> None:
    """LeafSigner gives the builder the extensions every leaf shares already encoded; the
    certificate must be the one the builder's setters with typed extensions would sign
    (an RSA CA: PKCS#1 v1.5 signatures are deterministic, so whole DER compares)."""
    ca_key, leaf_key = rsa_key(), rsa_key()
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    ca = authority.build_ca(authority.name("Equal CA", "Example"), ca_key, issuer=None, issuer_key=None,
                            days=30, now=now)
    subject = authority.name("dev-1")
    sans: list[x509.GeneralName] = [x509.DNSName("dev-1.example"),
                                    x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
    built = authority.LeafSigner(ca, ca_key).build(
        subject=subject, public_key=leaf_key.public_key(), sans=sans, not_before=now,
        not_after=now + dt.timedelta(days=7), key_usage=("digitalSignature", "keyEncipherment"),
        extended_key_usage=("clientAuth", "serverAuth"), serial=0x1234567890ABCDEF)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    expected = (
        x509.CertificateBuilder().issuer_name(ca.subject).subject_name(subject)
        .public_key(leaf_key.public_key()).serial_number(0x1234567890ABCDEF)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256()))
    assert built.public_bytes(Encoding.DER) == expected.public_bytes(Encoding.DER)
    usage = built.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_encipherment and not usage.value.key_cert_sign
