"""The est-gateway command as an operator meets it: help without a configuration, --config
on either side of a subcommand, a hash-password that works in scripts."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from est_gateway import localmode
from est_gateway.cli import main
from est_gateway.passwords import PasswordHash

CA_COMMANDS = ["list", "show", "revoke", "pending", "approve", "reject"]
#: the console script pip installed next to this Python (``.venv/bin/est-gateway``)
COMMAND = Path(sys.executable).with_name("est-gateway")


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EST_GATEWAY_CONFIG"}
    return subprocess.run([str(COMMAND), *args], input=stdin, env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", CA_COMMANDS)
def test_local_ca_help_needs_no_configuration(command: str, tmp_path: Path) -> None:
    done = run("local-ca", command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"Usage: est-gateway local-ca {command}" in done.stdout and "--config FILE" in done.stdout


def test_every_option_of_every_command_has_help() -> None:
    def walk(command: click.Command, path: str) -> list[str]:
        missing = [f"{path} {p.opts[0]}" for p in command.params
                   if isinstance(p, click.Option) and not (p.help or "").strip()]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                missing += walk(sub, f"{path} {name}")
        return missing

    assert walk(main, "est-gateway") == []


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> localmode.LocalInstance:
    created, _ = localmode.prepare(tmp_path_factory.mktemp("cli") / "state")
    return created


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_accepted_before_and_after_the_subcommand(instance: localmode.LocalInstance,
                                                            where: str) -> None:
    config = ["--config", str(instance.config), "--backend", "local"]
    args = ["local-ca", *config, "list"] if where == "before" else ["local-ca", "list", *config]
    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert "(0 shown, 0 on record)" in done.stdout


def test_a_missing_configuration_is_a_usage_error(tmp_path: Path) -> None:
    done = run("local-ca", "pending", cwd=tmp_path)
    assert done.returncode == 2
    assert "Missing option '--config' (or $EST_GATEWAY_CONFIG)" in done.stderr


def test_hash_password_reads_standard_input_when_it_is_not_a_terminal() -> None:
    done = run("hash-password", stdin="correct horse\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and "Password" not in done.stdout + done.stderr   # no prompt
    stored = PasswordHash.parse(lines[0])
    assert stored.verify("correct horse") and not stored.verify("correct horse\n")


def test_hash_password_refuses_an_empty_password() -> None:
    done = run("hash-password", stdin="\n")
    assert done.returncode == 2 and "the password is empty" in done.stderr
    assert done.stdout == ""


def test_hash_password_asks_twice_on_a_terminal() -> None:
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "EST_GATEWAY_CONFIG"}
    proc = subprocess.Popen([str(COMMAND), "hash-password"], stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    seen = b""
    try:
        for prompt in (b"Password: ", b"Repeat for confirmation: "):
            seen = _read_until(controller, seen, prompt)
            os.write(controller, b"on a terminal\n")
        seen = _read_until(controller, seen, b"=\r\n")        # the hash (base64) ends its line
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    line = seen.decode().splitlines()[-1]
    assert "on a terminal" not in seen.decode()                # no echo
    assert PasswordHash.parse(line).verify("on a terminal")


def _read_until(fd: int, seen: bytes, wanted: bytes, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {wanted!r} within {timeout}s; got {seen!r}")
        try:
            seen += os.read(fd, 4096)
        except OSError:                  # EIO: the command closed the terminal
            raise AssertionError(f"no {wanted!r} before the end; got {seen!r}") from None
    return seen


@pytest.mark.parametrize(("args", "message"), [
    (["revoke", "zz"], 'Error: "zz" is not a hexadecimal serial number'),
    (["show", "zz"], 'Error: "zz" is not a hexadecimal serial number'),
    (["revoke", "it's"], 'Error: "it\'s" is not a hexadecimal serial number'),
    (["revoke", "0x12"], "Error: no certificate with serial 12 on record"),
    (["approve", "nope"], "Error: no pending request nope"),
])
def test_errors_quote_values_in_balanced_quotes(instance: localmode.LocalInstance, args: list[str],
                                                message: str) -> None:
    """Issue 10 §5: `local-ca revoke zz` said `zz' is not ...`: one quote of a repr() was cut."""
    done = run("local-ca", "--config", str(instance.config), *args)
    assert done.returncode == 1
    assert done.stderr.strip() == message
