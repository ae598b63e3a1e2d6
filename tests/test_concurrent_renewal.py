"""Renewals of one certificate at once issue once; a renewal's key is new to its lineage.

In process, with threads (tests/support/inproc.py): the real application and local CA,
the client certificate injected as the TLS worker exposes it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from werkzeug.test import TestResponse

from est_gateway import wire
from est_gateway.backends.base import RevocationStatus
from est_gateway.backends.local import LocalCABackend
from est_gateway.backends.local.store import AlreadyRenewed, CertificateStore, serial_hex
from est_gateway.renewals import Claim, RenewalClaims
from est_gateway.web.app import service_of
from tests.support.inproc import InProcessGateway, start
from tests.support.pki import CA, csr_der, make_csr, p256_key
from tests.test_renewal_identity import PARTNER as LABELS

PKCS10 = ("Content-Type", "application/pkcs10")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    # its label "keep" renews without superseding
    yield start(tmp_path_factory.mktemp("concurrent-renewal") / "est-local", LABELS)


def _csr(key: Any, cn: str) -> bytes:
    return base64.encodebytes(csr_der(make_csr(key, cn=cn)))


def _cert(response: TestResponse) -> x509.Certificate:
    assert response.status_code == 200, response.get_data()
    return wire.read_certs_only(base64.b64decode(response.get_data()))[0]


def _path(label: str, op: str) -> str:
    return f"/.well-known/est/{label + '/' if label else ''}{op}"


def _enroll(gw: InProcessGateway, key: Any, cn: str, label: str = "") -> x509.Certificate:
    return _cert(gw.request("POST", _path(label, "simpleenroll"), headers=[PKCS10, *gw.auth().items()],
                            body=_csr(key, cn)))


def _renew(gw: InProcessGateway, cert: x509.Certificate, key: Any, cn: str, label: str = "") -> TestResponse:
    return gw.request("POST", _path(label, "simplereenroll"), headers=[PKCS10], body=_csr(key, cn),
                      tls=gw.tls_with(cert))


def _backend(gw: InProcessGateway) -> LocalCABackend:
    backend = gw.config.backends["local"]
    assert isinstance(backend, LocalCABackend)
    return backend


def _renew_at_once(gw: InProcessGateway, cert: x509.Certificate, cn: str, count: int, label: str = ""
                   ) -> list[TestResponse]:
    """``count`` renewals of ``cert``, each with a new key, that all pass the record's
    "renewed already?" lookup before any of them is recorded."""
    backend = _backend(gw)
    checked = threading.Barrier(count)
    looked_up = backend.revocation_status

    def lookup_then_wait(certificate: x509.Certificate, target: Any) -> RevocationStatus:
        status = looked_up(certificate, target)
        checked.wait(30)
        return status

    answers: list[TestResponse] = []
    keys = [p256_key() for _ in range(count)]
    threads = [threading.Thread(target=lambda k=k: answers.append(_renew(gw, cert, k, cn, label)))
               for k in keys]
    backend.revocation_status = lookup_then_wait  # type: ignore[method-assign]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        del backend.revocation_status
    assert len(answers) == count
    return answers


def _successors(gw: InProcessGateway, cert: x509.Certificate) -> int:
    store = _backend(gw).store
    with store._connect() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM certificates WHERE renews = ?",
                                (serial_hex(cert.serial_number),)).fetchall()[0][0])


def test_of_sixteen_renewals_at_once_exactly_one_issues(gw: InProcessGateway) -> None:
    """main: 14 of 16 got a certificate, and each could renew again (a forked lineage)."""
    cert = _enroll(gw, p256_key(), "fork")
    answers = _renew_at_once(gw, cert, "fork", 16)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [403] * 15
    refused = {a.get_data() for a in answers if a.status_code == 403}
    assert refused == {b"client certificate was already renewed; renew with its newest successor\n"}
    assert _successors(gw, cert) == 1
    assert _backend(gw).store.get(serial_hex(cert.serial_number)).status == "superseded"  # type: ignore[union-attr]


def test_where_the_record_cannot_supersede_the_core_lets_one_renewal_run(gw: InProcessGateway,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A CA that supersedes only after the renewal (an upstream CA revoking the renewed
    certificate): the core's claim across threads and workers issues once."""
    backend = _backend(gw)
    renew = backend.reenroll
    monkeypatch.setattr(backend, "supersedes_in_record", False)
    monkeypatch.setattr(backend, "reenroll", lambda request: renew(dataclasses.replace(request, supersede=False)))
    monkeypatch.setattr(service_of(gw.app), "renewal_claims", RenewalClaims())
    cert = _enroll(gw, p256_key(), "upstream-like")
    answers = _renew_at_once(gw, cert, "upstream-like", 16)
    assert sorted(a.status_code for a in answers) == [200] + [403] * 15
    assert {a.get_data() for a in answers if a.status_code == 403} <= {
        b"a renewal of this client certificate is in progress; renew with its successor\n",
        b"client certificate was already renewed; renew with its newest successor\n"}
    assert _successors(gw, cert) == 1


def test_a_failed_renewal_frees_its_claim() -> None:
    claims = RenewalClaims(entries=16)
    assert claims.claim(b"a" * 32) is Claim.TAKEN
    assert claims.claim(b"a" * 32) is Claim.IN_FLIGHT
    claims.release(b"a" * 32, renewed=False)
    assert claims.claim(b"a" * 32) is Claim.TAKEN
    claims.release(b"a" * 32, renewed=True)
    assert claims.claim(b"a" * 32) is Claim.RENEWED
    assert claims.claim(b"b" * 32) is Claim.TAKEN


def test_without_supersede_concurrent_renewals_are_what_sequential_ones_are(gw: InProcessGateway) -> None:
    """supersede_on_renewal = false lets a certificate renew more than once, so at once too."""
    cert = _enroll(gw, p256_key(), "kept", label="keep")
    answers = _renew_at_once(gw, cert, "kept", 4, label="keep")
    assert [a.status_code for a in answers] == [200] * 4
    assert _successors(gw, cert) == 4


def test_the_record_supersedes_atomically_across_store_instances(tmp_path: Path) -> None:
    """Two stores on one file (as two worker processes hold): of renewals of one serial
    committed at once, one is recorded, the others raise AlreadyRenewed."""
    ca = CA.create("Race CA")
    stores = [CertificateStore(tmp_path / "certificates.sqlite3") for _ in range(2)]
    stores[0].initialise()
    now = dt.datetime.now(dt.UTC)
    first = ca.issue(p256_key(), cn="race")

    def add(store: CertificateStore, cert: x509.Certificate, renews: str | None) -> None:
        store.add(cert, ca="c", alias="est", certificate_profile="default", requester="t", request_id="r",
                  issued_at=now, renews=renews, supersede=True)

    add(stores[0], first, None)
    barrier = threading.Barrier(12)
    outcomes: list[str] = []

    def renew(i: int) -> None:
        barrier.wait(30)
        try:
            add(stores[i % 2], ca.issue(p256_key(), cn="race"), serial_hex(first.serial_number))
            outcomes.append("recorded")
        except AlreadyRenewed:
            outcomes.append("refused")

    threads = [threading.Thread(target=renew, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for store in stores:
        store.close()
    assert sorted(outcomes) == ["recorded"] + ["refused"] * 11


def test_a_key_the_lineage_had_does_not_renew_where_new_keys_are_required(gw: InProcessGateway) -> None:
    """newkey: K1 → K2 → K1 renewed on main (only the current key was compared)."""
    k1, k2, k3 = p256_key(), p256_key(), p256_key()
    first = _enroll(gw, k1, "lineage", label="newkey")
    second = _cert(_renew(gw, first, k2, "lineage", label="newkey"))
    back = _renew(gw, second, k1, "lineage", label="newkey")
    assert back.status_code == 403
    assert back.get_data() == (b"this EST label does not allow renewal with a key this certificate or "
                               b"one before it had; generate a new key\n")
    third = _cert(_renew(gw, second, k3, "lineage", label="newkey"))
    assert _renew(gw, third, k2, "lineage", label="newkey").status_code == 403
    assert sorted(_backend(gw).lineage_keys(third, gw.config.aliases["newkey"].target)) == \
        sorted(wire.spki(k.public_key()) for k in (k1, k2, k3))


def test_the_lineage_of_a_record_made_before_renewals_were_linked_is_itself(tmp_path: Path) -> None:
    """An older record (no renews column) gains it at start; its certificates are each
    their own lineage."""
    path = tmp_path / "certificates.sqlite3"
    ca = CA.create("Old CA")
    old = ca.issue(p256_key(), cn="old")
    store = CertificateStore(path)
    store.initialise()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX certificates_renews")
        conn.execute("ALTER TABLE certificates DROP COLUMN renews")
        conn.execute("INSERT INTO certificates (serial, issuer, subject, sans, not_before, not_after, ca,"
                     " alias, certificate_profile, requester, request_id, issued_at, der) VALUES"
                     " (?,?,?,'[]','','','c','est','default','t','r','',?)",
                     (serial_hex(old.serial_number), "i", "s", old.public_bytes(wire.Encoding.DER)))
    store.close()
    store = CertificateStore(path)
    store.initialise()
    assert store.lineage(serial_hex(old.serial_number)) == [old.public_bytes(wire.Encoding.DER)]
    store.close()
