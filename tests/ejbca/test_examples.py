"""The commented example configurations in config/ load once their files exist."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from est_gateway import localmode
from est_gateway.config.load import load_config
from tests.support.ejbca_standin import UpstreamPKI

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("name", ["ejbca-rest.toml", "ejbca-soap.toml"])
def test_example_loads(tmp_path: Path, name: str) -> None:
    localmode.prepare(tmp_path, port=8443)  # tls/ and secrets/ as the examples expect
    pki = UpstreamPKI(tmp_path / "upstream")
    shutil.copy(pki.client_cert_file, tmp_path / "upstream" / "est-gateway-ra.pem")
    shutil.copy(pki.client_key_file, tmp_path / "upstream" / "est-gateway-ra.key")
    shutil.copy(pki.ca_bundle, tmp_path / "upstream" / "ManagementCA.pem")
    shutil.copy(CONFIG_DIR / name, tmp_path / name)
    config = load_config(tmp_path / name)
    assert config.backends["ejbca"].type_name == name.removesuffix(".toml")
    assert "est" in config.aliases
    # libest and globalsign's estclient renew with the same key by default
    assert config.aliases["est"].allow_same_key_renewal is True
