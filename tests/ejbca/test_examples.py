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


@pytest.mark.parametrize("version", ["7.11", "8.0", "8.1"])
@pytest.mark.parametrize("name", ["ejbca-rest.toml", "ejbca-soap.toml"])
def test_example_works_on_each_ejbca_version(tmp_path: Path, name: str, version: str) -> None:
    """Only the site's values change (EJBCA's address and CA name): the defaults fit CE 7.x
    (no CA download over REST), 8.0 and later alike."""
    from est_gateway.backends.base import EnrollRequest, Issued, Requester
    from tests.support.ejbca_standin import CA_NAME, StandinEjbca, StandinServer
    from tests.support.pki import make_csr, p256_key

    localmode.prepare(tmp_path, port=8443)
    pki = UpstreamPKI(tmp_path / "upstream")
    shutil.copy(pki.client_cert_file, tmp_path / "upstream" / "est-gateway-ra.pem")
    shutil.copy(pki.client_key_file, tmp_path / "upstream" / "est-gateway-ra.key")
    shutil.copy(pki.ca_bundle, tmp_path / "upstream" / "ManagementCA.pem")
    with StandinServer(StandinEjbca(version=version), pki.server_context()) as server:
        url = server.rest_url if name == "ejbca-rest.toml" else server.ws_url
        text = (CONFIG_DIR / name).read_text(encoding="utf-8")
        text = text.replace(text.split('url = "', 1)[1].split('"', 1)[0], url, 1)
        (tmp_path / name).write_text(text.replace('ca = "ManagementCA"', f'ca = "{CA_NAME}"'), encoding="utf-8")
        config = load_config(tmp_path / name)
        backend, target = config.backends["ejbca"], config.aliases["est"].target
        backend.start()
        backend.health()
        issued = backend.enroll(EnrollRequest(csr=make_csr(p256_key(), cn=f"example-{version}"), alias="est",
                                              target=target, requester=Requester(), request_id="r"))
        assert isinstance(issued, Issued)
        assert backend.ca_certs(target) == server.standin.chain
