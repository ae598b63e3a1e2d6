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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from est_gateway import csrattrs, wire
from est_gateway.backends.local import authority
from tests.conftest import Gateway, local_ca_cli
from tests.support import estclient, openssl
from tests.support.gateway import GatewayProcess, curl, local_instance
from tests.support.logs import audit_events
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

def _parse_multipart(content_type: str, body: bytes, key_type: str = "application/pkcs8") -> dict[str, bytes]:
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
    assert f"\r\nContent-Type: {key_type}\r\nContent-Transfer-Encoding: base64\r\n".encode() in body
    assert (b"\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
            b"Content-Transfer-Encoding: base64\r\n") in body
    return parts


@pytest.mark.parametrize(("csr_key", "label", "generated"), [
    ("rsa", "", "rsa-2048"),          # the default: RSA-2048 whatever the CSR's key
    ("ec", "", "rsa-2048"),
    ("ec", "keylikecsr/", "ec-p256"),  # serverkeygen_key_type = "csr"
])
def test_serverkeygen_returns_a_key_matching_its_certificate(gateway: Gateway, csr_key: str, label: str,
                                                             generated: str) -> None:
    _, csr = openssl.new_csr(gateway.work, f"skg-{csr_key}-{generated}", subject="/CN=keygen-dev",
                             key_type=csr_key, san="DNS:keygen.example")
    before = gateway.cli("list").stdout
    res = gateway.curl("-u", f"estuser:{gateway.password}", "-H", PKCS10, "--data-binary", f"@{csr}",
                       f"{gateway.url}/{label}serverkeygen")
    assert res.status == 200, res.body
    assert res.headers["content-type"].startswith("multipart/mixed; boundary=")
    parts = _parse_multipart(res.headers["content-type"], res.body)
    assert set(parts) == {"application/pkcs8", "application/pkcs7-mime; smime-type=certs-only"}
    key = serialization.load_der_private_key(parts["application/pkcs8"], password=None)
    (cert,) = wire.read_certs_only(parts["application/pkcs7-mime; smime-type=certs-only"])
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
    if generated == "rsa-2048":
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        estclient.libest_serverkeygen_parts(res.headers["content-type"], res.body)   # libest takes it
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        # the caveat of "csr": libest's client refuses a P-256 key part as too short
        with pytest.raises(estclient.LibestRefusal, match="key part of 1[89][0-9] bytes is under 256"):
            estclient.libest_serverkeygen_parts(res.headers["content-type"], res.body)
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


def _audit_of(gateway: Gateway, csr_subject: str) -> list[dict[str, object]]:
    """The gateway's audit lines (JSON on stderr) for one device's CSR subject, in order."""
    lines = audit_events(gateway.process.output())
    return [line for line in lines if line["csr_subject"] == csr_subject]


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
    # The operator follows the request from 202 to 200 by its approval reference.
    audit = _audit_of(gateway, "CN=waits-for-approval")
    assert [(a["status"], a["approval_reference"]) for a in audit] == [(202, request_id)] * 2 + [(200, request_id)] * 2
    assert audit[2]["issued_serial"] == format(cert.serial_number, "x")


def test_pending_then_rejected_is_403(gateway: Gateway) -> None:
    _, csr = openssl.new_csr(gateway.work, "pend2", subject="/CN=will-be-rejected")
    args = gateway.enroll_args(csr, alias="manual")
    assert gateway.curl(*args).status == 202
    request_id = _pending_id(gateway.instance.config, "CN=will-be-rejected")
    assert gateway.cli("reject", request_id, "--reason", "unknown device", backend="approvals").returncode == 0
    res = gateway.curl(*args)
    assert res.status == 403
    assert res.body == f"request {request_id} was rejected by the CA operator: unknown device\n".encode()
    audit = _audit_of(gateway, "CN=will-be-rejected")
    assert [(a["status"], a["approval_reference"]) for a in audit] == [(202, request_id), (403, request_id)]
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



# -- serverkeygen with the key encrypted to the client (RFC 7030 §4.4.2) ------------------

def _keygen_csr_asking_encryption(to: x509.Certificate | None, *, oid: str = "1.2.840.113549.1.9.16.2.54",
                                  identifier: bytes | None = None) -> bytes:
    from cryptography.x509.name import _ASN1Type

    ski = identifier if identifier is not None else \
        x509.SubjectKeyIdentifier.from_public_key(to.public_key()).digest  # type: ignore[union-attr]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "wrapped-key-dev")]))
    builder = builder.add_attribute(x509.ObjectIdentifier(oid), ski, _tag=_ASN1Type.OctetString)
    return csr_b64(builder.sign(rsa_key(), hashes.SHA256()))


def _enrolled_rsa_device(gateway: Gateway, name: str) -> tuple[Path, Path, x509.Certificate]:
    key, csr = openssl.new_csr(gateway.work, name, subject="/CN=wrapped-key-dev")
    res = gateway.curl(*gateway.enroll_args(csr))
    openssl.certs_from_pkcs7_b64(res.body, gateway.work / f"{name}.pem")
    cert = x509.load_pem_x509_certificate((gateway.work / f"{name}.pem").read_bytes())
    return gateway.work / f"{name}.pem", key, cert


def _post_keygen(gateway: Gateway, body: bytes, *tls: str):  # type: ignore[no-untyped-def]
    path = gateway.work / "keygen-wrap.b64"
    path.write_bytes(body)
    return gateway.curl(*tls, "-u", f"estuser:{gateway.password}", "-H", PKCS10, "--data-binary", f"@{path}",
                        f"{gateway.url}/serverkeygen")


def test_serverkeygen_encrypts_the_key_to_the_named_client_key(gateway: Gateway) -> None:
    from asn1crypto import cms
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import pkcs7

    cert_path, key_path, device = _enrolled_rsa_device(gateway, "wrap1")
    res = _post_keygen(gateway, _keygen_csr_asking_encryption(device), "--cert", str(cert_path),
                       "--key", str(key_path))
    assert res.status == 200, res.body
    parts = _parse_multipart(res.headers["content-type"], res.body, key_type="application/pkcs7-mime; "
                             "smime-type=server-generated-key")
    signed = cms.ContentInfo.load(parts["application/pkcs7-mime; smime-type=server-generated-key"])
    assert signed["content_type"].native == "signed_data"
    data = signed["content"]
    assert data["encap_content_info"]["content_type"].native == "enveloped_data"
    econtent = data["encap_content_info"]["content"].contents
    # Signed by the gateway (its TLS server certificate), over the signed attributes.
    tls_cert = x509.load_pem_x509_certificate((gateway.instance.folder / "tls" / "server.pem").read_bytes())
    (signer_cert,) = [x509.load_der_x509_certificate(c.chosen.dump()) for c in data["certificates"]]
    assert signer_cert == tls_cert
    info = data["signer_infos"][0]
    attrs = {a["type"].native: a["values"][0].native for a in info["signed_attrs"]}
    assert attrs["content_type"] == "enveloped_data"
    assert attrs["message_digest"] == hashes_sha256(econtent)
    tls_cert.public_key().verify(info["signature"].native, info["signed_attrs"].untag().dump(),  # type: ignore[union-attr,call-arg]
                                 padding.PKCS1v15(), hashes.SHA256())
    # openssl agrees: the signature verifies up to the trust anchor and yields the envelope.
    signed_file = gateway.work / "wrapped.der"
    signed_file.write_bytes(parts["application/pkcs7-mime; smime-type=server-generated-key"])
    content = openssl.run("cms", "-verify", "-inform", "DER", "-in", str(signed_file), "-binary",
                          "-CAfile", str(gateway.instance.trust_anchor), "-purpose", "any")
    assert content == econtent
    # Only the device's key opens the envelope; inside is the PKCS#8 key of the new certificate.
    enveloped = cms.ContentInfo({"content_type": "enveloped_data",
                                 "content": cms.EnvelopedData.load(econtent)}).dump()
    device_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    pkcs8 = pkcs7.pkcs7_decrypt_der(enveloped, device, device_key, [])  # type: ignore[arg-type]
    (gateway.work / "envelope.der").write_bytes(enveloped)
    assert openssl.run("cms", "-decrypt", "-inform", "DER", "-in", str(gateway.work / "envelope.der"),
                       "-recip", str(cert_path), "-inkey", str(key_path), "-binary") == pkcs8
    new_key = serialization.load_der_private_key(pkcs8, password=None)
    (issued,) = wire.read_certs_only(parts["application/pkcs7-mime; smime-type=certs-only"])
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert issued.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        new_key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert base64.b64encode(pkcs8)[:40].decode() not in gateway.process.output()


def test_encrypted_delivery_refusals(gateway: Gateway) -> None:
    cert_path, key_path, device = _enrolled_rsa_device(gateway, "wrap2")
    tls = ("--cert", str(cert_path), "--key", str(key_path))
    wrong = _post_keygen(gateway, _keygen_csr_asking_encryption(None, identifier=b"\x01" * 20), *tls)
    assert wrong.status == 403 and b"does not name the key of the TLS client certificate" in wrong.body
    no_cert = _post_keygen(gateway, _keygen_csr_asking_encryption(device))
    assert no_cert.status == 403 and b"authenticate with the TLS client certificate" in no_cert.body
    symmetric = _post_keygen(gateway, _keygen_csr_asking_encryption(None, oid="1.2.840.113549.1.9.16.2.37",
                                                                    identifier=b"kid-1"), *tls)
    assert symmetric.status == 501 and b"DecryptKeyIdentifier" in symmetric.body


def hashes_sha256(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()
