"""Coverage-guided fuzzing (atheris / libFuzzer) of one EST request through the real WSGI app.

Each input is one request::

    byte 0   operation (low 3 bits), body encoding (bits 3-4), header mode (bits 5-7)
    byte 1   a parameter for the header mode (Content-Type variant, extra header size, ...)
    rest     the body: DER that the harness base64-encodes, or raw bytes (by encoding)

so the seeds (valid CSRs) let libFuzzer mutate DER directly while coverage of
``est_gateway`` steers it. The invariant is the one of the property-based tests
(tests/support/inproc.check_response): never a 500, an allowed status, a 4xx is a short
text/plain reason, and every request finishes within a time bound. A violation raises,
libFuzzer saves the input as ``crash-<sha1>`` and exits non-zero.

Run from the repository root::

    .venv/bin/python fuzz/fuzz_request.py -max_total_time=600 fuzz/corpus     # a longer run
    .venv/bin/python fuzz/fuzz_request.py -runs=2000 -max_total_time=20 DIR   # what CI does
    .venv/bin/python fuzz/fuzz_request.py crash-<sha1>                        # replay one input

An empty corpus directory is seeded with valid CSRs first. ``FUZZ_STATE_DIR`` keeps the
local-mode folder (CA keys, record) between runs; by default a temporary one is used.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["est_gateway"]):
    from est_gateway.identity import TLSInfo
    from tests.conftest import EXTRA_ALIASES
    from tests.support.inproc import InProcessGateway, check_response, start, valid_csr_der

OPERATIONS = ["simpleenroll", "simplereenroll", "serverkeygen", "cacerts", "csrattrs", "certauth/simpleenroll",
              "bound/simpleenroll", "attrs/simpleenroll"]
CONTENT_TYPES = ["application/pkcs10", "application/PKCS10 ; x=y", "application/pkcs10, text/plain",
                 "application/pkcs7-mime", "", "application/pkcs10;;;", "multipart/mixed; boundary=--",
                 "application/pkcs10\x00"]
PER_REQUEST_S = 5.0
GW: InProcessGateway | None = None


def gateway() -> InProcessGateway:
    global GW
    if GW is None:
        state = os.environ.get("FUZZ_STATE_DIR") or tempfile.mkdtemp(prefix="est-fuzz-")
        GW = start(Path(state) / "est-local", EXTRA_ALIASES)
        logging.getLogger("est_gateway.audit").setLevel(logging.WARNING)   # one line per request
    return GW


def build(data: bytes) -> tuple[str, str, list[tuple[str, str]], bytes, TLSInfo | None]:
    gw = gateway()
    head, param, rest = (data[0] if data else 0), (data[1] if len(data) > 1 else 0), data[2:]
    operation = OPERATIONS[head & 0x07]
    encoding = (head >> 3) & 0x03
    mode = head >> 5
    method = "GET" if operation in ("cacerts", "csrattrs") and mode != 7 else "POST"
    headers = [("Content-Type", "application/pkcs10"), *gw.auth().items()]
    tls = None
    body = rest
    if mode == 1:
        headers[0] = ("Content-Type", CONTENT_TYPES[param % len(CONTENT_TYPES)])
    elif mode == 2:   # the Authorization value comes from the input
        cut = param % (len(rest) + 1)
        headers[1] = ("Authorization", "Basic " + base64.b64encode(rest[:cut]).decode())
        body = rest[cut:]
    elif mode == 3:   # a presented "client certificate" chain comes from the input
        cut = param * 8 % (len(rest) + 1)
        tls = TLSInfo(version="TLSv1.3", peer_chain=(rest[:cut],), tls_exporter=b"\x00" * 32)
        body = rest[cut:]
    elif mode == 4:   # duplicate credentials
        headers.append(headers[1])
    elif mode == 5:   # a big header
        headers.append(("X-Filler", "f" * (param * 256)))
    elif mode == 6:   # the path carries input bytes
        operation = rest[:param % 64].decode("latin-1")
        body = rest[param % 64:]
    elif mode == 7:
        method = ["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "GET", "TRACE", "POST"][param % 8]
    if encoding == 0:
        body = base64.encodebytes(body)
    elif encoding == 1:
        body = base64.b64encode(body)
    elif encoding == 2:
        body = b"\r\n ".join(base64.b64encode(body)[i:i + 7] for i in range(0, len(body) * 2, 7))
    return method, "/.well-known/est/" + operation, headers, body, tls


def test_one_input(data: bytes) -> None:
    method, path, headers, body, tls = build(data)
    started = time.monotonic()
    response = gateway().request(method, path, headers=headers, body=body, tls=tls,
                                 environ={"REMOTE_ADDR": "127.0.0.1" if (data[:1] or b"\0")[0] >> 5 != 2
                                          else "192.0.2.66"})
    check_response(response, method=method, what=data.hex())
    elapsed = time.monotonic() - started
    if elapsed > PER_REQUEST_S:
        raise AssertionError(f"{elapsed:.1f}s for input {data.hex()}")


def seeds() -> list[bytes]:
    """Valid requests: CSRs (EC and RSA, with SANs) under every operation and mode."""
    from cryptography import x509
    csrs = [valid_csr_der("seed-device"), valid_csr_der("seed-rsa", rsa=True),
            valid_csr_der("seed-san", sans=[x509.DNSName("seed.example")])]
    out = []
    for i, csr in enumerate(csrs):
        for op in range(len(OPERATIONS)):
            out.append(bytes([op, 0]) + csr)
        for mode in range(1, 8):
            out.append(bytes([mode << 5, 3 + i]) + csr)
    return out


def main() -> None:
    dirs = [a for a in sys.argv[1:] if not a.startswith("-") and Path(a).is_dir()]
    for folder in dirs[:1]:
        if not any(Path(folder).iterdir()):
            for i, seed in enumerate(seeds()):
                (Path(folder) / f"seed-{i:03d}").write_bytes(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
