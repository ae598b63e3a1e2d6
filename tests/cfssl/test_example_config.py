"""config/cfssl.toml loads once the files it names exist (no CFSSL process needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

from est_gateway import localmode
from est_gateway.config.load import load_config
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
