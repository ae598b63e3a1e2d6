"""The server calls every backend's close() at shutdown: in each worker process as it exits
and in the arbiter (the plugin contract, est_gateway.plugin)."""

from __future__ import annotations

import logging
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from est_gateway.server.runner import close_backends
from tests.support.gateway import children_of, local_instance


class _Backend:
    def __init__(self, fail: bool = False) -> None:
        self.closed, self.fail = 0, fail

    def close(self) -> None:
        self.closed += 1
        if self.fail:
            raise RuntimeError("plugin bug")


def test_a_failing_close_is_logged_and_the_others_still_close(caplog: pytest.LogCaptureFixture) -> None:
    broken, fine = _Backend(fail=True), _Backend()
    config: Any = SimpleNamespace(backends={"broken": broken, "fine": fine})
    with caplog.at_level(logging.ERROR):
        close_backends(config)
    assert (broken.closed, fine.closed) == (1, 1)
    assert "backend broken: close() failed" in caplog.text and "plugin bug" in caplog.text


def test_close_runs_in_every_worker_and_in_the_arbiter(tmp_path: Path) -> None:
    instance, gateway = local_instance(tmp_path / "est-local")
    text = instance.config.read_text()
    instance.config.write_text(text.replace("[server]\n", '[server]\nlog_level = "debug"\n', 1))
    gateway.start()
    try:
        assert gateway.proc is not None
        arbiter = gateway.proc.pid
        deadline = time.monotonic() + 30      # the arbiter listens before it forks its workers
        while len(workers := _booted(gateway.output())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2 and workers == set(children_of(arbiter))
    finally:
        assert gateway.stop(signal.SIGTERM) == 0
    closed = {int(pid) for pid in re.findall(r"backend local: closed in process (\d+)", gateway.output())}
    assert closed == {arbiter, *workers}, gateway.output()


def _booted(log: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log)}
