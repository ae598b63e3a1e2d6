"""Audit log, metrics, health, limits, throttle and HTTP framing errors on a real gateway."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
from pathlib import Path

from tests.conftest import Gateway
from tests.support import openssl
from tests.support.gateway import curl, local_instance
from tests.support.logs import audit_events

PKCS10 = "Content-Type: application/pkcs10"
CANARY = "Canary-Secret-7f3a9"     # a password a client tries; must never be logged


def _audit_lines(gateway: Gateway) -> list[dict[str, object]]:
    return audit_events(gateway.process.output())


def test_audit_line_per_request_with_identity_and_serial(gateway: Gateway) -> None:
    work = gateway.work
    key, csr = openssl.new_csr(work, "audit1", subject="/CN=audited-device")
    res = gateway.curl(*gateway.enroll_args(csr))
    assert res.status == 200
    openssl.certs_from_pkcs7_b64(res.body, work / "audit1.pem")
    serial = openssl.serial_of(work / "audit1.pem").lower().lstrip("0")
    _, renew = openssl.new_csr(work, "audit2", subject="/CN=audited-device")
    res = gateway.curl("--cert", str(work / "audit1.pem"), "--key", str(key), "-H", PKCS10,
                       "--data-binary", f"@{renew}", f"{gateway.url}/simplereenroll")
    assert res.status == 200
    bad = gateway.curl("-u", f"estuser:{CANARY}", "-H", PKCS10, "--data-binary", f"@{csr}",
                       f"{gateway.url}/simpleenroll")
    assert bad.status == 401

    events = _audit_lines(gateway)
    enroll = [e for e in events if e["operation"] == "simpleenroll" and e["issued_serial"] == serial]
    assert len(enroll) == 1
    e = enroll[0]
    assert e["alias"] == "est" and e["status"] == 200 and e["outcome"] == "ok"
    assert e["username"] == "estuser" and e["csr_subject"] == "CN=audited-device"
    assert e["client_address"] == "127.0.0.1" and isinstance(e["latency_ms"], float)
    assert len(str(e["request_id"])) == 16 and str(e["time"]).endswith("+00:00")
    renewals = [e for e in events if e["operation"] == "simplereenroll" and e["client_cert_serial"] == serial]
    assert len(renewals) == 1 and renewals[0]["status"] == 200 and renewals[0]["client_cert_subject"] == \
        "CN=audited-device" and renewals[0]["username"] is None
    failed = [e for e in events if e["status"] == 401 and e["outcome"] == "invalid username or password"]
    assert failed, "the failed attempt is audited"
    log = gateway.process.output()
    assert CANARY not in log and gateway.password not in log


def test_unknown_labels_do_not_grow_metrics_or_logs(gateway: Gateway) -> None:
    res = gateway.curl(f"{gateway.url}/zz-random-label-4711/cacerts")
    assert res.status == 404
    metrics = gateway.curl(gateway.url.replace("/.well-known/est", "/metrics"))
    assert metrics.status == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=")
    text = metrics.body.decode()
    assert "zz-random-label-4711" not in text
    assert 'est_requests_total{alias="unknown",operation="cacerts",status="404"}' in text
    audited = [e for e in _audit_lines(gateway) if e["status"] == 404 and e["alias"] == "unknown"]
    assert audited


def test_metrics_count_requests_across_worker_processes(gateway: Gateway) -> None:
    def count() -> float:
        text = gateway.curl(gateway.url.replace("/.well-known/est", "/metrics")).body.decode()
        for line in text.splitlines():
            if line.startswith('est_requests_total{alias="est",operation="cacerts",status="200"}'):
                return float(line.split()[-1])
        return 0.0

    before = count()
    for _ in range(6):   # spread over both workers by the kernel
        assert gateway.curl(f"{gateway.url}/cacerts").status == 200
    assert count() == before + 6
    text = gateway.curl(gateway.url.replace("/.well-known/est", "/metrics")).body.decode()
    assert 'est_request_duration_seconds_bucket{alias="est",le="0.005",operation="cacerts"}' in text
    assert 'est_upstream_call_duration_seconds_count{backend="local",call="ca_certs"}' in text


def test_healthz(gateway: Gateway) -> None:
    res = gateway.curl(gateway.url.replace("/.well-known/est", "/healthz"))
    assert res.status == 200
    assert res.body == b"ok\nbackend approvals: ok\nbackend local: ok\n"


def test_weak_keys_and_hashes_are_refused_over_the_wire(gateway: Gateway) -> None:
    work = gateway.work
    for name, args, reason in [
        ("rsa1024", ["-newkey", "rsa:1024"], b"RSA keys must have 2048 to 8192 bits, not 1024"),
        ("sha1", ["-newkey", "rsa:2048", "-sha1"], b"CSR is signed with SHA1, which is not accepted"),
    ]:
        der = openssl.run("req", "-new", *args, "-nodes", "-keyout", str(work / f"{name}.key"),
                          "-subj", f"/CN={name}", "-outform", "DER")
        (work / f"{name}.b64").write_bytes(base64.encodebytes(der))
        res = gateway.curl(*gateway.enroll_args(work / f"{name}.b64"))
        assert res.status == 400 and res.body.startswith(reason), res.body


def _raw(gateway: Gateway, payload: bytes) -> bytes:
    ctx = ssl.create_default_context(cafile=str(gateway.instance.trust_anchor))
    with socket.create_connection(("127.0.0.1", gateway.process.port), timeout=30) as sock, \
            ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        tls.sendall(payload)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data


def test_oversized_headers_get_431_in_plain_text(gateway: Gateway) -> None:
    answer = _raw(gateway, b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nX-Big: "
                  + b"a" * 20000 + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert body == b"request header fields too large or too many\n"


def test_garbage_request_line_gets_400_in_plain_text(gateway: Gateway) -> None:
    answer = _raw(gateway, b"HELLO THERE\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: text/plain; charset=utf-8" in head and body == b"malformed HTTP request\n"


def test_repeated_failures_from_one_address_get_429(tmp_path: Path) -> None:
    instance, process = local_instance(tmp_path / "est-local", extra_config="[limits]\nauth_failures_per_minute = 3\n")
    _, csr = openssl.new_csr(tmp_path, "t", subject="/CN=throttled")
    ta = instance.trust_anchor

    def enroll(password: str, *extra: str) -> tuple[int, dict[str, str], bytes]:
        res = curl(*extra, "-u", f"estuser:{password}", "-H", PKCS10, "--data-binary", f"@{csr}",
                   f"{process.url}/simpleenroll", cacert=ta)
        return res.status, res.headers, res.body

    process.start()
    try:
        # The first, credential-less request of libest's flow is no failure.
        assert curl("-H", PKCS10, "--data-binary", f"@{csr}", f"{process.url}/simpleenroll",
                    cacert=ta).status == 401
        statuses = [enroll("wrong")[0] for _ in range(3)]
        assert statuses == [401, 401, 401]
        status, headers, body = enroll(instance.password())   # even the right password waits now
        assert status == 429 and body == b"too many failed authentication attempts; try again later\n"
        assert 1 <= int(headers["retry-after"]) <= 61
        # Another client address is not affected.
        assert enroll(instance.password(), "--interface", "127.0.0.2")[0] == 200
    finally:
        process.stop()


def _connects(gateway: Gateway, *urls: str) -> list[int]:
    """How many new connections curl opened for each URL fetched in one invocation."""
    args = ["curl", "-sS", "--cacert", str(gateway.instance.trust_anchor), "-w", "%{num_connects} "]
    for url in urls:
        args += ["-o", "/dev/null", url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return [int(n) for n in out.split()]


def test_keep_alive_reuses_the_tls_connection(gateway: Gateway) -> None:
    url = f"{gateway.url}/cacerts"
    assert _connects(gateway, url, url, url) == [1, 0, 0]


def test_connection_is_closed_after_an_error_answer(gateway: Gateway) -> None:
    ok, missing = f"{gateway.url}/cacerts", f"{gateway.url}/no-such-label/cacerts"
    assert _connects(gateway, ok, missing, ok) == [1, 0, 1]


def test_header_size_limit_is_configurable(tmp_path: Path) -> None:
    instance, process = local_instance(tmp_path / "est-local")
    instance.config.write_text(instance.config.read_text().replace("workers = 2\n",
                                                                   "workers = 1\nmax_header_bytes = 2048\n"))
    process.start()
    try:
        url = f"{process.url}/cacerts"
        small = curl("-H", "X-Pad: " + "a" * 1500, url, cacert=instance.trust_anchor)
        big = curl("-H", "X-Pad: " + "a" * 3000, url, cacert=instance.trust_anchor)
    finally:
        process.stop()
    assert small.status == 200
    assert big.status == 431 and big.body == b"request header fields too large or too many\n"
