"""Metric label values come only from the configuration and the code: whatever a caller
passes on from a client (a label, an operation, a status, a backend name) is counted as
"unknown" unless it is configured or known, so /metrics cannot be grown from outside."""

from __future__ import annotations

import re

from est_gateway.metrics import Metrics


def label_values(text: str) -> set[str]:
    """Every label value in the exposition but the histogram buckets' ``le``."""
    return set(re.findall(r'(?<!le)="([^"]*)"', text))


def test_unconfigured_and_unknown_label_values_are_counted_as_unknown() -> None:
    m = Metrics(aliases=["est"], backends=["local"])
    m.observe_request("est", "cacerts", 200, 0.001)
    m.upstream_call("local", "enroll").observe(0.001)
    m.upstream_error("local", "enroll", "502").inc()
    for i in range(100):                   # what a client may invent
        m.observe_request(f"label{i}", f"op{i}", 600 + i, 0.001)
        m.upstream_call(f"backend{i}", f"call{i}").observe(0.001)
        m.upstream_error("local", "enroll", f"x{i}").inc()
    assert label_values(m.render().decode()) == {"est", "cacerts", "200", "local", "enroll", "502", "unknown"}


def test_names_admitted_later_are_counted_by_name() -> None:
    m = Metrics()
    m.admit(aliases=["iot"], backends=["ejbca"])
    m.observe_request("iot", "simpleenroll", 202, 0.001)
    m.upstream_call("ejbca", "reenroll").observe(0.001)
    assert label_values(m.render().decode()) == {"iot", "simpleenroll", "202", "ejbca", "reenroll"}
