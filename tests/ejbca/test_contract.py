"""The backend contract run against both EJBCA adapters and the stand-in EJBCA over mutual TLS:
REST against CE 7.11 (no CA download: the chain is learnt from a first enrollment) and
against CE 8.0 (``/v1/ca``), SOAP against CE 8.0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from est_gateway.backends.base import CABackend, EnrollRequest, Issued, Requester
from est_gateway.testing.contract import BackendContract
from est_gateway_ejbca.alias import EjbcaTarget
from tests.support.ejbca_standin import (
    CA_NAME,
    StandinEjbca,
    StandinServer,
    UpstreamPKI,
    make_backend,
    upstream_options,
)
from tests.support.pki import make_csr, p256_key


class _EjbcaContract(BackendContract):
    type_name = ""

    def url(self, server: StandinServer) -> str:
        raise NotImplementedError

    @pytest.fixture
    def backend(self, pki: UpstreamPKI, server: StandinServer, tmp_path: Path) -> Iterator[CABackend[Any]]:
        backend = make_backend(self.type_name, upstream_options(pki, self.url(server)), tmp_path)
        yield backend
        backend.close()

    @pytest.fixture
    def alias_settings(self) -> dict[str, object]:
        return {"ca": CA_NAME, "certificate_profile": "ENDUSER", "end_entity_profile": "EMPTY"}

    def revoke(self, backend: CABackend[Any], certificate: x509.Certificate) -> None:
        """Revocation happens in EJBCA itself (an operator action), not through the gateway."""
        self._standin.revoke(certificate)

    @pytest.fixture(autouse=True)
    def _remember_standin(self, server: StandinServer) -> None:
        self._standin = server.standin


class TestEjbcaRestContract(_EjbcaContract):
    """CE 7.11: ``cacerts`` serves the chain learnt from an enrollment, so one comes first."""

    type_name = "ejbca-rest"

    def url(self, server: StandinServer) -> str:
        return server.rest_url

    @pytest.fixture
    def server(self, server_7: StandinServer) -> StandinServer:
        return server_7

    @pytest.fixture
    def backend(self, pki: UpstreamPKI, server: StandinServer, tmp_path: Path) -> Iterator[CABackend[Any]]:
        backend = make_backend(self.type_name, upstream_options(pki, self.url(server)), tmp_path)
        target = EjbcaTarget(ca=CA_NAME, certificate_profile="ENDUSER", end_entity_profile="EMPTY")
        first = backend.enroll(EnrollRequest(csr=make_csr(p256_key(), cn="contract-first"), alias="c",
                                             target=target, requester=Requester(), request_id="first"))
        assert isinstance(first, Issued)
        yield backend
        backend.close()


@pytest.fixture(scope="module")
def server_7(pki: UpstreamPKI) -> Iterator[StandinServer]:
    with StandinServer(StandinEjbca(version="7.11"), pki.server_context()) as running:
        yield running


class TestEjbcaRestDownloadContract(_EjbcaContract):
    """CE 8.0 and later: ``cacerts`` downloads the chain (``/v1/ca``)."""

    type_name = "ejbca-rest"

    def url(self, server: StandinServer) -> str:
        return server.rest_url


class TestEjbcaSoapContract(_EjbcaContract):
    type_name = "ejbca-soap"

    def url(self, server: StandinServer) -> str:
        return server.ws_url
