"""docs/operations.md's procedures, run as written: check-config, then an online backup of a
serving gateway's local CA (the copies keep mode 0600) and a restore after the state folder
is lost, which brings every record back."""

from __future__ import annotations

from pathlib import Path

from est_gateway import localmode
from tests.support.doc_blocks import ROOT, enroll_and_renew, run_script, sh_blocks
from tests.support.gateway import free_port

DOC = ROOT / "docs" / "operations.md"

#: the test's part between backup and restore: stop the gateway, lose the state folder
LOSE_THE_STATE = """
kill $(jobs -p) && wait
rm -rf "$STATE_DIR" && mkdir -m 700 "$STATE_DIR"
"""
#: after the restore
SHOW = """
stat -c 'mode %a %n' "$BACKUP/certificates.sqlite3" "$BACKUP"/cas/*/signing.key
est-gateway local-ca list --config "$CONFIG"
echo "renewed serial $(openssl x509 -in device.pem -noout -serial | cut -d= -f2 | tr A-F a-f | sed 's/^0*//')"
"""


def test_backup_and_restore_run_as_written(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    running = sh_blocks(text, "## Running")
    backup, restore = sh_blocks(text, "## Backing up the local CA's state folder")
    instance, _ = localmode.prepare(tmp_path / "gw", port=8443)
    env = {"CONFIG": str(instance.config), "GW": str(instance.folder), "STATE_DIR": str(instance.folder / "local-ca"),
           "BACKUP": str(tmp_path / "backup")}
    script = "\n".join([*running, enroll_and_renew("gateway.toml", free_port()), backup, LOSE_THE_STATE,
                        restore, SHOW])
    done = run_script(script, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{(tmp_path / 'gateway.log').read_text()}"
    lines = done.stdout.splitlines()
    assert f"{instance.config}: OK (2 alias(es), 1 backend(s))" in lines
    modes = [line.split()[1] for line in lines if line.startswith("mode ")]
    assert modes == ["600", "600"]
    assert "(2 shown, 2 on record)" in lines
    renewed = next(line.split()[-1] for line in lines if line.startswith("renewed serial "))
    assert any(line.startswith(f"{renewed} ") and " valid " in line for line in lines), done.stdout
