"""The backend contract (est_gateway.testing.contract) run against the built-in local CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from est_gateway.backends.base import CABackend
from est_gateway.backends.local import LocalCABackend
from est_gateway.backends.local.authority import utcnow
from est_gateway.backends.local.store import serial_hex
from est_gateway.config.reader import Problems, Section
from est_gateway.testing.contract import BackendContract

OPTIONS = {
    "type": "local",
    "state_dir": "state",
    "cas": {"Contract CA": {"hierarchy": "root+issuing", "key_type": "ec-p256"}},
}


class TestLocalContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[LocalCABackend]:
        problems = Problems()
        backend = LocalCABackend.from_options("local", Section(OPTIONS, "backends.local", problems, tmp_path))
        problems.raise_if_any()
        backend.start()
        yield backend
        backend.close()

    @pytest.fixture
    def alias_settings(self) -> dict[str, object]:
        return {"ca": "Contract CA", "certificate_profile": "default", "end_entity_profile": "default"}

    def revoke(self, backend: CABackend[Any], certificate: x509.Certificate) -> None:
        assert isinstance(backend, LocalCABackend)
        backend.store.revoke(serial_hex(certificate.serial_number), "keyCompromise", utcnow())
