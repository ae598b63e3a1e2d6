"""The two waits of an enrollment that may run on a worker's event-loop thread, and its turn.

A local-CA enrollment is answered in a greenlet on the loop thread (see
:mod:`est_gateway.server.cooperative`): its Python runs on one thread, without the
hand-offs between threads that cost more CPU here than the work itself. Whatever in it may
wait goes through ``in_thread`` or ``in_group_commit``, which hand the wait to a thread and
switch back to the loop until it is done; ``pass_turn`` lets the other requests of the
loop's pass go first. Anywhere else (a pool thread, a test, the CLI) the waits simply call
``fn`` and ``pass_turn`` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import greenlet

T = TypeVar("T")


class Hub(Protocol):
    def pass_turn(self) -> None: ...
    def in_thread(self, fn: Callable[[], Any]) -> Any: ...
    def in_group_commit(self, fn: Callable[[], Any]) -> Any: ...


def _hub() -> Hub | None:
    hub: Hub | None = getattr(greenlet.getcurrent(), "hub", None)
    return hub


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn``, which may wait (scrypt, a lock other threads hold), off the loop thread."""
    hub = _hub()
    result: T = fn() if hub is None else hub.in_thread(fn)
    return result


def in_group_commit(fn: Callable[[], T]) -> T:
    """Run ``fn``, a commit of the certificate record, with the commits of every other
    request of this pass of the loop, on the commit thread (one group, one fsync)."""
    hub = _hub()
    result: T = fn() if hub is None else hub.in_group_commit(fn)
    return result


def pass_turn() -> None:
    """In a request greenlet of the loop, let the other requests of this pass of the loop
    reach this point first; this one goes on at the end of the pass. Each stage of a
    request then runs for several requests in a row, its code and data still warm in the
    CPU's caches, where interleaved, every stage of every request found them cold. Anywhere
    else (a pool thread, a test, the CLI) it does nothing."""
    hub = _hub()
    if hub is not None:
        hub.pass_turn()
