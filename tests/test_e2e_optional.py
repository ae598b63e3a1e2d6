"""The optional EST operations end to end over real TLS: csrattrs, serverkeygen,
channel binding (TLS 1.2 tls-unique and TLS 1.3 tls-exporter) and pending enrollment."""

from __future__ import annotations

import base64
import datetime as dt
import email.parser
import email.policy
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from est_gateway import csrattrs, wire
from est_gateway.backends.local import authority
from tests.conftest import Gateway, local_ca_cli
from tests.support import estclient, openssl
from tests.support.gateway import GatewayProcess, curl, local_instance
from tests.support.pki import csr_b64, make_csr, p256_key, rsa_key, write_pem

PKCS10 = "Content-Type: application/pkcs10"


# -- csrattrs ----------------------------------------------------------------------------

def test_csrattrs_200_with_the_configured_attributes(gateway: Gateway) -> None:
    res = gateway.curl(f"{gateway.url}/attrs/csrattrs")
    assert res.status == 200
    assert res.headers["content-type"] == "application/csrattrs"
    assert res.headers["content-transfer-encoding"] == "base64"
    items = csrattrs.decode(base64.b64decode(res.body))
    expected = csrattrs.decode(base64.b64decode(
        "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw=="))
    assert sorted(items) == sorted(expected)


def test_csrattrs_204_when_nothing_is_asked(gateway: Gateway) -> None:
    res = gateway.curl(f"{gateway.url}/csrattrs")
    assert res.status == 204 and res.body == b""


def test_enforced_csrattrs_refuse_a_csr_that_lacks_them(gateway: Gateway) -> None:
    _, csr = openssl.new_csr(gateway.work, "attrs-plain", subject="/CN=plain", key_type="ec")
    res = gateway.curl(*gateway.enroll_args(csr, alias="attrs"))
    assert res.status == 400
    assert res.body.startswith(b"CSR lacks what /csrattrs asks for: challengePassword, extension macAddress, "
                               b"a ec-p384 key, a sha384 signature")


# -- serverkeygen ------------------------------------------------------------------------

def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """A strict MIME parse; every part must carry Content-Type and CTE base64 (libest's rule)."""
    message = email.parser.BytesParser(policy=email.policy.strict).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body)
    assert message.is_multipart() and message.get_content_subtype() == "mixed"
    parts = {}
    for part in message.iter_parts():
        assert part["Content-Transfer-Encoding"] == "base64"
        assert not part.defects
        smime = part.get_param("smime-type")
        label = part.get_content_type() + (f"; smime-type={smime}" if smime else "")
        parts[label] = base64.b64decode(part.get_payload())
    # Byte for byte, as libest compares them.
    assert b"\r\nContent-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n" in body
    assert (b"\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
            b"Content-Transfer-Encoding: base64\r\n") in body
    return parts


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_serverkeygen_returns_a_key_matching_its_certificate(gateway: Gateway, key_type: str) -> None:
    _, csr = openssl.new_csr(gateway.work, f"skg-{key_type}", subject="/CN=keygen-dev",
                             key_type=key_type, san="DNS:keygen.example")
    before = gateway.cli("list").stdout
    res = gateway.curl("-u", f"estuser:{gateway.password}", "-H", PKCS10, "--data-binary", f"@{csr}",
                       f"{gateway.url}/serverkeygen")
    assert res.status == 200, res.body
    assert res.headers["content-type"].startswith("multipart/mixed; boundary=")
    parts = _parse_multipart(res.headers["content-type"], res.body)
    assert set(parts) == {"application/pkcs8", "application/pkcs7-mime; smime-type=certs-only"}
    key = serialization.load_der_private_key(parts["application/pkcs8"], password=None)
    (cert,) = wire.read_certs_only(parts["application/pkcs7-mime; smime-type=certs-only"])
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert isinstance(key, rsa.RSAPrivateKey if key_type == "rsa" else ec.EllipticCurvePrivateKey)
    assert cert.subject.rfc4514_string() == "CN=keygen-dev"
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == \
        [x509.DNSName("keygen.example")]
    serial = format(cert.serial_number, "x")
    assert serial not in before and serial in gateway.cli("list").stdout   # recorded like any other
    # The generated key never reached the gateway's log or state folder.
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    b64_key = base64.b64encode(parts["application/pkcs8"])[:40].decode()
    assert b64_key not in gateway.process.output()
    for path in gateway.instance.folder.rglob("*"):
        if path.is_file() and path.suffix != ".sqlite3-wal":
            assert pem not in path.read_bytes()


def test_serverkeygen_needs_authentication_and_can_be_disabled(gateway: Gateway) -> None:
    _, csr = openssl.new_csr(gateway.work, "skg-auth", subject="/CN=keygen-auth")
    res = gateway.curl("-H", PKCS10, "--data-binary", f"@{csr}", f"{gateway.url}/serverkeygen")
    assert res.status == 401 and "www-authenticate" in res.headers
    res = gateway.curl(*gateway.enroll_args(csr, alias="attrs")[:-1], f"{gateway.url}/attrs/serverkeygen")
    assert res.status == 501 and res.body == b"serverkeygen is disabled for this EST label\n"


# -- channel binding ---------------------------------------------------------------------

def _bound_csr(challenge: str | None) -> bytes:
    return csr_b64(make_csr(p256_key(), cn="bound-dev", challenge_password=challenge))


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_channel_binding_accepts_the_right_value(gateway: Gateway, tls: str) -> None:
    res, binding = estclient.post(
        gateway.process.port, "/.well-known/est/bound/simpleenroll",
        lambda b: _bound_csr(base64.b64encode(b).decode()),
        cacert=gateway.instance.trust_anchor, tls=tls, headers=estclient.basic("estuser", gateway.password))
    assert res.status == 200, res.body
    assert len(binding) == (32 if tls == "1.3" else 12)


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
@pytest.mark.parametrize("case", ["wrong", "stale", "missing"])
def test_channel_binding_refuses_wrong_stale_or_missing(gateway: Gateway, tls: str, case: str) -> None:
    port, ta = gateway.process.port, gateway.instance.trust_anchor
    auth = estclient.basic("estuser", gateway.password)
    if case == "stale":   # the binding of an earlier connection
        _, old = estclient.post(port, "/.well-known/est/bound/simpleenroll", lambda b: _bound_csr(None),
                                cacert=ta, tls=tls, headers=auth)
        value: str | None = base64.b64encode(old).decode()
    else:
        value = {"wrong": base64.b64encode(b"\x00" * 12).decode(), "missing": None}[case]
    res, _ = estclient.post(port, "/.well-known/est/bound/simpleenroll", lambda b: _bound_csr(value),
                            cacert=ta, tls=tls, headers=auth)
    assert res.status == 401
    assert res.headers["www-authenticate"] == 'Basic realm="est-gateway bound"'
    reason = b"channel binding required" if case == "missing" else b"channel binding mismatch"
    assert res.body.startswith(reason)


def test_registration_authority_is_exempt_from_channel_binding(gateway: Gateway) -> None:
    ca_key, ca_cert = gateway.ca_signing()
    ra_key = rsa_key()
    now = dt.datetime.now(dt.UTC)
    ra = authority.build_leaf(subject=authority.name("Device RA"), public_key=ra_key.public_key(), sans=[],
                              issuer=ca_cert, issuer_key=ca_key, not_before=now - dt.timedelta(minutes=5),
                              not_after=now + dt.timedelta(days=1), key_usage=["digitalSignature"],
                              extended_key_usage=["clientAuth", "cmcRA"], serial=authority.random_serial())
    work = gateway.work
    write_pem(work / "ra.pem", ra)
    write_pem(work / "ra.key", ra_key)
    res, _ = estclient.post(gateway.process.port, "/.well-known/est/bound/simpleenroll", lambda b: _bound_csr(None),
                            cacert=gateway.instance.trust_anchor, tls="1.2",
                            headers=estclient.basic("estuser", gateway.password),
                            cert=work / "ra.pem", key=work / "ra.key")
    assert res.status == 200, res.body


# -- pending enrollment ------------------------------------------------------------------

def _pending_id(config: Path, subject: str) -> str:
    out = local_ca_cli(config, "pending", backend="approvals").stdout
    line = next(line for line in out.splitlines() if subject in line)
    return line.split()[0]


def test_pending_then_approved_then_issued(gateway: Gateway) -> None:
    _, csr = openssl.new_csr(gateway.work, "pend1", subject="/CN=waits-for-approval")
    args = gateway.enroll_args(csr, alias="manual")
    first = gateway.curl(*args)
    assert first.status == 202 and first.headers["retry-after"] == "7" and first.body == b""
    assert gateway.curl(*args).status == 202          # still pending: same answer
    request_id = _pending_id(gateway.instance.config, "CN=waits-for-approval")
    done = gateway.cli("approve", request_id, backend="approvals")
    assert done.returncode == 0, done.stderr
    issued = gateway.curl(*args)
    assert issued.status == 200, issued.body
    (cert,) = wire.read_certs_only(base64.b64decode(issued.body))
    assert cert.subject.rfc4514_string() == "CN=waits-for-approval"
    again = gateway.curl(*args)                        # a repeat gets the same certificate
    assert wire.read_certs_only(base64.b64decode(again.body)) == [cert]


def test_pending_then_rejected_is_403(gateway: Gateway) -> None:
    _, csr = openssl.new_csr(gateway.work, "pend2", subject="/CN=will-be-rejected")
    args = gateway.enroll_args(csr, alias="manual")
    assert gateway.curl(*args).status == 202
    request_id = _pending_id(gateway.instance.config, "CN=will-be-rejected")
    assert gateway.cli("reject", request_id, "--reason", "unknown device", backend="approvals").returncode == 0
    res = gateway.curl(*args)
    assert res.status == 403
    assert res.body == f"request {request_id} was rejected by the CA operator: unknown device\n".encode()
    again = gateway.cli("approve", request_id, backend="approvals")
    assert again.returncode != 0 and "already rejected" in again.stderr


def test_pending_request_survives_a_restart(tmp_path: Path) -> None:
    instance, process = local_instance(tmp_path / "est-local")
    text = instance.config.read_text().replace('state_dir = "local-ca"\n',
                                               'state_dir = "local-ca"\napproval = "manual"\nretry_after_s = 30\n')
    instance.config.write_text(text)
    _, csr = openssl.new_csr(tmp_path, "restart", subject="/CN=pending-over-restart")
    args = ["-u", f"estuser:{instance.password()}", "-H", PKCS10, "--data-binary", f"@{csr}"]
    process.start()
    try:
        res = curl(*args, f"{process.url}/simpleenroll", cacert=instance.trust_anchor)
        assert res.status == 202 and res.headers["retry-after"] == "30"
    finally:
        process.stop()
    again = GatewayProcess(instance.config, process.port, tmp_path / "second.log").start()
    try:
        assert curl(*args, f"{again.url}/simpleenroll", cacert=instance.trust_anchor).status == 202
        request_id = _pending_id_local(instance.config, "CN=pending-over-restart")
        assert local_ca_cli(instance.config, "approve", request_id).returncode == 0
        res = curl(*args, f"{again.url}/simpleenroll", cacert=instance.trust_anchor)
        assert res.status == 200, res.body
    finally:
        again.stop()


def _pending_id_local(config: Path, subject: str) -> str:
    out = local_ca_cli(config, "pending").stdout
    return next(line for line in out.splitlines() if subject in line).split()[0]

