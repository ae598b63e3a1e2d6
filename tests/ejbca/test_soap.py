"""EJBCA SOAP adapter: zeep builds real EjbcaWS envelopes from the bundled WSDL; `responses`
answers with real SOAP responses and faults (document/literal, arg0..argN, double base64)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from est_gateway.backends.base import EnrollRequest, Issued, Pending, Requester
from est_gateway.errors import BadRequest, Forbidden, UpstreamError, UpstreamUnavailable
from est_gateway_ejbca.alias import EjbcaTarget
from tests.support.ejbca_standin import (
    NS,
    SOAP_ENV,
    EndEntity,
    Fault,
    StandinEjbca,
    UpstreamPKI,
    _fault_envelope,
    check_target,
    ejbca_target,
    make_backend,
    upstream_options,
)
from tests.support.pki import make_csr, p256_key

URL = "https://ejbca.test:8443/ejbca/ejbcaws/ejbcaws"
TARGET = EjbcaTarget(ca="EST Sub CA", certificate_profile="ENDUSER", end_entity_profile="EMPTY")



@pytest.fixture
def ca() -> StandinEjbca:
    return StandinEjbca()


@pytest.fixture
def backend(pki: UpstreamPKI, tmp_path: Path) -> Any:
    return make_backend("ejbca-soap", upstream_options(pki, URL, retry_backoff_s=0.001), tmp_path)


def request_for(csr: x509.CertificateSigningRequest,
                target: EjbcaTarget = TARGET) -> EnrollRequest[EjbcaTarget]:
    return EnrollRequest(csr=csr, alias="est", target=target, requester=Requester(), request_id="r")


def sent(call: Any) -> etree._Element:
    """The operation element of a SOAP request zeep sent."""
    envelope = etree.fromstring(call.request.body)
    return envelope.find(f"{{{SOAP_ENV}}}Body")[0]


def answer_with(ca: StandinEjbca):  # type: ignore[no-untyped-def]
    """A `responses` callback that lets the stand-in's EjbcaWS model answer."""
    def callback(request: Any) -> tuple[int, dict[str, str], bytes]:
        status, ctype, body = ca.soap(request.body)
        return status, {"Content-Type": ctype}, body
    return callback


@responses.activate
def test_enroll_is_edituser_then_pkcs10request(backend: Any, ca: StandinEjbca) -> None:
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    csr = make_csr(p256_key(), cn="device-1", sans=[x509.DNSName("device-1.example")])
    issued = backend.enroll(request_for(csr))
    assert isinstance(issued, Issued)
    assert issued.certificate.public_key() == csr.public_key()
    ops = [etree.QName(sent(c)).localname for c in responses.calls]
    assert ops == ["editUser", "pkcs10Request", "getLastCAChain"]
    assert all(etree.QName(sent(c)).namespace == NS for c in responses.calls)
    user = {child.tag: child.text for child in sent(responses.calls[0]).find("arg0")}
    assert user["username"] == "device-1"
    assert user["clearPwd"] == "false"
    assert user["subjectDN"] == "CN=device-1"
    assert user["subjectAltName"] == "dNSName=device-1.example"
    assert user["caName"] == "EST Sub CA"
    assert user["endEntityProfileName"] == "EMPTY"
    assert user["certificateProfileName"] == "ENDUSER"
    assert user["status"] == "10"
    assert user["tokenType"] == "USERGENERATED"
    pkcs10 = {child.tag: child.text for child in sent(responses.calls[1])}
    assert pkcs10["arg0"] == "device-1" and pkcs10["arg1"] == user["password"]
    assert x509.load_der_x509_csr(base64.b64decode(pkcs10["arg2"])).subject == csr.subject
    assert pkcs10.get("arg3") is None and pkcs10["arg4"] == "CERTIFICATE"
    assert [c.subject for c in issued.chain] == [c.subject for c in ca.chain]


@responses.activate
def test_double_base64_certificate_data(backend: Any, ca: StandinEjbca) -> None:
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    chain = backend.ca_certs(TARGET)
    assert chain == ca.chain
    body = responses.calls[0].response.content
    data = etree.fromstring(body).findtext(".//certificateData")
    assert base64.b64decode(base64.b64decode(data)) == ca.ca_cert.public_bytes(Encoding.DER)


@responses.activate
def test_revocation_status_not_revoked_revoked_and_unknown(backend: Any, ca: StandinEjbca) -> None:
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    issued = backend.enroll(request_for(make_csr(p256_key(), cn="rev-1")))
    cert = issued.certificate
    assert backend.revocation_status(cert, TARGET).revoked is False
    ca.revoke(cert, reason=1)
    status = backend.revocation_status(cert, TARGET)
    assert (status.known, status.revoked, status.reason) == (True, True, "KEY_COMPROMISE")
    assert status.revoked_at is not None
    args = {c.tag: c.text for c in sent(responses.calls[-1])}
    assert args == {"arg0": ca.ca_dn, "arg1": f"{cert.serial_number:X}"}  # EJBCA's DN notation
    foreign = StandinEjbca().ca_cert
    assert backend.revocation_status(foreign, TARGET).known is False


@responses.activate
def test_waiting_for_approval_is_pending(backend: Any, ca: StandinEjbca) -> None:
    ca.approval = True
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    outcome = backend.enroll(request_for(make_csr(p256_key())))
    assert outcome == Pending(retry_after=300, reference="approval request 1000")


@pytest.mark.parametrize(("bean", "code", "error", "detail"), [
    ("UserDoesntFullfillEndEntityProfile", "", BadRequest, "Subject DN"),
    ("CADoesntExistsException", "", BadRequest, "does not know the CA or profile"),
    ("EjbcaException", "EE_PROFILE_NOT_EXISTS", BadRequest, "does not know the CA or profile"),
    ("EjbcaException", "CERTIFICATE_WITH_THIS_SUBJECTDN_ALREADY_EXISTS_FOR_ANOTHER_USER", BadRequest, "refused"),
    ("EjbcaException", "CA_OFFLINE", UpstreamUnavailable, "offline"),
    ("EjbcaException", "INTERNAL_ERROR", UpstreamError, "failed to process"),
    ("EjbcaException", "LOGIN_ERROR", Forbidden, "Subject DN"),
    ("CesecoreException", "NOT_SPECIFIED", BadRequest, "refused"),
    ("ApprovalException", "", BadRequest, "refused"),
    ("AuthorizationDeniedException", "", UpstreamError, "refused the gateway's credentials"),
    ("NotFoundException", "", BadRequest, "does not know"),
])
@responses.activate
def test_fault_rows(backend: Any, bean: str, code: str, error: type[Exception], detail: str) -> None:
    fault = _fault_envelope(Fault(500, "Subject DN field missing", bean, code))
    responses.post(URL, status=500, body=fault, content_type="text/xml; charset=utf-8")
    with pytest.raises(error, match=detail):
        backend.enroll(request_for(make_csr(p256_key())))


@responses.activate
def test_client_mode_is_pkcs10request_alone(backend: Any, ca: StandinEjbca) -> None:
    target = ejbca_target("EST Sub CA", "ENDUSER", "EMPTY", mode="client")
    assert check_target(backend, target) == []
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    with pytest.raises(Forbidden, match="no end entity is registered"):
        backend.enroll(request_for(make_csr(p256_key(), cn="meter-9", challenge_password="c0de"), target))
    args = {c.tag: c.text for c in sent(responses.calls[0])}
    assert (args["arg0"], args["arg1"]) == ("meter-9", "c0de")
    ca.end_entities["meter-9"] = EndEntity("meter-9", "other", "CN=meter-9", "EST Sub CA")
    with pytest.raises(Forbidden, match="enrollment code"):
        backend.enroll(request_for(make_csr(p256_key(), cn="meter-9", challenge_password="c0de"), target))
    ca.end_entities["meter-9"].password = "c0de"
    assert isinstance(backend.enroll(request_for(make_csr(p256_key(), cn="meter-9",
                                                          challenge_password="c0de"), target)), Issued)


@pytest.mark.parametrize(("status", "body", "error"), [
    (503, b"", UpstreamUnavailable),
    (500, b"<html><body>Internal Server Error</body></html>", UpstreamUnavailable),
    (403, b"Forbidden", UpstreamError),
    (200, b"not xml at all", UpstreamError),
    (200, b"<notsoap/>", UpstreamError),
])
@responses.activate
def test_http_level_failures(backend: Any, status: int, body: bytes, error: type[Exception]) -> None:
    responses.post(URL, status=status, body=body, content_type="text/html")
    with pytest.raises(error):
        backend.enroll(request_for(make_csr(p256_key())))
    assert len(responses.calls) == 1  # editUser is not idempotent: no retry


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@responses.activate
def test_a_redirect_is_refused_not_followed(backend: Any, ca: StandinEjbca, caplog: pytest.LogCaptureFixture,
                                            status: int) -> None:
    """As for REST (tests/ejbca/test_upstream_http.py): editUser carries the end entity's
    password, and requests would repeat it (307/308) or turn it into a GET (301-303) to
    wherever the Location points."""
    elsewhere = "https://elsewhere.test/ejbca/ejbcaws/ejbcaws"
    responses.post(URL, status=status, headers={"Location": elsewhere})
    responses.add_callback(responses.POST, elsewhere, callback=answer_with(ca))
    responses.add_callback(responses.GET, elsewhere, callback=answer_with(ca))
    with caplog.at_level("ERROR"), pytest.raises(UpstreamError, match=f"unexpected HTTP {status} .*not followed"):
        backend.enroll(request_for(make_csr(p256_key())))
    assert [call.request.url for call in responses.calls] == [URL]
    assert elsewhere in caplog.text     # the operator learns where it pointed


@responses.activate
def test_idempotent_operations_are_retried(backend: Any, ca: StandinEjbca) -> None:
    responses.post(URL, status=503, body=b"")
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    assert backend.ca_certs(TARGET) == ca.chain
    assert len(responses.calls) == 2


def test_unsupported_san_type_is_400(backend: Any) -> None:
    csr = make_csr(p256_key(), sans=[x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4"), b"\x05\x00")])
    with pytest.raises(BadRequest, match="subjectAltName"):
        backend.enroll(request_for(csr))


# -- subjectDN / subjectAltName in EJBCA's notation (DnComponents, CeSecoreNameStyle) ----------

def _attrs(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def _csr_for(subject: x509.Name, sans: list[x509.GeneralName] | None = None) -> x509.CertificateSigningRequest:
    from cryptography.hazmat.primitives import hashes
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(p256_key(), hashes.SHA256())


@responses.activate
def test_subject_dn_uses_ejbcas_names_and_order_and_the_certificate_keeps_the_subject(
        backend: Any, ca: StandinEjbca) -> None:
    from cryptography.x509.oid import NameOID as N
    subject = _attrs((N.COUNTRY_NAME, "SE"), (N.DOMAIN_COMPONENT, "org"), (N.DOMAIN_COMPONENT, "example"),
                     (N.ORGANIZATION_NAME, "Acme"), (N.ORGANIZATIONAL_UNIT_NAME, "Meters"),
                     (N.TITLE, "Sensor"), (N.SURNAME, "Doe"), (N.INITIALS, "JD"), (N.GIVEN_NAME, "Jane"),
                     (N.SERIAL_NUMBER, "SN-0042"), (N.COMMON_NAME, "meter-42"), (N.USER_ID, "u42"),
                     (N.EMAIL_ADDRESS, "meter-42@example.org"))
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    issued = backend.enroll(request_for(_csr_for(subject)))
    user = {child.tag: child.text for child in sent(responses.calls[0]).find("arg0")}
    assert user["subjectDN"] == ("E=meter-42@example.org,UID=u42,CN=meter-42,SN=SN-0042,GIVENNAME=Jane,"
                                 "INITIALS=JD,SURNAME=Doe,T=Sensor,OU=Meters,O=Acme,DC=example,DC=org,C=SE")
    assert isinstance(issued, Issued)
    assert sorted((a.oid.dotted_string, a.value) for a in issued.certificate.subject) == \
        sorted((a.oid.dotted_string, a.value) for a in subject)


@pytest.mark.parametrize(("value", "written"), [
    ("a,b+c", "a\\,b\\+c"),
    ('say "hi"; x=1 <y>', 'say \\"hi\\"\\; x\\=1 \\<y\\>'),
    ("#hash", "\\#hash"),
    ("back\\slash", "back\\\\slash"),
])
@responses.activate
def test_dn_values_are_escaped_the_way_ejbcas_tokenizer_reads_them(backend: Any, ca: StandinEjbca,
                                                                   value: str, written: str) -> None:
    from cryptography.x509.oid import NameOID as N
    subject = _attrs((N.ORGANIZATION_NAME, "Acme"), (N.COMMON_NAME, value))
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    issued = backend.enroll(request_for(_csr_for(subject)))
    user = {child.tag: child.text for child in sent(responses.calls[0]).find("arg0")}
    assert user["subjectDN"] == f"CN={written},O=Acme"
    assert isinstance(issued, Issued)
    assert issued.certificate.subject.get_attributes_for_oid(N.COMMON_NAME)[0].value == value


@responses.activate
def test_subject_alt_names_in_ejbcas_keywords(backend: Any, ca: StandinEjbca) -> None:
    import ipaddress
    sans: list[x509.GeneralName] = [
        x509.DNSName("meter.example.org"), x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::7")), x509.RFC822Name("ops@example.org"),
        x509.UniformResourceIdentifier("urn:dev:ops:a,b"), x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4"))]
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    issued = backend.enroll(request_for(make_csr(p256_key(), cn="meter-san", sans=sans)))
    user = {child.tag: child.text for child in sent(responses.calls[0]).find("arg0")}
    assert user["subjectAltName"] == ("dNSName=meter.example.org, iPAddress=192.0.2.7, iPAddress=2001:db8::7, "
                                      "rfc822name=ops@example.org, uniformResourceIdentifier=urn:dev:ops:a\\,b, "
                                      "registeredID=1.2.3.4")
    assert isinstance(issued, Issued)
    got = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(got) == set(sans)


@pytest.mark.parametrize(("subject", "detail"), [
    (x509.Name([x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4.5"), "x"),
                x509.NameAttribute(x509.NameOID.COMMON_NAME, "a")]), "1.2.3.4.5"),
    (x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, " padded ")]), "leading or trailing spaces"),
    (x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "a"), x509.NameAttribute(x509.NameOID.USER_ID, "b")])]),
     "multi-valued"),
])
def test_what_ejbca_cannot_express_is_400(backend: Any, subject: x509.Name, detail: str) -> None:
    with pytest.raises(BadRequest, match=detail):
        backend.enroll(request_for(_csr_for(subject)))


@pytest.mark.parametrize(("version", "wording"), [
    ("8.0", "Got request with status GENERATED (40), NEW, FAILED or INPROCESS required: meter-s."),
    ("8.1", "Got request with status GENERATED (40). Status NEW, FAILED or INPROCESS required: meter-s."),
])
@responses.activate
def test_client_mode_wrong_status_in_each_wording_is_403(backend: Any, version: str, wording: str) -> None:
    """``USER_WRONG_STATUS`` (AuthStatusException, authentication.wrongstatus) in 8.0's and in
    8.1's wording: the device's problem either way."""
    ca = StandinEjbca(version=version)
    target = ejbca_target("EST Sub CA", "ENDUSER", "EMPTY", mode="client")
    check_target(backend, target)
    ca.end_entities["meter-s"] = EndEntity("meter-s", "c0de", "CN=meter-s", "EST Sub CA", status=40)
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    with pytest.raises(Forbidden, match="enrollment code"):
        backend.enroll(request_for(make_csr(p256_key(), cn="meter-s", challenge_password="c0de"), target))
    fault = etree.fromstring(responses.calls[-1].response.content)
    assert fault.findtext(".//internalErrorCode") == "USER_WRONG_STATUS"
    assert fault.findtext(".//message") == wording


@responses.activate
def test_issuer_dns_go_in_ejbcas_notation(backend: Any) -> None:
    """``checkRevokationStatus`` names the CA as ``CertTools.stringToBCDNString`` writes it:
    ``SN=`` for serialNumber (not ``2.5.4.5=``), EJBCA's order."""
    ca = StandinEjbca(ca_serial="0042")
    responses.add_callback(responses.POST, URL, callback=answer_with(ca))
    issued = backend.enroll(request_for(make_csr(p256_key(), cn="dn-1")))
    assert backend.revocation_status(issued.certificate, TARGET).known
    args = {c.tag: c.text for c in sent(responses.calls[-1])}
    assert args["arg0"] == "CN=EST Sub CA,SN=0042,O=Stand-in EJBCA"
    ca.issued.clear()  # EJBCA has no record of it: checkRevokationStatus returns null
    assert backend.revocation_status(issued.certificate, TARGET).known is False
