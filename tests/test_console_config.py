"""``[console]``: off by default, and each mistake reported with its key path and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from est_gateway.config import load_config
from est_gateway.errors import ConfigError
from est_gateway.passwords import PasswordHash
from tests.support.pki import CA, write_pem
from tests.test_config import GOOD

SECRET = "0123456789abcdef" * 4


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name, text in (("server.pem", "x"), ("server.key", "x"), ("est.password", "s3cret-pass\n"),
                       ("console.secret", SECRET), ("admin.password", "admin-pass\n"), ("short.secret", "abc")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    write_pem(tmp_path / "admin-ca.pem", CA.create("Admin CA").cert)
    return tmp_path


def _load(folder: Path, console: str) -> object:
    path = folder / "gateway.toml"
    path.write_text(GOOD + "\n[console]\n" + console)
    return load_config(path)


def _problems(folder: Path, console: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(folder, console)
    return info.value.problems


def test_the_console_is_off_by_default(folder: Path) -> None:
    path = folder / "gateway.toml"
    path.write_text(GOOD)
    console = load_config(path).console
    assert not console.enabled and console.audit_file is None and (console.host, console.port) == ("127.0.0.1", 8444)


def test_an_enabled_console_loads(folder: Path) -> None:
    config = _load(folder, 'enabled = true\nlisten = "127.0.0.1:9444"\nadmin_username = "admin"\n'
                           'admin_password_file = "admin.password"\nadmin_ca = "admin-ca.pem"\n'
                           'secret_file = "console.secret"\naudit_file = "audit.jsonl"\nsession_idle_timeout_s = 300\n')
    console = config.console   # type: ignore[attr-defined]
    assert console.enabled and console.port == 9444 and console.admin_username == "admin"
    assert console.admin_password.verify("admin-pass") and len(console.admin_cas) == 1
    assert console.secret == SECRET.encode() and console.audit_file == folder / "audit.jsonl"
    assert SECRET not in repr(console)


@pytest.mark.parametrize(("console", "problem"), [
    ('enabled = true\nadmin_username = "a"\nadmin_password_file = "admin.password"\n',
     "console.secret_file: is required (or secret_env)"),
    ('enabled = true\nadmin_username = "a"\nadmin_password_file = "admin.password"\nsecret_file = "short.secret"\n',
     "console.secret_file: the cookie-signing secret must be at least 32 characters"),
    ('enabled = true\nsecret_file = "console.secret"\n',
     "console.admin_username: the console needs admin_username with a password, or admin_ca"),
    ('enabled = true\nadmin_username = "a"\nsecret_file = "console.secret"\n',
     "console.admin_password_file: is required when admin_username is set"),
    ('enabled = true\nadmin_ca = "admin-ca.pem"\nsecret_file = "console.secret"\nlisten = "127.0.0.1:9443"\n',
     "console.listen: must differ from server.listen (127.0.0.1:9443)"),
    ('enabled = true\nadmin_ca = "admin-ca.pem"\nsecret_file = "console.secret"\nlisten = "0.0.0.0:9443"\n',
     "console.listen: must differ from server.listen"),
    ('enabled = true\nadmin_ca = "admin-ca.pem"\nsecret_file = "console.secret"\nlisten = "nowhere"\n',
     'console.listen: "nowhere" is not "<address>:<port>"'),
    ('enabled = true\nadmin_ca = "missing.pem"\nsecret_file = "console.secret"\n',
     "console.admin_ca: file"),
    ('admin_password_hash = "nonsense"\n', "console.admin_password_hash: expected"),
    ('audit_file = "no/such/folder/audit.jsonl"\n', "console.audit_file: folder"),
    ('enabeld = true\n', 'console.enabeld: unknown setting; did you mean "enabled"?'),
    ('secret = "inline"\n', "console.secret: inline secrets are not accepted"),
])
def test_console_mistakes_are_named(folder: Path, console: str, problem: str) -> None:
    problems = _problems(folder, console)
    assert any(p.startswith(problem) for p in problems), problems


def test_the_console_needs_the_gateways_tls(folder: Path) -> None:
    path = folder / "gateway.toml"
    text = GOOD.replace('tls_cert = "server.pem"\ntls_key = "server.key"\n',
                        'tls = false\ntrusted_proxies = ["127.0.0.1"]\n')
    path.write_text(text + '\n[console]\nenabled = true\nadmin_ca = "admin-ca.pem"\nsecret_file = "console.secret"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(p.startswith("console.enabled: the console is served over HTTPS") for p in info.value.problems)


def test_a_hash_works_as_well_as_a_file(folder: Path) -> None:
    digest = PasswordHash.create("hashed-pass", log_n=10).render()
    config = _load(folder, f'enabled = true\nadmin_username = "a"\nadmin_password_hash = "{digest}"\n'
                           'secret_file = "console.secret"\n')
    assert config.console.admin_password.verify("hashed-pass")   # type: ignore[attr-defined]


def test_local_modes_commented_console_loads_once_uncommented(tmp_path: Path) -> None:
    from est_gateway import localmode

    instance, _ = localmode.prepare(tmp_path / "est-local", port=9443)
    text = instance.config.read_text()
    start = text.index("# [console]")
    block = "\n".join(line.removeprefix("# ") for line in text[start:].splitlines())
    instance.config.write_text(text[:start] + block + "\n")
    console = load_config(instance.config).console
    password = (instance.folder / "secrets" / "console.password").read_text().strip()
    assert console.enabled and (console.host, console.port) == ("127.0.0.1", 9445)   # 9444: publication
    assert console.admin_username == localmode.CONSOLE_ADMIN and console.admin_password is not None
    assert console.admin_password.verify(password) and len(console.secret) == 64
    assert console.audit_file == instance.folder / "audit.jsonl"


def test_the_console_and_the_publication_need_addresses_of_their_own(folder: Path) -> None:
    problems = _problems(folder, 'enabled = true\nlisten = "127.0.0.1:9444"\nadmin_username = "admin"\n'
                                 'admin_password_file = "admin.password"\nsecret_file = "console.secret"\n'
                                 '[publication]\nlisten = "127.0.0.1:9444"\n')
    assert any(p.startswith("console.listen: 127.0.0.1:9444 is also [publication] listen") for p in problems), problems


def test_local_modes_banner_says_where_the_console_is(tmp_path: Path) -> None:
    from est_gateway import localmode
    from est_gateway.config.model import ConsoleSettings

    instance, _ = localmode.prepare(tmp_path / "est-local", port=9443)
    off = localmode.instructions(instance, port=9443, created=True, aliases={})
    assert "console        : off; uncomment [console]" in off and "console.password" in off
    on = localmode.instructions(instance, port=9443, created=True, aliases={},
                                console=ConsoleSettings(enabled=True, port=9444, admin_username="admin"))
    assert "console        : https://127.0.0.1:9444/   (admin)" in on
