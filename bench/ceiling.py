"""The crypto ceiling: what the gateway's own libraries can do per second on this machine.

Each primitive is timed single-threaded with the gateway's code paths where they are pure
crypto (its TLS server context, its certificate builder, its password hash); a
scenario's ceiling is ``cores / sum(per-request crypto cost)``, i.e. every core doing
nothing but the unavoidable cryptography of one enrollment.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL

from est_gateway.backends.local import authority
from est_gateway.passwords import PasswordHash
from est_gateway.server.tls import server_context


def per_op_ms(op: Callable[[], float | None], min_time: float, rounds: int = 3) -> float:
    """Cost of ``op`` in ms: the best of ``rounds`` means (other load on the machine only
    ever adds time); ``op`` may return the seconds that count (else wall time)."""
    op()  # warm up
    best = float("inf")
    for _ in range(rounds):
        spent, count, end = 0.0, 0, time.perf_counter() + min_time / rounds
        while time.perf_counter() < end or count < 3:
            started = time.perf_counter()
            counted = op()
            spent += counted if counted is not None else time.perf_counter() - started
            count += 1
        best = min(best, spent * 1000 / count)
    return best


def _pump(src: SSL.Connection, dst: SSL.Connection) -> None:
    while True:
        try:
            data = src.bio_read(65536)
        except SSL.WantReadError:
            return
        dst.bio_write(data)


def server_handshake_seconds(server_ctx: SSL.Context, client_ctx: SSL.Context) -> float:
    """One full handshake over memory BIOs; returns the time spent in the server's calls only."""
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    spent, client_done, server_done = 0.0, False, False
    for _ in range(20):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except SSL.WantReadError:
                pass
        _pump(client, server)
        if not server_done:
            started = time.perf_counter()
            try:
                server.do_handshake()
                server_done = True
            except SSL.WantReadError:
                pass
            _pump(server, client)
            spent += time.perf_counter() - started
        if client_done and server_done:
            return spent
    raise RuntimeError("in-memory handshake did not complete")


def client_context(pem: Path | None) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)  # TLS 1.3 preferred, as the load clients do
    if pem is not None:
        ctx.use_certificate_chain_file(str(pem))
        ctx.use_privatekey_file(str(pem))
    return ctx


def measure(*, tls_cert: Path, tls_key: Path, ca_dirs: dict[str, Path], csrs: dict[str, bytes],
            client_pem: Path, min_time: float, p256_tls: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """Per-operation costs (ms) and the ceilings (requests/s) of the benchmark's scenarios.

    ``p256_tls`` (certificate, key): the TLS identity of the gateway that serves enroll-p256."""
    server_ctx = server_context(tls_cert, tls_key)
    costs: dict[str, float] = {}
    costs["tls_handshake_full"] = per_op_ms(
        lambda: server_handshake_seconds(server_ctx, client_context(None)), min_time)
    p256_ctx = server_context(*p256_tls) if p256_tls else server_ctx
    costs["tls_handshake_full_p256"] = per_op_ms(
        lambda: server_handshake_seconds(p256_ctx, client_context(None)), min_time)
    costs["tls_handshake_full_client_cert"] = per_op_ms(
        lambda: server_handshake_seconds(server_ctx, client_context(client_pem)), min_time)
    for key_type, body in csrs.items():
        der = _der(body)
        costs[f"csr_verify_{key_type}"] = per_op_ms(
            lambda der=der: x509.load_der_x509_csr(der).is_signature_valid and None, min_time)
    now = dt.datetime.now(dt.UTC)
    leaf_key = authority.new_key("ec-p256").public_key()
    for key_type, folder in ca_dirs.items():
        key = authority.load_key(folder / "signing.key")
        ca = x509.load_pem_x509_certificates((folder / "chain.pem").read_bytes())[0]

        def sign(key: Any = key, ca: x509.Certificate = ca) -> None:
            authority.build_leaf(subject=authority.name("ceiling"), public_key=leaf_key, sans=[],
                                 issuer=ca, issuer_key=key, not_before=now, not_after=now + dt.timedelta(days=1),
                                 key_usage=["digitalSignature"], extended_key_usage=["clientAuth"],
                                 serial=authority.random_serial())
        costs[f"cert_sign_{key_type}"] = per_op_ms(sign, min_time)
    client_cert = x509.load_pem_x509_certificates(client_pem.read_bytes())[0]
    issuing = x509.load_pem_x509_certificates((ca_dirs["rsa-2048"] / "chain.pem").read_bytes())[0]
    costs["client_cert_verify_rsa-2048"] = per_op_ms(lambda: client_cert.verify_directly_issued_by(issuing),
                                                     min_time)
    pw = PasswordHash.create("bench-password")
    costs["scrypt_verify_n2^14"] = per_op_ms(lambda: pw.verify("bench-password") and None, min_time)

    cores = os.cpu_count() or 1
    per_request = {
        "enroll-rsa": ["tls_handshake_full", "csr_verify_rsa-2048", "cert_sign_rsa-2048"],
        "enroll-p256": ["tls_handshake_full_p256", "csr_verify_ec-p256", "cert_sign_ec-p256"],
        "reenroll-mtls": ["tls_handshake_full_client_cert", "client_cert_verify_rsa-2048",
                          "csr_verify_rsa-2048", "cert_sign_rsa-2048"],
        "cacerts": ["tls_handshake_full"],
        # the upstream signs; the gateway's own crypto is the client's handshake and the CSR
        # check (its upstream connection is pooled, so no handshake per request there)
        "enroll-upstream": ["tls_handshake_full", "csr_verify_rsa-2048"],
    }
    ceilings: dict[str, dict[str, Any]] = {}
    for scenario, parts in per_request.items():
        new_ms = sum(costs[p] for p in parts)
        ka_ms = sum(costs[p] for p in parts if not p.startswith("tls_"))
        entry = {"parts": parts, "crypto_ms_new": new_ms, "new": cores * 1000 / new_ms,
                 "keepalive": cores * 1000 / ka_ms if ka_ms else None}
        if scenario in ("enroll-rsa", "enroll-p256"):
            # Not crypto the issue counts, but a cost every Basic-auth enrollment pays.
            with_pw = new_ms + costs["scrypt_verify_n2^14"]
            entry["new_with_password_hash"] = cores * 1000 / with_pw
        ceilings[scenario] = entry
    for entry in ceilings.values():
        entry["crypto_ms_keepalive"] = sum(costs[p] for p in entry["parts"] if not p.startswith("tls_"))
    return {"cores": cores, "costs_ms": costs,
            "ops_per_s_per_core": {k: 1000 / v for k, v in costs.items()}, "ceilings": ceilings}


def _der(body: bytes) -> bytes:
    import base64

    return base64.b64decode(b"".join(body.split()))
