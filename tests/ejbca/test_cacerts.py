"""``cacerts`` by EJBCA version, against the stand-in over mutual TLS: CE 8.0 has no CA
download over REST (``/v1/ca`` came with 8.1), so ``cacerts_source = "auto"`` serves the
chain learnt from enrollment answers, kept in the state folder for restarts and workers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.base import EnrollRequest, Issued, Requester
from est_gateway.errors import UpstreamError, UpstreamUnavailable
from est_gateway.plugin import ChainStore
from tests.support.ejbca_standin import (
    TARGET,
    StandinEjbca,
    StandinServer,
    UpstreamPKI,
    check_target,
    ejbca_target,
    make_backend,
    upstream_options,
)
from tests.support.pki import make_csr, p256_key


@pytest.fixture
def ce80(pki: UpstreamPKI) -> Iterator[StandinServer]:
    with StandinServer(StandinEjbca(version="8.0"), pki.server_context()) as running:
        yield running


@pytest.fixture
def ce81(pki: UpstreamPKI) -> Iterator[StandinServer]:
    with StandinServer(StandinEjbca(version="8.1"), pki.server_context()) as running:
        yield running


def rest(pki: UpstreamPKI, server: StandinServer, base: Path, **more: Any) -> Any:
    backend = make_backend("ejbca-rest", upstream_options(pki, server.rest_url, **more), base)
    assert check_target(backend, TARGET) == []
    return backend


def enroll(backend: Any, cn: str) -> Issued:
    issued = backend.enroll(EnrollRequest(csr=make_csr(p256_key(), cn=cn), alias="est", target=TARGET,
                                          requester=Requester(), request_id=cn))
    assert isinstance(issued, Issued)
    return issued


def paths(server: StandinServer) -> list[str]:
    return [c["path"] for c in server.standin.calls]


def test_ce80_auto_learns_the_chain_and_a_restarted_backend_has_it(pki: UpstreamPKI, ce80: StandinServer,
                                                                   tmp_path: Path) -> None:
    first = rest(pki, ce80, tmp_path)
    with pytest.raises(UpstreamUnavailable, match="not known yet.*ca_chain_file") as raised:
        first.ca_certs(TARGET)
    assert raised.value.headers()["Retry-After"].isdigit()
    enroll(first, "learn-1")
    assert first.ca_certs(TARGET) == ce80.standin.chain
    # another worker, or the gateway after a restart: same state folder, no enrollment yet
    second = rest(pki, ce80, tmp_path)
    before = len(ce80.standin.calls)
    assert second.ca_certs(TARGET) == ce80.standin.chain
    assert not any("pkcs10enroll" in p for p in paths(ce80)[before:])
    assert list((tmp_path / "state" / "ejbca").glob("ca-chain-*.pem"))


def test_ce80_asks_for_the_download_once_per_process(pki: UpstreamPKI, ce80: StandinServer,
                                                     tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = rest(pki, ce80, tmp_path, cacerts_cache_s=0.001)
    enroll(backend, "learn-2")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert backend.ca_certs(TARGET) == ce80.standin.chain
    assert [p for p in paths(ce80) if "/v1/ca" in p] == ["/ejbca/ejbca-rest-api/v1/ca"]
    assert "ERROR" not in caplog.text  # a missing /v1/ca is expected on CE 8.0, not an operator error


def test_ce81_auto_downloads(pki: UpstreamPKI, ce81: StandinServer, tmp_path: Path) -> None:
    backend = rest(pki, ce81, tmp_path)
    assert backend.ca_certs(TARGET) == ce81.standin.chain
    assert any(p.endswith("/certificate/download") for p in paths(ce81))


def test_download_on_ce80_is_a_clear_502(pki: UpstreamPKI, ce80: StandinServer, tmp_path: Path) -> None:
    backend = rest(pki, ce80, tmp_path, cacerts_source="download")
    with pytest.raises(UpstreamError, match="offers no CA download.*auto"):
        backend.ca_certs(TARGET)


def test_a_configured_chain_file_wins(pki: UpstreamPKI, ce80: StandinServer, tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in ce80.standin.chain))
    target = ejbca_target(TARGET.ca, "ENDUSER", "EMPTY", ca_chain_file=str(chain))
    backend = make_backend("ejbca-rest", upstream_options(pki, ce80.rest_url), tmp_path)
    before = len(ce80.standin.calls)
    assert backend.ca_certs(target) == ce80.standin.chain
    assert len(ce80.standin.calls) == before


@pytest.mark.parametrize("type_name", ["ejbca-rest", "ejbca-soap"])
def test_the_startup_line_names_version_download_and_chain_source(pki: UpstreamPKI, ce80: StandinServer,
                                                                   ce81: StandinServer, tmp_path: Path,
                                                                   type_name: str) -> None:
    lines = {}
    for name, server in (("8.0", ce80), ("8.1", ce81)):
        url = server.rest_url if type_name == "ejbca-rest" else server.ws_url
        backend = make_backend(type_name, upstream_options(pki, url), tmp_path / name)
        check_target(backend, TARGET)
        lines[name] = backend.describe_state()["version"]
    if type_name == "ejbca-rest":
        assert lines["8.0"].startswith("EJBCA 8.0.0 Community, CA download: not offered, chain: from "
                                       "enrollment responses (include_chain), kept in ")
        assert lines["8.1"] == "EJBCA 8.1.0 Community, CA download: offered (GET /v1/ca), chain: from the CA download"
        pinned = make_backend(type_name, upstream_options(pki, ce81.rest_url, cacerts_source="enrollment"),
                              tmp_path / "pinned")
        assert pinned.describe_state()["version"].startswith(
            'EJBCA 8.1.0 Community, CA download: not used (cacerts_source = "enrollment"), chain: from enrollment')
    else:
        assert lines["8.0"] == "EJBCA 8.0.0 Community, CA download: offered (getLastCAChain), chain: getLastCAChain"
    down = make_backend(type_name, upstream_options(pki, "https://127.0.0.1:9/ejbca/x", retries=0), tmp_path)
    assert down.describe_state()["version"].startswith("unknown (cannot connect")


def test_an_unwritable_state_folder_keeps_the_chain_in_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                              ) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = ChainStore(blocker / "state")
    chain = tuple(StandinEjbca().chain)
    with caplog.at_level(logging.WARNING):
        store.put("CA", chain)
    assert store.get("CA") == chain
    assert "lives in this process only" in caplog.text


def test_a_chain_another_process_writes_is_picked_up(tmp_path: Path) -> None:
    one, two = ChainStore(tmp_path), ChainStore(tmp_path)
    old, new = tuple(StandinEjbca().chain), tuple(StandinEjbca().chain)
    one.put("CA", old)
    assert two.get("CA") == old
    one.put("CA", new)
    assert two.get("CA") == new
