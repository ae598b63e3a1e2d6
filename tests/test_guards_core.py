"""Guards of the core and the local CA that no other test held: each test fails when its
guard is removed (checked once by disabling each)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AttributeOID

from est_gateway import channel_binding
from est_gateway.backends.base import Requester
from est_gateway.errors import Unauthorized
from est_gateway.identity import BasicCredentials, TLSInfo
from est_gateway.operations import retry_key
from est_gateway.passwords import PasswordHash
from tests.support.pki import CA, make_csr, p256_key
from tests.test_local_ca import TARGET, enroll, make_backend


def test_the_retry_key_tells_client_certificates_apart() -> None:
    """Two devices with the label's one password and the same CSR are not the same request
    (a 202'd request must not be collected by another device)."""
    ca, key = CA.create("Retry CA"), p256_key()
    csr = make_csr(key, cn="dev")
    first, second = ca.issue(key, cn="dev"), ca.issue(key, cn="dev")
    keys = {retry_key("simpleenroll", "est", Requester(username="estuser", certificate=cert), csr)
            for cert in (first, second, None)}
    assert len(keys) == 3


def test_basic_credentials_never_show_the_password() -> None:
    credentials = BasicCredentials("estuser", "pw-" + "x" * 20)
    assert "pw-" not in repr(credentials) and "pw-" not in str(credentials)
    assert "estuser" in repr(credentials)


def test_a_password_hash_never_shows_its_salt_or_hash() -> None:
    stored = PasswordHash.create("correct horse", log_n=10)
    shown = repr(stored) + str(stored)
    for secret in (stored.salt, stored.digest):
        assert base64.b64encode(secret).decode() not in shown and secret.hex() not in shown
        assert repr(secret) not in shown
    assert stored.render() not in shown


def _bound_csr(challenge: str | None) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "bound")]))
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(p256_key(), hashes.SHA256())


def test_only_a_registration_authority_certificate_is_exempt_from_channel_binding() -> None:
    ca, key = CA.create("Binding CA"), p256_key()
    tls = TLSInfo(version="TLSv1.3", tls_exporter=b"\x01" * 32)
    unbound = _bound_csr(None)
    for eku in (("clientAuth",), ("clientAuth", "serverAuth")):
        with pytest.raises(Unauthorized, match="channel binding required"):
            channel_binding.check(unbound, tls, ca.issue(key, eku=eku), realm="est")
    with pytest.raises(Unauthorized, match="channel binding required"):
        channel_binding.check(unbound, tls, None, realm="est")
    ra = ca.issue(key, eku=("clientAuth", "cmcRA"))
    channel_binding.check(unbound, tls, ra, realm="est")
    expected = base64.b64encode(b"\x01" * 32).decode()
    channel_binding.check(_bound_csr(expected), tls, None, realm="est")


def test_channel_binding_without_our_own_tls_is_refused() -> None:
    """Behind a proxy there is no TLS session of ours to bind to: refused, not skipped."""
    with pytest.raises(Unauthorized, match="channel binding needs TLS terminated by the gateway"):
        channel_binding.check(_bound_csr("anything"), None, None, realm="est")


def test_no_certificate_outlives_the_ca_that_issues_it(tmp_path: Path) -> None:
    """The default profile's 365 days under a CA of 30: the certificate ends with its CA."""
    backend = make_backend(tmp_path / "state", validity_days=30)
    issuing = backend.ca_certs(TARGET)[0]
    cert = enroll(backend, make_csr(p256_key(), cn="short-ca"))
    assert cert.not_valid_after_utc == issuing.not_valid_after_utc
    backend.close()

