"""Scale of state: fill the local CA's certificates.sqlite3 with many realistic records.

Rows are written straight into SQLite (one transaction per batch, the gateway's own
schema) with unique random serials; the DER column reuses a few real certificates, so
row sizes and page counts are those of a real store.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.local import authority
from est_gateway.backends.local.store import CertificateStore, serial_hex

STORE_NAME = "certificates.sqlite3"
INSERT = ("INSERT INTO certificates (serial, issuer, subject, sans, not_before, not_after, ca, alias,"
          " certificate_profile, requester, request_id, issued_at, status, revoked_at, revocation_reason, der)"
          " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def sample_certificates(count: int = 4) -> list[bytes]:
    ca_key = authority.new_key("rsa-2048")
    now = dt.datetime.now(dt.UTC)
    ca = authority.build_ca(authority.name("Filler CA"), ca_key, issuer=None, issuer_key=None, days=30, now=now)
    out = []
    for i in range(count):
        leaf = authority.build_leaf(
            subject=authority.name(f"filler-{i}"), public_key=authority.new_key("rsa-2048").public_key(),
            sans=[], issuer=ca, issuer_key=ca_key, not_before=now, not_after=now + dt.timedelta(days=365),
            key_usage=["digitalSignature"], extended_key_usage=["clientAuth"], serial=authority.random_serial())
        out.append(leaf.public_bytes(Encoding.DER))
    return out


def fill(state_dir: Path, records: int, *, issuer: str, batch: int = 50_000, revoked_every: int = 50,
         seed: int = 7) -> dict[str, Any]:
    """Insert ``records`` rows into the store in ``state_dir`` (created with the gateway's schema)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = CertificateStore(state_dir / STORE_NAME)
    store.initialise()
    ders = sample_certificates()
    rng = random.Random(seed)
    started = time.perf_counter()
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # bulk load only; the gateway itself uses FULL
    serials = []
    try:
        done = 0
        while done < records:
            rows = []
            for i in range(done, min(records, done + batch)):
                serial = serial_hex(rng.getrandbits(159) | (1 << 158))
                if i % 997 == 0:
                    serials.append(serial)
                issued = base + dt.timedelta(seconds=i * 17)
                revoked = i % revoked_every == 0
                rows.append((serial, issuer, f"CN=device-{i:07d}", json.dumps([f"dns:device-{i}.example.net"]),
                             issued.isoformat(), (issued + dt.timedelta(days=365)).isoformat(),
                             "EST CA", "est", "default", "user:estuser from 10.0.0.1",
                             f"{i:016x}", issued.isoformat(), "revoked" if revoked else "valid",
                             (issued + dt.timedelta(days=30)).isoformat() if revoked else None,
                             "keyCompromise" if revoked else None, ders[i % len(ders)]))
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
            done += len(rows)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    size = (state_dir / STORE_NAME).stat().st_size
    return {"records": records, "seconds": seconds, "rows_per_s": records / seconds if seconds else 0.0,
            "db_mib": size / 2**20, "sample_serials": serials}


def commit_costs(folder: Path, *, rounds: int = 60) -> dict[str, float]:
    """The durability floor on this disk: one record committed through the gateway's store
    (connection per call, WAL, synchronous=FULL), and the bare insert+commit on one connection."""
    folder.mkdir(parents=True, exist_ok=True)
    store = CertificateStore(folder / STORE_NAME)
    store.initialise()
    from cryptography import x509

    cert = x509.load_der_x509_certificate(sample_certificates(1)[0])
    now = dt.datetime.now(dt.UTC)
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        try:
            store.add(cert, ca="EST CA", alias="est", certificate_profile="default", requester="bench",
                      request_id=str(i), issued_at=now)
        except Exception:  # DuplicateSerial after the first: the commit path is what is timed
            pass
        times.append(time.perf_counter() - t)
    conn = sqlite3.connect(folder / "bare.sqlite3", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
        bare = []
        for i in range(rounds):
            t = time.perf_counter()
            conn.execute("INSERT INTO t VALUES (?, ?)", (str(i), b"x" * 900))
            bare.append(time.perf_counter() - t)
    finally:
        conn.close()
    return {"store_add_ms": statistics.median(times) * 1000, "bare_commit_ms": statistics.median(bare) * 1000}


def lookup_costs(db: Path, serials: list[str], *, rounds: int = 2000) -> dict[str, Any]:
    """Revocation lookup by serial: through the gateway's store (a connection per call, as in
    a request) and as the bare indexed query on one open connection."""
    store = CertificateStore(db)
    rng = random.Random(1)
    picks = [rng.choice(serials) for _ in range(rounds)] if serials else []
    misses = [serial_hex(rng.getrandbits(159) | (1 << 158)) for _ in range(rounds)]

    def timed(fn: Any, keys: list[str]) -> float:
        times = []
        for key in keys:
            t = time.perf_counter()
            fn(key)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6 if times else 0.0

    conn = sqlite3.connect(db)
    try:
        plan = " / ".join(str(r[-1]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT status FROM certificates WHERE serial = ?", ("1",)))
        bare = lambda k: conn.execute("SELECT status FROM certificates WHERE serial = ?", (k,)).fetchone()  # noqa: E731
        result = {
            "store_get_hit_us": timed(store.get, picks),
            "store_get_miss_us": timed(store.get, misses),
            "bare_query_hit_us": timed(bare, picks),
            "bare_query_miss_us": timed(bare, misses),
            "query_plan": plan,
            "records": conn.execute("SELECT COUNT(*) FROM certificates").fetchone()[0],
        }
    finally:
        conn.close()
    return result
