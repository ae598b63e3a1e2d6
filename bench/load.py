"""The load generator: N client threads, each one request at a time, over real TLS.

Two connection modes: ``new`` opens a TLS connection for every request (what libest's
estclient does) and ``keepalive`` reuses one per client for as long as the server lets
it. When the server closes after a response the client reconnects and counts a
handshake, so a server without keep-alive shows up as one handshake per request
rather than as a faked reuse.
"""

from __future__ import annotations

import base64
import itertools
import os
import socket
import ssl
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.procstat import ProcessTree

HOST = "127.0.0.1"


def http_request(port: int, method: str, path: str, body: bytes = b"", *,
                 user: tuple[str, str] | None = None, keep_alive: bool = False) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "User-Agent: est-gateway-bench"]
    if user is not None:
        head.append("Authorization: Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode())
    if method == "POST":
        head += ["Content-Type: application/pkcs10", f"Content-Length: {len(body)}"]
    head.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Closed(Exception):
    """The server closed the connection before a complete response."""


def read_response(sock: ssl.SSLSocket) -> tuple[int, bool, bytes]:
    """(status, server keeps the connection open, body) of one HTTP/1.1 response."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise Closed("connection closed before the response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise Closed("connection closed inside the response body")
        body += chunk
    keeps = headers.get("connection", "").lower() != "close" and lines[0].startswith("HTTP/1.1")
    return status, keeps, body


def connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=30)
    try:
        return ctx.wrap_socket(raw, server_hostname=HOST)
    except BaseException:
        raw.close()
        raise


def one_shot(addr: tuple[str, int], ctx: ssl.SSLContext, request: bytes) -> tuple[int, bytes]:
    with connect(addr[1], ctx) as sock:
        sock.sendall(request)
        status, _, body = read_response(sock)
    return status, body


@dataclass
class Target:
    """What the clients send: request bytes and TLS contexts, taken round-robin per client."""

    port: int
    requests: list[bytes]
    contexts: list[ssl.SSLContext]
    #: requests[i] belongs to contexts[i] (re-enrollment: the CSR must match the TLS identity)
    paired: bool = False


@dataclass
class RunResult:
    scenario: str
    mode: str
    clients: int
    window_s: float
    requests: int
    errors: int
    throughput: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    handshakes_per_request: float
    server_cpu_ms_per_req: float
    client_cpu_ms_per_req: float
    peak_rss_mib: float
    #: share of all cores busy with processes other than this gateway and this load generator
    foreign_load: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    ceiling: float | None = None
    ratio: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Client(threading.Thread):
    def __init__(self, index: int, target: Target, keep_alive: bool, stop: threading.Event,
                 budget: itertools.count, max_requests: int, sink: list[tuple[float, float, int, int]]) -> None:
        super().__init__(daemon=True, name=f"bench-client-{index}")
        self.index, self.target, self.keep_alive = index, target, keep_alive
        self.stop, self.budget, self.max_requests, self.sink = stop, budget, max_requests, sink

    def run(self) -> None:
        t = self.target
        ctx = t.contexts[self.index % len(t.contexts)]
        requests = t.requests
        sock: ssl.SSLSocket | None = None
        n = self.index
        while not self.stop.is_set() and next(self.budget) < self.max_requests:
            request = requests[(self.index if t.paired else n) % len(requests)]
            n += 1
            handshakes = 0
            started = time.perf_counter()
            status = -1
            for _attempt in range(2):
                try:
                    if sock is None:
                        sock = connect(t.port, ctx)
                        handshakes += 1
                    sock.sendall(request)
                    status, keeps, _ = read_response(sock)
                    if not (self.keep_alive and keeps):
                        sock.close()
                        sock = None
                    break
                except (OSError, Closed):
                    if sock is not None:
                        sock.close()
                        sock = None
                    if handshakes:  # a fresh connection failed: a real error, not a stale one
                        break
            self.sink.append((time.perf_counter(), time.perf_counter() - started, status, handshakes))
        if sock is not None:
            sock.close()


#: how long a run's window may be extended for its first completed request
FIRST_ANSWER_WAIT_S = 30.0


def run_load(target: Target, *, scenario: str, clients: int, keep_alive: bool, duration: float,
             warmup: float, max_requests: int, tree: ProcessTree) -> RunResult:
    """Drive ``clients`` concurrent clients; measure the window after ``warmup``."""
    stop = threading.Event()
    sink: list[tuple[float, float, int, int]] = []
    budget = itertools.count()
    threads = [_Client(i, target, keep_alive, stop, budget, max_requests, sink) for i in range(clients)]
    if not warmup:
        before, t0, c0 = tree.snapshot(), time.perf_counter(), time.process_time()
    for th in threads:
        th.start()
    if warmup:
        time.sleep(warmup)
        before, t0, c0 = tree.snapshot(), time.perf_counter(), time.process_time()
    deadline = t0 + duration
    while time.perf_counter() < deadline and any(th.is_alive() for th in threads):
        time.sleep(0.05)
    # A window without one completed request measures nothing (a short run on a loaded
    # machine): it is extended until one completes, for at most FIRST_ANSWER_WAIT_S.
    while (not (sink and sink[-1][0] >= t0) and time.perf_counter() < deadline + FIRST_ANSWER_WAIT_S
           and any(th.is_alive() for th in threads)):
        time.sleep(0.02)
    after, t1, c1 = tree.snapshot(), time.perf_counter(), time.process_time()
    stop.set()
    for th in threads:
        th.join(60)
    window = [r for r in sink if t0 <= r[0] <= t1]
    ok = [r for r in window if r[2] == 200]
    statuses: dict[str, int] = {}
    for r in window:
        statuses[str(r[2])] = statuses.get(str(r[2]), 0) + 1
    lat = sorted(r[1] * 1000 for r in ok)
    n = len(ok)
    span = t1 - t0
    return RunResult(
        scenario=scenario, mode="keepalive" if keep_alive else "new", clients=clients, window_s=span,
        requests=n, errors=len(window) - n, throughput=n / span if span else 0.0,
        p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
        mean_ms=statistics.fmean(lat) if lat else 0.0,
        handshakes_per_request=sum(r[3] for r in window) / len(window) if window else 0.0,
        server_cpu_ms_per_req=(after.cpu_s - before.cpu_s) * 1000 / n if n else 0.0,
        client_cpu_ms_per_req=(c1 - c0) * 1000 / n if n else 0.0,
        peak_rss_mib=max(after.peak_rss_mib.values(), default=0.0),
        foreign_load=max(0.0, (after.machine_busy_s - before.machine_busy_s) - (after.cpu_s - before.cpu_s)
                         - (c1 - c0)) / (span * (os.cpu_count() or 1)) if span else 0.0,
        statuses=statuses,
    )


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def probe_keep_alive(target: Target) -> dict[str, Any]:
    """Send two requests on one connection: does the server keep it open?"""
    sock = connect(target.port, target.contexts[0])
    try:
        sock.sendall(target.requests[0])
        status, keeps, _ = read_response(sock)
        second: int | str = "not sent"
        if keeps:
            try:
                sock.sendall(target.requests[0])
                second = read_response(sock)[0]
            except (OSError, Closed) as exc:
                second = f"failed: {exc}"
        return {"first_status": status, "server_keeps_connection": keeps, "second_status": second,
                "available": keeps and second == 200}
    finally:
        sock.close()
