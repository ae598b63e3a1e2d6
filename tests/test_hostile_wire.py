"""A flood of wrong passwords over real TLS on loopback, against a real gateway (2 workers):
the throttle's count before the check holds across its worker processes."""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
from pathlib import Path

import pytest

from tests.support.gateway import local_instance
from tests.support.pki import csr_b64, make_csr, p256_key

FLOOD = 60
ADDRESS = "127.0.0.7"


def _enroll(port: int, ctx: ssl.SSLContext, password: str, body: bytes) -> tuple[int, str | None]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60, source_address=(ADDRESS, 0))
    try:
        token = base64.b64encode(f"estuser:{password}".encode()).decode()
        conn.request("POST", "/.well-known/est/simpleenroll", body=body,
                     headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {token}"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        conn.close()


@pytest.mark.e2e
def test_guesses_at_once_over_tls_are_checked_at_most_the_limit(tmp_path: Path) -> None:
    """main: every guess of a flood from a fresh address was checked (120 at once → 120 × 401)."""
    instance, process = local_instance(tmp_path / "est-local")
    ctx = ssl.create_default_context(cafile=str(instance.trust_anchor))
    body = csr_b64(make_csr(p256_key(), cn="flooded"))
    process.start()
    try:
        barrier = threading.Barrier(FLOOD)
        answers: list[tuple[int, str | None]] = []

        def guess(i: int) -> None:
            barrier.wait(30)
            answers.append(_enroll(process.port, ctx, f"guess-{i}", body))

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(FLOOD)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        statuses = [s for s, _ in answers]
        assert len(statuses) == FLOOD and set(statuses) <= {401, 429, 503}
        assert 1 <= statuses.count(401) <= 10                 # auth_failures_per_minute = 10
        assert all(retry and retry.isdigit() for s, retry in answers if s != 401)
        # refusals at once (429, 503) are no failures: the right password still enrolls
        assert _enroll(process.port, ctx, instance.password(), body)[0] == 200
    finally:
        process.stop()
