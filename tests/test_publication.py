"""The publication app (Flask test client): each local CA's CRL and OCSP answers, built
from the record; malformed requests get OCSP's malformedRequest, never a 500."""

from __future__ import annotations

import base64
import datetime as dt
import os
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from flask.testing import FlaskClient

from est_gateway.backends.local.options import LocalTarget
from est_gateway.backends.local.store import CertificateStore
from est_gateway.publication.app import create_publication_app
from est_gateway.publication.crl import crl_number
from tests.support import openssl
from tests.support.publication import CRL_PATH, OCSP_PATH, Published, SetClock, publishing_config, started


@pytest.fixture()
def clock() -> SetClock:
    return SetClock()


@pytest.fixture()
def published(tmp_path: Path) -> Published:
    return started(publishing_config(tmp_path))


@pytest.fixture()
def client(published: Published, clock: SetClock) -> FlaskClient:
    return create_publication_app(published.config, clock=clock).test_client()


def fetch_crl(client: FlaskClient) -> x509.CertificateRevocationList:
    answer = client.get(CRL_PATH)
    assert answer.status_code == 200 and answer.content_type == "application/pkix-crl"
    return x509.load_der_x509_crl(answer.data)


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                 algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def post_ocsp(client: FlaskClient, body: bytes) -> ocsp.OCSPResponse:
    answer = client.post(OCSP_PATH, data=body, content_type="application/ocsp-request")
    assert answer.status_code == 200 and answer.content_type == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(answer.data)


def test_issued_certificates_name_the_crl_and_the_ocsp_responder(published: Published) -> None:
    cert = published.enroll()
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for p in points for n in p.full_name or ()] == [f"http://127.0.0.1:8080{CRL_PATH}"]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.OCSP, f"http://127.0.0.1:8080{OCSP_PATH}")]


def test_without_urls_certificates_name_neither(tmp_path: Path) -> None:
    config = publishing_config(tmp_path, ca={"crl_url": None, "ocsp_url": None})
    cert = started(config).enroll()
    for kind in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(kind)


def test_the_crl_is_signed_by_the_ca_and_lists_what_is_revoked(published: Published, client: FlaskClient,
                                                                clock: SetClock) -> None:
    good, bad = published.enroll("good"), published.enroll("bad")
    first = fetch_crl(client)
    assert first.is_signature_valid(published.issuer.public_key())  # type: ignore[arg-type]
    assert first.issuer == published.issuer.subject and len(first) == 0
    assert first.next_update_utc is not None and first.next_update_utc > clock.now + dt.timedelta(hours=23)
    published.revoke(bad, "keyCompromise")
    second = fetch_crl(client)
    assert crl_number(second) > crl_number(first)
    entry = second.get_revoked_certificate_by_serial_number(bad.serial_number)
    assert entry is not None and second.get_revoked_certificate_by_serial_number(good.serial_number) is None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    aki = second.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == published.issuer.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest


def test_an_unchanged_crl_is_served_as_it_is_until_half_its_validity(published: Published, client: FlaskClient,
                                                                       clock: SetClock) -> None:
    first = client.get(CRL_PATH).data
    clock.advance(hours=11)
    assert client.get(CRL_PATH).data == first
    clock.advance(hours=2)      # past half of 24 h: a new CRL, valid 24 h from now
    renewed = x509.load_der_x509_crl(client.get(CRL_PATH).data)
    assert crl_number(renewed) > crl_number(x509.load_der_x509_crl(first))
    assert renewed.next_update_utc == clock.now + dt.timedelta(hours=24)


def test_every_process_serves_the_crl_another_made(published: Published, clock: SetClock) -> None:
    """Two apps stand for two worker processes: what one made the other serves, and the
    revocation the CLI records reaches both with one new CRL number."""
    one = create_publication_app(published.config, clock=clock).test_client()
    other = create_publication_app(published.config, clock=clock).test_client()
    assert one.get(CRL_PATH).data == other.get(CRL_PATH).data
    published.revoke(published.enroll())
    after = one.get(CRL_PATH).data
    assert other.get(CRL_PATH).data == after and len(x509.load_der_x509_crl(after)) == 1


def test_processes_asking_at_once_after_a_revocation_make_one_crl(published: Published, clock: SetClock) -> None:
    """Threads of two apps (each with its own lock file descriptor, as two processes have)
    meet a revocation together: one makes the next CRL, every thread serves it."""
    apps = [create_publication_app(published.config, clock=clock).test_client() for _ in range(2)]
    first = x509.load_der_x509_crl(apps[0].get(CRL_PATH).data)
    published.revoke(published.enroll())
    start = threading.Barrier(8)
    seen: list[bytes] = []

    def fetch(client: FlaskClient) -> None:
        start.wait(timeout=30)
        seen.append(client.get(CRL_PATH).data)

    threads = [threading.Thread(target=fetch, args=(apps[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(seen) == 8 and len(set(seen)) == 1
    assert crl_number(x509.load_der_x509_crl(seen[0])) == max(crl_number(first) + 1, int(clock.now.timestamp()))


def test_ocsp_says_good_then_revoked_and_echoes_the_nonce(published: Published, client: FlaskClient) -> None:
    cert = published.enroll()
    nonce = os.urandom(16)
    response = post_ocsp(client, ocsp_request(cert, published.issuer, nonce=nonce))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD and response.serial_number == cert.serial_number
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    published.revoke(cert, "superseded")
    revoked = post_ocsp(client, ocsp_request(cert, published.issuer, algorithm=hashes.SHA256()))
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.superseded
    with pytest.raises(x509.ExtensionNotFound):
        revoked.extensions.get_extension_for_class(x509.OCSPNonce)


def test_ocsp_is_signed_by_a_delegated_responder(published: Published, client: FlaskClient) -> None:
    response = post_ocsp(client, ocsp_request(published.enroll(), published.issuer))
    (responder,) = response.certificates
    responder.verify_directly_issued_by(published.issuer)
    assert list(responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(responder.public_key()).digest
    # like everything the CA signs, the responder certificate is on record; its key is private
    assert published.backend.store.get(format(responder.serial_number, "x")) is not None
    assert (published.backend.ca_folder("EST CA") / "ocsp-responder.pem").stat().st_mode & 0o777 == 0o600


def test_ocsp_may_be_signed_by_the_ca_itself(tmp_path: Path, clock: SetClock) -> None:
    published = started(publishing_config(tmp_path, ocsp_signer="ca"))
    client = create_publication_app(published.config, clock=clock).test_client()
    response = post_ocsp(client, ocsp_request(published.enroll(), published.issuer))
    assert response.certificates == []
    assert response.responder_key_hash == published.issuer.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest


def test_the_responder_certificate_is_renewed_before_it_expires(published: Published, client: FlaskClient,
                                                                clock: SetClock) -> None:
    cert = published.enroll()
    first = post_ocsp(client, ocsp_request(cert, published.issuer)).certificates[0]
    clock.advance(days=19)
    assert post_ocsp(client, ocsp_request(cert, published.issuer)).certificates[0] == first
    clock.advance(days=2)       # less than 10 days left of its 30
    second = post_ocsp(client, ocsp_request(cert, published.issuer)).certificates[0]
    assert second != first and second.not_valid_after_utc > clock.now + dt.timedelta(days=29)


def test_ocsp_get_carries_the_request_in_the_path(published: Published, client: FlaskClient) -> None:
    cert = published.enroll()
    der = ocsp_request(cert, published.issuer, nonce=b"n" * 20)
    for encoded in (base64.b64encode(der).decode(), base64.urlsafe_b64encode(der).decode().rstrip("=")):
        answer = client.get(f"{OCSP_PATH}/{encoded}")
        assert answer.status_code == 200
        assert ocsp.load_der_ocsp_response(answer.data).certificate_status is ocsp.OCSPCertStatus.GOOD


def test_a_certificate_not_on_record_is_unknown_and_another_issuer_unauthorized(
        published: Published, client: FlaskClient, tmp_path: Path) -> None:
    other = started(publishing_config(tmp_path / "other"))
    stranger = other.enroll()
    # the same issuer name and serial, but never issued here
    assert post_ocsp(client, ocsp_request(stranger, published.issuer)).certificate_status is \
        ocsp.OCSPCertStatus.UNKNOWN
    assert post_ocsp(client, ocsp_request(stranger, other.issuer)).response_status is \
        ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30" * 300])
def test_a_malformed_ocsp_request_is_answered_malformed_request(client: FlaskClient, body: bytes) -> None:
    assert post_ocsp(client, body).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    get = client.get(f"{OCSP_PATH}/{base64.b64encode(body).decode()}")
    assert ocsp.load_der_ocsp_response(get.data).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("options", [["-serial", "5", "-serial", "6"], ["-md5", "-serial", "5"],
                                     ["-sha3-256", "-serial", "5"]], ids=["two certificates", "md5", "sha3"])
def test_requests_cryptography_cannot_answer_are_malformed(published: Published, client: FlaskClient,
                                                            tmp_path: Path, options: list[str]) -> None:
    """openssl's requests about two certificates at once, or with a CertID hash other than
    SHA-1/SHA-2, of the right issuer."""
    issuer = tmp_path / "issuer.pem"
    issuer.write_bytes(published.issuer.public_bytes(Encoding.PEM))
    der = openssl.run("ocsp", "-issuer", str(issuer), *options, "-reqout", "/dev/stdout")
    assert post_ocsp(client, der).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("path", [f"{OCSP_PATH}/not*base64", f"{OCSP_PATH}/", OCSP_PATH])
def test_an_ocsp_get_without_a_request_is_malformed(client: FlaskClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 200
    assert ocsp.load_der_ocsp_response(answer.data).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_nonce_longer_than_32_octets_is_malformed(published: Published, client: FlaskClient) -> None:
    cert = published.enroll()
    assert post_ocsp(client, ocsp_request(cert, published.issuer, nonce=b"x" * 32)).response_status is \
        ocsp.OCSPResponseStatus.SUCCESSFUL
    assert post_ocsp(client, ocsp_request(cert, published.issuer, nonce=b"x" * 33)).response_status is \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "reason"), [
    ("GET", "/nothing-here", {}, b"", 404, "not found; this address publishes"),
    ("GET", "/", {}, b"", 404, "not found; this address publishes"),
    ("POST", CRL_PATH, {"Content-Type": "application/ocsp-request"}, b"x", 405, "method not allowed"),
    ("PUT", OCSP_PATH, {}, b"x", 405, "method not allowed"),
    ("POST", f"{OCSP_PATH}/abc", {"Content-Type": "application/ocsp-request"}, b"x", 405, "method not allowed"),
    ("POST", OCSP_PATH, {"Content-Type": "text/plain"}, b"x", 415, "application/ocsp-request"),
    ("POST", OCSP_PATH, {"Content-Type": "application/ocsp-request"}, b"x" * (16 * 1024 + 1), 413, ""),
])
def test_http_refusals_are_short_text(client: FlaskClient, method: str, path: str, headers: dict[str, str],
                                      body: bytes, status: int, reason: str) -> None:
    answer = client.open(path, method=method, headers=headers, data=body)
    assert answer.status_code == status
    assert answer.content_type.startswith("text/plain") and reason in answer.get_data(as_text=True)



def test_each_ca_of_a_backend_publishes_its_own_and_knows_only_its_own(tmp_path: Path, clock: SetClock) -> None:
    other = {"key_type": "ec-p256", "crl_url": "http://127.0.0.1:8080/crl/other.crl",
             "ocsp_url": "http://127.0.0.1:8080/ocsp/other"}
    published = started(publishing_config(tmp_path, more_cas={"Other CA": other}))
    other_cert, other_issuer = published.issue(target=LocalTarget(ca="Other CA"))
    client = create_publication_app(published.config, clock=clock).test_client()
    # the other CA's serial, asked about under this CA's name and key: not this CA's
    name_hash = hashes.Hash(hashes.SHA1())
    name_hash.update(published.issuer.subject.public_bytes())
    probe = ocsp.OCSPRequestBuilder().add_certificate(published.issuer, published.issuer, hashes.SHA1()).build()
    forged = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash.finalize(), probe.issuer_key_hash, other_cert.serial_number, hashes.SHA1()).build()
    assert post_ocsp(client, forged.public_bytes(Encoding.DER)).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    own = client.post("/ocsp/other", data=ocsp_request(other_cert, other_issuer),
                      content_type="application/ocsp-request")
    assert ocsp.load_der_ocsp_response(own.data).certificate_status is ocsp.OCSPCertStatus.GOOD
    assert x509.load_der_x509_crl(client.get("/crl/other.crl").data).issuer == other_issuer.subject


def test_an_unreadable_record_is_503_for_the_crl_and_try_later_for_ocsp(published: Published, tmp_path: Path,
                                                                       clock: SetClock) -> None:
    cert = published.enroll()
    published.backend.store = CertificateStore(tmp_path / "missing" / "certificates.sqlite3")
    client = create_publication_app(published.config, clock=clock).test_client()
    answer = client.get(CRL_PATH)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "30"
    assert answer.get_data(as_text=True) == "the CRL cannot be made right now; try again later\n"
    assert post_ocsp(client, ocsp_request(cert, published.issuer)).response_status is ocsp.OCSPResponseStatus.TRY_LATER
