"""Build a django-ca backend the way the configuration loader does, from TOML text."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from est_gateway.config.model import CATarget
from est_gateway.config.reader import Problems, Section
from plugins.django_ca import DjangoCaBackend
from tests.support.django_ca import DjangoCa, backend_section

TARGET = CATarget(ca="Test Issuing", certificate_profile="client", end_entity_profile="default")


def make_backend(ca: DjangoCa, folder: Path, *, target: CATarget = TARGET, **more: Any) -> DjangoCaBackend:
    """A backend from ``[backends.x]`` keys, with ``target`` checked as an alias would be."""
    data = tomllib.loads(backend_section(ca, folder, **more))
    del data["type"]   # read by the registry, not by the backend
    problems = Problems()
    section = Section(data, "backends.x", problems, folder)
    backend = DjangoCaBackend.from_options("x", section)
    section.check_unknown()
    problems.items.extend(backend.check_target(target, "aliases.est"))
    problems.raise_if_any()
    assert isinstance(backend, DjangoCaBackend)
    return backend
