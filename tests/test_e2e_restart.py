"""Local test mode as a user starts it, twice: same CA, same password, records kept."""

from __future__ import annotations

import base64
import os
import signal
from pathlib import Path

from est_gateway import localmode, wire
from tests.support import openssl
from tests.support.attack import wait_until
from tests.support.gateway import GatewayProcess, curl, free_port, local_instance


def _start_local(folder: Path, port: int, log: Path) -> GatewayProcess:
    process = GatewayProcess(folder / localmode.CONFIG_NAME, port, log)
    return process.start("local", "--state-dir", str(folder), "--port", str(port))


def test_restart_keeps_ca_password_and_records(tmp_path: Path) -> None:
    folder, port = tmp_path / "est-local", free_port()
    first = _start_local(folder, port, tmp_path / "first.log")
    try:
        instance = localmode.LocalInstance(folder.resolve())
        password = instance.password()
        cacerts1 = curl(f"{first.url}/cacerts", cacert=instance.trust_anchor)
        key, csr = openssl.new_csr(tmp_path, "dev", subject="/CN=restart-dev")
        res = curl("-u", f"estuser:{password}", "-H", "Content-Type: application/pkcs10",
                   "--data-binary", f"@{csr}", f"{first.url}/simpleenroll", cacert=instance.trust_anchor)
        assert res.status == 200
        openssl.certs_from_pkcs7_b64(res.body, tmp_path / "dev.pem")
    finally:
        assert first.stop(signal.SIGTERM) == 0      # graceful shutdown exits cleanly
    banner = first.output()
    assert "(created " in banner and f"estuser / {password}" in banner
    assert f"export EST=https://127.0.0.1:{port}/.well-known/est TA={instance.trust_anchor} " in banner

    # --port on an existing instance is applied (and said), not silently ignored.
    new_port = free_port()
    second = _start_local(folder, new_port, tmp_path / "second.log")
    try:
        assert "(reused " in second.output()
        assert f"port {port} changed to {new_port}" in second.output()
        assert f'listen = "127.0.0.1:{new_port}"' in instance.config.read_text()
        assert instance.password() == password
        cacerts2 = curl(f"{second.url}/cacerts", cacert=instance.trust_anchor)
        assert set(wire.read_certs_only(base64.b64decode(cacerts2.body))) == \
            set(wire.read_certs_only(base64.b64decode(cacerts1.body)))
        # The certificate issued before the restart is on record and still renews.
        _, renew = openssl.new_csr(tmp_path, "renew", subject="/CN=restart-dev")
        res = curl("--cert", str(tmp_path / "dev.pem"), "--key", str(key), "-H",
                   "Content-Type: application/pkcs10", "--data-binary", f"@{renew}",
                   f"{second.url}/simplereenroll", cacert=instance.trust_anchor)
        assert res.status == 200, res.body
        res = curl("-u", f"estuser:{password}", "-H", "Content-Type: application/pkcs10",
                   "--data-binary", f"@{csr}", f"{second.url}/simpleenroll", cacert=instance.trust_anchor)
        assert res.status == 200           # the same password still works
    finally:
        second.stop()
    from est_gateway.backends.local.store import CertificateStore

    store = CertificateStore(folder / "local-ca" / "certificates.sqlite3")
    assert store.count() == 3
    assert store.get(openssl.serial_of(tmp_path / "dev.pem")) is not None


def test_generated_config_is_the_shipped_example(tmp_path: Path) -> None:
    """config/local.toml in the repository is exactly what local mode writes."""
    instance, _ = localmode.prepare(tmp_path / "x", port=8443)
    shipped = Path(__file__).resolve().parent.parent / "config" / "local.toml"
    assert instance.config.read_text() == shipped.read_text()


def test_a_killed_gateway_leaves_no_stale_metrics_folder_after_the_next_start(tmp_path: Path) -> None:
    """SIGKILL to the whole process tree (systemd's last resort, the OOM killer) cannot remove
    the folder of metric samples; the next start removes it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = GatewayProcess(tmp_path / "est-local" / localmode.CONFIG_NAME, free_port(), tmp_path / "gw.log",
                             env={"TMPDIR": str(scratch)})
    args = ("local", "--state-dir", str(tmp_path / "est-local"), "--port", str(process.port))
    process.start(*args)
    stale = list(scratch.glob("est-gateway-metrics-*"))
    assert len(stale) == 1
    workers = process.workers(2)
    process.stop(signal.SIGKILL)    # the arbiter first: it would replace killed workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 30)
    assert list(scratch.glob("est-gateway-metrics-*")) == stale   # what SIGKILL leaves
    process.start(*args)
    try:
        current = list(scratch.glob("est-gateway-metrics-*"))
    finally:
        assert process.stop(signal.SIGTERM) == 0
    assert len(current) == 1 and current != stale, current
    assert not list(scratch.glob("est-gateway-metrics-*"))        # a clean stop removes its own


def test_the_workers_of_a_killed_arbiter_exit(tmp_path: Path) -> None:
    """They hold the listening socket: a gateway started after a SIGKILL needs the port."""
    _, process = local_instance(tmp_path / "est-local")
    process.start()
    workers = process.workers(2)    # local mode's config/local.toml: workers = 2
    process.stop(signal.SIGKILL)
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 30)
