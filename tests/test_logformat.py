"""One format for every stderr line: gunicorn's, the gateway's and the audit's, text or JSON."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from est_gateway import localmode, logformat
from est_gateway.config import load_config
from est_gateway.errors import ConfigError
from tests.support.gateway import curl, free_port

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 \[\d+\] (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


def _serve_and_log(tmp_path: Path, log_format: str) -> tuple[str, int]:
    """A real gateway with ``log_format``: a cacerts and an unknown label, then SIGTERM;
    returns everything it wrote to stderr."""
    port = free_port()
    instance, _ = localmode.prepare(tmp_path / "state", port=port)
    text = instance.config.read_text().replace("workers = 2\n", f'workers = 2\nlog_format = "{log_format}"\n', 1)
    instance.config.write_text(text)
    err = tmp_path / "stderr"
    with err.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "est_gateway.cli", "serve", "--config", str(instance.config)],
                                stdout=subprocess.DEVNULL, stderr=sink, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert curl(f"https://127.0.0.1:{port}/.well-known/est/cacerts",
                            cacert=instance.trust_anchor).status == 200
                break
            except RuntimeError:
                assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
                time.sleep(0.2)
        assert curl(f"https://127.0.0.1:{port}/.well-known/est/nolabel/cacerts",
                    cacert=instance.trust_anchor).status == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    return err.read_text(), port


def test_json_makes_every_stderr_line_one_object(tmp_path: Path) -> None:
    output, port = _serve_and_log(tmp_path, "json")
    lines = [json.loads(line) for line in output.splitlines()]       # each line parses
    assert all({"time", "pid", "level", "logger"} <= set(line) for line in lines)
    messages = [line["message"] for line in lines if line["logger"] == "gunicorn.error"]
    assert any(m.startswith(f"Listening at: https://127.0.0.1:{port}/.well-known/est") for m in messages)
    assert "Shutting down: Master" in messages
    audit = [line["audit"] for line in lines if line["logger"] == "est_gateway.audit"]
    assert [(a["alias"], a["operation"], a["status"]) for a in audit] == [("est", "cacerts", 200),
                                                                           ("unknown", "cacerts", 404)]


def test_text_gives_gunicorn_and_the_audit_the_gateway_format(tmp_path: Path) -> None:
    output, port = _serve_and_log(tmp_path, "text")
    lines = output.splitlines()
    assert [line for line in lines if not TEXT_LINE.match(line)] == []
    assert any(f"INFO gunicorn.error: Listening at: https://127.0.0.1:{port}/" in line for line in lines)
    audited = [json.loads(line.split(" INFO est_gateway.audit: ", 1)[1]) for line in lines
               if " INFO est_gateway.audit: " in line]
    assert [a["status"] for a in audited] == [200, 404]


def test_the_gateway_own_lines_and_tracebacks_follow_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logformat.install("json", "info")
        try:
            raise ValueError("broken")
        except ValueError:
            logging.getLogger("est_gateway.test").exception("it %s", "failed")
    finally:
        root.handlers, root.level = saved
    line = json.loads(capsys.readouterr().err)
    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "est_gateway.test", "it failed")
    assert line["traceback"].endswith("ValueError: broken")


def test_log_format_is_validated(tmp_path: Path) -> None:
    instance, _ = localmode.prepare(tmp_path / "state", port=8443)
    text = instance.config.read_text().replace("workers = 2\n", 'workers = 2\nlog_format = "xml"\n')
    instance.config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(instance.config)
    assert [p.split(":")[0] for p in raised.value.problems] == ["server.log_format"]
