"""Every client mistake gets the right status and a short text/plain reason, over real TLS.

One row per applicable line of the status table in the design notes (RFC 7030 with
RFC 8951); the request is made with curl against a running gateway.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from est_gateway.backends.local import authority
from tests.conftest import Gateway
from tests.support import openssl
from tests.support.pki import CA, csr_der, make_csr, rsa_key, write_pem

PKCS10 = "Content-Type: application/pkcs10"


@dataclass
class Material:
    """Files the negative cases use: a valid certificate, odd certificates, odd bodies."""

    good_cert: Path
    good_key: Path
    renew_csr: Path
    foreign: tuple[Path, Path]
    expired: tuple[Path, Path]
    no_client_auth: tuple[Path, Path]
    csr: Path


@pytest.fixture(scope="module")
def material(gateway: Gateway) -> Material:
    work = gateway.work / "negative"
    work.mkdir()
    key, csr = openssl.new_csr(work, "good", subject="/CN=neg-device", san="DNS:neg.example")
    res = gateway.curl(*gateway.enroll_args(csr))
    assert res.status == 200
    openssl.certs_from_pkcs7_b64(res.body, work / "good.pem")
    _, renew = openssl.new_csr(work, "renew", subject="/CN=neg-device", san="DNS:neg.example")

    def minted(name: str, issuer_key: authority.PrivateKey, issuer: x509.Certificate, **kw: object
               ) -> tuple[Path, Path]:
        leaf_key = rsa_key()
        now = dt.datetime.now(dt.UTC)
        cert = authority.build_leaf(
            subject=authority.name("neg-device"), public_key=leaf_key.public_key(),
            sans=[x509.DNSName("neg.example")], issuer=issuer, issuer_key=issuer_key,
            not_before=kw.get("not_before", now - dt.timedelta(days=1)),  # type: ignore[arg-type]
            not_after=kw.get("not_after", now + dt.timedelta(days=1)),  # type: ignore[arg-type]
            key_usage=["digitalSignature"], extended_key_usage=kw.get("eku", ["clientAuth"]),  # type: ignore[arg-type]
            serial=authority.random_serial())
        return write_pem(work / f"{name}.pem", cert), write_pem(work / f"{name}.key", leaf_key)

    foreign_ca = CA.create("Foreign Device CA")
    ca_key, ca_cert = gateway.ca_signing()
    now = dt.datetime.now(dt.UTC)
    return Material(
        good_cert=work / "good.pem", good_key=key, renew_csr=renew, csr=csr,
        foreign=minted("foreign", foreign_ca.key, foreign_ca.cert),
        expired=minted("expired", ca_key, ca_cert, not_before=now - dt.timedelta(days=30),
                       not_after=now - dt.timedelta(days=1)),
        no_client_auth=minted("noclientauth", ca_key, ca_cert, eku=["serverAuth"]),
    )


def _file(gateway: Gateway, name: str, data: bytes) -> str:
    path = gateway.work / name
    path.write_bytes(data)
    return f"@{path}"


def _auth(g: Gateway) -> list[str]:
    return ["-u", f"estuser:{g.password}"]


Args = Callable[[Gateway, Material], list[str]]


def _reenroll_with(pair: Callable[[Material], tuple[Path, Path]], csr: Callable[[Gateway, Material], str]) -> Args:
    def build(g: Gateway, m: Material) -> list[str]:
        cert, key = pair(m)
        return ["--cert", str(cert), "--key", str(key), "-H", PKCS10, "--data-binary", csr(g, m),
                f"{g.url}/simplereenroll"]
    return build


def _csr_for(cn: str, san: str | None = None) -> Callable[[Gateway, Material], str]:
    def build(g: Gateway, m: Material) -> str:
        sans = [x509.DNSName(san)] if san else None
        return _file(g, f"csr-{cn}-{san}.b64", base64.encodebytes(csr_der(make_csr(rsa_key(), cn=cn, sans=sans))))
    return build


def _broken_signature(g: Gateway, m: Material) -> str:
    der = bytearray(csr_der(make_csr(rsa_key(), cn="broken")))
    der[-5] ^= 0xFF
    return _file(g, "broken.b64", base64.encodebytes(bytes(der)))


GOOD_PAIR = lambda m: (m.good_cert, m.good_key)  # noqa: E731

CASES: list[tuple[str, Args, int, str]] = [
    ("wrong password",
     lambda g, m: ["-u", "estuser:wrong", "-H", PKCS10, "--data-binary", f"@{m.csr}", f"{g.url}/simpleenroll"],
     401, "invalid username or password"),
    ("wrong username",
     lambda g, m: ["-u", f"admin:{g.password}", "-H", PKCS10, "--data-binary", f"@{m.csr}", f"{g.url}/simpleenroll"],
     401, "invalid username or password"),
    ("no credentials",
     lambda g, m: ["-H", PKCS10, "--data-binary", f"@{m.csr}", f"{g.url}/simpleenroll"],
     401, "HTTP Basic credentials are required"),
    ("malformed Authorization",
     lambda g, m: ["-H", "Authorization: Basic !!!", "-H", PKCS10, "--data-binary", f"@{m.csr}",
                   f"{g.url}/simpleenroll"],
     400, "Basic credentials are not valid base64"),
    ("garbage body",
     lambda g, m: [*_auth(g), "-H", PKCS10, "--data-binary", "this is not base64!", f"{g.url}/simpleenroll"],
     400, "body is not valid base64"),
    ("empty body",
     lambda g, m: [*_auth(g), "-H", PKCS10, "--data-binary", "", f"{g.url}/simpleenroll"],
     400, "empty body"),
    ("base64 that is not a CSR",
     lambda g, m: [*_auth(g), "-H", PKCS10, "--data-binary", base64.b64encode(b"\x30\x03\x02\x01\x05").decode(),
                   f"{g.url}/simpleenroll"],
     400, "not a DER PKCS#10"),
    ("CSR with a broken signature",
     lambda g, m: [*_auth(g), "-H", PKCS10, "--data-binary", _broken_signature(g, m), f"{g.url}/simpleenroll"],
     400, "CSR signature does not verify"),
    ("CSR against the end-entity profile",
     lambda g, m: [*_auth(g), "-H", PKCS10, "--data-binary", _file(g, "nocn.b64", base64.encodebytes(
                   csr_der(make_csr(rsa_key(), cn=None, attrs=[("ORGANIZATION_NAME", "X")])))),
                   f"{g.url}/simpleenroll"],
     400, "subject lacks required field(s): CN"),
    ("wrong content type",
     lambda g, m: [*_auth(g), "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{m.csr}",
                   f"{g.url}/simpleenroll"],
     415, "Content-Type must be application/pkcs10"),
    ("no content type",
     lambda g, m: [*_auth(g), "-H", "Content-Type:", "--data-binary", f"@{m.csr}", f"{g.url}/simpleenroll"],
     415, "Content-Type must be application/pkcs10"),
    ("POST to cacerts",
     lambda g, m: ["-X", "POST", f"{g.url}/cacerts"], 405, "method not allowed; use GET"),
    ("GET simpleenroll",
     lambda g, m: [f"{g.url}/simpleenroll"], 405, "method not allowed; use POST"),
    ("unknown alias",
     lambda g, m: [f"{g.url}/nosuchlabel/cacerts"], 404, 'unknown EST label "nosuchlabel"'),
    ("very long unknown alias",
     lambda g, m: [f"{g.url}/{'x' * 1000}/cacerts"], 404, 'unknown EST label "' + "x" * 64 + '..."'),
    ("unknown operation",
     lambda g, m: [f"{g.url}/est/fullcmd"], 404, 'unknown EST operation "fullcmd"'),
    ("too many path segments",
     lambda g, m: [f"{g.url}/est/x/cacerts"], 404, "unknown EST operation"),
    ("outside /.well-known/est",
     lambda g, m: [g.url.replace("/.well-known/est", "/admin")], 404, "not found"),
    ("fullcmc is not offered",
     lambda g, m: ["-H", "Content-Type: application/pkcs7-mime", "--data-binary", "MA==", f"{g.url}/fullcmc"],
     501, "fullcmc is not supported"),
    ("oversized body",
     lambda g, m: [*_auth(g), "-H", PKCS10, "--data-binary", _file(g, "big.b64", b"A" * 70_000),
                   f"{g.url}/simpleenroll"],
     413, "request body too large"),
    ("oversized chunked body",
     lambda g, m: [*_auth(g), "-H", PKCS10, "-H", "Transfer-Encoding: chunked", "--data-binary",
                   _file(g, "big2.b64", b"A" * 70_000), f"{g.url}/simpleenroll"],
     413, "request body too large"),
    ("re-enroll with changed subject",
     _reenroll_with(GOOD_PAIR, _csr_for("someone-else", "neg.example")),
     403, "re-enrollment must keep the subject"),
    ("re-enroll with changed subjectAltName",
     _reenroll_with(GOOD_PAIR, _csr_for("neg-device", "other.example")),
     403, "re-enrollment must keep the subjectAltName"),
    ("re-enroll without a client certificate",
     lambda g, m: [*_auth(g), "-H", PKCS10, "--data-binary", f"@{m.renew_csr}", f"{g.url}/simplereenroll"],
     403, "simplereenroll needs the certificate being renewed"),
    ("re-enroll with a certificate from a foreign CA",
     _reenroll_with(lambda m: m.foreign, lambda g, m: f"@{m.renew_csr}"),
     403, "does not chain to a CA trusted by this alias"),
    ("re-enroll with an expired certificate",
     _reenroll_with(lambda m: m.expired, lambda g, m: f"@{m.renew_csr}"),
     403, "client certificate has expired"),
    ("re-enroll with a certificate lacking clientAuth",
     _reenroll_with(lambda m: m.no_client_auth, lambda g, m: f"@{m.renew_csr}"),
     403, "lacks the clientAuth extended key usage"),
]


@pytest.mark.parametrize("name, args, status, reason", CASES, ids=[c[0] for c in CASES])
def test_error_status_and_reason(gateway: Gateway, material: Material, name: str, args: Args,
                                 status: int, reason: str) -> None:
    res = gateway.curl(*args(gateway, material))
    assert res.status == status, res.body
    assert res.headers["content-type"] == "text/plain; charset=utf-8"
    assert reason.encode() in res.body
    assert len(res.body) < 300 and b"Traceback" not in res.body
    assert int(res.headers["content-length"]) == len(res.body)
    if status == 401:
        assert res.headers["www-authenticate"] == 'Basic realm="est-gateway est"'
    if status == 405:
        assert res.headers["allow"] in ("GET", "POST")


def test_re_enroll_with_a_revoked_certificate(gateway: Gateway, material: Material) -> None:
    work = gateway.work / "negative"
    key, csr = openssl.new_csr(work, "to-revoke", subject="/CN=revoke-me")
    res = gateway.curl(*gateway.enroll_args(csr))
    openssl.certs_from_pkcs7_b64(res.body, work / "to-revoke.pem")
    ok = gateway.curl("--cert", str(work / "to-revoke.pem"), "--key", str(key), "-H", PKCS10,
                      "--data-binary", f"@{csr}", f"{gateway.url}/simplereenroll")
    assert ok.status == 200
    assert gateway.cli("revoke", openssl.serial_of(work / "to-revoke.pem")).returncode == 0
    res = gateway.curl("--cert", str(work / "to-revoke.pem"), "--key", str(key), "-H", PKCS10,
                       "--data-binary", f"@{csr}", f"{gateway.url}/simplereenroll")
    assert res.status == 403 and res.body == b"client certificate is revoked\n"


def test_the_gateway_log_holds_no_secret_and_no_traceback(gateway: Gateway, material: Material) -> None:
    """Runs after the table above (same session): nothing sensitive reached the log."""
    log = gateway.process.output()
    assert gateway.password not in log
    assert "Traceback" not in log
    assert "PRIVATE KEY" not in log
