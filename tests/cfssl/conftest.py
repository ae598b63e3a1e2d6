"""Fixtures of the CFSSL adapter tests: one real CFSSL CA per module, and backends for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from est_gateway.backends.registry import BackendRegistry
from est_gateway.config.model import CATarget
from est_gateway.config.reader import Problems, Section
from plugins.cfssl import CfsslBackend
from tests.support.cfssl import CLIENT_PROFILE, CfsslCA

TARGET = CATarget(ca="primary", certificate_profile=CLIENT_PROFILE, end_entity_profile="default")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CfsslCA]:
    """A real ``cfssl serve`` (mutual TLS, authsign) and ``ocspserve`` in a temporary folder."""
    running = CfsslCA(tmp_path_factory.mktemp("cfssl")).start()
    try:
        yield running
    finally:
        running.stop()


def build_backend(options: dict[str, Any], base_dir: Path, *targets: CATarget) -> CfsslBackend:
    """Through the entry-point registry and the option reader, as the configuration loader does."""
    problems = Problems()
    cls = BackendRegistry().load("cfssl")
    section = Section({"type": "cfssl", **options}, "backends.cfssl", problems, base_dir)
    backend = cls.from_options("cfssl", section)
    section.seen.add("type")
    section.check_unknown()
    for target in targets or (TARGET,):
        problems.items += backend.check_target(target, "aliases.est")
    problems.raise_if_any()
    backend.start()
    assert isinstance(backend, CfsslBackend)
    return backend


@pytest.fixture
def make_backend(ca: CfsslCA, tmp_path: Path) -> Iterator[Callable[..., CfsslBackend]]:
    made: list[CfsslBackend] = []

    def make(*targets: CATarget, **more: Any) -> CfsslBackend:
        backend = build_backend(ca.backend_options(**more), tmp_path, *targets)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()
