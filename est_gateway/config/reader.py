"""Typed reading of one TOML table that collects every problem with its key path.

The core and every backend read their options through :class:`Section`, so an operator
sees all mistakes of a file at once, each as ``key.path: what is wrong (how to fix)``.
"""

from __future__ import annotations

import builtins
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, overload


class _Required:
    """The default of a getter whose key must be present."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: default of the typed getters: the key must be present (a problem is recorded otherwise)
REQUIRED: Final = _Required()
_D = TypeVar("_D")


class Problems:
    """Accumulates configuration problems; raise them together with :meth:`raise_if_any`."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def withdraw_required(self, path: str) -> bool:
        """Drop "``path``: is required ..." problems (a misspelt key explains them); say if any."""
        kept = [item for item in self.items if not item.startswith(f"{path}: is required")]
        withdrawn = len(kept) != len(self.items)
        self.items[:] = kept
        return withdrawn

    def raise_if_any(self) -> None:
        from est_gateway.errors import ConfigError

        if self.items:
            raise ConfigError(self.items)


class Section:
    """A TOML table at ``path``; typed getters record problems instead of raising."""

    def __init__(self, data: Any, path: str, problems: Problems, base_dir: Path) -> None:
        self.path = path
        self.problems = problems
        self.base_dir = base_dir
        self.seen: set[str] = set()
        #: names asked about without being read (e.g. the optional ``password_file``), so
        #: that a misspelling of one still gets a "did you mean"
        self.known: set[str] = set()
        if isinstance(data, Mapping):
            self.data: Mapping[str, Any] = data
        else:
            problems.add(path or "<top level>", f"must be a table, not {_type_name(data)}")
            self.data = {}

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> None:
        self.problems.add(self.key(name), message)

    def has(self, name: str) -> bool:
        self.known.add(name)
        return name in self.data

    def raw(self, name: str, default: object = None) -> object:
        """The value as TOML gave it (for a caller that checks the type itself)."""
        self.seen.add(name)
        return self.data.get(name, default)

    def _get(self, name: builtins.str, default: object, kinds: tuple[type, ...], what: builtins.str,
             empty: object) -> Any:
        """The value if it has one of ``kinds``; otherwise the default (or ``empty`` when the
        key is required), with the problem recorded, so callers always get their type."""
        self.seen.add(name)
        fallback = empty if default is REQUIRED else default
        if name not in self.data:
            if default is REQUIRED:
                self.error(name, f"is required ({what})")
            return fallback
        value = self.data[name]
        if isinstance(value, bool) and bool not in kinds:
            self.error(name, f"must be {what}, not a boolean")
            return fallback
        if not isinstance(value, kinds):
            self.error(name, f"must be {what}, not {_type_name(value)}")
            return fallback
        return value

    def address(self, name: builtins.str, listen: builtins.str,
                default: tuple[builtins.str, int]) -> tuple[builtins.str, int]:
        """``listen``, the value of ``name``, as host and port ("<address>:<port>", an IPv6
        address in brackets); ``default`` after a problem, which is recorded."""
        h, sep, p = listen.rpartition(":")
        if sep and p.isdigit() and h and not 0 < int(p) < 65536:
            self.error(name, f'port {int(p)} in "{listen}" is out of range (1-65535)')
        elif not sep or not p.isdigit() or not h:
            self.error(name, f'"{listen}" is not "<address>:<port>" (e.g. "127.0.0.1:{default[1]}")')
        else:
            return h.strip("[]"), int(p)
        return default

    @overload
    def str(self, name: builtins.str, default: builtins.str | _Required = REQUIRED, *,
            choices: tuple[builtins.str, ...] = ()) -> builtins.str: ...
    @overload
    def str(self, name: builtins.str, default: _D, *,
            choices: tuple[builtins.str, ...] = ()) -> builtins.str | _D: ...
    def str(self, name: builtins.str, default: object = REQUIRED, *,
            choices: tuple[builtins.str, ...] = ()) -> object:
        """A string (``""`` after a problem with a required one)."""
        value = self._get(name, default, (builtins.str,), "a string", "")
        if isinstance(value, builtins.str) and name in self.data:
            if not value.strip():
                self.error(name, "must not be empty")
            elif choices and value not in choices:
                self.error(name, f'"{value}" is not one of: {", ".join(choices)}')
        return value

    @overload
    def bool(self, name: builtins.str, default: builtins.bool | _Required = REQUIRED) -> builtins.bool: ...
    @overload
    def bool(self, name: builtins.str, default: _D) -> builtins.bool | _D: ...
    def bool(self, name: builtins.str, default: object = REQUIRED) -> object:
        """``true`` or ``false`` (``False`` after a problem with a required one)."""
        return self._get(name, default, (builtins.bool,), "true or false", False)

    @overload
    def int(self, name: builtins.str, default: builtins.int | _Required = REQUIRED, *,
            minimum: builtins.int | None = None, maximum: builtins.int | None = None) -> builtins.int: ...
    @overload
    def int(self, name: builtins.str, default: _D, *, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> builtins.int | _D: ...
    def int(self, name: builtins.str, default: object = REQUIRED, *, minimum: builtins.int | None = None,
            maximum: builtins.int | None = None) -> object:
        """A whole number within ``minimum``..``maximum`` (``0`` after a problem with a required one)."""
        value = self._get(name, default, (builtins.int,), "a whole number", 0)
        if isinstance(value, builtins.int) and name in self.data:
            if minimum is not None and value < minimum:
                self.error(name, f"must be at least {minimum}, not {value}")
            if maximum is not None and value > maximum:
                self.error(name, f"must be at most {maximum}, not {value}")
        return value

    @overload
    def number(self, name: builtins.str, default: float | _Required = REQUIRED, *,
               allow_zero: builtins.bool = False) -> float: ...
    @overload
    def number(self, name: builtins.str, default: _D, *, allow_zero: builtins.bool = False) -> float | _D: ...
    def number(self, name: builtins.str, default: object = REQUIRED, *, allow_zero: builtins.bool = False) -> object:
        """A positive number (or zero, where zero means "off"), as a float."""
        value = self._get(name, default, (builtins.int, float), "a number", 0.0)
        if isinstance(value, (builtins.int, float)) and name in self.data:
            if value < 0 or (value == 0 and not allow_zero):
                self.error(name, f"must be {'zero or more' if allow_zero else 'greater than 0'}, not {value}")
        return float(value) if isinstance(value, (builtins.int, float)) else value

    @overload
    def str_list(self, name: builtins.str, default: list[builtins.str] | _Required = REQUIRED, *,
                 choices: tuple[builtins.str, ...] = ()) -> list[builtins.str]: ...
    @overload
    def str_list(self, name: builtins.str, default: _D, *,
                 choices: tuple[builtins.str, ...] = ()) -> list[builtins.str] | _D: ...
    def str_list(self, name: builtins.str, default: object = REQUIRED, *,
                 choices: tuple[builtins.str, ...] = ()) -> object:
        """A list of strings; the items that are no string (or not a choice) are reported."""
        value = self._get(name, default, (list,), "a list of strings", [])
        if not isinstance(value, list) or name not in self.data:
            return value
        for i, item in enumerate(value):
            if not isinstance(item, builtins.str):
                self.problems.add(f"{self.key(name)}[{i}]", f"must be a string, not {_type_name(item)}")
            elif choices and item not in choices:
                self.problems.add(f"{self.key(name)}[{i}]",
                                  f'"{item}" is not one of: {", ".join(choices)}')
        return [v for v in value if isinstance(v, builtins.str)]

    def table(self, name: builtins.str, *, required: builtins.bool = False) -> Section:
        self.seen.add(name)
        if name not in self.data:
            if required:
                self.error(name, "is required (a table)")
            return Section({}, self.key(name), self.problems, self.base_dir)
        return Section(self.data[name], self.key(name), self.problems, self.base_dir)

    def subtables(self) -> dict[builtins.str, Section]:
        """Every entry of this table, itself a table (e.g. ``[aliases.<name>]``)."""
        return {name: self.table(name) for name in self.data}

    def path_value(self, name: builtins.str, default: builtins.str | None | _Required = REQUIRED, *,
                   must_exist: builtins.bool = False) -> Path | None:
        """A file-system path, relative paths taken from the configuration file's folder;
        ``None`` when absent (with a default of ``None``) or after a problem."""
        value = self.str(name, default)
        if not isinstance(value, builtins.str) or not value.strip():
            return None
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            path = self.base_dir / path
        if must_exist and not path.exists():
            self.error(name, f"file {path} does not exist")
        return path

    def private_path(self, name: builtins.str, *, must_exist: builtins.bool = True) -> Any:
        """A path to a secret file (a key, a password) that must be private to its owner:
        like ssh, a file group or others can access is refused, naming its mode."""
        path = self.path_value(name, None, must_exist=must_exist)
        if isinstance(path, Path) and path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                self.error(name, f"{path} is accessible by group or others (mode {mode:04o}); a secret must "
                                 f"be private to the gateway's user: chmod 600 {path}")
        return path

    def secret(self, name: builtins.str, *, required: builtins.bool) -> builtins.str | None:
        """A secret read from ``<name>_file`` or ``<name>_env``; inline values are refused."""
        file_key, env_key = f"{name}_file", f"{name}_env"
        self.known.update((file_key, env_key))
        if name in self.data:
            self.seen.add(name)
            self.error(name, f"inline secrets are not accepted; use {file_key} or {env_key}")
            return None
        has_file, has_env = file_key in self.data, env_key in self.data
        if has_file and has_env:
            self.error(file_key, f"give only one of {file_key} and {env_key}")
            return None
        if has_file:
            before = len(self.problems.items)
            path = self.private_path(file_key, must_exist=False)
            if path is None or len(self.problems.items) != before:
                return None
            try:
                text = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.error(file_key, f"cannot read {path}: {exc.strerror}")
                return None
            if not text:
                self.error(file_key, f"{path} is empty")
                return None
            return text
        if has_env:
            var = self.str(env_key)
            if isinstance(var, builtins.str) and var:
                text = os.environ.get(var, "")
                if not text:
                    self.error(env_key, f"environment variable {var} is not set or empty")
                    return None
                return text
            return None
        if required:
            self.error(file_key, f"is required (or {env_key})")
        return None

    def check_unknown(self, *, only_misspellings: builtins.bool = False) -> None:
        """Report keys nobody read: almost always a typo, so suggest the closest known key.

        ``only_misspellings``: report only keys close to a known one (for a table that was
        not read through, e.g. a backend whose ``type`` is missing).
        """
        for name in self.data:
            if name in self.seen:
                continue
            close = difflib.get_close_matches(name, sorted(self.seen | self.known), n=1)
            if only_misspellings and not close:
                continue
            hint = f'; did you mean "{close[0]}"?' if close else ""
            if close and close[0] not in self.data and self.problems.withdraw_required(self.key(close[0])):
                hint += " (it is required)"
            self.error(name, f"unknown setting{hint}")


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value}"'
    return type(value).__name__
