"""The audit file the console reads back: every worker process appends whole lines, and
it stays bounded (moved to ``.1`` past its size, the older ``.1`` dropped)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from est_gateway.audit import AuditFile

LINE = json.dumps({"operation": "simpleenroll", "pad": "x" * 100})


def _append(path: Path, writer: int, count: int, max_bytes: int) -> None:
    file = AuditFile(path, max_bytes)
    for i in range(count):
        file.append(json.dumps({"writer": writer, "i": i, "pad": "x" * 100}))


def test_processes_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append, args=(path, w, 300, 10 * 1024 * 1024)) for w in range(3)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    lines = [json.loads(line) for line in AuditFile(path, 10 * 1024 * 1024).lines()]
    assert sorted((e["writer"], e["i"]) for e in lines) == [(w, i) for w in range(3) for i in range(300)]
    for w in range(3):      # each writer's lines in its own order
        assert [e["i"] for e in lines if e["writer"] == w] == list(range(300))


def test_the_file_is_bounded_and_keeps_the_newest_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    max_bytes = 64 * 1024
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append, args=(path, w, 1500, max_bytes)) for w in range(2)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    previous = path.with_name("audit.jsonl.1")
    assert path.stat().st_size <= max_bytes and previous.stat().st_size <= max_bytes
    lines = [json.loads(line) for line in AuditFile(path, max_bytes).lines()]
    assert len(lines) < 3000
    for w in range(2):      # what is dropped is each writer's oldest: its kept lines are its last
        kept = [e["i"] for e in lines if e["writer"] == w]
        assert kept == list(range(1500 - len(kept), 1500))
    assert lines[-1]["i"] == 1499                        # the very last line written is kept
    assert not list(tmp_path.glob("audit.jsonl.2*"))


def test_a_line_cut_by_a_crash_is_skipped_by_the_reader(tmp_path: Path) -> None:
    from est_gateway.console.activity import entries

    path = tmp_path / "audit.jsonl"
    file = AuditFile(path, 1024 * 1024)
    file.append(LINE)
    with path.open("a") as f:
        f.write('{"operation": "simplee')
    assert entries(file) == [json.loads(LINE)]
    assert entries(None) == []


def test_the_chart_counts_enrollments_and_failures_per_hour_of_the_last_day() -> None:
    import datetime as dt

    from est_gateway.console.activity import hourly

    now = dt.datetime(2030, 1, 1, 12, 30, tzinfo=dt.UTC)

    def line(minutes_ago: int, status: int, operation: str = "simpleenroll", **more: object) -> dict[str, object]:
        return {"time": (now - dt.timedelta(minutes=minutes_ago)).isoformat(), "operation": operation,
                "status": status, **more}

    counts = hourly([line(0, 200), line(1, 202, "serverkeygen"), line(2, 401), line(40, 200, "simplereenroll"),
                     line(60 * 24, 200),                    # a day ago: outside the chart
                     line(5, 200, "cacerts"),               # no enrollment
                     line(5, 303, "simpleenroll", admin="admin"),   # a console action
                     {"time": "garbage", "operation": "simpleenroll", "status": 200}], now)
    assert counts.start == dt.datetime(2029, 12, 31, 13, tzinfo=dt.UTC)
    assert counts.enrollments[-1] == 2 and counts.failures[-1] == 1
    assert counts.enrollments[-2] == 1 and sum(counts.enrollments) == 3 and sum(counts.failures) == 1
