"""The folder where every worker process writes its metric samples (prometheus-client's
multi-process mode), kept free of stale folders.

Imports no prometheus_client: ``est-gateway serve`` must point ``PROMETHEUS_MULTIPROC_DIR``
at the folder before that library is first imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "est-gateway-metrics-"


def fresh(parent: Path | None = None) -> Path:
    """A new folder named after this process (``est-gateway-metrics-<pid>-…``). Folders of
    earlier runs whose process is gone are removed first: a clean stop removes its own,
    but SIGKILL or a power cut leaves it behind."""
    parent = Path(parent or tempfile.gettempdir())
    for old in parent.glob(f"{PREFIX}*"):
        owner = _owner(old)
        try:
            mine = old.is_dir() and not old.is_symlink() and old.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and owner is not None and not _running(owner):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))


def _owner(folder: Path) -> int | None:
    pid, sep, _ = folder.name[len(PREFIX):].partition("-")
    return int(pid) if sep and pid.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove(folder: Path) -> None:
    """Remove ``folder`` if this process created it. A gunicorn worker leaves through the
    arbiter's stack (SystemExit after fork), so without this check every worker that exits
    would delete the folder the arbiter and the other workers still use."""
    if _owner(folder) == os.getpid():
        shutil.rmtree(folder, ignore_errors=True)
