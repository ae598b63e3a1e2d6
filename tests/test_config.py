"""Configuration: every problem reported at once, each with its key path and a fix."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from est_gateway.config import load_config
from est_gateway.errors import ConfigError
from est_gateway.passwords import PasswordHash
from tests.support.pki import CA, write_pem

GOOD = """
[server]
listen = "127.0.0.1:9443"
tls_cert = "server.pem"
tls_key = "server.key"

[backends.local]
type = "local"
state_dir = "state"

[backends.local.cas."EST CA"]
key_type = "ec-p256"

[aliases.est]
backend = "local"
ca = "EST CA"
username = "estuser"
password_file = "est.password"
"""


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "server.pem").write_text("x")
    (tmp_path / "server.key").write_text("x")
    (tmp_path / "est.password").write_text("s3cret-pass\n")
    (tmp_path / "server.key").chmod(0o600)
    (tmp_path / "est.password").chmod(0o600)
    return tmp_path


def _write(folder: Path, text: str) -> Path:
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


def _problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(folder, text))
    return info.value.problems


def test_a_good_file_loads_into_typed_settings(folder: Path) -> None:
    config = load_config(_write(folder, GOOD))
    assert config.server.port == 9443 and config.server.tls is True
    assert config.server.tls_cert == folder / "server.pem"     # relative to the file
    alias = config.aliases["est"]
    assert alias.target.ca == "EST CA"
    assert alias.target.certificate_profile == "default"
    assert alias.password is not None and alias.password.verify("s3cret-pass")
    assert not alias.password.verify("wrong")
    assert alias.allow_same_key_renewal is True
    assert alias.serverkeygen_key_type == "rsa-2048"     # libest's client refuses EC key parts
    assert list(config.backends) == ["local"]


def test_every_problem_is_reported_at_once_with_its_key_path(folder: Path) -> None:
    text = GOOD.replace('listen = "127.0.0.1:9443"', 'listen = "nonsense"') \
               .replace('key_type = "ec-p256"', 'key_type = "dsa-1024"') \
               .replace('ca = "EST CA"', 'ca = "Nope CA"') + '\nworkerz = 3\n'
    problems = _problems(folder, text)
    joined = "\n".join(problems)
    assert 'server.listen: "nonsense" is not "<address>:<port>"' in joined
    assert 'backends.local.cas.EST CA.key_type: "dsa-1024" is not one of' in joined
    assert len(problems) >= 3


def test_unknown_backend_type_lists_the_known_ones(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace('type = "local"', 'type = "bogus"'))
    assert any(p.startswith("backends.local.type: unknown backend type \"bogus\"; known: ")
               and "local" in p for p in problems)


def test_alias_pointing_at_unknown_ca_and_profile(folder: Path) -> None:
    text = GOOD.replace('ca = "EST CA"', 'ca = "Other CA"\ncertificate_profile = "gold"')
    problems = _problems(folder, text)
    assert 'aliases.est.ca: backend "local" has no ca "Other CA"; known: EST CA' in problems
    assert any(p.startswith('aliases.est.certificate_profile: backend "local" has no certificate profile "gold"')
               for p in problems)


def test_misspelt_key_gets_a_suggestion(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace("username =", "usernme ="))
    assert problems == ['aliases.est.usernme: unknown setting; did you mean "username"? (it is required)']


def test_a_broken_backend_is_reported_once_and_its_aliases_still_checked(folder: Path) -> None:
    """A mistake inside [backends.local] must not also make every alias say "unknown backend"."""
    text = GOOD.replace('state_dir = "state"', 'state_dir = "state"\naproval = "manual"') \
               .replace('password_file = "est.password"',
                        'password_file = "est.password"\nserverkeygen_key_type = "dsa"')
    assert sorted(_problems(folder, text)) == [
        'aliases.est.serverkeygen_key_type: "dsa" is not one of: csr, rsa-2048, rsa-3072, rsa-4096, '
        'ec-p256, ec-p384',
        'backends.local.aproval: unknown setting; did you mean "approval"?',
    ]


def test_an_alias_naming_a_missing_backend_lists_every_defined_one(folder: Path) -> None:
    text = GOOD.replace('key_type = "ec-p256"', 'key_type = "dsa"').replace('backend = "local"', 'backend = "locl"')
    problems = _problems(folder, text)
    assert 'aliases.est.backend: unknown backend "locl"; known: local' in problems
    assert len(problems) == 2


def test_a_misspelt_required_key_is_one_problem_with_a_suggestion(folder: Path) -> None:
    text = GOOD.replace("password_file =", "pasword_file =")
    assert _problems(folder, text) == [
        'aliases.est.pasword_file: unknown setting; did you mean "password_file"? (it is required)']
    text = GOOD.replace('type = "local"', 'typ = "local"')
    assert _problems(folder, text) == [
        'backends.local.typ: unknown setting; did you mean "type"? (it is required)']


@pytest.mark.parametrize(("section", "typo", "meant"), [
    ("[server]\n", "listn", "listen"),
    ("[backends.local]\n", "stat_dir", "state_dir"),
    ('[backends.local.cas."EST CA"]\n', "hierachy", "hierarchy"),
    ("[aliases.est]\n", "password_envv", "password_env"),
    ("[aliases.est]\n", "allow_same_key_renewl", "allow_same_key_renewal"),
])
def test_every_unknown_key_gets_a_suggestion(folder: Path, section: str, typo: str, meant: str) -> None:
    text = GOOD.replace(section, f'{section}{typo} = "x"\n')
    path = section.strip("[]\n").replace('"', "")
    assert f'{path}.{typo}: unknown setting; did you mean "{meant}"?' in _problems(folder, text)


def test_inline_password_is_refused(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace('password_file = "est.password"', 'password = "hunter2"'))
    assert any(p.startswith("aliases.est.password: inline secrets are not accepted") for p in problems)
    assert not any("hunter2" in p for p in problems)   # never echoed


def test_missing_password_file_is_named(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace("est.password", "missing.pw"))
    assert any(p.startswith("aliases.est.password_file: cannot read ") and "missing.pw" in p
               for p in problems)


def test_password_from_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EST_TEST_PW", "from-env")
    config = load_config(_write(folder, GOOD.replace('password_file = "est.password"',
                                                     'password_env = "EST_TEST_PW"')))
    assert config.aliases["est"].password.verify("from-env")  # type: ignore[union-attr]
    monkeypatch.delenv("EST_TEST_PW")
    problems = _problems(folder, GOOD.replace('password_file = "est.password"', 'password_env = "EST_TEST_PW"'))
    assert "aliases.est.password_env: environment variable EST_TEST_PW is not set or empty" in problems


def test_password_hash_is_accepted_and_a_bad_one_explained(folder: Path) -> None:
    good = PasswordHash.create("hashed-pw", log_n=10).render()
    config = load_config(_write(folder, GOOD.replace('password_file = "est.password"',
                                                     f'password_hash = "{good}"')))
    assert config.aliases["est"].password.verify("hashed-pw")  # type: ignore[union-attr]
    problems = _problems(folder, GOOD.replace('password_file = "est.password"', 'password_hash = "md5$abc"'))
    assert any(p.startswith('aliases.est.password_hash: expected "scrypt$') for p in problems)


def test_alias_without_any_authentication_is_refused(folder: Path) -> None:
    text = GOOD.replace('username = "estuser"\npassword_file = "est.password"\n', "")
    problems = _problems(folder, text)
    assert any(p.startswith("aliases.est.username: an alias needs username/password or "
                            "require_client_cert") for p in problems)


def test_alias_named_like_an_operation_is_refused(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace("[aliases.est]", "[aliases.cacerts]"))
    assert any(p.startswith("aliases.cacerts: alias names are") for p in problems)


def test_tls_needs_certificate_files(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace('tls_cert = "server.pem"\n', "")
                                     .replace('"server.key"', '"gone.key"'))
    assert "server.tls_cert: is required when tls = true (PEM file)" in problems
    assert any(p.startswith("server.tls_key: file ") and "gone.key" in p for p in problems)


def test_wrong_types_are_named(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace('listen = "127.0.0.1:9443"',
                                              'listen = "127.0.0.1:9443"\nworkers = "two"\n'
                                              'trusted_proxies = ["10.0.0.300"]'))
    assert 'server.workers: must be a whole number, not the string "two"' in problems
    assert any(p.startswith("server.trusted_proxies[0]:") for p in problems)


def test_not_toml_at_all(folder: Path) -> None:
    problems = _problems(folder, "[server\nlisten=")
    assert len(problems) == 1 and "not valid TOML" in problems[0]


def test_missing_sections(folder: Path) -> None:
    problems = _problems(folder, "[server]\ntls = false\n")
    assert "backends: is required (a table)" in problems
    assert "aliases: is required (a table)" in problems


def test_shipped_example_configs_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config/local.toml and config/reference.toml load as shipped (the vendor examples: tests/<vendor>/)."""
    repo = Path(__file__).resolve().parent.parent
    import tomllib

    for path in sorted((repo / "config").glob("*.toml")):
        tomllib.loads(path.read_text())            # every example is at least valid TOML
    monkeypatch.chdir(tmp_path)
    os.makedirs("tls")
    local = (repo / "config" / "local.toml").read_text()
    cfg = tmp_path / "local.toml"
    cfg.write_text(local)
    (tmp_path / "tls" / "server.pem").write_text("x")
    (tmp_path / "tls" / "server.key").write_text("x")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "est.password").write_text("pw\n")
    (tmp_path / "tls" / "server.key").chmod(0o600)
    (tmp_path / "secrets" / "est.password").chmod(0o600)
    config = load_config(cfg)
    assert "est" in config.aliases
    # The commented reference loads too: its alias keys are read by the backend it names.
    shutil.copy(repo / "config" / "reference.toml", tmp_path / "reference.toml")
    assert "est" in load_config(tmp_path / "reference.toml").aliases


def test_trusted_client_cas_are_read_at_start_up(folder: Path) -> None:
    ca = CA.create("Device Maker CA")
    write_pem(folder / "maker.pem", ca.cert)
    text = GOOD.replace('ca = "EST CA"', 'ca = "EST CA"\ntrusted_client_cas_file = "maker.pem"')
    config = load_config(_write(folder, text))
    assert config.aliases["est"].trusted_client_cas == (ca.cert,)
    (folder / "maker.pem").write_text("not a certificate")
    problems = _problems(folder, text)
    assert any(p.startswith("aliases.est.trusted_client_cas_file: ") and "no readable PEM certificate" in p
               for p in problems)


def test_channel_binding_refuses_to_be_served_behind_a_proxy(folder: Path) -> None:
    text = GOOD.replace('tls_cert = "server.pem"\ntls_key = "server.key"',
                        'tls = false\ntrusted_proxies = ["127.0.0.1"]') \
               .replace('ca = "EST CA"', 'ca = "EST CA"\nchallenge_password = "channel-binding"')
    problems = _problems(folder, text)
    assert any(p.startswith("aliases.est.challenge_password: channel binding can only be checked where TLS "
                            "terminates") for p in problems)


def test_enrollment_code_needs_a_backend_that_checks_it(folder: Path) -> None:
    problems = _problems(folder, GOOD.replace('ca = "EST CA"', 'ca = "EST CA"\nchallenge_password = "enrollment-code"'))
    assert 'aliases.est.challenge_password: backend "local" does not check enrollment codes for this alias' \
        in problems


def test_csrattrs_settings_are_validated(folder: Path) -> None:
    text = GOOD + '\n[aliases.est.csrattrs]\nattributes = ["challengePasswd"]\nkey_type = "ec-p521"\nenforced = true\n'
    problems = _problems(folder, text)
    assert any(p.startswith('aliases.est.csrattrs.attributes[0]: "challengePasswd" is neither a known name')
               for p in problems)
    assert any(p.startswith('aliases.est.csrattrs.key_type: "ec-p521" is not one of') for p in problems)
    assert 'aliases.est.csrattrs.enforced: unknown setting; did you mean "enforce"?' in problems


def test_unix_socket_listen(folder: Path) -> None:
    text = GOOD.replace('listen = "127.0.0.1:9443"\ntls_cert = "server.pem"\ntls_key = "server.key"',
                        'listen = "unix:run/est.sock"\ntls = false\ntrusted_proxies = ["unix"]')
    (folder / "run").mkdir()
    config = load_config(_write(folder, text))
    assert config.server.unix_socket == folder / "run" / "est.sock"
    assert config.server.trusted_unix_socket and config.server.trusted_proxies == ()
    problems = _problems(folder, text.replace("tls = false", "tls = true\ntls_cert = \"server.pem\"\n"
                                              "tls_key = \"server.key\"\nunix_socket_group = \"no-such-group-x\""))
    assert "server.tls: a Unix socket serves plain HTTP to a local proxy: set tls = false" in problems
    assert 'server.unix_socket_group: no group "no-such-group-x" on this machine' in problems


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
@pytest.mark.parametrize("which", ["server.key", "est.password"])
def test_group_or_world_accessible_secret_files_are_refused(folder: Path, which: str, mode: int) -> None:
    """Issue 10 §5: like ssh, a TLS key or password file others can read does not start."""
    (folder / which).chmod(mode)
    key = "server.tls_key" if which == "server.key" else "aliases.est.password_file"
    assert _problems(folder, GOOD) == [
        f"{key}: {folder / which} is accessible by group or others (mode {mode:04o}); a secret must be "
        f"private to the gateway's user: chmod 600 {folder / which}"]
