"""Reload without a restart, against a real gateway process: SIGHUP (or ``est-gateway
reload``) reads the configuration and every secret file again and new workers serve them
while the old ones finish their requests; a password rotates under load with no
legitimate request failing; a configuration that does not validate is refused and the
running one keeps serving."""

from __future__ import annotations

import base64
import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from est_gateway import localmode
from est_gateway.cli import main
from tests.support.gateway import GatewayProcess, children_of, local_instance
from tests.support.load import TLSConnection
from tests.support.pki import csr_b64, make_csr, p256_key

pytestmark = pytest.mark.e2e

WORKERS = 2
CLIENTS = 4
NEW_PASSWORD = "the password of the new quarter"
CURRENT = 'password_file = "secrets/est.password"\n'


@dataclass
class Result:
    client: int
    password: str          # "old" or "new"
    sent: int              # the test's phase when the request was sent, and when it was answered
    answered: int
    status: int | None     # None: no HTTP answer (refused, reset, timeout)
    error: str = ""


class Fleet:
    """Devices enrolling in a loop, each over a new connection, with the old password
    until told to switch (the even-numbered ones switch; the others never get the new one)."""

    def __init__(self, port: int, cafile: Path, old: str) -> None:
        self.port, self.old = port, old
        self.context = ssl.create_default_context(cafile=str(cafile))
        self.phase = 0
        self.switched = False
        self.results: list[Result] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def __enter__(self) -> Fleet:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self.threads)

    def _run(self, client: int) -> None:
        n = 0
        while not self.stop.is_set():
            which = "new" if self.switched and client % 2 == 0 else "old"
            sent = self.phase
            status, error = self._enroll(NEW_PASSWORD if which == "new" else self.old, f"fleet-{client}-{n}",
                                         client)
            with self.lock:
                self.results.append(Result(client, which, sent, self.phase, status, error))
            n += 1

    def _enroll(self, password: str, cn: str, client: int = 0) -> tuple[int | None, str]:
        token = base64.b64encode(f"{localmode.USERNAME}:{password}".encode()).decode()
        # Each device from an address of its own, as a fleet's are: the gateway bounds the
        # password checks one address may have running at once.
        conn = TLSConnection("127.0.0.1", self.port, context=self.context, timeout=60,
                             source_address=(f"127.0.0.{10 + client}", 0))
        response = None
        try:
            conn.request("POST", "/.well-known/est/simpleenroll", body=csr_b64(make_csr(p256_key(), cn=cn)),
                         headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {token}"})
            response = conn.getresponse()
            body = response.read()
            return response.status, "" if response.status == 200 else body[:200].decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            if response is not None:
                response.close()
            conn.close()

    def wait_for(self, predicate: Callable[[list[Result]], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate(list(self.results)):
                    return
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
            time.sleep(0.05)


def _gateway(tmp_path: Path, *, previous: str = "") -> tuple[localmode.LocalInstance, GatewayProcess]:
    """A local-mode gateway on the real password file; ``previous`` goes after its password."""
    instance, process = local_instance(tmp_path / "est-local")
    text = instance.config.read_text(encoding="utf-8").replace(CURRENT, CURRENT + previous)
    # A device that gets the new password before the gateway does fails until the reload,
    # as often as it tries: the failure throttle would then refuse its address for a while.
    instance.config.write_text(text + "\n[limits]\nauth_failures_per_minute = 0\n", encoding="utf-8")
    return instance, process


def _write_secret(path: Path, text: str) -> None:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)


def _wait_until_replaced(process: GatewayProcess, old: list[int], timeout: float = 90) -> list[int]:
    """The worker pids once every old worker has exited and as many new ones serve."""
    assert process.proc is not None
    deadline = time.monotonic() + timeout
    while True:
        now = children_of(process.proc.pid)
        if len(now) == WORKERS and not set(now) & set(old):
            return now
        assert time.monotonic() < deadline, f"workers {now} after {timeout}s (before the reload: {old})"
        time.sleep(0.05)


def _wait_for_log(process: GatewayProcess, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := process.output()):
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s:\n{log[-3000:]}"
        time.sleep(0.05)
    return log


def _reload_command(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "est_gateway.cli", "reload", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def _procedure() -> tuple[str, str]:
    """docs/operations.md's rotation: its shell step, and the keys it adds to the label."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("## Rotating a label's password", 1)[1].split("\n## ", 1)[0]
    shell, toml = re.findall(r"```(?:sh|toml)\n(.*?)```", section, re.DOTALL)[:2]
    keys = "".join(line.strip() + "\n" for line in toml.splitlines() if line.strip().startswith("previous_"))
    # The example's end date is near: the test's window must not end while it runs.
    return textwrap.dedent(shell), re.sub(r"\d{4}-\d\d-\d\dT", "2999-01-01T", keys)


def _rotate_under_load(tmp_path: Path, *, window: bool) -> list[Result]:
    """A fleet enrolls with the old password; the password file gets the new one (with a
    window: docs/operations.md's procedure, the old one kept as the previous password);
    the gateway reloads, the fleet's even half switches to the new password. The results,
    by phase: 0 before the reload, 1 while old workers may still serve, 2 once only new
    workers serve."""
    instance, process = _gateway(tmp_path)
    old = instance.password()
    password_file = instance.folder / "secrets" / "est.password"
    process.start()
    try:
        before = process.workers(WORKERS)
        with Fleet(process.port, instance.trust_anchor, old) as fleet:
            fleet.wait_for(lambda rs: len(rs) >= 2 * CLIENTS, "enrollments before the reload")
            fleet.phase = 1
            if window:
                shell, keys = _procedure()
                subprocess.run(["bash", "-euc", shell.replace("cd /etc/est-gateway", f"cd {instance.folder}")],
                               env={**os.environ, "NEW_PASSWORD": NEW_PASSWORD}, check=True, timeout=30)
                instance.config.write_text(instance.config.read_text(encoding="utf-8")
                                           .replace(CURRENT, CURRENT + keys), encoding="utf-8")
                # the operator's command, which checks the configuration first
                done = _reload_command(instance.config)
                assert done.returncode == 0 and "sent SIGHUP to est-gateway" in done.stdout, done
            else:
                _write_secret(password_file, NEW_PASSWORD)
                assert process.proc is not None
                process.proc.send_signal(signal.SIGHUP)
            fleet.switched = True
            _wait_until_replaced(process, before)
            fleet.phase = 2
            fleet.wait_for(lambda rs: all(sum(r.sent == 2 and r.client == c for r in rs) >= 3 for c in range(CLIENTS)),
                           "three enrollments per device after the reload")
        results = fleet.results
    finally:
        process.stop()
    log = process.output()
    assert "reloaded" in log and "Traceback" not in log, log[-4000:]
    assert old not in log and NEW_PASSWORD not in log
    return results


def test_a_password_rotates_under_load_and_only_the_rotated_out_one_is_refused(tmp_path: Path) -> None:
    results = _rotate_under_load(tmp_path, window=False)
    assert [r for r in results if r.status not in (200, 401)] == []      # no connection dropped, no 5xx
    assert {r.status for r in results if r.answered == 0} == {200}
    after = [r for r in results if r.sent == 2]
    assert {r.status for r in after if r.password == "new"} == {200}
    assert {r.status for r in after if r.password == "old"} == {401}
    assert len(after) >= 3 * CLIENTS


def test_with_a_previous_password_window_nobody_is_refused_during_the_rotation(tmp_path: Path) -> None:
    results = _rotate_under_load(tmp_path, window=True)
    # The only refusals: the new password, sent before the gateway had it.
    assert [r for r in results if r.status != 200 and not (r.password == "new" and r.sent == 1)] == []
    assert {r.status for r in results if r.password == "new" and r.sent == 1} <= {200, 401}
    assert sum(r.sent == 2 and r.password == "old" for r in results) >= 3 * CLIENTS // 2
    assert sum(r.sent == 2 and r.password == "new" for r in results) >= 3 * CLIENTS // 2


def _enroll_once(instance: localmode.LocalInstance, port: int, password: str) -> int | None:
    fleet = Fleet(port, instance.trust_anchor, password)
    status, _ = fleet._enroll(password, "one-device")
    return status


@pytest.mark.parametrize(("change", "logged"), [
    (lambda text: text.replace("workers = 2", "workers = 2\nworkerz = 3"),
     'server.workerz: unknown setting; did you mean "workers"?'),
    (lambda text: text.replace(CURRENT, CURRENT + "previous_password_until = 2027-01-31T00:00:00Z\n", 1),
     "aliases.est.previous_password_until: applies only with a previous password"),
    (lambda text: text.replace('listen = "127.0.0.1:', 'listen = "127.0.0.2:'),
     "the listening addresses changed"),
])
def test_a_configuration_that_does_not_validate_is_refused_and_the_running_one_serves_on(
        tmp_path: Path, change: Callable[[str], str], logged: str) -> None:
    instance, process = _gateway(tmp_path)
    old = instance.password()
    process.start()
    try:
        before = process.workers(WORKERS)
        assert _enroll_once(instance, process.port, old) == 200
        _write_secret(instance.folder / "secrets" / "est.password", NEW_PASSWORD)
        instance.config.write_text(change(instance.config.read_text(encoding="utf-8")), encoding="utf-8")
        assert process.proc is not None
        process.proc.send_signal(signal.SIGHUP)
        log = _wait_for_log(process, "reload refused, still serving the previous configuration")
        _wait_until_replaced(process, before)     # gunicorn restarts the workers all the same
        assert [_enroll_once(instance, process.port, old), _enroll_once(instance, process.port, NEW_PASSWORD)] \
            == [200, 401]
    finally:
        process.stop()
    assert logged in log and "Traceback" not in log, log[-3000:]


def test_reload_checks_the_configuration_before_it_signals(tmp_path: Path) -> None:
    instance, process = _gateway(tmp_path)
    process.start()
    try:
        process.workers(WORKERS)
        text = instance.config.read_text(encoding="utf-8")
        instance.config.write_text(text.replace("workers = 2", "workers = 0"), encoding="utf-8")
        done = _reload_command(instance.config)
        assert done.returncode == 2 and "server.workers:" in done.stderr, done
        instance.config.write_text(text, encoding="utf-8")
        done = _reload_command(instance.config)
        assert done.returncode == 0, done
        assert process.proc is not None
        _wait_for_log(process, "reloaded")
        assert process.output().count("Hang up") == 1     # the refused one was never sent
    finally:
        process.stop()
    assert not (instance.folder / "gateway.pid").exists()     # removed at exit


def test_a_stale_pid_file_does_not_keep_the_gateway_from_starting(tmp_path: Path) -> None:
    """A pid file left by a killed gateway may name a process that reused the pid."""
    instance, process = local_instance(tmp_path / "est-local")
    other = subprocess.Popen(["sleep", "60"])
    try:
        (instance.folder / "gateway.pid").write_text(f"{other.pid}\n")
        process.start()
        assert process.proc is not None
        assert (instance.folder / "gateway.pid").read_text().strip() == str(process.proc.pid)
        assert other.poll() is None
    finally:
        process.stop()
        other.kill()
        other.wait(10)
    assert "removed the stale pid file" in process.output()


def test_reload_does_not_signal_a_process_a_stale_pid_file_names(tmp_path: Path) -> None:
    instance, _ = local_instance(tmp_path / "est-local")
    runner = CliRunner()
    done = runner.invoke(main, ["reload", "--config", str(instance.config)])
    assert done.exit_code == 1 and f"{instance.folder / 'gateway.pid'} does not exist" in done.output
    other = subprocess.Popen(["sleep", "60"])
    try:
        (instance.folder / "gateway.pid").write_text(f"{other.pid}\n")
        done = runner.invoke(main, ["reload", "--config", str(instance.config)])
        assert done.exit_code == 1 and f"names process {other.pid}, which is not est-gateway" in done.output
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(10)
    done = runner.invoke(main, ["reload", "--config", str(instance.config)])
    assert done.exit_code == 1 and "which is not running (a stale pid file)" in done.output
    os.unlink(instance.folder / "gateway.pid")
