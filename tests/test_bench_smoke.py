"""The benchmark harness in a tiny configuration: it runs and writes well-formed results.

A smoke test of bench/, never a performance test: no timing is asserted here.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import scale
from bench.__main__ import main
from bench.threads import thread_counts, thread_kind


@pytest.mark.e2e
def test_tiny_benchmark_writes_well_formed_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["--tiny", "--no-scale", "--scenarios", "reenroll-mtls,cacerts,enroll-p256", "--out", str(out)]) == 0
    data = json.loads((out / "latest.json").read_text())
    assert data["machine"]["nproc"] >= 1
    assert set(data["ceiling"]["ceilings"]) >= {"enroll-rsa", "enroll-p256", "reenroll-mtls", "cacerts"}
    assert all(v > 0 for v in data["ceiling"]["costs_ms"].values())
    assert isinstance(data["keep_alive_probe"]["available"], bool)
    runs = data["runs"]
    assert {(r["scenario"], r["mode"]) for r in runs} >= {("reenroll-mtls", "new"), ("cacerts", "new"),
                                                         ("enroll-p256", "new")}   # on the P-256 TLS gateway
    assert {r["gateway"] for r in runs if r["scenario"] == "enroll-p256"} == {"p256tls"}
    assert {r["gateway"] for r in runs if r["scenario"] != "enroll-p256"} == {"main"}
    for r in runs:
        assert r["errors"] == 0, r["statuses"]
        assert r["requests"] > 0 and set(r["statuses"]) == {"200"}
        assert r["p50_ms"] <= r["p99_ms"]
        assert r["handshakes_per_request"] >= 1.0 or r["mode"] == "keepalive"
    assert data["upstream"]["measured"] is False
    # issue 14's table: the targeted scenarios that ran, each with its crypto floor and target
    cpu = {(r["scenario"], r["mode"]): r for r in data["cpu"]}
    assert set(cpu) == {("reenroll-mtls", "new"), ("cacerts", "keepalive"), ("enroll-p256", "new"),
                        ("enroll-p256", "keepalive")}
    assert cpu["reenroll-mtls", "new"]["crypto_floor_ms"] > 0 and cpu["cacerts", "keepalive"]["crypto_floor_ms"] == 0
    for row in cpu.values():
        assert row["cpu_ms"] and all(ms >= 0 for ms in row["cpu_ms"]) and row["target_ms"] > 0
    # /proc counts CPU in whole clock ticks (10 ms): a tiny run that costs the gateway less
    # than 10 ms may count none (six keep-alive cacerts, ~1 ms; six new-connection P-256
    # enrollments, ~10 ms); six new-connection re-enrollments (~20 ms) always count some.
    assert sum(cpu["reenroll-mtls", "new"]["cpu_ms"]) > 0
    assert data["ceiling"]["costs_ms"]["tls_handshake_full_p256"] > 0
    assert data["peak_rss_mib_end"] > 0
    attacked = data["attack"]["runs"]
    assert {r["scenario"] for r in attacked} == {"cacerts", "enroll-p256"}
    for r in attacked:
        assert r["with"]["errors"] == 0 and r["with"]["requests"] > 0, r["with"]["statuses"]
        assert r["attack_connections_opened"] == data["attack"]["attack"]["idle"] + 4
    assert (out / "latest.png").read_bytes().startswith(b"\x89PNG")   # scripts/test.sh installs the bench extra


def test_store_filler_writes_lookup_able_records(tmp_path: Path) -> None:
    info = scale.fill(tmp_path, 500, issuer="CN=Test", batch=200)
    assert info["records"] == 500 and info["sample_serials"]
    costs = scale.lookup_costs(tmp_path / scale.STORE_NAME, info["sample_serials"], rounds=20)
    assert costs["records"] == 500
    assert "USING INDEX" in costs["query_plan"] or "PRIMARY KEY" in costs["query_plan"]



def test_bench_standin_takes_what_the_standin_server_passes() -> None:
    """The tiny run above leaves out enroll-upstream (its stand-in PKI is slow to build); the
    benchmark's stand-in overrides ``rest`` and must take every argument the stand-in's
    request handler passes, or every upstream enrollment of ``python -m bench`` fails."""
    from bench.upstream import BenchStandin
    from tests.support.ejbca_standin import StandinEjbca

    assert inspect.signature(BenchStandin.rest) == inspect.signature(StandinEjbca.rest)


def test_the_app_cpu_bench_runs_its_three_requests() -> None:
    """bench/app_cpu.py (the WSGI app alone, in process) in its own process: its Prometheus
    multiprocess folder must not leak into this one."""
    done = subprocess.run([sys.executable, "-m", "bench.app_cpu", "--calls", "8", "--rounds", "1"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    assert rows == ["cacerts", "404", "simpleenroll"], done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_thread_counts_tell_the_loop_and_the_pool_apart() -> None:
    """bench.threads reads each thread of a process: the main thread is the loop, any other
    the pool; its blocking waits are counted."""
    go, done, end = threading.Event(), threading.Event(), threading.Event()

    def pool_thread() -> None:
        for _ in range(5):
            go.wait()
            go.clear()
            done.set()
        end.wait()

    thread = threading.Thread(target=pool_thread)
    thread.start()
    before = thread_counts([os.getpid()])
    for _ in range(5):
        time.sleep(0.02)          # the thread is blocked in go.wait() meanwhile
        go.set()
        assert done.wait(10)
        done.clear()
    after = thread_counts([os.getpid()])
    end.set()
    thread.join()
    assert after["pool", "voluntary_switches"] - before["pool", "voluntary_switches"] >= 5
    assert after["loop", "user_s"] > 0
    assert [thread_kind(10, tid, name) for tid, name in ((10, "python"), (11, "est-commit"), (12, "python"))] \
        == ["loop", "pool", "pool"]
