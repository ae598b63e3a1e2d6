"""Fixtures of the EJBCA adapter tests: the upstream PKI, a stand-in EJBCA and a scripted upstream
(exact EJBCA answers for the REST adapter), both over mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.ejbca_standin import StandinEjbca, StandinServer, UpstreamPKI
from tests.support.scripted_upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    """CA, server and client (RA) certificates of the upstream side."""
    return UpstreamPKI(tmp_path_factory.mktemp("upstream-pki"))


@pytest.fixture(scope="module")
def server(pki: UpstreamPKI) -> Iterator[StandinServer]:
    """A stand-in EJBCA (REST and SOAP) on loopback that requires a client certificate."""
    with StandinServer(StandinEjbca(), pki.server_context()) as running:
        yield running


@pytest.fixture(scope="module")
def scripted_server(pki: UpstreamPKI) -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(pki.server_context()) as running:
        yield running


@pytest.fixture
def upstream(scripted_server: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    """The scripted upstream, empty; a request nobody scripted fails the test."""
    scripted_server.reset()
    yield scripted_server
    assert not scripted_server.unscripted, f"unscripted requests: {scripted_server.unscripted}"
