"""A small thread-safe cache whose entries expire after a bounded lifetime."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ExpiringCache(Generic[T]):
    """Values live ``lifetime_s`` seconds, then the next :meth:`get` loads them again."""

    def __init__(self, lifetime_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[Hashable, tuple[float, T]] = {}

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached value, or ``load()`` (outside the lock: a slow upstream blocks no reader)."""
        now = self._clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = load()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: T) -> None:
        with self._lock:
            self._items[key] = (self._clock() + self.lifetime_s, value)
