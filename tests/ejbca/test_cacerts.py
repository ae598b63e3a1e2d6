"""``cacerts`` by EJBCA version, against the stand-in over mutual TLS: CE 8.0 and later
download the chain over REST (``/v1/ca``, modules/ejbca-rest-ca); CE 7.x has no such
resource (and some 8.0 installations answer it 404), so ``cacerts_source = "auto"`` serves
the chain from EJBCA's public webdist for a label with ``ca_subject_dn``, else the chain
learnt from enrollment answers, kept in the state folder for restarts and workers."""

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
def ce7(pki: UpstreamPKI) -> Iterator[StandinServer]:
    """CE 7.11: no /v1/ca resource."""
    with StandinServer(StandinEjbca(version="7.11"), pki.server_context()) as running:
        yield running


@pytest.fixture
def ce80(pki: UpstreamPKI) -> Iterator[StandinServer]:
    """CE 8.0 with /v1/ca (CaRestResource)."""
    with StandinServer(StandinEjbca(version="8.0"), pki.server_context()) as running:
        yield running


@pytest.fixture
def ce80_404(pki: UpstreamPKI) -> Iterator[StandinServer]:
    """An 8.0 installation that answers /v1/ca with RESTEasy's 404 (Keyfactor/ejbca-ce #520)."""
    with StandinServer(StandinEjbca(version="8.0", ca_resource=False), pki.server_context()) as running:
        yield running


def rest(pki: UpstreamPKI, server: StandinServer, base: Path, target: Any = TARGET, **more: Any) -> Any:
    backend = make_backend("ejbca-rest", upstream_options(pki, server.rest_url, **more), base)
    assert check_target(backend, target) == []
    return backend


def named(server: StandinServer) -> Any:
    """The label's target with ``ca_subject_dn`` (as the operator writes it, RFC 4514)."""
    return ejbca_target(TARGET.ca, "ENDUSER", "EMPTY", ca_subject_dn=server.standin.ca_cert.subject.rfc4514_string())


def enroll(backend: Any, cn: str) -> Issued:
    issued = backend.enroll(EnrollRequest(csr=make_csr(p256_key(), cn=cn), alias="est", target=TARGET,
                                          requester=Requester(), request_id=cn))
    assert isinstance(issued, Issued)
    return issued


def paths(server: StandinServer) -> list[str]:
    return [c["path"] for c in server.standin.calls]


def test_ce7_auto_learns_the_chain_and_a_restarted_backend_has_it(pki: UpstreamPKI, ce7: StandinServer,
                                                                   tmp_path: Path) -> None:
    first = rest(pki, ce7, tmp_path)
    with pytest.raises(UpstreamUnavailable, match="not known yet.*ca_chain_file") as raised:
        first.ca_certs(TARGET)
    assert raised.value.headers()["Retry-After"].isdigit()
    enroll(first, "learn-1")
    assert first.ca_certs(TARGET) == ce7.standin.chain
    # another worker, or the gateway after a restart: same state folder, no enrollment yet
    second = rest(pki, ce7, tmp_path)
    before = len(ce7.standin.calls)
    assert second.ca_certs(TARGET) == ce7.standin.chain
    assert not any("pkcs10enroll" in p for p in paths(ce7)[before:])
    assert list((tmp_path / "state" / "ejbca").glob("ca-chain-*.pem"))


def test_ce7_asks_for_the_download_once_per_process(pki: UpstreamPKI, ce7: StandinServer,
                                                     tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = rest(pki, ce7, tmp_path, cacerts_cache_s=0.001)
    enroll(backend, "learn-2")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert backend.ca_certs(TARGET) == ce7.standin.chain
    assert [p for p in paths(ce7) if "/v1/ca" in p] == ["/ejbca/ejbca-rest-api/v1/ca"]
    assert "ERROR" not in caplog.text  # a missing /v1/ca is expected on CE 8.0, not an operator error


def test_ce80_auto_downloads(pki: UpstreamPKI, ce80: StandinServer, tmp_path: Path) -> None:
    backend = rest(pki, ce80, tmp_path)
    assert backend.ca_certs(TARGET) == ce80.standin.chain
    assert any(p.endswith("/certificate/download") for p in paths(ce80))


def test_download_on_ce7_is_a_clear_502(pki: UpstreamPKI, ce7: StandinServer, tmp_path: Path) -> None:
    backend = rest(pki, ce7, tmp_path, cacerts_source="download")
    with pytest.raises(UpstreamError, match="offers no CA download.*auto"):
        backend.ca_certs(TARGET)


def test_a_configured_chain_file_wins(pki: UpstreamPKI, ce7: StandinServer, tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in ce7.standin.chain))
    target = ejbca_target(TARGET.ca, "ENDUSER", "EMPTY", ca_chain_file=str(chain))
    backend = make_backend("ejbca-rest", upstream_options(pki, ce7.rest_url), tmp_path)
    before = len(ce7.standin.calls)
    assert backend.ca_certs(target) == ce7.standin.chain
    assert len(ce7.standin.calls) == before


@pytest.mark.parametrize("type_name", ["ejbca-rest", "ejbca-soap"])
def test_the_startup_line_names_version_download_and_chain_source(pki: UpstreamPKI, ce7: StandinServer,
                                                                   ce80: StandinServer, tmp_path: Path,
                                                                   type_name: str) -> None:
    lines = {}
    for name, server in (("7.11", ce7), ("8.0", ce80)):
        url = server.rest_url if type_name == "ejbca-rest" else server.ws_url
        backend = make_backend(type_name, upstream_options(pki, url), tmp_path / name)
        check_target(backend, TARGET)
        lines[name] = backend.describe_state()["version"]
    if type_name == "ejbca-rest":
        assert lines["7.11"].startswith("EJBCA 7.11.0 Community, CA download: not offered, chain: from "
                                        "enrollment responses (include_chain), kept in ")
        assert lines["8.0"] == "EJBCA 8.0.0 Community, CA download: offered (GET /v1/ca), chain: from the CA download"
        pinned = make_backend(type_name, upstream_options(pki, ce80.rest_url, cacerts_source="enrollment"),
                              tmp_path / "pinned")
        assert pinned.describe_state()["version"].startswith(
            'EJBCA 8.0.0 Community, CA download: not used (cacerts_source = "enrollment"), chain: from enrollment')
        webdist = rest(pki, ce7, tmp_path / "webdist", named(ce7))
        assert webdist.describe_state()["version"].startswith(
            "EJBCA 7.11.0 Community, CA download: not offered, chain: from the public webdist "
            f"({ce7.rest_url.removesuffix('/ejbca-rest-api')}/publicweb/webdist/certdist) for ca_subject_dn "
            "O=Stand-in EJBCA,CN=EST Sub CA, else from enrollment responses")
    else:
        assert lines["8.0"] == "EJBCA 8.0.0 Community, CA download: offered (getLastCAChain), chain: getLastCAChain"
    down = make_backend(type_name, upstream_options(pki, "https://127.0.0.1:9/ejbca/x", retries=0), tmp_path)
    assert down.describe_state()["version"].startswith("unknown (cannot connect")


# -- the public webdist (CertDistServlet) where EJBCA has no /v1/ca ----------------------------

@pytest.mark.parametrize("fixture", ["ce7", "ce80_404"])
def test_without_v1_ca_a_label_with_ca_subject_dn_serves_cacerts_from_the_first_request(
        pki: UpstreamPKI, tmp_path: Path, request: pytest.FixtureRequest, fixture: str) -> None:
    server: StandinServer = request.getfixturevalue(fixture)
    target = named(server)
    backend = rest(pki, server, tmp_path, target)
    assert backend.ca_certs(target) == server.standin.chain  # no enrollment before
    webdist = [c["path"] for c in server.standin.calls if c["path"].startswith("/ejbca/publicweb/")]
    assert len(webdist) == 1 and "cmd=cacert&issuer=" in webdist[0] and "level" not in webdist[0]
    assert not any("pkcs10enroll" in p for p in paths(server))


def test_webdist_reads_a_dn_with_a_plus_as_sent(pki: UpstreamPKI, tmp_path: Path) -> None:
    """CertDistServlet URL-decodes ``issuer`` once more than the container: the adapter encodes
    it twice, so a DN the second decoding would change (``+`` would become a space) still names
    the CA."""
    standin = StandinEjbca(version="7.11", ca_serial="10+20")
    with StandinServer(standin, pki.server_context()) as server:
        target = named(server)
        assert rest(pki, server, tmp_path, target).ca_certs(target) == standin.chain


def test_webdist_for_a_dn_ejbca_does_not_know_is_a_502_naming_the_setting(
        pki: UpstreamPKI, ce7: StandinServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = ejbca_target(TARGET.ca, "ENDUSER", "EMPTY", ca_subject_dn="CN=Somebody Else")
    backend = rest(pki, ce7, tmp_path, target)
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError, match="no CA certificate for CN=Somebody"):
        backend.ca_certs(target)
    assert "check ca_subject_dn" in caplog.text


def test_with_v1_ca_the_download_wins_over_webdist(pki: UpstreamPKI, ce80: StandinServer, tmp_path: Path) -> None:
    target = named(ce80)
    assert rest(pki, ce80, tmp_path, target).ca_certs(target) == ce80.standin.chain
    assert not any(p.startswith("/ejbca/publicweb/") for p in paths(ce80))


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
