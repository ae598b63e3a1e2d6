"""bench.hostile in a tiny configuration: it runs and reports (no timing asserted)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import hostile


@pytest.mark.e2e
def test_the_hostile_scenario_reports_each_legitimate_scenario_under_the_flood(tmp_path: Path) -> None:
    args = argparse.Namespace(clients=1, flooders=4, duration=0.3, warmup=0.0, max_requests=20,
                              failures_per_minute=0)
    result = hostile.run(args, tmp_path)
    assert [r["scenario"] for r in result["rows"]] == list(hostile.LEGIT)
    assert all(r["requests"] > 0 for r in result["rows"])
    assert set(result["flood_statuses"]) <= {"401", "429", "503", "error"} and result["flood_statuses"]
    assert "flood p99" in hostile.table(result)
