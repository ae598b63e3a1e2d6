"""Backends are found through one entry-point group; only the configured ones are imported.

Built-in and vendor backends register the same way (``pyproject.toml``,
``[project.entry-points."est_gateway.backends"]``). Unknown names, import failures,
duplicate registrations and classes that do not implement :class:`CABackend` are
start-up errors, never skipped.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from est_gateway.backends.base import AnyBackend, CABackend

GROUP = "est_gateway.backends"


class BackendRegistry:
    """Maps a configuration ``type`` to its backend class, importing lazily."""

    def __init__(self, entries: list[EntryPoint] | None = None) -> None:
        self._entries: dict[str, list[EntryPoint]] = {}
        for ep in entries if entries is not None else list(entry_points(group=GROUP)):
            self._entries.setdefault(ep.name, []).append(ep)

    def known(self) -> list[str]:
        return sorted(self._entries)

    def load(self, type_name: str) -> type[AnyBackend]:
        """The class for ``type_name``; raises ``LookupError`` with an operator-facing reason."""
        found = self._entries.get(type_name)
        if not found:
            raise LookupError(f'unknown backend type "{type_name}"; known: {", ".join(self.known()) or "none"} '
                              "(each vendor backend is a plugin distribution of its own: is it installed "
                              "in this Python environment?)")
        distinct = {ep.value for ep in found}
        if len(distinct) > 1:
            raise LookupError(f'backend type "{type_name}" is registered more than once '
                              f'({", ".join(sorted(distinct))}); uninstall one of the plugins')
        entry = found[0]
        try:
            cls = entry.load()
        except Exception as exc:  # an import failure must name the plugin, not crash later
            raise LookupError(f'backend type "{type_name}" ({entry.value}) failed to import: '
                              f"{type(exc).__name__}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, CABackend)):
            raise LookupError(f'backend type "{type_name}" ({entry.value}) does not implement '
                              "est_gateway.backends.base.CABackend")
        cls.type_name = type_name
        return cls
