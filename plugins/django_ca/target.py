"""What an alias asks of django-ca, parsed from its ``ca``, ``certificate_profile`` and
``[aliases.<name>.upstream]`` into a frozen :class:`DjangoCaTarget`.

- ``ca``: the issuing CA's name or serial (hex, colons optional) as django-ca lists it;
- ``certificate_profile``: a django-ca profile (e.g. ``"client"``); its key usage,
  extended key usage and lifetime are sent with every request, because django-ca's REST
  sign stores the profile's name but applies none of its extensions;
- ``[aliases.<name>.upstream] validity_days``: overrides the profile's lifetime.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from est_gateway.config.model import CATarget
from est_gateway.config.reader import Problems, Section


@dataclass(frozen=True)
class DjangoCaTarget:
    """The issuing CA (name or serial), the profile, and an optional fixed lifetime."""

    ca: str
    profile: str
    validity_days: int | None = None

    @property
    def ca_serial(self) -> str | None:
        """``ca`` as django-ca writes serials (upper-case hex, no colons), if it is one."""
        text = self.ca.replace(":", "").upper()
        return text if text and all(c in "0123456789ABCDEF" for c in text) and len(text) >= 8 else None


def parse_target(target: CATarget, path: str, base_dir: Path) -> tuple[DjangoCaTarget | None, list[str]]:
    """Validate ``target`` (problems reported under ``path``)."""
    problems = Problems()
    if not target.ca.strip():
        problems.add(f"{path}.ca", "must name the django-ca CA (its name or serial)")
    if target.certificate_profile == "default":
        problems.add(f"{path}.certificate_profile", 'is required: the django-ca profile, e.g. "client"')
    if target.end_entity_profile != "default":
        problems.add(f"{path}.end_entity_profile", "django-ca has no end-entity profiles; remove it")
    sec = Section(dict(target.extra), f"{path}.upstream", problems, base_dir)
    days = sec.int("validity_days", None, minimum=1, maximum=3650)
    sec.check_unknown()
    if problems.items:
        return None, problems.items
    return DjangoCaTarget(ca=target.ca.strip(), profile=target.certificate_profile, validity_days=days), []


class TargetCache:
    """Each distinct :class:`CATarget` parsed once (at configuration time) and reused."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._lock = threading.Lock()
        self._parsed: dict[str, DjangoCaTarget] = {}

    def check(self, target: CATarget, path: str) -> list[str]:
        parsed, problems = parse_target(target, path, self.base_dir)
        if parsed is not None:
            with self._lock:
                self._parsed[_key(target)] = parsed
        return problems

    def get(self, target: CATarget) -> DjangoCaTarget:
        with self._lock:
            found = self._parsed.get(_key(target))
        if found is not None:
            return found
        parsed, problems = parse_target(target, "aliases.?", self.base_dir)
        if parsed is None:
            raise ValueError("; ".join(problems))
        return parsed

    def all(self) -> list[DjangoCaTarget]:
        with self._lock:
            return sorted(set(self._parsed.values()), key=repr)


def _key(target: CATarget) -> str:
    extra: Mapping[str, Any] = target.extra
    return repr((target.ca, target.certificate_profile, target.end_entity_profile, sorted(extra.items())))
