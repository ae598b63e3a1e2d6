"""Upstream faults beyond tests/ejbca/ and tests/test_ejbca_e2e.py: resets mid-response
and before any response, an expired upstream TLS certificate, recovery when the upstream
comes back on the same address (no restart of the gateway or the backend), and over a
real gateway: a hanging upstream frees every worker thread within the configured timeout.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from est_gateway import localmode
from est_gateway.backends.base import EnrollRequest, Requester
from est_gateway.errors import UpstreamError, UpstreamUnavailable
from tests.support.attack import wait_until
from tests.support.ejbca_standin import CA_NAME, TARGET, StandinEjbca, UpstreamPKI, make_backend, upstream_options
from tests.support.gateway import GatewayProcess, free_port
from tests.support.load import bodies, enroll_all
from tests.support.pki import make_csr, p256_key
from tests.support.upstream_faults import FaultServer, expired_server_context

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    return UpstreamPKI(tmp_path_factory.mktemp("upstream-faults"))


@pytest.fixture
def upstream(pki: UpstreamPKI) -> Iterator[FaultServer]:
    server = FaultServer(StandinEjbca(), pki.server_context()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["ejbca-rest", "ejbca-soap"])
def type_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def backend_for(pki: UpstreamPKI, url: str, type_name: str, tmp_path: Path, **more: Any) -> Any:
    return make_backend(type_name, upstream_options(pki, url, read_timeout_s=READ_TIMEOUT, connect_timeout_s=1,
                                                    retries=1, retry_backoff_s=0.01, **more), tmp_path)


def url_of(server: FaultServer, type_name: str) -> str:
    return server.rest_url if type_name == "ejbca-rest" else server.ws_url


_counter = iter(range(10_000))


def enroll(backend: Any) -> Any:
    cn = f"fault-device-{next(_counter)}"
    request = EnrollRequest(csr=make_csr(p256_key(), cn=cn), alias="est", target=TARGET,
                            requester=Requester(username="estuser"), request_id="t", retry_key=cn)
    return backend.enroll(request)


@pytest.mark.parametrize("fault", ["reset-mid-response", "reset-before-response"])
def test_a_reset_is_a_documented_upstream_error_and_the_next_call_works(
        pki: UpstreamPKI, upstream: FaultServer, type_name: str, tmp_path: Path, fault: str) -> None:
    backend = backend_for(pki, url_of(upstream, type_name), type_name, tmp_path)
    upstream.standin.fault = fault
    started = time.monotonic()
    try:
        with pytest.raises((UpstreamError, UpstreamUnavailable)) as caught:
            enroll(backend)
    finally:
        upstream.standin.fault = None
    assert time.monotonic() - started < 2 * READ_TIMEOUT + 1
    assert caught.value.status in (502, 503) and "Traceback" not in caught.value.detail
    enrolls = [c for c in upstream.standin.calls if c.get("fault")]
    assert len(enrolls) == 1, "an enrollment must not be replayed after a reset (it may have been issued)"
    assert enroll(backend) is not None


def test_an_expired_upstream_certificate_is_503_and_never_trusted(pki: UpstreamPKI, type_name: str,
                                                                  tmp_path: Path) -> None:
    server = FaultServer(StandinEjbca(), expired_server_context(pki)).start()
    try:
        backend = backend_for(pki, url_of(server, type_name), type_name, tmp_path)
        with pytest.raises(UpstreamUnavailable) as caught:
            enroll(backend)
        assert "TLS" in caught.value.detail or "certificate" in caught.value.detail
        assert not server.standin.calls, "a request reached an upstream whose certificate has expired"
    finally:
        server.stop()


def test_recovery_when_the_upstream_comes_back(pki: UpstreamPKI, upstream: FaultServer, type_name: str,
                                               tmp_path: Path) -> None:
    backend = backend_for(pki, url_of(upstream, type_name), type_name, tmp_path)
    assert enroll(backend) is not None               # a pooled keep-alive connection now exists
    upstream.stop()
    for _ in range(3):                               # down: each call fails fast with 503
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable):
            enroll(backend)
        assert time.monotonic() - started < 2 * READ_TIMEOUT + 1
    upstream.start()                                 # same port, new process state
    assert enroll(backend) is not None               # no restart of the backend needed


GATEWAY_CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
tls_cert = "tls/server.pem"
tls_key = "tls/server.key"
workers = 1

[backends.rest]
type = "ejbca-rest"
url = "{url}"
client_cert = "{pki}/ra-client.pem"
client_key = "{pki}/ra-client.key"
ca_bundle = "{pki}/upstream-ca.pem"
connect_timeout_s = 1
read_timeout_s = {timeout}
retries = 0
circuit_breaker_failures = {breaker}
circuit_breaker_cooldown_s = 1

[aliases.est]
backend = "rest"
ca = "{ca}"
certificate_profile = "ENDUSER"
end_entity_profile = "EMPTY"
username = "estuser"
password_file = "secrets/est.password"
"""


def _gateway_before(upstream: FaultServer, pki: UpstreamPKI, folder: Path, *, breaker: int,
                    read_timeout: float = READ_TIMEOUT) -> tuple[int, localmode.LocalInstance, GatewayProcess]:
    """A running gateway (one worker) whose alias est enrolls through the fault stand-in."""
    port = free_port()
    instance, _ = localmode.prepare(folder / "gw", port=port)
    config = instance.folder / "faults.toml"
    config.write_text(GATEWAY_CONFIG.format(port=port, url=upstream.rest_url, pki=pki.folder, ca=CA_NAME,
                                            timeout=read_timeout, breaker=breaker), encoding="utf-8")
    return port, instance, GatewayProcess(config, port, folder / "gateway.log").start()


@pytest.mark.e2e
def test_a_hanging_upstream_frees_every_worker_thread_within_the_timeout(
        pki: UpstreamPKI, upstream: FaultServer, tmp_path: Path) -> None:
    """More concurrent enrollments than the worker has threads, against an upstream that
    hangs: each answer is a 504 within the read timeout (plus queueing behind the busy
    threads), and the very next request after the fault is served at once."""
    # This test is about threads being released at the read timeout: the circuit breaker,
    # which would answer later calls at once, is off here (tested below).
    port, instance, gateway = _gateway_before(upstream, pki, tmp_path, breaker=0)
    threads = 8
    try:
        upstream.standin.fault, upstream.standin.hang_s = "hang", 3 * READ_TIMEOUT
        started = time.monotonic()
        hung = enroll_all(port, instance.trust_anchor, instance.password(), bodies(threads + 4, "hang"),
                          concurrency=threads + 4, timeout=20)
        elapsed = time.monotonic() - started
        upstream.standin.fault = None
        assert [o.status for o in hung] == [504] * (threads + 4), hung
        # two rounds at most: the first `threads` requests, then the 4 queued behind them
        assert elapsed < 2 * (READ_TIMEOUT + 1) + 2, elapsed
        started = time.monotonic()
        after = enroll_all(port, instance.trust_anchor, instance.password(), bodies(1, "after"), concurrency=1)
        assert after[0].status == 200 and time.monotonic() - started < 2 * READ_TIMEOUT, after
    finally:
        upstream.standin.fault = None
        gateway.stop()
    assert "Traceback" not in gateway.output()


@pytest.mark.e2e
def test_sigterm_lets_requests_in_progress_finish(pki: UpstreamPKI, upstream: FaultServer, tmp_path: Path) -> None:
    """Graceful stop: enrollments already being answered (the upstream takes 1.5 s, within the
    read timeout) when SIGTERM arrives all get their certificate, then the gateway exits 0."""
    port, instance, gateway = _gateway_before(upstream, pki, tmp_path, breaker=0, read_timeout=5.0)
    try:
        upstream.standin.fault, upstream.standin.hang_s = "hang", 1.5
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(enroll_all, port, instance.trust_anchor, instance.password(),
                                  bodies(3, "sigterm"), concurrency=3, timeout=20)
            assert wait_until(lambda: len(upstream.standin.calls) >= 3, 10), "the enrollments never reached the CA"
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGTERM)
            outcomes = running.result(30)
        assert gateway.proc.wait(20) == 0
    finally:
        upstream.standin.fault = None
        gateway.stop()
    assert [o.status for o in outcomes] == [200] * 3, outcomes
    assert all(o.certificate is not None for o in outcomes)


def test_the_circuit_breaker_fails_fast_while_the_upstream_hangs_and_closes_when_it_is_back(
        pki: UpstreamPKI, upstream: FaultServer, tmp_path: Path) -> None:
    """Two timeouts open the circuit: the next call is a 503 with Retry-After at once, not
    another wait for the read timeout; after the cooldown a trial call finds the upstream
    back and enrollment works again, without a restart."""
    port, instance, gateway = _gateway_before(upstream, pki, tmp_path, breaker=2)
    auth = (instance.trust_anchor, instance.password())
    try:
        upstream.standin.fault, upstream.standin.hang_s = "hang", 3 * READ_TIMEOUT
        timed_out = [enroll_all(port, *auth, bodies(1, f"hang{i}"), concurrency=1)[0] for i in range(2)]
        assert [o.status for o in timed_out] == [504, 504]
        started = time.monotonic()
        fast = enroll_all(port, *auth, bodies(1, "fast"), concurrency=1)[0]
        assert fast.status == 503 and time.monotonic() - started < READ_TIMEOUT, fast
        upstream.standin.fault = None
        time.sleep(1.2)                                    # the cooldown
        back = enroll_all(port, *auth, bodies(1, "back"), concurrency=1)[0]
        assert back.status == 200, back
    finally:
        upstream.standin.fault = None
        gateway.stop()
    assert "Traceback" not in gateway.output()
