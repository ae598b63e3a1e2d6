"""EJBCA REST adapter against a scripted upstream over mutual TLS (tests/support/scripted_upstream.py):
request and response bodies use EJBCA's field names (EnrollCertificateRestRequest,
CertificateRestResponse, RevokeStatusRestResponse, ExceptionErrorRestResponse,
ExceptionInfoRestResponse; EJBCA CE 8.0 / Keyfactor ejbca-ce)."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.base import EnrollRequest, Issued, ReenrollRequest, Requester
from est_gateway.errors import BadRequest, Forbidden, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway_ejbca.alias import EjbcaTarget
from tests.support.ejbca_standin import (
    REST,
    EndEntity,
    StandinEjbca,
    StandinServer,
    UpstreamPKI,
    bc_dn,
    check_target,
    ejbca_target,
    make_backend,
    upstream_options,
)
from tests.support.pki import make_csr, p256_key
from tests.support.scripted_upstream import Recorded, ScriptedUpstream

#: paths on the scripted upstream (the backend's url is its https://127.0.0.1:<port> + BASE)
BASE = REST
ENROLL = f"{BASE}/v1/certificate/pkcs10enroll"
CERTREQ = f"{BASE}/v1/certificate/certificaterequest"
TARGET = EjbcaTarget(ca="EST Sub CA", certificate_profile="ENDUSER", end_entity_profile="EMPTY")



@pytest.fixture(scope="module")
def ca() -> StandinEjbca:
    return StandinEjbca()


@pytest.fixture
def backend(pki: UpstreamPKI, upstream: ScriptedUpstream, tmp_path: Path) -> Any:
    return make_backend("ejbca-rest", upstream_options(pki, upstream.base + BASE, retry_backoff_s=0.001), tmp_path)


def der64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def certificate_response(ca: StandinEjbca, csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    """A 201 ``CertificateRestResponse`` for ``csr``, signed by the stand-in CA."""
    cert = _sign(ca, csr)
    return {"certificate": der64(cert), "serial_number": f"{cert.serial_number:X}",
            "response_format": "DER", "certificate_chain": [der64(c) for c in ca.chain]}


def _sign(ca: StandinEjbca, csr: x509.CertificateSigningRequest) -> x509.Certificate:
    """Issue through the stand-in's CA model (one end entity per subject, reset to NEW)."""
    username = csr.subject.rfc4514_string()
    ca.end_entities[username] = EndEntity(username, "pw", csr.subject.rfc4514_string(), "EST Sub CA",
                                          subject=csr.subject)
    return ca.process(username, "pw", csr)


def enroll_request(csr: x509.CertificateSigningRequest,
                   target: EjbcaTarget = TARGET) -> EnrollRequest[EjbcaTarget]:
    return EnrollRequest(csr=csr, alias="est", target=target, requester=Requester(username="u"),
                         request_id="r1")


def body_of(call: Recorded) -> dict[str, Any]:
    return dict(json.loads(call.body))


# -- simpleenroll → pkcs10enroll ---------------------------------------------------------------

def test_enroll_posts_pkcs10enroll_with_ejbca_field_names(upstream: ScriptedUpstream,
                                                          backend: Any, ca: StandinEjbca) -> None:
    csr = make_csr(p256_key(), cn="device-7")
    upstream.post(ENROLL, json=certificate_response(ca, csr), status=201)
    issued = backend.enroll(enroll_request(csr))
    assert isinstance(issued, Issued)
    assert issued.certificate.public_key() == csr.public_key()
    assert [c.subject for c in issued.chain] == [c.subject for c in ca.chain]
    sent = body_of(upstream.calls[0])
    assert set(sent) == {"certificate_request", "certificate_profile_name", "end_entity_profile_name",
                         "certificate_authority_name", "username", "password", "include_chain"}
    assert sent["certificate_profile_name"] == "ENDUSER"
    assert sent["end_entity_profile_name"] == "EMPTY"
    assert sent["certificate_authority_name"] == "EST Sub CA"
    assert sent["username"] == "device-7"
    assert sent["include_chain"] is True
    assert x509.load_pem_x509_csr(sent["certificate_request"].encode()).subject == csr.subject
    assert len(sent["password"]) >= 20


def test_each_enrollment_gets_a_fresh_password_but_the_same_username(upstream: ScriptedUpstream,
                                                                     backend: Any, ca: StandinEjbca) -> None:
    csr = make_csr(p256_key(), cn="device-8")
    upstream.post(ENROLL, json=certificate_response(ca, csr), status=201)
    backend.enroll(enroll_request(csr))
    current = backend.enroll(enroll_request(csr))
    assert isinstance(current, Issued)
    backend.reenroll(ReenrollRequest(csr=csr, alias="est", target=TARGET, requester=Requester(),
                                     request_id="r2", current=current.certificate))
    sent = [body_of(c) for c in upstream.calls]
    assert len({s["password"] for s in sent}) == 3
    assert {s["username"] for s in sent} == {"device-8"}


@pytest.mark.parametrize(("extra", "attrs", "expected"), [
    ({"username_from": "UID"}, [("USER_ID", "u-42")], "u-42"),
    ({"username_from": "serialNumber", "username_prefix": "dev-"}, [("SERIAL_NUMBER", "SN1")], "dev-SN1"),
    ({"username_from": "DN", "username_suffix": "@est"}, [("ORGANIZATION_NAME", "Acme")], "CN=box,O=Acme@est"),
    ({"username_prefix": "est-", "username_suffix": "-x"}, [], "est-box-x"),
])
def test_username_derivation(upstream: ScriptedUpstream, backend: Any, ca: StandinEjbca, extra: dict[str, str],
                             attrs: list[tuple[str, str]], expected: str) -> None:
    target = ejbca_target("EST Sub CA", "ENDUSER", "EMPTY", **extra)
    assert check_target(backend, target) == []
    csr = make_csr(p256_key(), cn="box", attrs=attrs)
    upstream.post(ENROLL, json=certificate_response(ca, csr), status=201)
    backend.enroll(enroll_request(csr, target))
    assert body_of(upstream.calls[0])["username"] == expected


def test_subject_without_the_username_part_is_400(backend: Any) -> None:
    target = ejbca_target("X", "P", "E", username_from="UID")
    check_target(backend, target)
    with pytest.raises(BadRequest, match="no UID"):
        backend.enroll(enroll_request(make_csr(p256_key(), cn="box"), target))


#: EJBCA's answers of pkcs10enroll under an approval profile (CertificateRequestSessionBean
#: .addOrEditUser; ApprovalSessionBean.addApprovalRequest's approval.alreadyexists)
SINGLE_TRANSACTION = ("Single transaction enrollment request rejected since approvals are enabled for "
                      "this CA (-1652389506) or Certificate Profile (1).")
ALREADY_OPEN = "Approval request with approvalID -1131406397 already exists."


@pytest.mark.parametrize("message", [SINGLE_TRANSACTION, ALREADY_OPEN])
def test_enrollment_refused_for_approvals_is_a_502_naming_the_way_out(
        upstream: ScriptedUpstream, backend: Any, caplog: pytest.LogCaptureFixture, message: str) -> None:
    upstream.post(ENROLL, status=400, json={"error_code": 400, "error_message": message})
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError, match="SOAP adapter") as raised:
        backend.enroll(enroll_request(make_csr(p256_key())))
    assert raised.value.status == 502 and "client mode" in raised.value.detail
    assert "CA 'EST Sub CA', certificate profile 'ENDUSER' (end entity profile 'EMPTY')" in caplog.text
    assert len(upstream.calls) == 1


def test_a_202_from_enrollment_is_not_an_approval_wait(upstream: ScriptedUpstream, backend: Any) -> None:
    """pkcs10enroll never answers 202 (EJBCA wraps "waiting for approval" in a 400 refusal):
    a 202 is not EJBCA's answer to this call, so nothing waits on it."""
    upstream.post(ENROLL, status=202, json={"status_code": 202, "info_message": "Waiting for approval",
                                             "link": "/v1/approval/17"})
    with pytest.raises(UpstreamError, match="unexpected HTTP 202"):
        backend.enroll(enroll_request(make_csr(p256_key())))


#: pkcs10enroll's unknown names (EjbcaRestHelperSessionBean.convertToEndEntityInformation,
#: EndEntityProfileSessionBean.getEndEntityProfileId), all 400 on CE 8.0
UNKNOWN_NAMES = ['CA with name "EST Sub CA" doesn\'t exist',
                 'Certificate profile with name "ENDUSER" doesn\'t exist',
                 'End Entity Profile of name "EMPTY" was not found']


@pytest.mark.parametrize("message", UNKNOWN_NAMES)
def test_unknown_ca_or_profile_names_the_label_setting(upstream: ScriptedUpstream, backend: Any,
                                                       caplog: pytest.LogCaptureFixture, message: str) -> None:
    upstream.post(ENROLL, status=400, json={"error_code": 400, "error_message": message})
    with caplog.at_level(logging.ERROR), pytest.raises(BadRequest, match="does not know the CA or profile"):
        backend.enroll(enroll_request(make_csr(p256_key())))
    assert "check ca, certificate_profile and end_entity_profile" in caplog.text


@pytest.mark.parametrize(("status", "message", "error", "detail"), [
    (400, "Wrong number of CN fields", BadRequest, "Wrong number of CN fields"),
    (422, "Subject DN field 'OU' must exist.", BadRequest, "must exist"),
    (409, "CERTIFICATE_FOR_THIS_KEY_ALREADY_EXISTS_FOR_ANOTHER_USER", BadRequest, "ALREADY_EXISTS"),
    (404, "CA with name EST Sub CA doesn't exist.", BadRequest, "does not know the CA or profile"),
    (401, "Not authorized", UpstreamError, "refused the gateway's credentials"),
    (403, "Authorization Denied", UpstreamError, "refused the gateway's credentials"),
    (500, "Internal server error", UpstreamUnavailable, "HTTP 500"),
    (503, "CA is offline", UpstreamUnavailable, "HTTP 503"),
    (302, "", UpstreamError, "unexpected HTTP 302"),
])
def test_enroll_error_rows(upstream: ScriptedUpstream,
                           backend: Any, caplog: pytest.LogCaptureFixture, status: int, message: str,
                           error: type[Exception], detail: str) -> None:
    upstream.post(ENROLL, status=status, json={"error_code": status, "error_message": message})
    with caplog.at_level(logging.INFO), pytest.raises(error, match=detail) as raised:
        backend.enroll(enroll_request(make_csr(p256_key())))
    if status in (401, 403):
        assert "RA administrator" in caplog.text  # an operator-facing line
    if isinstance(raised.value, UpstreamUnavailable):
        assert raised.value.headers()["Retry-After"].isdigit()
    assert len(upstream.calls) == 1  # enrollment is never retried


@pytest.mark.parametrize(("body", "ctype"), [(b"<html>oops</html>", "text/html"), (b"[1, 2]", "application/json"),
                                            (b'{"certificate": "not base64!"}', "application/json")])
def test_unusable_success_bodies_are_502(upstream: ScriptedUpstream, backend: Any, body: bytes, ctype: str) -> None:
    upstream.post(ENROLL, status=201, body=body, content_type=ctype)
    with pytest.raises(UpstreamError):
        backend.enroll(enroll_request(make_csr(p256_key())))


def test_certificate_for_another_key_is_refused(upstream: ScriptedUpstream, backend: Any, ca: StandinEjbca) -> None:
    upstream.post(ENROLL, json=certificate_response(ca, make_csr(p256_key())), status=201)
    with pytest.raises(UpstreamError, match="another key"):
        backend.enroll(enroll_request(make_csr(p256_key())))


def test_timeout_is_504(upstream: ScriptedUpstream, pki: UpstreamPKI, tmp_path: Path, ca: StandinEjbca) -> None:
    csr = make_csr(p256_key())
    upstream.post(ENROLL, json=certificate_response(ca, csr), status=201, delay_s=3.0)
    backend = make_backend("ejbca-rest", upstream_options(pki, upstream.base + BASE, read_timeout_s=0.3), tmp_path)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="within 0.3 s") as raised:
        backend.enroll(enroll_request(csr))
    assert raised.value.status == 504
    assert time.monotonic() - started < 2.5  # the read timeout ended the wait, not the answer
    assert len(upstream.calls) == 1  # enrollment is never retried


# -- client mode → certificaterequest -----------------------------------------------------------

CLIENT = ejbca_target("EST Sub CA", "ENDUSER", "EMPTY", mode="client")


def test_client_mode_posts_certificaterequest_with_the_enrollment_code(upstream: ScriptedUpstream,
                                                                       backend: Any, ca: StandinEjbca) -> None:
    assert check_target(backend, CLIENT) == []
    csr = make_csr(p256_key(), cn="meter-1", challenge_password="one-time-code")
    upstream.post(CERTREQ, json=certificate_response(ca, csr), status=201)
    assert isinstance(backend.enroll(enroll_request(csr, CLIENT)), Issued)
    sent = body_of(upstream.calls[0])
    assert sent == {"certificate_request": sent["certificate_request"], "certificate_request_type": "PKCS10",
                    "username": "meter-1", "password": "one-time-code", "include_chain": True,
                    "certificate_authority_name": "EST Sub CA"}


#: EJBCA CE 8.0's answers of certificaterequest (CertificateRestResource.certificateRequest wraps
#: every EjbcaException as 400 + message; messages from ejbcaresources.en.properties and
#: SignSessionBean.createCertificateWS)
WRONG_USER = "Wrong username or password"
WRONG_PASSWORD = "Got request for user with invalid password: meter-1."
WRONG_STATUS = "Got request with status GENERATED (40), NEW, FAILED or INPROCESS required: meter-1."
#: the same in EJBCA 8.1 and later (authentication.wrongstatus reworded)
WRONG_STATUS_81 = "Got request with status GENERATED (40). Status NEW, FAILED or INPROCESS required: meter-1."
WRONG_TOKEN = ("Error: Wrong Token Type of user, must be 'USERGENERATED' for PKCS10/SPKAC/CRMF/CVC "
               "requests")


@pytest.mark.parametrize(("status", "message", "error", "detail"), [
    (400, WRONG_USER, Forbidden, "enrollment code"),
    (400, WRONG_PASSWORD, Forbidden, "enrollment code"),
    (400, WRONG_STATUS, Forbidden, "enrollment code"),
    (400, WRONG_STATUS_81, Forbidden, "enrollment code"),
    (400, WRONG_TOKEN, BadRequest, "Wrong Token Type"),
    (400, "CA with name EST Sub CA doesn't exist.", BadRequest, "does not know the CA or profile"),
    (404, "Could not find username meter-1", Forbidden, "no end entity is registered"),
    (403, "Administrator is not authorized to resource /ca/-1652389506.", UpstreamError,
     "refused the gateway's credentials"),
])
def test_client_mode_refusals(upstream: ScriptedUpstream,
                              backend: Any, status: int, message: str, error: type[Exception],
                              detail: str) -> None:
    check_target(backend, CLIENT)
    upstream.post(CERTREQ, status=status, json={"error_code": status, "error_message": message})
    with pytest.raises(error, match=detail):
        backend.enroll(enroll_request(make_csr(p256_key(), cn="meter-1", challenge_password="x"), CLIENT))


def test_renewal_username_comes_from_the_current_certificate_not_the_csr(upstream: ScriptedUpstream, backend: Any,
                                                                          ca: StandinEjbca) -> None:
    """A CSR whose Subject differs in case must not select or create another end entity."""
    current = _sign(ca, make_csr(p256_key(), cn="Device-9"))
    csr = make_csr(p256_key(), cn="device-9")
    upstream.post(ENROLL, json=certificate_response(ca, csr), status=201)
    backend.reenroll(ReenrollRequest(csr=csr, alias="est", target=TARGET, requester=Requester(),
                                     request_id="r", current=current))
    assert body_of(upstream.calls[0])["username"] == "Device-9"


def test_client_mode_without_challenge_password_is_400(backend: Any) -> None:
    check_target(backend, CLIENT)
    with pytest.raises(BadRequest, match="challengePassword"):
        backend.enroll(enroll_request(make_csr(p256_key()), CLIENT))


# -- revocation status, cacerts -----------------------------------------------------------------

@pytest.fixture(scope="module")
def client_cert(ca: StandinEjbca) -> x509.Certificate:
    return _sign(ca, make_csr(p256_key(), cn="client-1"))


def status_url(cert: x509.Certificate) -> str:
    return (f"{BASE}/v1/certificate/{quote(bc_dn(cert.issuer.rfc4514_string()), safe='')}/"
            f"{cert.serial_number:X}/revocationstatus")


def test_revocation_status_revoked(upstream: ScriptedUpstream, backend: Any, client_cert: x509.Certificate) -> None:
    upstream.get(status_url(client_cert), json={
        "issuer_dn": client_cert.issuer.rfc4514_string(), "serial_number": f"{client_cert.serial_number:X}",
        "revoked": True, "revocation_reason": "KEY_COMPROMISE", "revocation_date": "2024-05-01T10:00:00Z"})
    status = backend.revocation_status(client_cert, TARGET)
    assert status.known and status.revoked and status.reason == "KEY_COMPROMISE"
    assert status.revoked_at is not None and status.revoked_at.year == 2024
    assert "%2C" in upstream.calls[0].url  # the issuer DN is URL-encoded


@pytest.mark.parametrize("message", [
    # CE 8.0 CertificateRestResource.revocationStatus: NotFoundException, CADoesntExistsException
    "Certificate with serial number '{serial}' and issuer DN '{issuer}' was not found",
    "CA '{issuer}' does not exist.",
])
def test_revocation_status_unknown_certificate_or_ca(upstream: ScriptedUpstream, backend: Any,
                                                     client_cert: x509.Certificate, message: str) -> None:
    text = message.format(serial=f"{client_cert.serial_number:X}", issuer=client_cert.issuer.rfc4514_string())
    upstream.get(status_url(client_cert), status=404, json={"error_code": 404, "error_message": text})
    status = backend.revocation_status(client_cert, TARGET)
    assert (status.known, status.revoked) == (False, False)


def test_revocation_status_refused_as_malformed_is_the_gateways_problem(
        upstream: ScriptedUpstream, backend: Any, client_cert: x509.Certificate) -> None:
    """EJBCA's 400 for a serial that is not hex can only be the gateway's fault: 502, not 400."""
    upstream.get(status_url(client_cert), status=400, json={
        "error_code": 400, "error_message": "Invalid serial number format. Should be HEX encoded (optionally "
                                            "with '0x' prefix) e.g. '0x10782a83eef170d4'"})
    with pytest.raises(UpstreamError, match="revocation status query"):
        backend.revocation_status(client_cert, TARGET)


def test_idempotent_calls_are_retried_enrollment_is_not(upstream: ScriptedUpstream,
                                                        backend: Any, client_cert: x509.Certificate) -> None:
    url = status_url(client_cert)
    upstream.get(url, status=503, json={"error_code": 503, "error_message": "CA offline"})
    upstream.get(url, json={"issuer_dn": "x", "serial_number": "1", "revoked": False,
                             "revocation_reason": "NOT_REVOKED"})
    assert backend.revocation_status(client_cert, TARGET).known
    assert len(upstream.calls) == 2


def test_cacerts_resolve_the_ca_download_the_chain_and_cache_it(upstream: ScriptedUpstream,
                                                                backend: Any, ca: StandinEjbca) -> None:
    dn = ca.ca_cert.subject.rfc4514_string()
    upstream.get(f"{BASE}/v1/ca", json={"certificate_authorities": [
        {"id": 1, "name": "Other CA", "subject_dn": "CN=Other", "issuer_dn": "CN=Other",
         "expiration_date": "2030-01-01T00:00:00Z"},
        {"id": 2, "name": "EST Sub CA", "subject_dn": dn, "issuer_dn": "CN=Root",
         "expiration_date": "2030-01-01T00:00:00Z"}]})
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in ca.chain)
    upstream.get(f"{BASE}/v1/ca/{quote(dn, safe='')}/certificate/download", body=pem,
                  content_type="application/octet-stream")
    assert backend.ca_certs(TARGET) == ca.chain
    assert backend.ca_certs(TARGET) == ca.chain
    assert len(upstream.calls) == 2  # the second answer came from the cache
    clock = backend._chains._clock
    backend._chains._clock = lambda: clock() + 301  # past cacerts_cache_s
    assert backend.ca_certs(TARGET) == ca.chain
    assert len(upstream.calls) == 4


def test_cacerts_for_a_ca_the_upstream_does_not_list_is_502(upstream: ScriptedUpstream, backend: Any) -> None:
    upstream.get(f"{BASE}/v1/ca", json={"certificate_authorities": []})
    with pytest.raises(UpstreamError, match="no CA named"):
        backend.ca_certs(TARGET)


def test_cacerts_learnt_from_enrollment_where_ejbca_has_no_ca_download(upstream: ScriptedUpstream,
                                                             pki: UpstreamPKI, tmp_path: Path,
                                                             ca: StandinEjbca) -> None:
    backend = make_backend("ejbca-rest", upstream_options(pki, upstream.base + BASE, cacerts_source="enrollment"),
                           tmp_path)
    with pytest.raises(UpstreamUnavailable, match="ca_chain_file"):
        backend.ca_certs(TARGET)
    csr = make_csr(p256_key())
    upstream.post(ENROLL, json=certificate_response(ca, csr), status=201)
    backend.enroll(enroll_request(csr))
    assert backend.ca_certs(TARGET) == ca.chain


def test_cacerts_from_a_configured_chain_file(upstream: ScriptedUpstream,
                                              backend: Any, ca: StandinEjbca, tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in ca.chain))
    target = ejbca_target("EST Sub CA", "P", "E", ca_chain_file=str(chain))
    assert backend.ca_certs(target) == ca.chain
    assert upstream.calls == []  # no HTTP call


# -- against the stand-in: EJBCA's own strings --------------------------------------------------

@pytest.mark.parametrize("version", ["8.0", "8.1"])
def test_client_mode_wrong_status_from_ejbca_in_each_wording_is_403(pki: UpstreamPKI, tmp_path: Path,
                                                                    version: str) -> None:
    standin = StandinEjbca(version=version)
    standin.end_entities["meter-s"] = EndEntity("meter-s", "c0de", "CN=meter-s", "EST Sub CA", status=40)
    reworded = "Status NEW, FAILED or INPROCESS required" in standin.wrong_status(standin.end_entities["meter-s"])
    assert reworded == (version == "8.1")
    with StandinServer(standin, pki.server_context()) as server:
        backend = make_backend("ejbca-rest", upstream_options(pki, server.rest_url), tmp_path)
        check_target(backend, CLIENT)
        with pytest.raises(Forbidden, match="enrollment code"):
            backend.enroll(enroll_request(make_csr(p256_key(), cn="meter-s", challenge_password="c0de"), CLIENT))


def test_issuer_dns_go_in_ejbcas_notation(pki: UpstreamPKI, tmp_path: Path) -> None:
    """``revocationstatus`` names the CA as ``CertTools.stringToBCDNString`` writes it: ``SN=``
    for serialNumber (not ``2.5.4.5=``), EJBCA's order."""
    standin = StandinEjbca(ca_serial="0042")
    with StandinServer(standin, pki.server_context()) as server:
        backend = make_backend("ejbca-rest", upstream_options(pki, server.rest_url), tmp_path)
        issued = backend.enroll(enroll_request(make_csr(p256_key(), cn="dn-1")))
        assert isinstance(issued, Issued)
        assert backend.revocation_status(issued.certificate, TARGET).known
    [path] = [c["path"] for c in standin.calls if c["path"].endswith("/revocationstatus")]
    assert quote("CN=EST Sub CA,SN=0042,O=Stand-in EJBCA", safe="") in path
