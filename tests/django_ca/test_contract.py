"""The backend contract (est_gateway.testing) against the real django-ca, in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from est_gateway.backends.base import CABackend
from est_gateway.testing.contract import BackendContract
from tests.django_ca.helpers import make_backend
from tests.support.django_ca import DjangoCa


class TestDjangoCaContract(BackendContract):
    @pytest.fixture
    def backend(self, django_ca: DjangoCa, tmp_path: Path) -> Iterator[CABackend[Any]]:
        backend = make_backend(django_ca, tmp_path)
        backend.start()
        try:
            yield backend
        finally:
            backend.close()

    @pytest.fixture
    def alias_settings(self) -> dict[str, object]:
        return {"ca": "Test Issuing", "certificate_profile": "client"}

    @pytest.fixture(autouse=True)
    def _ca(self, django_ca: DjangoCa) -> None:
        self.ca = django_ca

    def revoke(self, backend: CABackend[Any], certificate: x509.Certificate) -> None:
        self.ca.revoke(certificate)


class TestDjangoCaOcspContract(TestDjangoCaContract):
    """The same, with revocation from django-ca's OCSP responder (the certificates' AIA URL)
    through the generic checker instead of its REST API."""

    @pytest.fixture
    def backend(self, django_ca: DjangoCa, tmp_path: Path) -> Iterator[CABackend[Any]]:
        backend = make_backend(django_ca, tmp_path, revocation={"methods": ["ocsp"], "max_cache_s": 0})
        assert backend.describe_state()["revocation"].startswith("ocsp")
        backend.start()
        try:
            yield backend
        finally:
            backend.close()
