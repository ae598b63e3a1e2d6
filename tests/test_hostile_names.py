"""Names a client controls: every GeneralName type (raw DER, so also x400Address and
ediPartyName, which cryptography cannot parse) in a client certificate, a chain certificate
and a CSR gets an allowed status and a reason, never a 500; names that would be issued
verbatim with control characters, a malformed country, URI or IP address, or the name of
the label's CA are refused with 400. In process against the real WSGI app."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtensionOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from est_gateway.backends.local import authority
from tests.conftest import EXTRA_ALIASES
from tests.support.der import encode_length
from tests.support.inproc import InProcessGateway, check_response, start
from tests.support.pki import csr_der, p256_key

PKCS10 = ("Content-Type", "application/pkcs10")
ENROLL = "/.well-known/est/simpleenroll"
REENROLL = "/.well-known/est/simplereenroll"
CERTAUTH = "/.well-known/est/certauth/simpleenroll"
KEYGEN = "/.well-known/est/serverkeygen"
NOW = dt.datetime.now(dt.UTC)

# cryptography warns (a UserWarning) about a country of another length, here and when the
# gateway parses such a CSR; in production that is Python's default filter, not an error
pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
settings.register_profile("names", max_examples=60, deadline=None, derandomize=True, database=None)


def tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(body)) + body


#: one well-formed instance of each GeneralName CHOICE (RFC 5280 §4.2.1.6)
GENERAL_NAMES = {
    "otherName": tlv(0xA0, tlv(0x06, b"\x2b\x06\x01\x04\x01\x82\x37\x14\x02\x03")
                     + tlv(0xA0, tlv(0x0C, b"user@example.org"))),
    "rfc822Name": tlv(0x81, b"device@example.org"),
    "dNSName": tlv(0x82, b"device.example.org"),
    "x400Address": tlv(0xA3, tlv(0x30, b"")),
    "directoryName": tlv(0xA4, tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, b"\x55\x04\x03") + tlv(0x0C, b"dir"))))),
    "ediPartyName": tlv(0xA5, tlv(0xA1, tlv(0x0C, b"party"))),
    "uniformResourceIdentifier": tlv(0x86, b"urn:example:device"),
    "iPAddress": tlv(0x87, bytes([192, 0, 2, 1])),
    "registeredID": tlv(0x88, b"\x2b\x06\x01\x04\x01"),
}
UNPARSEABLE = ("x400Address", "ediPartyName")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    yield start(tmp_path_factory.mktemp("names") / "est-local", EXTRA_ALIASES)


def _san(*names: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, tlv(0x30, b"".join(names)))


def _cert(gw: InProcessGateway, key: Any, cn: str, extension: x509.ExtensionType | None = None, *,
          ca: bool = False, issuer: tuple[Any, x509.Certificate] | None = None) -> x509.Certificate:
    """A certificate signed by the EST CA (or ``issuer``), with ``extension`` as given."""
    issuer_key, issuer_cert = issuer or (gw.ca_key, gw.ca_cert)
    builder = (x509.CertificateBuilder().subject_name(authority.name(cn)).issuer_name(issuer_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(days=1)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                                        critical=False)
    if extension is not None:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _csr_b64(extension: x509.ExtensionType | None = None, subject: x509.Name | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        subject if subject is not None else authority.name("names-device"))
    if extension is not None:
        builder = builder.add_extension(extension, critical=False)
    return base64.encodebytes(csr_der(builder.sign(p256_key(), hashes.SHA256())))


def _post(gw: InProcessGateway, path: str, body: bytes, *certs: x509.Certificate, auth: bool = True) -> Any:
    headers = [PKCS10, *gw.auth().items()] if auth else [PKCS10]
    response = gw.request("POST", path, headers=headers, body=body, tls=gw.tls_with(*certs) if certs else None)
    check_response(response, what=path, method="POST")
    return response


@pytest.mark.parametrize("kind", GENERAL_NAMES)
def test_every_general_name_in_a_client_certificate_gets_a_reason(gw: InProcessGateway, kind: str) -> None:
    """main: x400Address and ediPartyName in the client certificate → 500 on simpleenroll
    and simplereenroll (cryptography raises UnsupportedGeneralNameType, not a ValueError)."""
    cert = _cert(gw, p256_key(), f"san-{kind}", _san(GENERAL_NAMES[kind]))
    for path, auth in ((ENROLL, True), (ENROLL, False), (CERTAUTH, True), (REENROLL, False)):
        response = _post(gw, path, _csr_b64(), cert, auth=auth)
        if kind in UNPARSEABLE and path != ENROLL:
            assert response.status_code in (401, 403)
            assert b"client certificate has a name of an unsupported type" in response.get_data()


@pytest.mark.parametrize("kind", GENERAL_NAMES)
def test_every_general_name_in_a_chain_certificate_gets_a_reason(gw: InProcessGateway, kind: str) -> None:
    ca_key = p256_key()
    intermediate = _cert(gw, ca_key, f"chain-{kind}", _san(GENERAL_NAMES[kind]), ca=True)
    leaf = _cert(gw, p256_key(), f"under-{kind}", issuer=(ca_key, intermediate))
    for path, auth in ((ENROLL, True), (CERTAUTH, True), (REENROLL, False)):
        _post(gw, path, _csr_b64(), leaf, intermediate, auth=auth)


@pytest.mark.parametrize("kind", GENERAL_NAMES)
def test_every_general_name_in_a_csr_gets_a_reason(gw: InProcessGateway, kind: str) -> None:
    """main: x400Address and ediPartyName in a CSR → 500 on simpleenroll and serverkeygen."""
    for path in (ENROLL, KEYGEN):
        response = _post(gw, path, _csr_b64(_san(GENERAL_NAMES[kind])))
        if kind in UNPARSEABLE:
            assert response.status_code == 400
            assert response.get_data() == (b"CSR extension request is malformed: a name of an unsupported "
                                           b"type (x400Address or ediPartyName)\n")


@pytest.mark.parametrize("extension_oid", [ExtensionOID.ISSUER_ALTERNATIVE_NAME, ExtensionOID.NAME_CONSTRAINTS,
                                           ExtensionOID.AUTHORITY_INFORMATION_ACCESS])
def test_an_unsupported_name_in_any_extension_gets_a_reason(gw: InProcessGateway,
                                                            extension_oid: x509.ObjectIdentifier) -> None:
    """Not only subjectAltName: any extension holding a GeneralName is parsed on first access."""
    if extension_oid == ExtensionOID.NAME_CONSTRAINTS:
        raw = tlv(0x30, tlv(0xA0, tlv(0x30, GENERAL_NAMES["x400Address"])))
    elif extension_oid == ExtensionOID.AUTHORITY_INFORMATION_ACCESS:
        raw = tlv(0x30, tlv(0x30, tlv(0x06, b"\x2b\x06\x01\x05\x05\x07\x30\x02") + GENERAL_NAMES["ediPartyName"]))
    else:
        raw = tlv(0x30, GENERAL_NAMES["x400Address"])
    extension = x509.UnrecognizedExtension(extension_oid, raw)
    cert = _cert(gw, p256_key(), "other-extension", extension)
    assert _post(gw, REENROLL, _csr_b64(), cert, auth=False).status_code == 403
    assert _post(gw, ENROLL, _csr_b64(extension)).status_code == 400


GENERAL_NAME_TAGS = st.sampled_from([0x80 | n for n in range(9)] + [0xA0 | n for n in range(9)])


@settings(settings.get_profile("names"))
@given(names=st.lists(st.tuples(GENERAL_NAME_TAGS, st.binary(max_size=40)), min_size=1, max_size=4),
       where=st.sampled_from(["csr-enroll", "csr-keygen", "cert-enroll", "cert-reenroll", "chain"]))
def test_fuzzed_general_names_never_get_a_500(gw: InProcessGateway, names: list[tuple[int, bytes]],
                                              where: str) -> None:
    raw = [tlv(tag, body) for tag, body in names]
    raw.append(GENERAL_NAMES["x400Address"] if len(raw) % 2 else GENERAL_NAMES["ediPartyName"])
    extension = _san(*raw)
    if where.startswith("csr"):
        _post(gw, ENROLL if where == "csr-enroll" else KEYGEN, _csr_b64(extension))
    elif where == "chain":
        ca_key = p256_key()
        intermediate = _cert(gw, ca_key, "fuzz-chain", extension, ca=True)
        _post(gw, CERTAUTH, _csr_b64(), _cert(gw, p256_key(), "fuzz-leaf", issuer=(ca_key, intermediate)),
              intermediate)
    else:
        _post(gw, ENROLL if where == "cert-enroll" else REENROLL, _csr_b64(),
              _cert(gw, p256_key(), "fuzz-cert", extension), auth=where == "cert-enroll")


# -- names issued verbatim -----------------------------------------------------------------

def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    """As a client can send them: UTF8String values, unchecked by cryptography."""
    return x509.Name([x509.NameAttribute(oid, value, _type=_ASN1Type.UTF8String, _validate=False)
                      for oid, value in attrs])


def _refused(gw: InProcessGateway, body: bytes, reason: bytes) -> None:
    for path in (ENROLL, KEYGEN):
        response = _post(gw, path, body)
        assert response.status_code == 400, response.get_data()
        assert reason in response.get_data()


@pytest.mark.parametrize("value", ["dev\x00ice", "dev\r\nice", "dev\nice", "dev\tice", "\x7f", "dev\x85ice",
                                   "dev\u2028ice"])
@pytest.mark.parametrize("oid", [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.SERIAL_NUMBER])
def test_control_characters_in_a_subject_are_refused(gw: InProcessGateway, value: str,
                                                     oid: x509.ObjectIdentifier) -> None:
    """main issued a CN with NUL, CR or LF verbatim."""
    _refused(gw, _csr_b64(subject=_name((NameOID.COMMON_NAME, "ok"), (oid, value))), b"holds a control character")


@pytest.mark.parametrize("name", [x509.RFC822Name("dev\x00@example.org"), x509.RFC822Name("dev@exa\r\nmple.org"),
                                  x509.UniformResourceIdentifier("urn:dev\x00ice"),
                                  x509.UniformResourceIdentifier("https://a.example/\nSet-Cookie: x"),
                                  x509.DirectoryName(_name((NameOID.COMMON_NAME, "dir\x00")))],
                         ids=["email-nul", "email-crlf", "uri-nul", "uri-lf", "dirname-nul"])
def test_control_characters_in_a_san_are_refused(gw: InProcessGateway, name: x509.GeneralName) -> None:
    _refused(gw, _csr_b64(x509.SubjectAlternativeName([name])), b"holds a control character")


@pytest.mark.parametrize("raw, reason", [
    (tlv(0x86, b""), b"is not a valid URI"),
    (tlv(0x86, b"no-scheme"), b"is not a valid URI"),
    (tlv(0x81, b""), b"is not a valid address"),
    (tlv(0x87, bytes(16) + b"\xff" * 8 + bytes(8)), b"must be 4 (IPv4) or 16 (IPv6) bytes"),
    (tlv(0x87, bytes(range(32))), b"malformed"),
    (tlv(0x87, bytes(5)), b"malformed"),
    (tlv(0x87, bytes([10, 0, 0, 0, 255, 0, 0, 0])), b"must be 4 (IPv4) or 16 (IPv6) bytes"),
], ids=["empty-uri", "uri-without-scheme", "empty-email", "ip-32-bytes", "ip-32-bytes-no-mask", "ip-5-bytes",
        "ip-8-bytes"])
def test_malformed_uri_email_and_ip_sans_are_refused(gw: InProcessGateway, raw: bytes, reason: bytes) -> None:
    """main issued an empty URI and a 32-byte IP SAN."""
    _refused(gw, _csr_b64(_san(raw)), reason)


@pytest.mark.parametrize("country", ["ZZZ", "U", "1A", "", "Ü1"])
def test_a_country_that_is_not_two_letters_is_refused(gw: InProcessGateway, country: str) -> None:
    """main issued C=ZZZ."""
    _refused(gw, _csr_b64(subject=_name((NameOID.COMMON_NAME, "dev"), (NameOID.COUNTRY_NAME, country))),
             b"is not a two-letter country code")


def test_a_subject_named_like_the_label_ca_is_refused(gw: InProcessGateway) -> None:
    """main issued a certificate whose subject is the CA's own."""
    ca_name = gw.ca_cert.subject
    _refused(gw, _csr_b64(subject=ca_name), b"CSR subject is the name of a CA of this EST label")
    loose = x509.Name([x509.NameAttribute(a.oid, str(a.value).upper()) for a in ca_name])
    _refused(gw, _csr_b64(subject=loose), b"CSR subject is the name of a CA of this EST label")


def test_good_names_are_still_issued(gw: InProcessGateway) -> None:
    sans = x509.SubjectAlternativeName([x509.RFC822Name("dev@example.org"), x509.DNSName("dev.example.org"),
                                        x509.UniformResourceIdentifier("urn:example:dev"),
                                        x509.IPAddress(ipaddress.ip_address("2001:db8::1"))])
    subject = _name((NameOID.COMMON_NAME, "Gerät 7 – Straße"), (NameOID.COUNTRY_NAME, "DE"))
    assert _post(gw, ENROLL, _csr_b64(sans, subject)).status_code == 200


