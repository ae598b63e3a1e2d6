"""``python -m bench.hostile``: legitimate latency under a flood of wrong passwords.

A local-mode gateway on loopback. Legitimate clients (from 127.0.0.1) measure ``cacerts``,
``simplereenroll`` over mutual TLS (no password) and ``simpleenroll`` with the label's
password (remembered by the worker after the first check), first alone, then while
flooders from other loopback addresses send simpleenroll with a new wrong password each,
as fast as the gateway answers them. Prints p50/p99 of each, the flood's statuses, and
whether the flooded p99 is within 2 × the baseline p99 + 100 ms.

``--failures-per-minute 0`` turns the failure throttle off, so every guess reaches the
password check and only the checks' own bounds (per worker, per address) hold the flood.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import secrets
import socket
import ssl
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.fixtures import Gateway, csr_pool, enroll_identities, scenario_target, start_gateway
from bench.load import HOST, Closed, RunResult, read_response, run_load
from bench.procstat import ProcessTree

#: the legitimate scenarios measured (bench.fixtures.SCENARIOS), the last one with a password
LEGIT = ("cacerts", "reenroll-mtls", "enroll-p256")
FLOOD_ADDRESSES = ("127.0.0.2", "127.0.0.3")


def flood(gw: Gateway, address: str, stop: threading.Event, statuses: dict[str, int],
          lock: threading.Lock, body: bytes) -> None:
    """One flooder: a new connection from ``address`` and a new wrong password per request."""
    ctx = gw.client_context()
    port = gw.process.port
    for n in itertools.count():
        if stop.is_set():
            return
        token = base64.b64encode(f"estuser:guess-{n}-{secrets.token_hex(4)}".encode()).decode()
        request = (f"POST /.well-known/est/p256/simpleenroll HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                   f"Authorization: Basic {token}\r\nContent-Type: application/pkcs10\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        try:
            with socket.create_connection((HOST, port), timeout=30, source_address=(address, 0)) as raw, \
                    ctx.wrap_socket(raw, server_hostname=HOST) as sock:
                sock.sendall(request)
                status = str(read_response(sock)[0])
        except (OSError, Closed, ssl.SSLError):
            status = "error"
        with lock:
            statuses[status] = statuses.get(status, 0) + 1


def measure(gw: Gateway, targets: dict[str, Any], args: argparse.Namespace, tree: ProcessTree
            ) -> dict[str, RunResult]:
    return {name: run_load(target, scenario=name, clients=args.clients, keep_alive=False,
                           duration=args.duration, warmup=args.warmup, max_requests=args.max_requests, tree=tree)
            for name, target in targets.items()}


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    limits = f"\n[limits]\nauth_failures_per_minute = {args.failures_per_minute}\n"
    gw = start_gateway(folder / "gateway", extra_config=limits)
    try:
        identities = enroll_identities(gw, args.clients, folder / "identities")
        pools = {"ec-p256": csr_pool("ec-p256", 64, "hostile")}
        targets = {name: scenario_target(gw, name, pools=pools, identities=identities, keep_alive=False)
                   for name in LEGIT}
        tree = ProcessTree(gw.pid)
        baseline = measure(gw, targets, args, tree)
        stop, lock = threading.Event(), threading.Lock()
        statuses: dict[str, int] = {}
        flooders = [threading.Thread(target=flood, args=(gw, FLOOD_ADDRESSES[i % len(FLOOD_ADDRESSES)], stop,
                                                         statuses, lock, pools["ec-p256"][0]), daemon=True)
                    for i in range(args.flooders)]
        for t in flooders:
            t.start()
        try:
            flooded = measure(gw, targets, args, tree)
        finally:
            stop.set()
            for t in flooders:
                t.join(60)
    finally:
        gw.stop()
    rows = []
    for name in LEGIT:
        base, under = baseline[name], flooded[name]
        bound = 2 * base.p99_ms + 100
        rows.append({"scenario": name, "baseline_p50_ms": base.p50_ms, "baseline_p99_ms": base.p99_ms,
                     "flood_p50_ms": under.p50_ms, "flood_p99_ms": under.p99_ms, "bound_ms": bound,
                     "met": under.p99_ms <= bound and under.requests > 0, "flood_errors": under.errors,
                     "requests": under.requests})
    return {"flooders": args.flooders, "addresses": list(FLOOD_ADDRESSES), "clients": args.clients,
            "failures_per_minute": args.failures_per_minute, "flood_statuses": statuses, "rows": rows}


def table(result: dict[str, Any]) -> str:
    head = ["scenario", "base p50", "base p99", "flood p50", "flood p99", "bound", "met?", "errors"]
    cells = [head] + [[r["scenario"], f"{r['baseline_p50_ms']:.1f}", f"{r['baseline_p99_ms']:.1f}",
                       f"{r['flood_p50_ms']:.1f}", f"{r['flood_p99_ms']:.1f}", f"{r['bound_ms']:.0f}",
                       "yes" if r["met"] else "NO", str(r["flood_errors"])] for r in result["rows"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"flood ({result['flooders']} flooders from {', '.join(result['addresses'])}, "
                 f"throttle {result['failures_per_minute']}/min): {json.dumps(result['flood_statuses'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=2, help="legitimate clients per scenario")
    p.add_argument("--flooders", type=int, default=32, help="flooding threads, spread over the addresses")
    p.add_argument("--duration", type=float, default=4.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--max-requests", type=int, default=5000)
    p.add_argument("--failures-per-minute", type=int, default=10, help="the throttle (0: off)")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="est-bench-hostile-") as tmp:
        result = run(args, Path(tmp))
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["met"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
