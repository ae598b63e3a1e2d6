"""Renewal is bound to the exact certificate on record and to its label (issue 10 §4).

In-process (tests/support/inproc.py): the client certificate is injected the way the TLS
worker exposes it; everything else is the real application and local CA.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from werkzeug.test import TestResponse

from est_gateway import wire
from est_gateway.backends.base import RevocationStatus
from est_gateway.backends.local import LocalCABackend, authority
from est_gateway.backends.local.options import LocalTarget
from est_gateway.backends.local.store import serial_hex
from est_gateway.errors import ConfigError
from est_gateway.web.app import create_app, service_of
from tests.support.inproc import InProcessGateway, start
from tests.support.pki import CA, csr_der, p256_key, write_pem

PKCS10 = ("Content-Type", "application/pkcs10")
CN, ORG, LOC = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.LOCALITY_NAME
PARTNER = """
[aliases.partner]
backend = "local"
ca = "EST CA"
require_client_cert = true
accept_renewals_from = ["est"]

[aliases.keep]
backend = "local"
ca = "EST CA"
username = "estuser"
password_file = "secrets/est.password"
supersede_on_renewal = false
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    yield start(tmp_path_factory.mktemp("renewal") / "est-local", PARTNER)


def _csr(key: Any, subject: x509.Name, sans: list[x509.GeneralName] | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return base64.encodebytes(csr_der(builder.sign(key, hashes.SHA256())))


def _name(*rdns: list[tuple[x509.ObjectIdentifier, str]] | tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    out = []
    for rdn in rdns:
        attrs = rdn if isinstance(rdn, list) else [rdn]
        out.append(x509.RelativeDistinguishedName([x509.NameAttribute(oid, v) for oid, v in attrs]))
    return x509.Name(out)


def _cert(response: TestResponse) -> x509.Certificate:
    assert response.status_code == 200, response.get_data()
    return wire.read_certs_only(base64.b64decode(response.get_data()))[0]


def _enroll(gw: InProcessGateway, key: Any, subject: x509.Name, sans: list[x509.GeneralName] | None = None,
            label: str = "") -> x509.Certificate:
    path = f"/.well-known/est/{label + '/' if label else ''}simpleenroll"
    return _cert(gw.request("POST", path, headers=[PKCS10, *gw.auth().items()], body=_csr(key, subject, sans)))


def _renew(gw: InProcessGateway, cert: x509.Certificate, key: Any, subject: x509.Name,
           sans: list[x509.GeneralName] | None = None, label: str = "") -> TestResponse:
    path = f"/.well-known/est/{label + '/' if label else ''}simplereenroll"
    return gw.request("POST", path, headers=[PKCS10], body=_csr(key, subject, sans), tls=gw.tls_with(cert))


SUBJECT = _name((CN, "Kiosk-7"), (ORG, "Acme"))


@pytest.mark.parametrize("changed", [
    _name((CN, "kiosk-7"), (ORG, "Acme")),                                   # case
    _name((CN, "Kiosk-7 "), (ORG, "Acme")),                                  # padding
    _name((CN, "\u212aiosk-7"), (ORG, "Acme")),                             # Kelvin sign for K
    _name((ORG, "Acme"), (CN, "Kiosk-7")),                                   # swapped RDNs
    _name([(CN, "Kiosk-7"), (ORG, "Acme")]),                                 # merged multi-valued RDN
    _name((CN, "Kiosk-7"), (ORG, "Acme"), (ORG, "Acme")),                    # an attribute added
    _name((CN, "Kiosk-7")),                                                  # one left out
], ids=["case", "padding", "kelvin", "swapped", "merged", "added", "dropped"])
def test_renewal_subject_must_be_identical(gw: InProcessGateway, changed: x509.Name) -> None:
    key = p256_key()
    cert = _enroll(gw, key, SUBJECT)
    response = _renew(gw, cert, key, changed)
    assert response.status_code == 403, response.get_data()
    assert response.get_data().startswith(b"re-enrollment must keep the subject of the current certificate")
    assert _renew(gw, cert, key, SUBJECT).status_code == 200


def test_only_the_string_type_may_differ_and_the_renewal_keeps_the_current_encoding(
        gw: InProcessGateway) -> None:
    """CAs re-encode string types (CFSSL issues UTF8String as PrintableString); the same
    text in another type renews, and the renewal carries the current certificate's DER."""
    key = p256_key()
    cert = _enroll(gw, key, SUBJECT)
    printable = x509.Name([x509.NameAttribute(CN, "Kiosk-7", _ASN1Type.PrintableString),
                           x509.NameAttribute(ORG, "Acme", _ASN1Type.PrintableString)])
    assert printable.public_bytes() != cert.subject.public_bytes()
    renewed = _cert(_renew(gw, cert, key, printable))
    assert renewed.subject.public_bytes() == cert.subject.public_bytes()


def test_eszett_is_not_ss(gw: InProcessGateway) -> None:
    key = p256_key()
    cert = _enroll(gw, key, _name((CN, "sensor"), (LOC, "Straße")))
    assert _renew(gw, cert, key, _name((CN, "sensor"), (LOC, "Strasse"))).status_code == 403


def test_renewal_carries_the_current_names_exactly(gw: InProcessGateway) -> None:
    """The CSR lists the same SANs in another order: the renewal carries the current
    certificate's extension as it was, not the CSR's form."""
    key = p256_key()
    sans: list[x509.GeneralName] = [x509.DNSName("a.example"), x509.DNSName("b.example")]
    cert = _enroll(gw, key, SUBJECT, sans)
    renewed = _cert(_renew(gw, cert, key, SUBJECT, sans[::-1]))
    ext = x509.SubjectAlternativeName
    assert renewed.extensions.get_extension_for_class(ext).value.public_bytes() == \
        cert.extensions.get_extension_for_class(ext).value.public_bytes()
    assert renewed.subject.public_bytes() == cert.subject.public_bytes()


def test_renewal_san_duplicates_are_not_the_same_set(gw: InProcessGateway) -> None:
    key = p256_key()
    cert = _enroll(gw, key, SUBJECT, [x509.DNSName("a.example")])
    response = _renew(gw, cert, key, SUBJECT, [x509.DNSName("a.example"), x509.DNSName("a.example")])
    assert response.status_code == 403 and b"subjectAltName" in response.get_data()


def test_certificate_renews_only_on_its_own_label(gw: InProcessGateway) -> None:
    """Issue 10 §4: a certificate from "newkey" renewed on "est" escaped newkey's same-key ban."""
    key = p256_key()
    cert = _enroll(gw, key, _name((CN, "strict")), label="newkey")
    response = _renew(gw, cert, key, _name((CN, "strict")))            # same key, on "est"
    assert response.status_code == 403
    assert response.get_data() == b'client certificate was issued on EST label "newkey"; renew it there\n'
    assert b"same key" in _renew(gw, cert, key, _name((CN, "strict")), label="newkey").get_data()


def test_a_label_may_accept_renewals_from_another(gw: InProcessGateway) -> None:
    key = p256_key()
    cert = _enroll(gw, key, _name((CN, "moving")))
    renewed = _cert(_renew(gw, cert, key, _name((CN, "moving")), label="partner"))
    key2 = p256_key()
    # The renewal now belongs to "partner"; "est" does not accept renewals from it.
    assert _renew(gw, renewed, key2, _name((CN, "moving"))).status_code == 403
    assert _renew(gw, renewed, key2, _name((CN, "moving")), label="partner").status_code == 200


def test_a_renewed_certificate_can_no_longer_renew(gw: InProcessGateway) -> None:
    """Issue 10 §4: a revoked newest certificate left its older predecessor able to renew."""
    key = p256_key()
    first = _enroll(gw, key, _name((CN, "chain")))
    second = _cert(_renew(gw, first, key, _name((CN, "chain"))))
    backend = gw.config.backends["local"]
    assert isinstance(backend, LocalCABackend)
    backend.store.revoke(serial_hex(second.serial_number), "keyCompromise", authority.utcnow())
    response = _renew(gw, first, key, _name((CN, "chain")))
    assert response.status_code == 403
    assert response.get_data() == b"client certificate was already renewed; renew with its newest successor\n"
    assert backend.store.get(serial_hex(first.serial_number)).status == "superseded"  # type: ignore[union-attr]


def test_supersede_on_renewal_can_be_turned_off(gw: InProcessGateway) -> None:
    key = p256_key()
    first = _enroll(gw, key, _name((CN, "kept")), label="keep")
    _cert(_renew(gw, first, key, _name((CN, "kept")), label="keep"))
    _cert(_renew(gw, first, key, _name((CN, "kept")), label="keep"))


def test_revoked_renewal_is_audited_with_the_refused_certificate(gw: InProcessGateway,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    key = p256_key()
    cert = _enroll(gw, key, _name((CN, "revoked-audit")))
    backend = gw.config.backends["local"]
    assert isinstance(backend, LocalCABackend)
    backend.store.revoke(serial_hex(cert.serial_number), "keyCompromise", authority.utcnow())
    with caplog.at_level(logging.INFO, logger="est_gateway.audit"):
        response = _renew(gw, cert, key, _name((CN, "revoked-audit")))
    assert response.status_code == 403
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "est_gateway.audit"]
    refused = [e for e in events if e["status"] == 403]
    assert len(refused) == 1
    assert refused[0]["client_cert_serial"] == format(cert.serial_number, "x")
    assert refused[0]["client_cert_subject"] == "CN=revoked-audit"


# -- forged certificates from a client CA named like the label's CA ----------------------

def _forge(gw: InProcessGateway, victim: x509.Certificate, subject: str) -> tuple[CA, x509.Certificate, Any]:
    """A CA with the EST CA's name (its own key) and a certificate copying ``victim``'s serial."""
    evil_key = p256_key()
    evil = authority.build_ca(gw.ca_cert.subject, evil_key, issuer=None, issuer_key=None, days=30,
                              now=authority.utcnow())
    key = p256_key()
    now = authority.utcnow()
    forged = authority.build_leaf(subject=authority.name(subject), public_key=key.public_key(), sans=[],
                                  issuer=evil, issuer_key=evil_key, not_before=now,
                                  not_after=victim.not_valid_after_utc,
                                  key_usage=["digitalSignature"], extended_key_usage=["clientAuth"],
                                  serial=victim.serial_number)
    return CA(evil_key, evil), forged, key


def test_local_ca_knows_only_the_exact_certificate_on_record(gw: InProcessGateway) -> None:
    """Same issuer name, copied serial, another key: unknown (main matched serial + issuer name)."""
    victim = _enroll(gw, p256_key(), _name((CN, "victim")))
    _, forged, _ = _forge(gw, victim, "intruder")
    backend = gw.config.backends["local"]
    target = gw.config.aliases["est"].target
    assert backend.revocation_status(forged, target) == RevocationStatus(known=False, revoked=False)
    assert backend.revocation_status(victim, target).known


def test_a_partner_ca_certificate_reusing_an_issued_serial_is_unknown(gw: InProcessGateway) -> None:
    victim = _enroll(gw, p256_key(), _name((CN, "victim-2")))
    partner = CA.create("Partner CA")
    now = authority.utcnow()
    reused = authority.build_leaf(subject=victim.subject, public_key=victim.public_key(), sans=[],  # type: ignore[arg-type]
                                  issuer=partner.cert, issuer_key=partner.key, not_before=now,
                                  not_after=victim.not_valid_after_utc, key_usage=["digitalSignature"],
                                  extended_key_usage=["clientAuth"], serial=victim.serial_number)
    status = gw.config.backends["local"].revocation_status(reused, gw.config.aliases["est"].target)
    assert not status.known


class IssuerAndSerialCA(LocalCABackend):
    """A CA that, like upstream CAs, knows certificates by issuer name and serial only
    (EJBCA REST: GET /v1/certificate/{issuer_dn}/{serial}/revocationstatus)."""

    def revocation_status(self, certificate: x509.Certificate, target: LocalTarget) -> RevocationStatus:
        record = self.store.get(serial_hex(certificate.serial_number))
        if record is None or record.issuer != certificate.issuer.rfc4514_string():
            return RevocationStatus(known=False, revoked=False)
        return RevocationStatus(known=True, revoked=record.status == "revoked")


def test_renewal_never_trusts_the_extra_client_cas(gw: InProcessGateway) -> None:
    """With a CA that knows certificates by issuer and serial, a same-named client CA (one
    the start-up check could not compare, e.g. the upstream was down) still cannot renew a
    forged certificate: renewal chains to the label's own CA only."""
    victim = _enroll(gw, p256_key(), _name((CN, "victim-3")))
    evil, forged, key = _forge(gw, victim, "anyone-at-all")
    local = gw.config.backends["local"]
    assert isinstance(local, LocalCABackend)
    upstreamish = IssuerAndSerialCA("local", local.options)
    upstreamish.start()
    alias = dataclasses.replace(gw.config.aliases["est"], trusted_client_cas=(evil.cert,))
    config = dataclasses.replace(gw.config, backends={"local": upstreamish}, aliases={"est": alias})
    app = create_app(dataclasses.replace(config, aliases={"est": gw.config.aliases["est"]}))
    service_of(app).config = config     # as if the check had been skipped
    client = InProcessGateway(gw.folder, config, app, gw.password, gw.ca_key, gw.ca_cert)
    response = _renew(client, forged, key, _name((CN, "anyone-at-all")))
    assert response.status_code == 403, response.get_data()
    assert response.get_data() == b"client certificate does not chain to a CA trusted by this alias\n"


def test_a_trusted_client_ca_named_like_the_label_ca_is_refused_at_start(gw: InProcessGateway) -> None:
    evil, _, _ = _forge(gw, gw.ca_cert, "unused")
    alias = dataclasses.replace(gw.config.aliases["est"], trusted_client_cas=(evil.cert,))
    with pytest.raises(ConfigError) as info:
        create_app(dataclasses.replace(gw.config, aliases={"est": alias}))
    assert info.value.problems == [
        'aliases.est.trusted_client_cas_file: the CA "CN=est-gateway Local EST CA" has the name of '
        "this label's own CA; a client CA must have a name of its own"]


def test_serve_refuses_a_client_ca_named_like_the_label_ca(gw: InProcessGateway) -> None:
    evil, _, _ = _forge(gw, gw.ca_cert, "unused")
    write_pem(gw.folder / "maker-ca.pem", evil.cert)
    text = gw.folder.joinpath("gateway.toml").read_text(encoding="utf-8").replace(
        "[aliases.newkey]", 'trusted_client_cas_file = "maker-ca.pem"\n\n[aliases.newkey]', 1)
    config = gw.folder / "evil.toml"
    config.write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "est_gateway.cli", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'aliases.est.trusted_client_cas_file: the CA "CN=est-gateway Local EST CA" has the name' in done.stderr
