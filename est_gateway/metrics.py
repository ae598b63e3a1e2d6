"""Prometheus metrics (prometheus-client), correct across gunicorn's worker processes.

``est-gateway serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before any
worker starts, so every process writes its samples there and ``/metrics`` (answered by
any worker) aggregates them. Without that variable (tests, one process) a private
registry per application is used.

Label values come only from the configuration and the code, never from what a client
sends: a label or backend name not configured (:meth:`Metrics.admit`), an operation or
backend call not known, a status that is not an HTTP status, is counted as ``"unknown"``,
whoever the caller. A client cannot grow ``/metrics``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: labelled children kept per family; past it (never with the label values the gateway
#: uses: configured aliases, known operations, "unknown", HTTP statuses) labels() is called
CHILDREN_CACHED = 1024
UNKNOWN = "unknown"
#: the EST operations (RFC 7030 §3.2.2) a request is counted under
OPERATIONS = frozenset({"cacerts", "csrattrs", "simpleenroll", "simplereenroll", "serverkeygen", "fullcmc"})
#: the backend calls the core times (operations.py)
CALLS = frozenset({"ca_certs", "enroll", "reenroll", "supersede", "revocation_status"})

Family = TypeVar("Family", Counter, Histogram)
#: log and audit records the process's log writer dropped (est_gateway.logwriter)
LOG_DROPS = ("est_log_records_dropped", "Log and audit records dropped because the log output did not keep up")


def log_drop_counter(registry: CollectorRegistry | None = None) -> Counter:
    """The drop count of a process's log writer (with PROMETHEUS_MULTIPROC_DIR set, every
    process's count reaches /metrics whatever registry holds it)."""
    return Counter(*LOG_DROPS, registry=registry)


class Children(Generic[Family]):
    """A metric family's labelled children by label values, so that a request does not pay
    for ``labels()`` (its validation, lock and key building) on every count."""

    def __init__(self, family: Family, admit: Callable[[tuple[str, ...]], tuple[str, ...]] = tuple) -> None:
        self.family: Family = family
        #: the label values counted for the values given (unknown ones become "unknown")
        self._admit = admit
        self._children: dict[tuple[str, ...], Family] = {}

    def __call__(self, *values: str) -> Family:
        child = self._children.get(values)
        if child is None:
            child = self.family.labels(*self._admit(values))
            if len(self._children) < CHILDREN_CACHED:
                self._children[values] = child
        return child


class Metrics:
    """The gateway's metric families, registered on a registry of their own."""

    def __init__(self, *, aliases: Iterable[str] = (), backends: Iterable[str] = ()) -> None:
        self._aliases: frozenset[str] = frozenset()
        self._backends: frozenset[str] = frozenset()
        self.admit(aliases=aliases, backends=backends)
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
        self.log_records_dropped = log_drop_counter(r)
        # The children a request or a backend call counts on, cached per label values.
        self._requests = Children(self.requests, lambda v: (self._alias(v[0]), _known(v[1], OPERATIONS),
                                                            _status(v[2])))
        self._latency = Children(self.latency, lambda v: (self._alias(v[0]), _known(v[1], OPERATIONS)))
        self._pending = Children(self.pending, lambda v: (self._alias(v[0]), _known(v[1], OPERATIONS)))
        self.upstream_call = Children(self.upstream_latency, lambda v: (_known(v[0], self._backends),
                                                                        _known(v[1], CALLS)))
        self.upstream_error = Children(self.upstream_errors, lambda v: (_known(v[0], self._backends),
                                                                        _known(v[1], CALLS), _status(v[2])))

    def admit(self, *, aliases: Iterable[str], backends: Iterable[str]) -> None:
        """The configured label and backend names, the only ones counted by name (call it
        before counting: a value already counted as "unknown" stays so)."""
        self._aliases = self._aliases | frozenset(aliases)
        self._backends = self._backends | frozenset(backends)

    def _alias(self, value: str) -> str:
        return _known(value, self._aliases)

    def observe_request(self, alias: str, operation: str, status: int, seconds: float) -> None:
        """Count one EST request (and its 202, waiting for approval) and its latency."""
        self._requests(alias, operation, str(status)).inc()
        self._latency(alias, operation).observe(seconds)
        if status == 202:
            self._pending(alias, operation).inc()

    def render(self) -> bytes:
        """The text exposition: all worker processes' samples when running multi-process."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


def _known(value: str, known: frozenset[str]) -> str:
    return value if value in known else UNKNOWN


def _status(value: str) -> str:
    """An HTTP status code (100–599) as given; anything else "unknown"."""
    return value if len(value) == 3 and value.isdigit() and "1" <= value[0] <= "5" else UNKNOWN


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live samples (gunicorn child_exit hook)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
