"""The upstream circuit breaker's states, on a fake clock."""

from __future__ import annotations

import pytest

from est_gateway.errors import UpstreamUnavailable
from est_gateway.plugin import CircuitBreaker
from tests.support.clock import FakeClock


def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock)
    for _ in range(2):
        breaker.before_call()
        breaker.unreachable()
    breaker.before_call()                      # two failures: still closed
    breaker.unreachable()
    with pytest.raises(UpstreamUnavailable) as info:
        breaker.before_call()
    assert info.value.status == 503 and info.value.retry_after == 11


def test_a_success_in_between_resets_the_count() -> None:
    breaker = CircuitBreaker(2, 10.0, FakeClock())
    breaker.unreachable()
    breaker.reached()
    breaker.unreachable()
    breaker.before_call()                      # 1 consecutive failure only


def test_one_trial_after_the_cooldown_closes_or_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.unreachable()
    clock.now += 10.5
    breaker.before_call()                      # the trial goes through
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()                  # others wait while it runs
    breaker.unreachable()                      # trial failed: open again for a full cooldown
    clock.now += 5
    with pytest.raises(UpstreamUnavailable):
        breaker.before_call()
    clock.now += 6
    breaker.before_call()
    breaker.reached()                          # trial succeeded: closed
    breaker.before_call()
    breaker.before_call()


def test_a_trial_that_never_reports_back_is_given_up() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.unreachable()
    clock.now += 11
    breaker.before_call()                      # trial starts, then its thread dies silently
    clock.now += 11
    breaker.before_call()                      # another trial is allowed


def test_off_when_the_threshold_is_zero() -> None:
    breaker = CircuitBreaker(0, 10.0, FakeClock())
    for _ in range(100):
        breaker.unreachable()
    breaker.before_call()
