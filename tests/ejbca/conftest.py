"""Fixtures of the EJBCA adapter tests: the upstream PKI and a stand-in EJBCA over mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.ejbca_standin import StandinEjbca, StandinServer, UpstreamPKI


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    """CA, server and client (RA) certificates of the upstream side."""
    return UpstreamPKI(tmp_path_factory.mktemp("upstream-pki"))


@pytest.fixture(scope="module")
def server(pki: UpstreamPKI) -> Iterator[StandinServer]:
    """A stand-in EJBCA (REST and SOAP) on loopback that requires a client certificate."""
    with StandinServer(StandinEjbca(), pki.server_context()) as running:
        yield running
