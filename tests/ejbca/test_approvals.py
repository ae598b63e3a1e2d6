"""EJBCA approvals (RFC 7030 §4.2.3 over EJBCA's approval workflow) without gateway state.

The stand-in models EJBCA's approval behaviour (``ApprovalSessionBean``, ``ApprovalData``):
EjbcaWS ``editUser`` under an approval profile opens an approval request
(``WaitingForApprovalException`` with its request ID), a second one for the same end entity
is refused while the first is waiting (``ApprovalException`` ``APPROVAL_ALREADY_EXISTS``),
approval executes the add/edit (end entity status NEW with the requested password), and
rejection of this executable request expires it at once. REST ``pkcs10enroll`` is refused
under approvals with nothing kept (``CertificateRequestSessionBean.addOrEditUser``), so only
the SOAP adapter waits; both run against the stand-in over real mutual TLS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from est_gateway.backends.base import EnrollRequest, Issued, Pending, ReenrollRequest, Requester
from est_gateway.errors import BadRequest, ConfigError, UpstreamError
from est_gateway_ejbca.alias import EjbcaTarget
from est_gateway_ejbca.common import derived_password
from tests.support.ejbca_standin import (
    EXECUTED,
    TARGET,
    StandinEjbca,
    StandinServer,
    UpstreamPKI,
    make_backend,
    upstream_options,
)
from tests.support.pki import make_csr, p256_key

SECRET = "k" * 40


@pytest.fixture
def ca(server: StandinServer) -> Iterator[StandinEjbca]:
    server.standin.approval = True
    yield server.standin
    server.standin.approval = False


@pytest.fixture
def type_name() -> str:
    """The adapter EJBCA can hold an enrollment for approval with (EjbcaWS ``editUser``)."""
    return "ejbca-soap"


def backend_for(type_name: str, pki: UpstreamPKI, server: StandinServer, folder: Path,
                monkeypatch: pytest.MonkeyPatch, secret: str | None = SECRET) -> Any:
    """A backend of ``type_name`` on the stand-in (REST never takes an approval secret)."""
    url = server.rest_url if type_name == "ejbca-rest" else server.ws_url
    extra: dict[str, Any] = {}
    if secret is not None:
        monkeypatch.setenv("EST_APPROVAL_SECRET", secret)
        extra["approval_secret_env"] = "EST_APPROVAL_SECRET"
    folder.mkdir(exist_ok=True)
    return make_backend(type_name, upstream_options(pki, url, **extra), folder)


def request_for(csr: x509.CertificateSigningRequest, retry_key: str) -> EnrollRequest[EjbcaTarget]:
    return EnrollRequest(csr=csr, alias="est", target=TARGET, requester=Requester(username="u"),
                         request_id="r", retry_key=retry_key)


def test_pending_still_pending_approved_issued(type_name: str, pki: UpstreamPKI, server: StandinServer,
                                               ca: StandinEjbca, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_for(type_name, pki, server, tmp_path, monkeypatch)
    csr = make_csr(p256_key(), cn=f"approve-{type_name}")
    username = f"approve-{type_name}"
    request = request_for(csr, f"key-approve-{type_name}")

    first = backend.enroll(request)
    assert isinstance(first, Pending) and first.retry_after == 300
    assert f"end entity {username}" in first.reference   # what ties the audit's 202s and 200
    [opened] = ca.open_approvals(username)
    assert username not in ca.end_entities  # EJBCA added nothing yet

    again = backend.enroll(request)  # the client polls: APPROVAL_ALREADY_EXISTS → still pending
    assert isinstance(again, Pending)
    assert ca.open_approvals(username) == [opened]  # no second approval request

    ca.approve(opened.request_id)
    assert ca.end_entities[username].status == 10  # executed: NEW, with the derived password
    issued = backend.enroll(request)
    assert isinstance(issued, Issued)
    assert issued.certificate.public_key() == csr.public_key()
    assert issued.certificate.subject == csr.subject
    assert issued.approval_reference == f"end entity {username}"
    # collected with the password of the approved request; no edit approval was opened
    assert [a.status for a in ca.approvals.values() if a.end_entity.username == username] == [EXECUTED]
    assert ca.end_entities[username].status == 40  # GENERATED


def test_a_second_gateway_with_the_same_secret_continues(type_name: str, pki: UpstreamPKI,
                                                         server: StandinServer, ca: StandinEjbca,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    one = backend_for(type_name, pki, server, tmp_path / "one", monkeypatch)
    two = backend_for(type_name, pki, server, tmp_path / "two", monkeypatch)
    username = f"replica-{type_name}"
    csr = make_csr(p256_key(), cn=username)
    request = request_for(csr, f"key-replica-{type_name}")
    assert isinstance(one.enroll(request), Pending)
    assert isinstance(two.enroll(request), Pending)  # the other replica sees the same approval
    [opened] = ca.open_approvals(username)
    ca.approve(opened.request_id)
    issued = two.enroll(request)
    assert isinstance(issued, Issued) and issued.certificate.public_key() == csr.public_key()


def test_a_different_secret_cannot_collect_the_approved_certificate(
        type_name: str, pki: UpstreamPKI, server: StandinServer, ca: StandinEjbca, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    username = f"other-secret-{type_name}"
    request = request_for(make_csr(p256_key(), cn=username), f"key-other-{type_name}")
    one = backend_for(type_name, pki, server, tmp_path / "one", monkeypatch)
    assert isinstance(one.enroll(request), Pending)
    [opened] = ca.open_approvals(username)
    ca.approve(opened.request_id)
    stranger = backend_for(type_name, pki, server, tmp_path / "two", monkeypatch, secret="s" * 40)
    # wrong password for the approved end entity → it asks for an edit, which needs approval
    assert isinstance(stranger.enroll(request), Pending)
    assert ca.end_entities[username].status == 10  # the approved entity was not used up


def test_rejection_expires_the_request_so_a_repeat_asks_again(
        type_name: str, pki: UpstreamPKI, server: StandinServer, ca: StandinEjbca, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """EJBCA forgets a rejected add/edit at once (EXECUTIONDENIED, expired): nothing tells a
    stateless gateway about the rejection, so the repeat opens a new approval request, which
    the approvers see and reject again. (403 on rejection needs the approval request ID kept
    between polls; see docs/ejbca.md.)"""
    backend = backend_for(type_name, pki, server, tmp_path, monkeypatch)
    username = f"reject-{type_name}"
    request = request_for(make_csr(p256_key(), cn=username), f"key-reject-{type_name}")
    assert isinstance(backend.enroll(request), Pending)
    [opened] = ca.open_approvals(username)
    ca.reject(opened.request_id)
    assert isinstance(backend.enroll(request), Pending)
    [reopened] = ca.open_approvals(username)
    assert reopened.request_id != opened.request_id
    assert username not in ca.end_entities


def test_without_a_secret_a_repeat_is_refused_as_before(type_name: str, pki: UpstreamPKI,
                                                        server: StandinServer, ca: StandinEjbca,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_for(type_name, pki, server, tmp_path, monkeypatch, secret=None)
    username = f"nosecret-{type_name}"
    request = request_for(make_csr(p256_key(), cn=username), f"key-nosecret-{type_name}")
    assert isinstance(backend.enroll(request), Pending)
    with pytest.raises(BadRequest, match="already exists"):
        backend.enroll(request)


def test_with_a_secret_and_no_approvals_enrollment_and_renewal_work(
        type_name: str, pki: UpstreamPKI, server: StandinServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_for(type_name, pki, server, tmp_path, monkeypatch)
    username = f"plain-{type_name}"
    csr = make_csr(p256_key(), cn=username)
    first = backend.enroll(request_for(csr, f"key-plain-{type_name}"))
    assert isinstance(first, Issued)
    repeat = backend.enroll(request_for(csr, f"key-plain-{type_name}"))  # e.g. a lost answer
    assert isinstance(repeat, Issued) and repeat.certificate.public_key() == csr.public_key()
    renewal_csr = make_csr(p256_key(), cn=username)
    renewed = backend.reenroll(ReenrollRequest(csr=renewal_csr, alias="est", target=TARGET,
                                               requester=Requester(certificate=first.certificate),
                                               request_id="r2", retry_key=f"key-renew-{type_name}",
                                               current=first.certificate))
    assert isinstance(renewed, Issued) and renewed.certificate.public_key() == renewal_csr.public_key()


def test_derived_passwords() -> None:
    one = derived_password(b"a" * 32, "retry-1")
    assert one == derived_password(b"a" * 32, "retry-1")
    assert one != derived_password(b"a" * 32, "retry-2")
    assert one != derived_password(b"b" * 32, "retry-1")
    assert len(one) == 43 and one.isascii() and "=" not in one


@pytest.mark.parametrize(("type_name", "options", "expected"), [
    ("ejbca-soap", {"approval_secret": "inline"}, "backends.ejbca.approval_secret: inline secrets are not accepted"),
    ("ejbca-soap", {"approval_secret_env": "SHORT_SECRET"}, "backends.ejbca.approval_secret_env: must be at least 32"),
    ("ejbca-soap", {"approval_secret_env": "UNSET_SECRET"}, "backends.ejbca.approval_secret_env: environment variable"),
    ("ejbca-rest", {"approval_secret_env": "LONG_SECRET"}, "backends.ejbca.approval_secret_env: only the SOAP adapter"),
    ("ejbca-rest", {"approval_secret": "inline"}, "backends.ejbca.approval_secret: only the SOAP adapter"),
])
def test_secret_problems_carry_key_paths(pki: UpstreamPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         type_name: str, options: dict[str, str], expected: str) -> None:
    monkeypatch.setenv("SHORT_SECRET", "too short")
    monkeypatch.setenv("LONG_SECRET", SECRET)
    monkeypatch.delenv("UNSET_SECRET", raising=False)
    with pytest.raises(ConfigError) as raised:
        make_backend(type_name, upstream_options(pki, "https://ejbca.test/api", **options), tmp_path)
    assert any(p.startswith(expected) for p in raised.value.problems), raised.value.problems


def test_secret_from_a_file(pki: UpstreamPKI, tmp_path: Path) -> None:
    path = tmp_path / "approval.secret"
    path.write_text(SECRET + "\n", encoding="utf-8")
    path.chmod(0o600)                  # a secret file others can read is refused
    backend = make_backend("ejbca-soap", upstream_options(pki, "https://ejbca.test/ws",
                                                          approval_secret_file=str(path)), tmp_path)
    assert backend.options.approval_secret == SECRET.encode()
    assert SECRET not in repr(backend.options)


# -- REST: EJBCA refuses pkcs10enroll under approvals ------------------------------------------

def test_rest_enrollment_under_approvals_is_refused_clearly_and_nothing_is_kept(
        pki: UpstreamPKI, server: StandinServer, ca: StandinEjbca, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``CertificateRequestSessionBean.addOrEditUser`` rolls the request back and EJBCA answers
    400 "Single transaction enrollment request rejected since approvals are enabled ...": no
    end entity, no approval request. The device cannot fix it: 502, with the way out; the
    operator's log line names the CA and the profiles."""
    backend = backend_for("ejbca-rest", pki, server, tmp_path, monkeypatch, secret=None)
    username = "rest-approval"
    request = request_for(make_csr(p256_key(), cn=username), "key-rest-approval")
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError) as raised:
        backend.enroll(request)
    assert raised.value.status == 502
    assert "SOAP adapter" in raised.value.detail and "client mode" in raised.value.detail
    assert "approvals" in raised.value.detail
    assert f"CA {TARGET.ca!r}, certificate profile {TARGET.certificate_profile!r}" in caplog.text
    assert "Single transaction enrollment request rejected" in caplog.text
    assert username not in ca.end_entities
    assert [a for a in ca.approvals.values() if a.end_entity.username == username] == []
    with pytest.raises(UpstreamError):  # a repeat is refused the same way: nothing was kept
        backend.enroll(request)
    assert [a for a in ca.approvals.values() if a.end_entity.username == username] == []


def test_rest_enrollment_while_a_soap_approval_is_open_is_the_same_refusal(
        pki: UpstreamPKI, server: StandinServer, ca: StandinEjbca, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An approval asked for through EjbcaWS is open for the end entity: ``pkcs10enroll`` meets
    ``ApprovalException`` "Approval request with approvalID <id> already exists." (400)."""
    soap = backend_for("ejbca-soap", pki, server, tmp_path / "soap", monkeypatch)
    rest = backend_for("ejbca-rest", pki, server, tmp_path / "rest", monkeypatch, secret=None)
    username = "rest-after-soap"
    request = request_for(make_csr(p256_key(), cn=username), "key-rest-after-soap")
    assert isinstance(soap.enroll(request), Pending)
    [opened] = ca.open_approvals(username)
    with pytest.raises(UpstreamError, match="SOAP adapter"):
        rest.enroll(request)
    assert ca.open_approvals(username) == [opened]


def test_the_rest_refusal_is_only_for_approvals(pki: UpstreamPKI, server: StandinServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without approvals the same REST enrollment is issued at once."""
    backend = backend_for("ejbca-rest", pki, server, tmp_path, monkeypatch, secret=None)
    csr = make_csr(p256_key(), cn="rest-no-approval")
    assert isinstance(backend.enroll(request_for(csr, "key-rest-no-approval")), Issued)
