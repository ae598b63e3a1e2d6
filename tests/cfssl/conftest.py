"""Fixtures of the CFSSL adapter tests: one real CFSSL CA per module, and backends for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from est_gateway.backends.registry import BackendRegistry
from est_gateway.config.reader import Problems, Section
from est_gateway.testing import target_problems
from est_gateway_cfssl import CfsslBackend
from est_gateway_cfssl.options import CfsslTarget
from tests.support.cfssl import CLIENT_PROFILE, CfsslCA

TARGET = CfsslTarget(label="primary", profile=CLIENT_PROFILE)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CfsslCA]:
    """A real ``cfssl serve`` (mutual TLS, authsign) and ``ocspserve`` in a temporary folder."""
    running = CfsslCA(tmp_path_factory.mktemp("cfssl")).start()
    try:
        yield running
    finally:
        running.stop()


def alias_settings(target: CfsslTarget) -> dict[str, Any]:
    """The ``[aliases.<name>]`` keys that make ``target``, as an operator writes them."""
    return {"ca": target.label, "certificate_profile": target.profile, "upstream": {"usages": list(target.usages)}}


def build_backend(options: dict[str, Any], base_dir: Path, *targets: CfsslTarget | dict[str, Any]) -> CfsslBackend:
    """Through the entry-point registry and the option reader, as the configuration loader does."""
    problems = Problems()
    cls = BackendRegistry().load("cfssl")
    section = Section({"type": "cfssl", **options}, "backends.cfssl", problems, base_dir)
    backend = cls.from_options("cfssl", section)
    section.seen.add("type")
    section.check_unknown()
    for target in targets or (TARGET,):
        settings = alias_settings(target) if isinstance(target, CfsslTarget) else target
        parsed, found = target_problems(backend, settings, base_dir=base_dir)
        if isinstance(target, CfsslTarget) and not found:
            assert parsed == target, "the alias settings must make the target they came from"
        problems.items += found
    problems.raise_if_any()
    backend.start()
    assert isinstance(backend, CfsslBackend)
    return backend


@pytest.fixture
def make_backend(ca: CfsslCA, tmp_path: Path) -> Iterator[Callable[..., CfsslBackend]]:
    made: list[CfsslBackend] = []

    def make(*targets: CfsslTarget, **more: Any) -> CfsslBackend:
        backend = build_backend(ca.backend_options(**more), tmp_path, *targets)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()
