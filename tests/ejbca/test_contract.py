"""The backend contract run against both EJBCA adapters and the stand-in EJBCA over mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from est_gateway.backends.base import CABackend
from est_gateway.config.model import CATarget
from est_gateway.testing.contract import BackendContract
from tests.support.ejbca_standin import (
    CA_NAME,
    StandinServer,
    UpstreamPKI,
    make_backend,
    upstream_options,
)


class _EjbcaContract(BackendContract):
    type_name = ""

    def url(self, server: StandinServer) -> str:
        raise NotImplementedError

    @pytest.fixture
    def backend(self, pki: UpstreamPKI, server: StandinServer, tmp_path: Path) -> Iterator[CABackend]:
        backend = make_backend(self.type_name, upstream_options(pki, self.url(server)), tmp_path)
        yield backend
        backend.close()

    @pytest.fixture
    def target(self) -> CATarget:
        return CATarget(ca=CA_NAME, certificate_profile="ENDUSER", end_entity_profile="EMPTY")

    def revoke(self, backend: CABackend, certificate: x509.Certificate) -> None:
        """Revocation happens in EJBCA itself (an operator action), not through the gateway."""
        self._standin.revoke(certificate)

    @pytest.fixture(autouse=True)
    def _remember_standin(self, server: StandinServer) -> None:
        self._standin = server.standin


class TestEjbcaRestContract(_EjbcaContract):
    type_name = "ejbca-rest"

    def url(self, server: StandinServer) -> str:
        return server.rest_url


class TestEjbcaSoapContract(_EjbcaContract):
    type_name = "ejbca-soap"

    def url(self, server: StandinServer) -> str:
        return server.ws_url
