"""What the docs and example files state, held against the code and the tools they name."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from est_gateway import localmode
from est_gateway.config import ServerSettings, load_config

ROOT = Path(__file__).resolve().parent.parent


def _server_table_default(key: str) -> str:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    match = re.search(rf"^\| `{key}` \| `(.*?)` \|", text, re.MULTILINE)
    assert match, key
    return match.group(1)


def test_configuration_md_states_the_server_defaults_the_code_has() -> None:
    d = ServerSettings()
    assert _server_table_default("listen") == f'"{d.host}:{d.port}"'
    assert _server_table_default("log_level") == f'"{d.log_level}"'
    assert _server_table_default("log_format") == f'"{d.log_format}"'


def test_reference_toml_shows_the_listen_default() -> None:
    server = tomllib.loads((ROOT / "config" / "reference.toml").read_text())["server"]
    assert server["listen"] == f"{ServerSettings().host}:{ServerSettings().port}"
    assert server["log_format"] == ServerSettings().log_format


@pytest.fixture(scope="module")
def same_key_default(tmp_path_factory: pytest.TempPathFactory) -> bool:
    """allow_same_key_renewal of a label that does not set it."""
    instance, _ = localmode.prepare(tmp_path_factory.mktemp("default") / "gw", port=8443)
    instance.config.write_text(instance.config.read_text().replace("allow_same_key_renewal = true\n", "", 1))
    return load_config(instance.config).aliases["est"].allow_same_key_renewal


@pytest.mark.parametrize("example", ["cfssl.toml", "django-ca.toml"])
def test_the_vendor_examples_follow_the_same_key_renewal_default_and_say_what_false_demands(
        example: str, same_key_default: bool) -> None:
    text = (ROOT / "config" / example).read_text()
    assert tomllib.loads(text)["aliases"]["est"]["allow_same_key_renewal"] is same_key_default is True
    comment = text[:text.index("allow_same_key_renewal =")].rsplit("\n\n", 1)[-1]
    assert "false demands that every device generate a new key" in comment


def test_the_readme_libest_steps_write_where_libest_writes() -> None:
    """libest's estclient writes <dir>/cert-0-0.pkcs7 into an existing folder (cisco/libest
    example/client/README); the README's block must make the folder before -o uses it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### With libest's estclient", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)[0]
    lines = block.splitlines()
    made = next(i for i, line in enumerate(lines) if "mkdir -p out" in line)
    assert all(i > made for i, line in enumerate(lines) if "-o out" in line)
    assert "out/cert-0-0.pkcs7" in block and "newcert" not in section
    assert "OpenSSL 3" in section and "--with-ssl-dir" in section
