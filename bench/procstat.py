"""CPU time and peak memory of a gateway's process tree, read from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the gunicorn arbiter's workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), to see foreign load."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


@dataclass
class TreeSnapshot:
    cpu_s: float
    peak_rss_mib: dict[int, float]  # worker pid -> VmHWM
    machine_busy_s: float = 0.0


class ProcessTree:
    """The arbiter and its workers; CPU deltas survive worker restarts by pid bookkeeping."""

    def __init__(self, root_pid: int) -> None:
        self.root = root_pid
        self.seen: dict[int, float] = {}

    def workers(self) -> list[int]:
        return children(self.root)

    def snapshot(self) -> TreeSnapshot:
        pids = [self.root, *self.workers()]
        for pid in pids:
            self.seen[pid] = cpu_seconds(pid) or self.seen.get(pid, 0.0)
        peak = {pid: status_kib(pid, "VmHWM") / 1024 for pid in pids[1:]}
        return TreeSnapshot(sum(self.seen.values()), peak, machine_busy_seconds())
