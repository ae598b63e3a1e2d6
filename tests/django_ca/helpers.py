"""Build a django-ca backend the way the configuration loader does, from TOML text."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from est_gateway.config.reader import Problems, Section
from est_gateway.testing import target_problems
from est_gateway_django_ca import DjangoCaBackend
from est_gateway_django_ca.target import DjangoCaTarget
from tests.support.django_ca import DjangoCa, backend_section

TARGET = DjangoCaTarget(ca="Test Issuing", profile="client")


def alias_settings(target: DjangoCaTarget) -> dict[str, Any]:
    """The ``[aliases.<name>]`` keys that make ``target``, as an operator writes them."""
    settings: dict[str, Any] = {"ca": target.ca, "certificate_profile": target.profile}
    if target.validity_days is not None:
        settings["upstream"] = {"validity_days": target.validity_days}
    return settings


def make_backend(ca: DjangoCa, folder: Path, *, target: DjangoCaTarget | dict[str, Any] = TARGET,
                 **more: Any) -> DjangoCaBackend:
    """A backend from ``[backends.x]`` keys, with ``target`` checked as an alias would be."""
    data = tomllib.loads(backend_section(ca, folder, **more))
    del data["type"]   # read by the registry, not by the backend
    problems = Problems()
    section = Section(data, "backends.x", problems, folder)
    backend = DjangoCaBackend.from_options("x", section)
    section.check_unknown()
    settings = alias_settings(target) if isinstance(target, DjangoCaTarget) else target
    parsed, found = target_problems(backend, settings, base_dir=folder)
    problems.items.extend(found)
    if isinstance(target, DjangoCaTarget) and not found:
        assert parsed == target, "the alias settings must make the target they came from"
    problems.raise_if_any()
    assert isinstance(backend, DjangoCaBackend)
    return backend
