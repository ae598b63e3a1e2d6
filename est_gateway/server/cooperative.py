"""Requests answered in greenlets on the worker's event-loop thread.

A request whose every wait goes through :mod:`est_gateway.waits` (a local-CA enrollment:
``ESTApplication.runs_in_loop``) runs in a greenlet of the loop thread instead of on a pool
thread. A request may pass its turn (``pass_turn``) to let the other requests of the pass
reach the same point first, so that each stage runs for several requests in a row. Its
waits suspend it and the loop goes on: ``in_group_commit`` calls are gathered
over one pass of the loop and run together on one commit thread (the first commits every
queued record in one transaction, one fsync), ``in_thread`` calls run on the pool. When a
wait is over, the commit thread or the pool thread queues the greenlet and wakes the loop,
which resumes it at the end of its pass.

Measured with ``python -m bench.ab`` (issue 14): a keep-alive enrollment costs ~20 % less
CPU than on a pool thread, because a request's Python no longer crosses threads (loop →
pool → loop, group-commit followers woken one by one, GIL hand-offs between eight threads).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import greenlet

#: prctl(2): set the calling thread's name
PR_SET_NAME = 15
#: request greenlets kept between requests (more are made when more requests wait at once)
IDLE_KEPT = 64


class RequestHub:
    """The loop thread's request greenlets and the waits they handed off."""

    def __init__(self, pool: ThreadPoolExecutor, wake: Callable[[], None]) -> None:
        self.pool = pool
        self._wake = wake
        self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="est-commit",
                                           initializer=_commit_thread_start)
        self._lock = threading.Lock()
        self._ready: list[greenlet.greenlet] = []       # waits done: resume (any thread adds)
        self._group: list[tuple[Callable[[], Any], greenlet.greenlet, list[Any]]] = []   # loop thread only
        self.suspended = 0                              # greenlets waiting (loop thread only)
        self._idle: list[greenlet.greenlet] = []        # request greenlets between requests

    def start(self, run: Callable[[], object]) -> None:
        """From the loop: run ``run`` in a request greenlet, from the end of this pass (it
        passes its turn first: the pass's other requests are read and parsed before any
        runs), until it ends or waits. A greenlet serves request after request: a new one
        per request cost a mapping and an unmapping of its frame stack (munmap: a TLB
        shoot-down on the other core)."""
        if not self._idle:
            g = greenlet.greenlet(self._serve)
            g.hub = self    # what est_gateway.waits looks for
            g.switch()      # it puts itself in the idle list
        self._idle.pop().switch(run)

    def _serve(self) -> None:
        """A request greenlet's life: wait in the idle list for a request, run it, again
        (an exception ends it and reaches the loop, as from a greenlet of its own). A
        request comes as the value of a switch, not as an argument of the greenlet's start,
        which greenlet would keep for the greenlet's life (and with it the connection)."""
        me = greenlet.getcurrent()
        loop = me.parent
        assert loop is not None
        while len(self._idle) < IDLE_KEPT:
            self._idle.append(me)
            run = loop.switch()
            # The other requests of this pass are read and parsed first (see pass_turn).
            self.pass_turn()
            run()
            del run     # its closure holds the request's connection: not kept while idle

    def in_thread(self, fn: Callable[[], Any]) -> Any:
        box: list[Any] = []
        g = greenlet.getcurrent()
        self.pool.submit(self._run_then_resume, fn, box, g)
        return self._suspend(box)

    def pass_turn(self) -> None:
        """From a request greenlet: let the other requests of this pass of the loop reach
        this point too before this one goes on (at the end of the pass)."""
        with self._lock:
            self._ready.append(greenlet.getcurrent())
        self._suspend([True, None])

    def in_group_commit(self, fn: Callable[[], Any]) -> Any:
        box: list[Any] = []
        self._group.append((fn, greenlet.getcurrent(), box))
        return self._suspend(box)

    def _suspend(self, box: list[Any]) -> Any:
        self.suspended += 1
        loop = greenlet.getcurrent().parent
        assert loop is not None
        loop.switch()
        ok, value = box
        if not ok:
            raise value
        return value

    def _run_then_resume(self, fn: Callable[[], Any], box: list[Any], g: greenlet.greenlet) -> None:
        """On a thread: run ``fn``, keep its result or exception, queue the greenlet, wake the loop."""
        _capture(fn, box)
        self._resume([g])

    def _commit_group(self, group: list[tuple[Callable[[], Any], greenlet.greenlet, list[Any]]]) -> None:
        """On the commit thread: the group's commits one after the other (the first commits
        every queued record; the others find theirs done), then one wake-up for all."""
        for fn, _g, box in group:
            _capture(fn, box)
        self._resume([g for _fn, g, _box in group])

    def _resume(self, greenlets: list[greenlet.greenlet]) -> None:
        with self._lock:
            self._ready.extend(greenlets)
        self._wake()

    def after_pass(self) -> None:
        """From the loop, at the end of each pass: resume the greenlets whose wait is over
        or that passed their turn (again, until none is left: one resumed here may pass its
        turn once more), then send this pass's commits to the commit thread as one group."""
        while True:
            with self._lock:
                ready, self._ready = self._ready, []
            if not ready:
                break
            for i, g in enumerate(ready):
                self.suspended -= 1
                try:
                    g.switch()
                except BaseException:
                    # A request's exception reaches the loop; the others still get their turn.
                    with self._lock:
                        self._ready[:0] = ready[i + 1:]
                    raise
        if self._group:
            group, self._group = self._group, []
            self._commits.submit(self._commit_group, group)

    def busy(self) -> bool:
        """Requests still waiting (at shutdown the loop drains them)."""
        return self.suspended > 0 or bool(self._group)

    def close(self) -> None:
        self._commits.shutdown(wait=True)


def _commit_thread_start() -> None:
    """The commit thread, as it starts: named ``est-commit`` for ``top -H`` and ``ps -L``,
    and run under Linux's SCHED_BATCH. When it wakes (a commit to make, the GIL handed
    back between SQLite statements), it no longer preempts the loop thread on that core,
    but takes the other core, the loop's sleep or the end of the loop's time slice; its
    share of the CPU is unchanged. Measured (16 keep-alive clients): the loop thread was
    preempted ~1.8 times per local enrollment, half of them by its commit thread, since
    ~0.9; ``bench.ab``: −4 % CPU (RSA CA), −2.5 % (P-256 CA). Commits wait a little longer
    for a core: p99/p50 of new-connection P-256 enrollments at 64 clients 1.2 → 2.0.
    The pool's threads keep the normal policy: under SCHED_BATCH, re-enrollments (answered
    on the pool while the loop does TLS handshakes) went from p99/p50 2.1 to 3.3."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, b"est-commit", 0, 0, 0)
    except (OSError, AttributeError):
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def _capture(fn: Callable[[], Any], box: list[Any]) -> None:
    try:
        box.extend((True, fn()))
    except BaseException as exc:   # handed to the request's greenlet, which raises it
        box.extend((False, exc))
