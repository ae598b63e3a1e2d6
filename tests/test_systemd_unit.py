"""contrib/systemd/est-gateway.service: accepted by systemd itself (Debian's systemd-analyze
verify, without a warning), hardened as docs/operations.md says, and its ExecReload's SIGHUP
is one the gateway survives, serving on with new workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.gateway import children_of, curl, local_instance

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "systemd" / "est-gateway.service"
INSTALLED = "/opt/est-gateway/.venv/bin/est-gateway"


def verify(unit_text: str, folder: Path) -> str:
    """systemd-analyze verify's complaints (none: empty); it needs ExecStart's program to
    exist, so the installed path is this venv's est-gateway."""
    unit = folder / "est-gateway.service"
    unit.write_text(unit_text.replace(INSTALLED, str(Path(sys.executable).with_name("est-gateway"))))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    return f"{done.returncode}: {done.stdout}{done.stderr}" if done.returncode or done.stdout or done.stderr else ""


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    assert verify(UNIT.read_text(), tmp_path) == ""


def test_a_unit_systemd_would_ignore_a_line_of_is_caught(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictly")
    assert "Failed to parse protect system value, ignoring: strictly" in verify(broken, tmp_path)


def test_the_unit_is_hardened_and_reloads_with_hup() -> None:
    unit = directives(UNIT.read_text())
    assert unit["User"] == ["est-gateway"] and unit["Group"] == ["est-gateway"]
    assert unit["ProtectSystem"] == ["strict"] and unit["ReadWritePaths"] == ["/var/lib/est-gateway"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["ExecStart"] == [f"{INSTALLED} serve --config /etc/est-gateway/gateway.toml"]


def test_the_reload_signal_restarts_the_workers_and_serving_goes_on(tmp_path: Path) -> None:
    instance, gateway = local_instance(tmp_path / "state")
    gateway.start()
    try:
        before = set(gateway.workers(2))
        assert gateway.proc is not None
        os.kill(gateway.proc.pid, signal.SIGHUP)
        for _ in range(300):       # old workers stop as new ones start: until only new ones run
            after = set(children_of(gateway.proc.pid))
            if len(after) == 2 and not after & before:
                break
            time.sleep(0.1)
        assert not after & before, (before, after)
        assert curl(f"{gateway.url}/cacerts", cacert=instance.trust_anchor).status == 200
    finally:
        assert gateway.stop() == 0
