"""Fail fast while the upstream CA is unreachable (a circuit breaker).

After ``threshold`` consecutive calls that could not reach the upstream (refused, TLS
failure, timeout), calls fail at once with 503 and Retry-After for ``cooldown_s``
instead of each holding a worker thread for the connect or read timeout. Then one call
is let through as a trial: if it reaches the upstream the circuit closes, otherwise it
opens again. State is per worker process; ``threshold = 0`` turns it off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from est_gateway.errors import UpstreamUnavailable


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None
        self._trial_started: float | None = None

    def before_call(self) -> None:
        """Raise 503 without calling while open; let one trial call through afterwards."""
        if not self.threshold:
            return
        with self._lock:
            if self._open_until is None:
                return
            now = self._clock()
            # A trial that never reported back (an unexpected error) is given up after a cooldown.
            trial_busy = self._trial_started is not None and now - self._trial_started < self.cooldown_s
            if now < self._open_until or trial_busy:
                wait = max(1, int(max(self._open_until - now, 0)) + 1)
                raise UpstreamUnavailable("the upstream CA is unreachable; not asking it again for a while",
                                          retry_after=wait)
            self._trial_started = now

    def reached(self) -> None:
        """The upstream answered (whatever it said): close the circuit."""
        with self._lock:
            self._failures, self._open_until, self._trial_started = 0, None, None

    def unreachable(self) -> None:
        """A call could not reach the upstream."""
        if not self.threshold:
            return
        with self._lock:
            self._failures += 1
            if self._trial_started is not None or self._failures >= self.threshold:
                self._open_until = self._clock() + self.cooldown_s
                self._trial_started = None
