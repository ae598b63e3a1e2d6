"""Per-alias upstream settings, from ``[aliases.<name>.upstream]`` (``CATarget.extra``).

Keys common to the EJBCA adapters:

- ``mode``: ``"ra"`` (default; the gateway creates or updates the end entity) or
  ``"client"`` (EJBCA's client mode: the end entity is pre-registered with status NEW and
  the CSR's challengePassword carries its enrollment code);
- ``username_from`` (``CN`` | ``UID`` | ``serialNumber`` | ``DN``), ``username_prefix``,
  ``username_suffix``: how the end-entity username is derived;
- ``ca_chain_file``: a PEM chain served for ``cacerts`` instead of asking the CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from est_gateway.config.reader import Problems, Section
from plugins.upstream.username import SOURCES, UsernameRule

MODES = ("ra", "client")


@dataclass(frozen=True)
class AliasUpstream:
    """What an alias adds to its CA target for an EJBCA adapter."""

    mode: str = "ra"
    username: UsernameRule = field(default_factory=UsernameRule)
    ca_chain: tuple[x509.Certificate, ...] = ()
    ca_subject_dn: str | None = None


def parse_alias_upstream(extra: Mapping[str, Any], path: str, base_dir: Path, *,
                         allow_subject_dn: bool) -> tuple[AliasUpstream, list[str]]:
    """Validate ``extra`` (reported under ``<path>.upstream``); returns settings and problems."""
    problems = Problems()
    sec = Section(dict(extra), f"{path}.upstream", problems, base_dir)
    rule = UsernameRule(source=sec.str("username_from", "CN", choices=tuple(SOURCES)),
                        prefix=sec.str("username_prefix", ""),
                        suffix=sec.str("username_suffix", ""))
    mode = sec.str("mode", "ra", choices=MODES)
    chain: tuple[x509.Certificate, ...] = ()
    chain_file = sec.path_value("ca_chain_file", None, must_exist=True)
    if chain_file is not None and chain_file.exists():
        try:
            chain = tuple(x509.load_pem_x509_certificates(chain_file.read_bytes()))
        except (OSError, ValueError):
            sec.error("ca_chain_file", f"{chain_file} is not a readable PEM certificate chain")
    subject_dn = sec.str("ca_subject_dn", None) if allow_subject_dn else None
    sec.check_unknown()
    return AliasUpstream(mode=mode, username=rule, ca_chain=chain, ca_subject_dn=subject_dn), problems.items


class AliasSettingsCache:
    """Parsed :class:`AliasUpstream` per distinct ``extra`` table (parsed once, reused)."""

    def __init__(self, base_dir: Path, *, allow_subject_dn: bool) -> None:
        self.base_dir = base_dir
        self.allow_subject_dn = allow_subject_dn
        self._parsed: dict[str, AliasUpstream] = {}

    def check(self, extra: Mapping[str, Any], path: str) -> list[str]:
        parsed, problems = parse_alias_upstream(extra, path, self.base_dir,
                                                allow_subject_dn=self.allow_subject_dn)
        if not problems:
            self._parsed[_key(extra)] = parsed
        return problems

    def get(self, extra: Mapping[str, Any]) -> AliasUpstream:
        key = _key(extra)
        if key not in self._parsed:
            problems = self.check(extra, "aliases.?")
            if problems:
                raise ValueError("; ".join(problems))
        return self._parsed[key]


def _key(extra: Mapping[str, Any]) -> str:
    return repr(sorted(extra.items()))
