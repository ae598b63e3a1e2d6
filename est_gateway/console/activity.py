"""What the console reads back: audit lines (from ``[console] audit_file``, which every
worker process appends to) filtered for the audit page, and the enrollments and failures
of the last 24 hours counted from them for the overview's chart."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from est_gateway.audit import AuditFile

ENROLL_OPERATIONS = ("simpleenroll", "simplereenroll", "serverkeygen")
HOURS = 24


@dataclass(frozen=True)
class AuditFilter:
    """The audit page's filters (empty: any)."""

    label: str = ""
    operation: str = ""
    outcome: str = ""   # "", "ok" (2xx), "failed" (4xx/5xx) or "console"
    text: str = ""

    def matches(self, entry: Mapping[str, object]) -> bool:
        if self.label and entry.get("alias") != self.label:
            return False
        if self.operation and entry.get("operation") != self.operation:
            return False
        status = entry.get("status")
        if self.outcome == "ok" and not (isinstance(status, int) and status < 400):
            return False
        if self.outcome == "failed" and not (isinstance(status, int) and status >= 400):
            return False
        if self.outcome == "console" and not entry.get("admin"):
            return False
        return not self.text or self.text.lower() in json.dumps(entry, ensure_ascii=False).lower()


def entries(file: AuditFile | None) -> list[dict[str, object]]:
    """Every readable audit line kept, newest first."""
    if file is None:
        return []
    found = []
    for line in file.lines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue        # a line cut by a crash mid-write
        if isinstance(entry, dict):
            found.append(entry)
    found.reverse()
    return found


@dataclass(frozen=True)
class HourlyCounts:
    """Enrollments (2xx, pending included) and failures (4xx/5xx) per hour, oldest first."""

    start: dt.datetime
    enrollments: tuple[int, ...]
    failures: tuple[int, ...]


def hourly(lines: Iterable[Mapping[str, object]], now: dt.datetime) -> HourlyCounts:
    """The last 24 hours of enrollment requests (simpleenroll, simplereenroll, serverkeygen)."""
    end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=HOURS)
    ok, failed = [0] * HOURS, [0] * HOURS
    for entry in lines:
        if entry.get("operation") not in ENROLL_OPERATIONS or "admin" in entry:
            continue
        try:
            at = dt.datetime.fromisoformat(str(entry.get("time")))
        except ValueError:
            continue
        if at.tzinfo is None or not start <= at < end:
            continue
        hour = int((at - start).total_seconds() // 3600)
        status = entry.get("status")
        if isinstance(status, int):
            (ok if status < 400 else failed)[hour] += 1
    return HourlyCounts(start, tuple(ok), tuple(failed))


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    count: int
    hour: str


def bars(counts: tuple[int, ...], start: dt.datetime, *, width: float, height: float, offset: float,
         scale: int) -> list[Bar]:
    """Bars of one series for the server-drawn SVG chart (no script, no style attribute)."""
    step = width / len(counts)
    drawn = []
    for i, count in enumerate(counts):
        h = height * count / scale if scale else 0.0
        hour = (start + dt.timedelta(hours=i)).strftime("%H:00")
        drawn.append(Bar(round(i * step + offset, 1), round(height - h, 1), round(h, 1), count, hour))
    return drawn
