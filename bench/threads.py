"""Where a worker's CPU goes by thread: the event loop and the request pool.

Per request, summed over the workers: user and system CPU and the voluntary and
involuntary context switches of each kind of thread, from ``/proc/<pid>/task/*``, over one
load run of a scenario (issue 14: what explains the CPU a profile of functions does not,
e.g. the loop thread preempted by the other threads).

    .venv/bin/python -m bench.threads --scenario enroll-rsa --seconds 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import SCENARIOS  # noqa: E402
from bench.fixtures import csr_pool, scenario_target, start_gateway  # noqa: E402
from bench.load import run_load  # noqa: E402
from bench.procstat import CLOCK_TICKS, ProcessTree, children  # noqa: E402

#: what is counted per kind of thread
COUNTS = ("user_s", "system_s", "voluntary_switches", "involuntary_switches")


def thread_kind(pid: int, tid: int, name: str) -> str:
    """A worker's main thread runs the event loop; every other thread is the pool's."""
    return "loop" if tid == pid else "pool"


def thread_counts(pids: list[int]) -> defaultdict[tuple[str, str], float]:
    """(kind, count) → total over the threads of ``pids``; threads gone meanwhile are skipped."""
    totals: defaultdict[tuple[str, str], float] = defaultdict(float)
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                name = (task / "comm").read_text().strip()
                stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
                status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines()
                              if ":" in line)
            except OSError:
                continue
            kind = thread_kind(pid, int(task.name), name)
            totals[kind, "user_s"] += int(stat[11]) / CLOCK_TICKS
            totals[kind, "system_s"] += int(stat[12]) / CLOCK_TICKS
            totals[kind, "voluntary_switches"] += int(status["voluntary_ctxt_switches"])
            totals[kind, "involuntary_switches"] += int(status["nonvoluntary_ctxt_switches"])
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="enroll-rsa")
    parser.add_argument("--mode", choices=("keepalive", "new"), default="keepalive")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    keep_alive = args.mode == "keepalive"
    pools = {"rsa-2048": csr_pool("rsa-2048", args.clients, "threads-rsa"),
             "ec-p256": csr_pool("ec-p256", args.clients, "threads-p256")}
    with tempfile.TemporaryDirectory(prefix="est-bench-threads-") as tmp:
        gw = start_gateway(Path(tmp) / "gateway")
        try:
            target = scenario_target(gw, args.scenario, pools=pools, identities=[], keep_alive=keep_alive)
            def load(seconds: float) -> int:
                return run_load(target, scenario=args.scenario, clients=args.clients, keep_alive=keep_alive,
                                duration=seconds, warmup=0.3, max_requests=10**9,
                                tree=ProcessTree(gw.pid)).requests
            load(1.0)   # warm-up: every worker has its threads and its password memory
            before = thread_counts(children(gw.pid))
            requests = load(args.seconds)
            after = thread_counts(children(gw.pid))
        finally:
            gw.stop()
    print(f"{args.scenario}, {args.mode}, {args.clients} clients: {requests} requests; per request, "
          "summed over the workers:")
    print(f"{'thread':8s} {'user ms':>8s} {'system ms':>10s} {'voluntary sw':>13s} {'involuntary sw':>15s}")
    for kind in ("loop", "pool"):
        delta = {count: (after[kind, count] - before[kind, count]) / max(requests, 1) for count in COUNTS}
        print(f"{kind:8s} {delta['user_s'] * 1e3:8.3f} {delta['system_s'] * 1e3:10.3f} "
              f"{delta['voluntary_switches']:13.2f} {delta['involuntary_switches']:15.2f}")


if __name__ == "__main__":
    main()
