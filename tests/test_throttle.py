"""The authentication-failure throttle through the application (issue 10 §3): per exact
address and label, and holding under concurrent guesses. Units: tests/test_limits.py."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support.inproc import InProcessGateway, start

ENROLL = "/.well-known/est/simpleenroll"
OTHER = "/.well-known/est/newkey/simpleenroll"


def _gateway(tmp_path: Path, limit: int) -> InProcessGateway:
    return start(tmp_path / "est-local", f"[limits]\nauth_failures_per_minute = {limit}\n")


def _status(gw: InProcessGateway, address: str, *, password: str = "wrong", path: str = ENROLL) -> int:
    response = gw.request("POST", path, headers=[("Content-Type", "application/pkcs10"),
                                                 *gw.auth(password).items()],
                          body=b"", environ={"REMOTE_ADDR": address})
    return response.status_code


def test_failing_addresses_never_throttle_a_fresh_one(tmp_path: Path) -> None:
    """1,200 addresses each at the limit; 200 fresh addresses with the right password are
    never refused (main: shared hash buckets refused about a quarter of them)."""
    gw = _gateway(tmp_path, 1)
    for i in range(1200):
        assert _status(gw, f"10.{i >> 8}.{i & 255}.1") == 401
    statuses = [_status(gw, f"172.16.{i}.9", password=gw.password) for i in range(200)]
    # The right password with an empty body: authenticated, then 400 for the missing CSR.
    assert statuses.count(429) == 0 and set(statuses) == {400}
    assert _status(gw, "10.0.7.1", password=gw.password) == 429


def test_failures_on_one_label_do_not_throttle_another(tmp_path: Path) -> None:
    gw = _gateway(tmp_path, 2)
    assert [_status(gw, "192.0.2.1", path=OTHER) for _ in range(3)] == [401, 401, 429]
    assert _status(gw, "192.0.2.1", password=gw.password) == 400


def test_concurrent_guesses_after_a_failure_do_not_pass_the_limit(tmp_path: Path) -> None:
    """40 wrong passwords at once from an address that has failed once: at most the limit
    fail, the rest get 429 (main let every guess in flight fail)."""
    gw = _gateway(tmp_path, 10)
    assert _status(gw, "192.0.2.1") == 401
    start_all = threading.Barrier(40)
    statuses: list[int] = []

    def guess() -> None:
        start_all.wait(30)
        statuses.append(_status(gw, "192.0.2.1"))

    threads = [threading.Thread(target=guess) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(statuses) == 40 and set(statuses) <= {401, 429}
    assert 1 + statuses.count(401) <= 10
