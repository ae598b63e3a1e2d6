"""A label's previous password during a rotation, and the pid file ``est-gateway reload``
reads: their settings, the problems an operator is told, and the rotation's window."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from est_gateway import localmode
from est_gateway.config import load_config
from est_gateway.errors import ConfigError
from est_gateway.identity import TLS_ENVIRON_KEY, TLSInfo
from est_gateway.passwords import PasswordHash
from est_gateway.web.app import create_app
from tests.support.pki import csr_b64, make_csr, p256_key

UNTIL = dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
CURRENT = 'password_file = "secrets/est.password"\n'


def _instance(tmp_path: Path, previous: str) -> localmode.LocalInstance:
    """A local-mode folder whose labels both carry ``previous`` after their password."""
    instance, _ = localmode.prepare(tmp_path / "est-local", port=8443)
    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(text.replace(CURRENT, CURRENT + previous), encoding="utf-8")
    return instance


def _secret(instance: localmode.LocalInstance, name: str, text: str) -> str:
    path = instance.folder / "secrets" / name
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return f"secrets/{name}"


def _problems(instance: localmode.LocalInstance) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(instance.config)
    return caught.value.problems


def test_a_label_takes_a_previous_password_until_an_instant_in_utc(tmp_path: Path) -> None:
    instance = _instance(tmp_path, 'previous_password_file = "secrets/old.password"\n'
                                   'previous_password_until = "2027-01-31T01:00:00+01:00"\n')
    _secret(instance, "old.password", "the old one")
    alias = load_config(instance.config).aliases["est"]
    assert alias.previous_password is not None and alias.previous_password.verify("the old one")
    assert alias.previous_password_until == UNTIL
    assert alias.accepts_previous_password(UNTIL - dt.timedelta(seconds=1))
    assert not alias.accepts_previous_password(UNTIL)


@pytest.mark.parametrize(("previous", "key", "message"), [
    ('previous_password_file = "secrets/old.password"\n', "previous_password_until",
     "is required with a previous password: the instant it stops working, e.g. "
     "previous_password_until = 2027-01-31T00:00:00Z"),
    ("previous_password_until = 2027-01-31T00:00:00Z\n", "previous_password_until",
     "applies only with a previous password (previous_password_file, previous_password_env, "
     "previous_password_hash)"),
    ('previous_password_file = "secrets/old.password"\nprevious_password_until = 2027-01-31T00:00:00\n',
     "previous_password_until", "has no offset: write it in UTC with a Z (2027-01-31T00:00:00Z) or with +hh:mm"),
    ('previous_password_file = "secrets/old.password"\nprevious_password_until = 2027-01-31\n',
     "previous_password_until",
     "must be a date and time with its offset, like 2027-01-31T00:00:00Z, not a date without a time"),
    ('previous_password_file = "secrets/old.password"\nprevious_password_until = "end of January"\n',
     "previous_password_until", '"end of January" is not a date and time like 2027-01-31T00:00:00Z'),
    ('previous_password_file = "secrets/est.password"\nprevious_password_until = 2027-01-31T00:00:00Z\n',
     "previous_password_file", "is the same password as the current one: write the new password to "
     "password_file (or password_env, password_hash) and keep the old one here"),
    ('previous_password_file = "secrets/old.password"\nprevious_password_hash = "scrypt$x"\n'
     "previous_password_until = 2027-01-31T00:00:00Z\n", "previous_password_hash",
     "give only one of previous_password_hash, previous_password_file, previous_password_env"),
    ('previous_password = "inline"\nprevious_password_until = 2027-01-31T00:00:00Z\n', "previous_password",
     "inline secrets are not accepted; use previous_password_file or previous_password_env"),
])
def test_rotation_settings_that_cannot_work_are_explained(tmp_path: Path, previous: str, key: str,
                                                          message: str) -> None:
    instance = _instance(tmp_path, previous)
    _secret(instance, "old.password", "the old one")
    problems = _problems(instance)
    assert f"aliases.est.{key}: {message}" in problems, problems


def test_the_same_password_is_found_whichever_form_each_takes(tmp_path: Path) -> None:
    instance = _instance(tmp_path, "")
    current = instance.password()
    text = instance.config.read_text(encoding="utf-8").replace(
        CURRENT, f'password_hash = "{PasswordHash.create(current, log_n=10).render()}"\n'
                 'previous_password_file = "secrets/again.password"\n'
                 "previous_password_until = 2027-01-31T00:00:00Z\n", 1)
    instance.config.write_text(text, encoding="utf-8")
    _secret(instance, "again.password", current)
    assert "aliases.est.previous_password_file: is the same password as the current one" in \
        "\n".join(_problems(instance))


def test_a_previous_password_needs_a_current_one(tmp_path: Path) -> None:
    instance = _instance(tmp_path, "")
    text = instance.config.read_text(encoding="utf-8").replace(
        'username = "estuser"\n' + CURRENT,
        'require_client_cert = true\nprevious_password_file = "secrets/old.password"\n'
        "previous_password_until = 2027-01-31T00:00:00Z\n", 1)
    instance.config.write_text(text, encoding="utf-8")
    _secret(instance, "old.password", "the old one")
    assert "aliases.est.previous_password_file: a previous password needs a current one (password_file, " \
           "password_env or password_hash)" in _problems(instance)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_previous_password_is_refused_from_its_end_even_while_a_worker_remembers_it(tmp_path: Path) -> None:
    """Within the window the previous password enrolls (and the worker remembers it, for
    password_cache_s); at its end it is refused, remembered or not, and the new one works."""
    old = "the password devices still have"
    instance = _instance(tmp_path, f'previous_password_hash = "{PasswordHash.create(old, log_n=10).render()}"\n'
                                   "previous_password_until = 2027-01-31T00:00:00Z\n")
    config = load_config(instance.config)
    for backend in config.backends.values():
        backend.start()
    clock = Clock(UNTIL - dt.timedelta(seconds=1))
    client = create_app(config, clock=clock).test_client()

    def enroll(password: str) -> int:
        token = base64.b64encode(f"{localmode.USERNAME}:{password}".encode()).decode()
        return client.post("/.well-known/est/simpleenroll", data=csr_b64(make_csr(p256_key(), cn="rotating")),
                           headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {token}"},
                           environ_base={"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "https",
                                         TLS_ENVIRON_KEY: TLSInfo(version="TLSv1.3")}).status_code

    try:
        assert [enroll(old), enroll(old), enroll(instance.password())] == [200, 200, 200]
        clock.now = UNTIL
        assert [enroll(old), enroll(instance.password())] == [401, 200]
    finally:
        for backend in config.backends.values():
            backend.close()


def test_the_pid_file_is_beside_the_configuration_unless_set(tmp_path: Path) -> None:
    instance = _instance(tmp_path, "")
    assert load_config(instance.config).server.pid_file == instance.folder / "gateway.pid"
    text = instance.config.read_text(encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    instance.config.write_text(text.replace("workers = 2", 'workers = 2\npid_file = "../run/est.pid"'))
    assert load_config(instance.config).server.pid_file == instance.folder / ".." / "run" / "est.pid"
    instance.config.write_text(text.replace("workers = 2", 'workers = 2\npid_file = false'))
    assert load_config(instance.config).server.pid_file is None
    instance.config.write_text(text.replace("workers = 2", 'workers = 2\npid_file = "/nonexistent/est.pid"'))
    assert "server.pid_file: folder /nonexistent does not exist or this user cannot write to it" in \
        _problems(instance)
