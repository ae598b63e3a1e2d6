"""The upstream path: simpleenroll through the EJBCA REST adapter to a stand-in EJBCA on loopback.

The stand-in (``tests/support/ejbca_standin.py``) runs in the benchmark's own process,
answers at once and REQUIRES a client certificate, so the gateway's RA identity goes
through a real mutual-TLS handshake for every connection it opens. Its CPU is therefore
not in the gateway's figures (those are read from the gateway's processes only), and it
counts what the issue asks to see: TLS connections accepted (= mutual-TLS handshakes;
the adapter does not resume sessions) against REST calls answered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ejbca_standin import CA_NAME, StandinEjbca, StandinServer, UpstreamPKI

LABEL = "upstream"


class BenchStandin(StandinEjbca):
    """The stand-in with its per-call history dropped: it keeps every issued certificate and
    call to answer tests' questions, and scans the issued ones on each enrollment, which
    would make "answers at once" untrue after a few thousand enrollments."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.served = 0
        self.busy_s = 0.0

    def rest(self, method: str, path: str, body: bytes, query: str = "") -> tuple[int, str, bytes]:
        started = time.perf_counter()
        try:
            return super().rest(method, path, body, query)
        finally:
            with self.lock:
                self.issued.clear()
                self.calls.clear()
                self.served += 1
                self.busy_s += time.perf_counter() - started


@dataclass
class Upstream:
    standin: BenchStandin
    server: StandinServer
    pki: UpstreamPKI
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def counters(self) -> dict[str, Any]:
        with self._lock, self.standin.lock:
            return {"tls_connections": self.connections, "calls": self.standin.served,
                    "busy_s": self.standin.busy_s}

    def stop(self) -> None:
        self.server.__exit__(None, None, None)

    def config(self) -> str:
        """TOML appended to the gateway's configuration: backend ``ejbca`` and alias ``upstream``."""
        return CONFIG.format(url=self.server.rest_url, pki=self.pki.folder, ca=CA_NAME, label=LABEL)


CONFIG = """
[backends.ejbca]
type = "ejbca-rest"
url = "{url}"
client_cert = "{pki}/ra-client.pem"
client_key = "{pki}/ra-client.key"
ca_bundle = "{pki}/upstream-ca.pem"
connect_timeout_s = 5
read_timeout_s = 10
retries = 0

[aliases.{label}]
backend = "ejbca"
ca = "{ca}"
certificate_profile = "ENDUSER"
end_entity_profile = "EMPTY"
username = "estuser"
password_file = "secrets/est.password"

[aliases.{label}.upstream]
username_from = "CN"
username_prefix = "bench-"
"""


def start(folder: Path) -> Upstream:
    """A stand-in EJBCA (REST) on a free loopback port, counting its accepted TLS connections."""
    pki = UpstreamPKI(folder)
    standin = BenchStandin()
    server = StandinServer(standin, pki.server_context())
    upstream = Upstream(standin, server, pki)
    accept = server.httpd.get_request

    def counting_accept() -> Any:
        conn = accept()
        with upstream._lock:
            upstream.connections += 1
        return conn

    server.httpd.get_request = counting_accept  # type: ignore[method-assign]
    server.__enter__()
    return upstream


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls = after["calls"] - before["calls"]
    conns = after["tls_connections"] - before["tls_connections"]
    return {"upstream_calls": calls, "upstream_tls_handshakes": conns,
            "upstream_handshakes_per_call": conns / calls if calls else None,
            "upstream_ms_per_call": (after["busy_s"] - before["busy_s"]) * 1000 / calls if calls else None}
