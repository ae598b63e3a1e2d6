"""Load without loss against the built-in CA, over real TLS.

500 enrollments, 50 at a time, each with its own key and CN: every answer is either a
certificate that is on record (same DER) or an error; serials are unique; the record
holds exactly the certificates returned. Then the same load is cut by SIGKILL of the
whole gateway (arbiter and workers) mid-way: after a restart the SQLite store passes
``PRAGMA integrity_check``, every certificate any client received is on record, and
every row is whole (its DER parses, is signed by the EST CA and matches its serial and
subject). Records for answers the kill swallowed are allowed: recorded-before-returned.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.gateway import children_of
from tests.support.load import Outcome, bodies, cheap_password_instance, enroll_all, integrity, rows

pytestmark = pytest.mark.e2e

TOTAL, CONCURRENCY = 500, 50


def _db(folder: Path) -> Path:
    return folder / "local-ca" / "certificates.sqlite3"


def _ca(folder: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates((folder / "local-ca" / "cas" / "EST-CA" / "chain.pem").read_bytes())[0]


def _check_rows_whole(folder: Path) -> dict[str, bytes]:
    """Every row: DER parses, signed by the EST CA, serial and subject as recorded."""
    ca = _ca(folder)
    by_serial = {}
    for row in rows(_db(folder)):
        cert = x509.load_der_x509_certificate(row.der)
        cert.verify_directly_issued_by(ca)
        assert format(cert.serial_number, "x") == row.serial
        assert cert.subject.rfc4514_string() == row.subject
        by_serial[row.serial] = row.der
    return by_serial


def _received(outcomes: list[Outcome]) -> list[x509.Certificate]:
    return [o.certificate for o in outcomes if o.certificate is not None]


def test_500_concurrent_enrollments_lose_nothing(tmp_path: Path) -> None:
    instance, process = cheap_password_instance(tmp_path / "est-local")
    payloads = bodies(TOTAL, "load")
    process.start()
    try:
        started = time.monotonic()
        outcomes = enroll_all(process.port, instance.trust_anchor, instance.password(), payloads,
                              concurrency=CONCURRENCY)
        elapsed = time.monotonic() - started
    finally:
        process.stop()
    certs = _received(outcomes)
    errors = [o for o in outcomes if o.certificate is None]
    print(f"{TOTAL} enrollments, {CONCURRENCY} concurrent: {len(certs)} certificates, {len(errors)} errors "
          f"in {elapsed:.1f}s ({TOTAL / elapsed:.0f}/s)")
    assert len(outcomes) == TOTAL
    assert all(o.status is not None and (o.status == 200) == (o.certificate is not None) for o in outcomes), \
        [o for o in outcomes if o.status is None][:5]
    serials = [format(c.serial_number, "x") for c in certs]
    assert len(set(serials)) == len(serials), "duplicate serial numbers"
    record = _check_rows_whole(instance.folder)
    assert len(record) == len(certs), f"{len(record)} records for {len(certs)} certificates returned"
    for cert in certs:
        assert record[format(cert.serial_number, "x")] == cert.public_bytes(Encoding.DER)
    # each request got its own certificate: CN load-i for payload i
    for o in outcomes:
        if o.certificate is not None:
            assert o.certificate.subject.rfc4514_string() == f"CN=load-{o.index:04d}"
    assert not errors, errors[:5]   # nothing here should fail: no limit is near


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL the gunicorn arbiter and its workers at once (a crash, not a shutdown)."""
    children = children_of(pid)
    for target in [*children, pid]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return children


def test_sigkill_mid_load_leaves_a_whole_record(tmp_path: Path) -> None:
    instance, process = cheap_password_instance(tmp_path / "est-local")
    payloads = bodies(TOTAL, "crash")
    process.start()
    done = threading.Semaphore(0)
    outcomes: list[Outcome] = []
    runner = threading.Thread(target=lambda: outcomes.extend(
        enroll_all(process.port, instance.trust_anchor, instance.password(), payloads, concurrency=CONCURRENCY,
                   timeout=15, progress=done)))
    runner.start()
    try:
        for _ in range(120):             # let 120 certificates reach their clients, then crash
            assert done.acquire(timeout=60), "the load did not get going"
        assert process.proc is not None
        workers = _kill_tree(process.proc.pid)
        process.proc.wait(10)
    finally:
        runner.join(90)
    assert not runner.is_alive(), "clients hung after the kill"
    certs = _received(outcomes)
    failed = [o for o in outcomes if o.certificate is None]
    print(f"SIGKILL of arbiter + {len(workers)} workers after {len(certs)} certificates: "
          f"{len(failed)} requests got no certificate")
    assert workers and 120 <= len(certs) < TOTAL and failed

    # The record as the crash left it, then as the restarted gateway opens it.
    assert integrity(_db(instance.folder)) == "ok"
    process.start()
    try:
        record = _check_rows_whole(instance.folder)
        for cert in certs:
            assert record.get(format(cert.serial_number, "x")) == cert.public_bytes(Encoding.DER), \
                f"certificate {cert.serial_number:x} was returned but is not on record"
        print(f"{len(record)} records for {len(certs)} certificates received "
              f"({len(record) - len(certs)} issued but unanswered when the kill came)")
        after = enroll_all(process.port, instance.trust_anchor, instance.password(), bodies(5, "after"),
                           concurrency=5)
        assert [o.status for o in after] == [200] * 5, after
        assert integrity(_db(instance.folder)) == "ok"
        assert len(rows(_db(instance.folder))) == len(record) + 5
    finally:
        process.stop()
