"""Where the gateway's time goes: py-spy samples of the worker processes under load."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

#: (category, substrings of a frame); the innermost frame that matches any decides.
CATEGORIES = [
    ("password hash (scrypt)", ("_scrypt (", "passwords.py")),
    ("TLS handshake", ("do_handshake (",)),
    ("client certificate verification", ("verify_client_certificate (",)),
    ("certificate signing", ("build_leaf (",)),
    ("CSR parse + signature check", ("parse_csr_body (", "verify_csr_signature (", "load_csr (")),
    ("SQLite store (insert, group commit, lookup)", ("store.py",)),
    ("PKCS#7 / base64 encoding", ("certs_only (", "encode_base64_body (", "decode_base64_body (")),
    ("audit line (JSON + logging)", ("est_gateway/audit.py",)),
    ("Prometheus metrics", ("prometheus_client/", "est_gateway/metrics.py")),
    ("upstream HTTP (requests, urllib3, http.client)", ("requests/", "urllib3/", "http/client.py", "email/",
                                                        "est_gateway/upstream/")),
    ("TLS record I/O", ("est_gateway/server/tls.py", "est_gateway/server/connection.py", "OpenSSL/SSL.py")),
    ("HTTP parsing, environ, answer", ("est_gateway/server/http11.py", "est_gateway/server/wsgi.py", "httptools/",
                                       "(wsgi.py:", "(http11.py:")),
    ("Flask and werkzeug (routing, request and response objects)", ("flask/", "werkzeug/", "blinker/")),
    ("event loop, accept, thread hand-off", ("est_gateway/server/loop.py", "selectors.py", "concurrent/futures/",
                                             "est_gateway/server/worker.py", "threading.py", "(worker.py:",
                                             "(loop.py:")),
    ("EST core, checks, backend logic", ("est_gateway/", "est_gateway_", "(views.py:", "(app.py:",
                                         "(operations.py:", "(backend.py:", "(authority.py:", "(limits.py:")),
]


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def start(pid: int, out: Path, duration: float, rate: int = 200) -> subprocess.Popen[bytes]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
    # --gil: only the thread holding the interpreter is sampled, so the shares are of Python's
    # CPU (native code that releases the GIL, e.g. SQLite's fsync or a socket read, is not in them)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--gil", "--format", "raw",
                             "--rate", str(rate), "--duration", str(int(duration)), "--nonblocking",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def categorise(raw: Path) -> dict[str, Any]:
    """Collapsed stacks → share of samples per category and the top innermost frames."""
    cats: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1]] += n
        for frame in reversed(frames):
            hit = next((name for name, keys in CATEGORIES if any(k in frame for k in keys)), None)
            if hit:
                cats[hit] += n
                break
        else:
            cats["other"] += n
    return {
        "samples": total,
        "categories": {k: v / total for k, v in cats.most_common()} if total else {},
        "top_frames": [(f, n / total) for f, n in leaves.most_common(12)] if total else [],
    }
