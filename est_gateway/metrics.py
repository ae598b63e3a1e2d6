"""Prometheus metrics (prometheus-client), correct across gunicorn's worker processes.

``est-gateway serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before any
worker starts, so every process writes its samples there and ``/metrics`` (answered by
any worker) aggregates them. Without that variable (tests, one process) a private
registry per application is used.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The gateway's metric families, registered on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("est_requests", "EST requests by label, operation and HTTP status",
                                ["alias", "operation", "status"], registry=r)
        self.latency = Histogram("est_request_duration_seconds", "EST request latency",
                                 ["alias", "operation"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram("est_upstream_call_duration_seconds",
                                          "Latency of calls to CA backends", ["backend", "call"],
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("est_upstream_errors", "Failed calls to CA backends by HTTP status given",
                                       ["backend", "call", "status"], registry=r)
        self.pending = Counter("est_pending_answers", "Enrollments answered 202 (waiting for approval)",
                               ["alias", "operation"], registry=r)

    def render(self) -> bytes:
        """The text exposition: all worker processes' samples when running multi-process."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live samples (gunicorn child_exit hook)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
