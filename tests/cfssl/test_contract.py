"""The backend contract against a real ``cfssl serve``, revocation by OCSP and by CRL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509

from est_gateway.backends.base import CABackend
from est_gateway.testing.contract import BackendContract
from est_gateway_cfssl import CfsslBackend
from tests.cfssl.conftest import TARGET
from tests.cfssl.conftest import alias_settings as settings_of
from tests.support.cfssl import CfsslCA


class _CfsslContract(BackendContract):
    revocation: dict[str, object] = {}

    @pytest.fixture
    def backend(self, make_backend: Callable[..., CfsslBackend], ca: CfsslCA) -> CABackend[Any]:
        self._ca = ca
        methods = self.revocation["methods"]
        revocation = {**self.revocation, "max_cache_s": 0, "timeout_s": 2}
        if methods == ["crl"]:
            revocation["crl_url"] = ca.crl_url     # CFSSL 1.2 puts no CDP into certificates
        return make_backend(revocation=revocation)

    @pytest.fixture
    def alias_settings(self) -> dict[str, object]:
        return settings_of(TARGET)

    def revoke(self, backend: CABackend[Any], certificate: x509.Certificate) -> None:
        """Revocation is the CA operator's act: CFSSL's revoke API, then publishing."""
        self._ca.revoke(certificate)


class TestCfsslContractOverOcsp(_CfsslContract):
    revocation = {"methods": ["ocsp"]}


class TestCfsslContractOverCrl(_CfsslContract):
    revocation = {"methods": ["crl"]}
