"""Find a running gateway's arbiter from its pid file, to signal it (``est-gateway reload``)."""

from __future__ import annotations

import os
from pathlib import Path

#: words one of which a gateway arbiter's command line holds (``python -m est_gateway.cli``,
#: the ``est-gateway`` script, or gunicorn's process title ``master [est-gateway]``)
COMMAND_WORDS = ("est_gateway", "est-gateway")


class NoGateway(Exception):
    """No running gateway behind the pid file; the message says why."""


def arbiter_pid(pid_file: Path) -> int:
    """The pid the file names, once it is a live gateway process: a pid file left by a
    gateway that was killed may name a process that reused the number, which a signal
    meant for the gateway would hit (SIGHUP ends most programs)."""
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise NoGateway(f"{pid_file} does not exist: no gateway serves with this configuration "
                        "(or it serves with another server.pid_file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NoGateway(f"cannot read {pid_file}: {exc}") from None
    if not text.isdigit() or int(text) <= 1:
        raise NoGateway(f"{pid_file} does not hold a process id")
    pid = int(text)
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        raise NoGateway(f"{pid_file} names process {pid}, which is not running (a stale pid file)") from None
    except OSError:
        command = None      # no /proc to look at: trust the file
    if command is not None and not any(word in command for word in COMMAND_WORDS):
        raise NoGateway(f"{pid_file} names process {pid}, which is not est-gateway (a stale pid file)")
    return pid


def signal_arbiter(pid_file: Path, signum: int) -> int:
    """Send ``signum`` to the gateway the pid file names; its pid."""
    pid = arbiter_pid(pid_file)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise NoGateway(f"process {pid} ended meanwhile") from None
    except PermissionError:
        raise NoGateway(f"not allowed to signal process {pid}: run this as the gateway's user") from None
    return pid


def remove_stale_pid_file(pid_file: Path) -> bool:
    """Before the arbiter writes its own: remove a pid file that names no running gateway
    (one left by a gateway that was killed, maybe naming a process that reused its pid),
    which gunicorn would take for a gateway still running. True when one was removed."""
    try:
        arbiter_pid(pid_file)
    except NoGateway:
        if pid_file.exists():
            pid_file.unlink()
            return True
    return False
