"""Running a document's procedure as a reader does: its ```sh blocks, in order, in one bash."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sh_blocks(markdown: str, section: str) -> list[str]:
    """The ```sh blocks of the section headed ``section`` (up to the next heading of its level)."""
    level, _, _ = section.partition(" ")
    text = markdown.split(f"\n{section}\n", 1)[1]
    text = re.split(rf"^{level} ", text, maxsplit=1, flags=re.MULTILINE)[0]
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def run_script(script: str, *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``set -euo pipefail`` + ``script`` in bash, with the gateway's venv first on PATH; every
    process it leaves running in the background (servers) is stopped afterwards."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    out_file, err_file = cwd / "script.stdout", cwd / "script.stderr"
    # Files, not pipes: the servers the script leaves running hold its output open.
    with out_file.open("w") as out, err_file.open("w") as err:
        proc = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, text=True,
                                env={**os.environ, **env, "PATH": path}, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _stop_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_file.read_text(), err_file.read_text())


def _stop_group(pgid: int, grace_s: float = 20.0) -> None:
    """SIGTERM the script's session (its servers stop gracefully); SIGKILL it after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
