"""The EJBCA EST workflow against a real gateway, with curl and openssl over TLS.

cacerts → simpleenroll (username/password) → inspect → simplereenroll with the issued
certificate as TLS client certificate (new key, then same key) → revoke with the
operator CLI → re-enrollment refused; the same with a P-256 key.
"""

from __future__ import annotations

import base64

from est_gateway import wire
from tests.conftest import Gateway
from tests.support import openssl


def _reenroll(gateway: Gateway, cert: str, key: str, csr: str, alias: str = ""):  # type: ignore[no-untyped-def]
    path = f"{alias}/" if alias else ""
    return gateway.curl("--cert", cert, "--key", key, "-H", "Content-Type: application/pkcs10",
                        "--data-binary", f"@{csr}", f"{gateway.url}/{path}simplereenroll")


def test_cacerts_returns_the_est_ca_chain(gateway: Gateway) -> None:
    res = gateway.curl(f"{gateway.url}/cacerts")
    assert res.status == 200
    assert res.headers["content-type"] == "application/pkcs7-mime"
    assert res.headers["content-transfer-encoding"] == "base64"
    assert int(res.headers["content-length"]) == len(res.body)
    assert all(len(line) <= 64 for line in res.body.splitlines()) and res.body.endswith(b"\n")
    certs = wire.read_certs_only(base64.b64decode(res.body))
    assert {c.subject.rfc4514_string() for c in certs} == {
        "CN=est-gateway Local EST CA", "CN=est-gateway Local EST CA Root"}
    labelled = gateway.curl(f"{gateway.url}/est/cacerts")     # the same alias with its label
    assert set(wire.read_certs_only(base64.b64decode(labelled.body))) == set(certs)


def test_rsa_workflow_enroll_reenroll_revoke(gateway: Gateway) -> None:
    work = gateway.work
    key, csr = openssl.new_csr(work, "rsa1", subject="/CN=router-7/O=Acme",
                               san="DNS:router-7.example,IP:192.0.2.7")
    res = gateway.curl(*gateway.enroll_args(csr))
    assert res.status == 200, res.body
    assert res.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert res.headers["content-transfer-encoding"] == "base64"
    text = openssl.certs_from_pkcs7_b64(res.body, work / "rsa1.pem")
    assert "Subject: CN = router-7, O = Acme" in text or "Subject: CN=router-7, O=Acme" in text
    assert "TLS Web Client Authentication" in text
    assert "DNS:router-7.example, IP Address:192.0.2.7" in text
    assert "Issuer: CN = est-gateway Local EST CA" in text or "Issuer: CN=est-gateway Local EST CA" in text
    serial1 = openssl.serial_of(work / "rsa1.pem")
    assert serial1.lower().lstrip("0") in gateway.cli("list").stdout

    # Renewal with a new key, authenticated by the current certificate (no password).
    key2, csr2 = openssl.new_csr(work, "rsa2", subject="/CN=router-7/O=Acme",
                                 san="DNS:router-7.example,IP:192.0.2.7")
    res = _reenroll(gateway, str(work / "rsa1.pem"), str(key), str(csr2))
    assert res.status == 200, res.body
    openssl.certs_from_pkcs7_b64(res.body, work / "rsa2.pem")
    assert openssl.serial_of(work / "rsa2.pem") != serial1

    # A certificate renews only on the label that issued it (issue 10 §4: renewing on "est"
    # bypassed "newkey"'s same-key ban); the renewed one can no longer renew (superseded).
    _, same = openssl.new_csr(work, "rsa-same", subject="/CN=router-7/O=Acme", key=key2,
                              san="DNS:router-7.example,IP:192.0.2.7")
    _, csr3 = openssl.new_csr(work, "rsa-other", subject="/CN=router-7/O=Acme",
                                 san="DNS:router-7.example,IP:192.0.2.7")
    res = _reenroll(gateway, str(work / "rsa2.pem"), str(key2), str(csr3), alias="newkey")
    assert res.status == 403 and res.body == b'client certificate was issued on EST label "est"; renew it there\n'
    res = _reenroll(gateway, str(work / "rsa2.pem"), str(key2), str(same), alias="newkey")
    assert res.status == 403 and b"same key" in res.body       # the key is refused first
    res = _reenroll(gateway, str(work / "rsa1.pem"), str(key), str(csr2))
    assert res.status == 403 and b"already renewed" in res.body
    res = _reenroll(gateway, str(work / "rsa2.pem"), str(key2), str(same))
    assert res.status == 200, res.body
    openssl.certs_from_pkcs7_b64(res.body, work / "rsa3.pem")

    # Revoke with the operator CLI; the revoked certificate can no longer renew.
    serial3 = openssl.serial_of(work / "rsa3.pem")
    done = gateway.cli("revoke", serial3, "--reason", "keyCompromise")
    assert done.returncode == 0, done.stderr
    shown = gateway.cli("show", serial3).stdout
    assert "revoked" in shown and "keyCompromise" in shown
    res = _reenroll(gateway, str(work / "rsa3.pem"), str(key2), str(same))
    assert res.status == 403
    assert res.headers["content-type"].startswith("text/plain")
    assert res.body == b"client certificate is revoked\n"


def test_newkey_label_refuses_renewal_with_the_same_key(gateway: Gateway) -> None:
    work = gateway.work
    key, csr = openssl.new_csr(work, "nk1", subject="/CN=strict-1")
    res = gateway.curl(*gateway.enroll_args(csr, alias="newkey"))
    assert res.status == 200, res.body
    openssl.certs_from_pkcs7_b64(res.body, work / "nk1.pem")
    _, same = openssl.new_csr(work, "nk-same", subject="/CN=strict-1", key=key)
    res = _reenroll(gateway, str(work / "nk1.pem"), str(key), str(same), alias="newkey")
    assert res.status == 403 and b"same key" in res.body
    res = _reenroll(gateway, str(work / "nk1.pem"), str(key), str(same))     # nor on "est"
    assert res.status == 403 and b'issued on EST label "newkey"' in res.body
    _, fresh = openssl.new_csr(work, "nk2", subject="/CN=strict-1")
    res = _reenroll(gateway, str(work / "nk1.pem"), str(key), str(fresh), alias="newkey")
    assert res.status == 200, res.body


def test_p256_workflow(gateway: Gateway) -> None:
    work = gateway.work
    key, csr = openssl.new_csr(work, "ec1", subject="/CN=sensor-3", key_type="ec")
    res = gateway.curl(*gateway.enroll_args(csr))
    assert res.status == 200, res.body
    text = openssl.certs_from_pkcs7_b64(res.body, work / "ec1.pem")
    assert "id-ecPublicKey" in text and "prime256v1" in text
    key2, csr2 = openssl.new_csr(work, "ec2", subject="/CN=sensor-3", key_type="ec")
    res = _reenroll(gateway, str(work / "ec1.pem"), str(key), str(csr2))
    assert res.status == 200, res.body
    text2 = openssl.certs_from_pkcs7_b64(res.body, work / "ec2.pem")
    assert "Subject: CN = sensor-3" in text2 or "Subject: CN=sensor-3" in text2


def test_client_certificate_and_password_both_required_on_certauth(gateway: Gateway) -> None:
    work = gateway.work
    key, csr = openssl.new_csr(work, "ca1", subject="/CN=needs-cert")
    res = gateway.curl(*gateway.enroll_args(csr, alias="certauth"))
    assert res.status == 401 and b"requires a TLS client certificate" in res.body
    res = gateway.curl(*gateway.enroll_args(csr))
    openssl.certs_from_pkcs7_b64(res.body, work / "ca1.pem")
    res = gateway.curl("--cert", str(work / "ca1.pem"), "--key", str(key),
                       *gateway.enroll_args(csr, alias="certauth"))
    assert res.status == 200, res.body
    res = gateway.curl("--cert", str(work / "ca1.pem"), "--key", str(key), "-H",
                       "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
                       f"{gateway.url}/certauth/simpleenroll")
    assert res.status == 401 and "www-authenticate" in res.headers


def test_chunked_body_and_any_transfer_encoding_header_are_accepted(gateway: Gateway) -> None:
    """globalsign's client sends chunked bodies with CTE: base64; libest sends neither."""
    _, csr = openssl.new_csr(gateway.work, "chunk", subject="/CN=chunked")
    res = gateway.curl("-H", "Transfer-Encoding: chunked", "-H", "Content-Transfer-Encoding: base64",
                       *gateway.enroll_args(csr))
    assert res.status == 200, res.body
    res = gateway.curl("-H", "Content-Transfer-Encoding: binary", *gateway.enroll_args(csr))
    assert res.status == 200, res.body      # RFC 8951 §3: the header is ignored


def test_libest_style_first_request_gets_a_basic_challenge(gateway: Gateway) -> None:
    _, csr = openssl.new_csr(gateway.work, "chal", subject="/CN=challenge")
    res = gateway.curl("-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
                       f"{gateway.url}/simpleenroll")
    assert res.status == 401
    assert res.headers["www-authenticate"] == 'Basic realm="est-gateway est"'
    # curl's --anyauth retries with credentials after the challenge, as libest does.
    res = gateway.curl("--anyauth", *gateway.enroll_args(csr))
    assert res.status == 200
