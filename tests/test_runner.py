"""How the gateway drives gunicorn: every setting it sets exists, an unknown one is an error."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from est_gateway import localmode
from est_gateway.config import load_config
from est_gateway.server.runner import GatewayServer, apply_settings


def test_an_unknown_gunicorn_setting_is_an_error_not_dropped() -> None:
    cfg = Config()
    with pytest.raises(RuntimeError, match="no setting no_such_setting"):
        apply_settings(cfg, {"workers": 3, "no_such_setting": 1})
    assert cfg.workers != 3   # nothing half-applied


def test_every_setting_the_gateway_sets_exists_in_this_gunicorn(tmp_path: Path) -> None:
    instance, _ = localmode.prepare(tmp_path / "est-local", port=8443)
    config = load_config(instance.config)
    server = GatewayServer(config, lambda environ, start_response: [])
    assert server.cfg.worker_class_str == "est_gateway.server.worker.ESTWorker"
    assert server.cfg.limit_request_line == 4094


def test_a_sigterm_while_a_worker_boots_stops_it(tmp_path: Path) -> None:
    """Between fork and gunicorn's own worker handlers, a SIGTERM (the gateway stopped just
    after it started) was swallowed by the arbiter's inherited handler: the worker served on
    until the arbiter killed it after graceful_timeout (30 s). The post_fork hook marks it."""
    instance, _ = localmode.prepare(tmp_path / "est-local", port=8443)
    server = GatewayServer(load_config(instance.config), lambda environ, start_response: [])
    worker = SimpleNamespace(alive=True)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: None)   # the arbiter's, inherited
        server.cfg.post_fork(None, worker)
        os.kill(os.getpid(), signal.SIGTERM)
        assert worker.alive is False
    finally:
        signal.signal(signal.SIGTERM, previous)
