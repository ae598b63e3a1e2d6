"""Tables (text and Markdown), JSON and the PNG plot of a benchmark run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = [("scenario", "{}"), ("mode", "{}"), ("N", "{}"), ("req/s", "{:.1f}"), ("p50 ms", "{:.1f}"),
           ("p99 ms", "{:.1f}"), ("p99/p50", "{:.1f}"), ("srv CPU ms/req", "{:.2f}"),
           ("client CPU ms/req", "{:.2f}"), ("handshakes/req", "{:.2f}"), ("peak RSS MiB/worker", "{:.1f}"),
           ("ceiling/s", "{}"), ("ratio", "{}"),
           ("ratio incl. scrypt", "{}"), ("crypto/CPU", "{}"), ("errors", "{}"), ("foreign load", "{:.0%}")]


def row(r: dict[str, Any]) -> list[str]:
    ratio = "n/a" if r["ratio"] is None else f"{r['ratio'] * 100:.0f}%"
    ceiling = "n/a" if r["ceiling"] is None else f"{r['ceiling']:.0f}"
    with_pw = r.get("ratio_incl_password_hash")
    ratio_pw = "n/a" if with_pw is None else f"{with_pw * 100:.0f}%"
    eff = r.get("cpu_efficiency")
    efficiency = "n/a" if eff is None else f"{eff * 100:.0f}%"
    values = [r["scenario"], r["mode"], r["clients"], r["throughput"], r["p50_ms"], r["p99_ms"],
              r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else 0.0, r["server_cpu_ms_per_req"],
              r["client_cpu_ms_per_req"], r["handshakes_per_request"], r["peak_rss_mib"], ceiling, ratio,
              ratio_pw, efficiency, r["errors"], r.get("foreign_load", 0.0)]
    return [fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)]


def text_table(runs: list[dict[str, Any]]) -> str:
    cells = [[c for c, _ in COLUMNS]] + [row(r) for r in runs]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells)


def markdown_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in runs]
    return "\n".join(lines)


def ceiling_table(ceiling: dict[str, Any]) -> str:
    lines = [f"crypto ceiling ({ceiling['cores']} cores; single-thread cost per operation):"]
    for name, ms in ceiling["costs_ms"].items():
        lines.append(f"  {name:34s} {ms:8.3f} ms  = {1000 / ms:9.0f} /s per core")
    for scenario, c in ceiling["ceilings"].items():
        extra = (f", {c['new_with_password_hash']:.0f}/s incl. scrypt"
                 if "new_with_password_hash" in c else "")
        ka = f"{c['keepalive']:.0f}/s" if c["keepalive"] else "unbounded"
        lines.append(f"  ceiling {scenario:14s} new connection {c['new']:7.0f}/s{extra}; keep-alive {ka}")
    return "\n".join(lines)


def attack_table(attack: dict[str, Any]) -> str:
    """Legitimate p50/p99 without and with the idle-connection attack, side by side."""
    a = attack["attack"]
    head = (f"legitimate latency under attack ({a['idle']} idle sockets, {a['handshake_drippers']} handshake "
            f"and {a['header_drippers']} header drippers; new TLS connection per request)")
    cells = [["scenario", "N", "p50 ms", "p99 ms", "errors", "p50 ms attacked", "p99 ms attacked", "errors attacked",
              "p99 ratio", "attack conns closed"]]
    for r in attack["runs"]:
        quiet, loud = r["without"], r["with"]
        ratio = loud["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else 0.0
        cells.append([r["scenario"], str(r["clients"]), f"{quiet['p50_ms']:.1f}", f"{quiet['p99_ms']:.1f}",
                      str(quiet["errors"]), f"{loud['p50_ms']:.1f}", f"{loud['p99_ms']:.1f}", str(loud["errors"]),
                      f"{ratio:.2f}", f"{r['attack_connections_closed_by_server']}/{r['attack_connections_opened']}"])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    return "\n".join([head] + ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells])


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def plot(path: Path, runs: list[dict[str, Any]]) -> bool:
    """Throughput and p99 against concurrency, one line per scenario and mode."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        series.setdefault((r["scenario"], r["mode"]), []).append(r)
    for (scenario, mode), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["clients"])
        xs = [r["clients"] for r in rs]
        style = "-o" if mode == "new" else "--s"
        label = f"{scenario} ({mode})"
        ax1.plot(xs, [r["throughput"] for r in rs], style, label=label)
        ax2.plot(xs, [r["p99_ms"] for r in rs], style, label=label)
        ceiling = rs[0]["ceiling"]
        if ceiling and mode == "new" and scenario.startswith("enroll"):
            ax1.axhline(ceiling, linestyle=":", linewidth=0.8, color=ax1.lines[-1].get_color())
    for ax, title, unit in ((ax1, "throughput (dotted: crypto ceiling)", "requests/s"),
                            (ax2, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
