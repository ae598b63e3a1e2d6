"""CPU per call of the WSGI application alone, in this process (issue 14).

No server, no socket, no TLS: a ready environ goes into the app and the answer is read,
``time.process_time()`` around ``--calls`` calls, repeated ``--rounds`` times (the
minimum is printed with every round). What the HTTP server adds is measured by
``python -m bench`` (``srv CPU ms/req``).

    .venv/bin/python -m bench.app_cpu                      # cacerts, a 404, a local-CA simpleenroll
    .venv/bin/python -m bench.app_cpu --calls 8000 --rounds 5
    .venv/bin/python -m bench.app_cpu --threads 8           # the same calls from 8 threads at once

Kept run to run: the local-mode folder of the gateway (in a temporary folder), the audit
logger writing to /dev/null (as an operator's file handler would), Prometheus in
multiprocess mode (as ``est-gateway serve`` runs it).
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Environ = dict[str, Any]


def _environ(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Environ:
    from est_gateway.identity import TLS_ENVIRON_KEY, TLSInfo

    environ: Environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                        "SERVER_NAME": "localhost", "SERVER_PORT": "8443", "SERVER_PROTOCOL": "HTTP/1.1",
                        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "wsgi.url_scheme": "https",
                        "wsgi.version": (1, 0), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                        "wsgi.multiprocess": True, "wsgi.run_once": False, "HTTP_HOST": "localhost:8443",
                        TLS_ENVIRON_KEY: TLSInfo(version="TLSv1.3")}
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    environ["_body"] = body
    return environ


def _call(app: Callable[..., Iterable[bytes]], template: Environ) -> int:
    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO(template["_body"])
    status: list[str] = []
    chunks = app(environ, lambda s, h, exc_info=None: status.append(s))
    for _ in chunks:     # the answer is read, as a server would
        pass
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    return int(status[0][:3])


def _calls(app: Callable[..., Iterable[bytes]], template: Environ, calls: int, threads: int) -> None:
    """``calls`` calls in all, spread over ``threads`` threads calling at once."""
    if threads <= 1:
        for _ in range(calls):
            _call(app, template)
        return

    def work(count: int) -> None:
        for _ in range(count):
            _call(app, template)

    workers = [threading.Thread(target=work, args=(calls // threads + (i < calls % threads),))
               for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads calling the app at once (the server runs 8 per worker)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="est-app-cpu-") as tmp, open(os.devnull, "w", encoding="utf-8") as sink:
        work = Path(tmp)
        (work / "metrics").mkdir()
        # before prometheus_client is imported, as est-gateway serve does
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(work / "metrics"))
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.support.inproc import start, valid_csr_der

        audit = logging.getLogger("est_gateway.audit")
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit.handlers, audit.propagate = [handler], False
        audit.setLevel(logging.INFO)
        gw = start(work / "est-local")
        csr = base64.encodebytes(valid_csr_der("app-cpu"))
        cases = {
            "cacerts": (_environ("GET", "/.well-known/est/cacerts"), 200),
            "404": (_environ("GET", "/nowhere"), 404),
            "simpleenroll": (_environ("POST", "/.well-known/est/simpleenroll",
                                      {"Content-Type": "application/pkcs10", "Content-Length": str(len(csr)),
                                       **gw.auth()}, csr), 200),
        }
        print(f"µs of CPU per call, {args.calls} calls per round ({max(args.calls // 8, 1)} for simpleenroll), "
              f"{args.rounds} rounds (best first), {args.threads} thread(s)")
        for name, (template, expected) in cases.items():
            calls = args.calls if name != "simpleenroll" else max(args.calls // 8, 1)
            got = _call(gw.app, template)
            if got != expected:
                raise SystemExit(f"{name}: status {got}, expected {expected}")
            rounds = []
            for _ in range(args.rounds):
                started = time.process_time()
                _calls(gw.app, template, calls, args.threads)
                rounds.append((time.process_time() - started) / calls * 1e6)
            print(f"{name:14s} {min(rounds):7.1f}   " + " ".join(f"{r:.1f}" for r in rounds))
        audit.handlers = []


if __name__ == "__main__":
    main()
