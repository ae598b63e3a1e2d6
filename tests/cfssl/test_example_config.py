"""config/cfssl.toml loads once the files it names exist (no CFSSL process needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from est_gateway import localmode
from est_gateway.config.load import load_config
from est_gateway.errors import ConfigError
from est_gateway_cfssl import CfsslBackend
from est_gateway_cfssl.options import CfsslTarget
from tests.support.cfssl import CfsslCA

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "cfssl.toml"


def test_example_loads(tmp_path: Path) -> None:
    localmode.prepare(tmp_path, port=8443)          # tls/ and secrets/est.password
    ca = CfsslCA(tmp_path / "cfssl")                # made by the cfssl tools, not started
    (tmp_path / "upstream").mkdir()
    shutil.copy(ca.folder / "client.pem", tmp_path / "upstream" / "est-gateway-client.pem")
    shutil.copy(ca.folder / "client-key.pem", tmp_path / "upstream" / "est-gateway-client.key")
    shutil.copy(ca.folder / "ca.pem", tmp_path / "upstream" / "cfssl-tls-ca.pem")
    shutil.copy(ca.auth_key_file, tmp_path / "secrets" / "cfssl-auth.key")
    shutil.copy(EXAMPLE, tmp_path / "cfssl.toml")
    config = load_config(tmp_path / "cfssl.toml")
    backend = config.backends["cfssl"]
    assert isinstance(backend, CfsslBackend) and backend.type_name == "cfssl"
    assert backend.options.revocation.max_cache_s == 300 and backend.options.auth_key
    target = config.aliases["est"].target
    assert isinstance(target, CfsslTarget)
    assert (target.label, target.profile, target.usages) == ("primary", "est-client", ("clientAuth",))


def test_a_second_label_on_the_same_cfssl_must_be_one_renewal_domain(tmp_path: Path) -> None:
    """CFSSL records nothing the gateway can read about which profile signed, and with one
    signer ignores the label: two labels on one CFSSL backend renew each other's
    certificates, so start-up refuses them unless declared one renewal domain."""
    localmode.prepare(tmp_path, port=8443)
    ca = CfsslCA(tmp_path / "cfssl")
    (tmp_path / "upstream").mkdir()
    shutil.copy(ca.folder / "client.pem", tmp_path / "upstream" / "est-gateway-client.pem")
    shutil.copy(ca.folder / "client-key.pem", tmp_path / "upstream" / "est-gateway-client.key")
    shutil.copy(ca.folder / "ca.pem", tmp_path / "upstream" / "cfssl-tls-ca.pem")
    shutil.copy(ca.auth_key_file, tmp_path / "secrets" / "cfssl-auth.key")
    strict = ('\n[aliases.strict]\nbackend = "cfssl"\nca = "other"\ncertificate_profile = "est-client"\n'
              'username = "estuser"\npassword_file = "secrets/est.password"\nallow_same_key_renewal = false\n'
              'accept_renewals_from = ["est"]\n')
    (tmp_path / "cfssl.toml").write_text(EXAMPLE.read_text() + strict)
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "cfssl.toml")
    assert [p.split(": ")[0] for p in raised.value.problems] == ["aliases.est.accept_renewals_from"]
    declared = EXAMPLE.read_text().replace('[aliases.est.upstream]',
                                           'accept_renewals_from = ["strict"]\n\n[aliases.est.upstream]', 1)
    (tmp_path / "cfssl.toml").write_text(declared + strict)
    assert set(load_config(tmp_path / "cfssl.toml").aliases) == {"est", "strict"}
