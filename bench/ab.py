"""Paired before/after: server CPU per request of two checkouts, side by side (issue 14).

The machine's own speed drifts by ~10 % within an hour, more than most single changes
save; two runs minutes apart cannot tell them apart. This starts two gateways at once,
"before" from another checkout (``--before``, e.g. ``git worktree add ../before HEAD~1``)
and "after" from this one, and alternates short runs against them (ABBA...), so that both
see the same machine. It prints the median server CPU per request of each and their
ratio, and the p99/p50 of each run.

    .venv/bin/python -m bench.ab --before ../before --scenarios enroll-p256,cacerts --rounds 6

``enroll-upstream`` runs both gateways' EJBCA REST alias against one stand-in EJBCA (in
this process, as in ``python -m bench``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import upstream as upstream_ca  # noqa: E402
from bench.fixtures import csr_pool, scenario_target, start_gateway  # noqa: E402
from bench.load import run_load  # noqa: E402
from bench.procstat import ProcessTree, children  # noqa: E402

#: scenarios that need no client identities nor an upstream
SCENARIOS = ("enroll-rsa", "enroll-p256", "cacerts")
#: what this tool compares: those, and enrollment through the EJBCA REST adapter
AB_SCENARIOS = (*SCENARIOS, "enroll-upstream")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="another checkout of est-gateway")
    parser.add_argument("--after", type=Path, default=ROOT, help="the checkout after (default: this one)")
    parser.add_argument("--scenarios", default="enroll-p256,cacerts", help=f"subset of {','.join(AB_SCENARIOS)}")
    parser.add_argument("--mode", choices=("keepalive", "new"), default="keepalive")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=2.5, help="measured seconds per run")
    args = parser.parse_args(argv)
    args.scenarios = args.scenarios.split(",")
    unknown = set(args.scenarios) - set(AB_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}; use {', '.join(AB_SCENARIOS)}")
    for checkout in (args.before, args.after):
        if not (checkout / "est_gateway" / "__init__.py").is_file():
            parser.error(f"{checkout} is not a checkout of est-gateway")
    return args


def check_source(pid: int, source: Path) -> None:
    """The gateway's workers run the code of ``source`` (their working folder is first on
    sys.path); refuse to compare anything else."""
    for worker in children(pid):
        cwd = Path(os.readlink(f"/proc/{worker}/cwd")).resolve()
        if cwd != source.resolve():
            raise SystemExit(f"worker {worker} runs in {cwd}, not {source}: the comparison would be void")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keep_alive = args.mode == "keepalive"
    pools = {"rsa-2048": csr_pool("rsa-2048", 16, "ab-rsa"), "ec-p256": csr_pool("ec-p256", 16, "ab-p256")}
    cpu: dict[tuple[str, str], list[float]] = {}
    ratio: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="est-bench-ab-") as tmp:
        upstream = None
        if "enroll-upstream" in args.scenarios:
            pools["upstream"] = csr_pool("rsa-2048", args.clients, "ab-upstream")
            upstream = upstream_ca.start(Path(tmp) / "upstream-pki")
        gateways = {}
        saved, here = os.environ.get("PYTHONPATH"), Path.cwd()
        try:
            for name, source in (("before", args.before.resolve()), ("after", args.after.resolve())):
                # The gateway process imports est_gateway from there: `python -m` puts its
                # working folder first on sys.path, before PYTHONPATH, so both are set.
                os.environ["PYTHONPATH"] = str(source)
                os.chdir(source)
                gateways[name] = start_gateway(Path(tmp) / name,
                                               extra_config=upstream.config() if upstream else "")
                check_source(gateways[name].pid, source)
        finally:
            os.chdir(here)
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        try:
            for rnd in range(-1, args.rounds):          # round -1: warm-up, not counted
                for scenario in args.scenarios:
                    order = ("before", "after") if rnd % 2 == 0 else ("after", "before")
                    for name in order:
                        gw = gateways[name]
                        target = scenario_target(gw, scenario, pools=pools, identities=[], keep_alive=keep_alive)
                        run = run_load(target, scenario=scenario, clients=args.clients, keep_alive=keep_alive,
                                       duration=args.duration if rnd >= 0 else 1.0, warmup=0.3,
                                       max_requests=10**9, tree=ProcessTree(gw.pid))
                        if rnd >= 0:
                            cpu.setdefault((scenario, name), []).append(run.server_cpu_ms_per_req)
                            ratio.setdefault((scenario, name), []).append(run.p99_ms / run.p50_ms if run.p50_ms else 0)
        finally:
            for gw in gateways.values():
                gw.stop()
            if upstream is not None:
                upstream.stop()
    print(f"server CPU ms per request, {args.mode}, {args.clients} clients, {args.rounds} alternating runs each")
    for scenario in args.scenarios:
        before, after = cpu[scenario, "before"], cpu[scenario, "after"]
        b, a = statistics.median(before), statistics.median(after)
        print(f"{scenario:12s} before {b:.3f}  after {a:.3f}  after/before {a / b:.3f}   "
              f"runs before {' '.join(f'{v:.3f}' for v in before)}   after {' '.join(f'{v:.3f}' for v in after)}")
        print(f"{'':12s} p99/p50 median: before {statistics.median(ratio[scenario, 'before']):.2f}  "
              f"after {statistics.median(ratio[scenario, 'after']):.2f}")


if __name__ == "__main__":
    main()
