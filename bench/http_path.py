"""CPU per request of the server's HTTP path alone, in process: parse + environ + answer.

Compares the worker's path (est_gateway.server.http11 and .wsgi: httptools) with the one it
replaced (gunicorn's RequestParser, ``wsgi.create`` and ``Response``) on the same bytes,
with the same trivial WSGI application (a cacerts-sized answer), writing into memory. No
sockets, no TLS, no EST application: only what differs between the two. Best of ``--rounds`` rounds
of ``--requests`` requests each, CPU time of this process (time.process_time).

    .venv/bin/python -m bench.http_path
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from est_gateway.server.http11 import Limits, Request, RequestReader
from est_gateway.server.wsgi import Answer, HttpDate, base_environ, build_environ

REQUEST = (b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost:8443\r\nUser-Agent: bench/1.0\r\n"
           b"Accept: */*\r\nAuthorization: Basic ZXN0OnNlY3JldA==\r\n\r\n")
BODY = b"M" * 1400      # base64 of a two-certificate PKCS#7, about


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/pkcs7-mime; smime-type=certs-only"),
                              ("Content-Transfer-Encoding", "base64"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def ours(count: int) -> bytes:
    limits = Limits(max_fields=100, max_field_bytes=16384, max_body=65536)
    base, dates, out = base_environ(multiprocess=True), HttpDate(), b""
    for _ in range(count):
        reader = RequestReader(limits)      # one per connection; here one per request (the worst case)
        reader.feed(REQUEST)
        request = reader.ready.popleft()
        assert isinstance(request, Request)
        environ = build_environ(request, base, info=None, family=2, peer=("127.0.0.1", 40000),
                                server=("127.0.0.1", 8443))
        answer = Answer()
        answer.run(app, environ)
        out, _ = answer.render(head_only=False, close=False, version=request.version, date=dates.now())
    return out


class _Socket:
    """What gunicorn's parser and writer use of a socket, over bytes in memory."""

    def __init__(self, data: bytes) -> None:
        self.data, self.sent = io.BytesIO(data), io.BytesIO()

    def recv(self, size: int) -> bytes:
        return self.data.read(size)

    def sendall(self, data: bytes) -> None:
        self.sent.write(data)

    send = sendall


def gunicorns(count: int) -> bytes:
    from gunicorn.config import Config
    from gunicorn.http import RequestParser, wsgi

    cfg, out = Config(), b""
    for _ in range(count):
        sock = _Socket(REQUEST)
        req = next(RequestParser(cfg, sock, ("127.0.0.1", 40000)))
        resp, environ = wsgi.create(req, sock, ("127.0.0.1", 40000), ("127.0.0.1", 8443), cfg)
        for item in app(environ, resp.start_response):
            resp.write(item)
        resp.close()
        out = sock.sent.getvalue()
    return out


def per_request_us(path: Callable[[int], bytes], requests: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        path(requests)
        best = min(best, time.process_time() - started)
    return best / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    assert ours(1).endswith(BODY) and gunicorns(1).endswith(BODY)
    new = per_request_us(ours, args.requests, args.rounds)
    old = per_request_us(gunicorns, args.requests, args.rounds)
    print(f"gunicorn RequestParser + wsgi.create + Response: {old:7.1f} µs/request")
    print(f"httptools reader + environ + answer (ours):      {new:7.1f} µs/request  ({old / new:.1f}x less)")


if __name__ == "__main__":
    main()
