"""What an alias asks of EJBCA (:class:`EjbcaTarget`): ``ca``, ``certificate_profile``,
``end_entity_profile``, and the settings of ``[aliases.<name>.upstream]``.

Keys common to the EJBCA adapters:

- ``mode``: ``"ra"`` (default; the gateway creates or updates the end entity) or
  ``"client"`` (EJBCA's client mode: the end entity is pre-registered with status NEW and
  the CSR's challengePassword carries its enrollment code);
- ``username_from`` (``CN`` | ``UID`` | ``serialNumber`` | ``DN``), ``username_prefix``,
  ``username_suffix``: how the end-entity username is derived;
- ``ca_chain_file``: a PEM chain served for ``cacerts`` instead of asking the CA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from est_gateway.plugin import Section
from est_gateway_ejbca.username import SOURCES, UsernameRule

MODES = ("ra", "client")


@dataclass(frozen=True)
class AliasUpstream:
    """What an alias adds to its CA target for an EJBCA adapter."""

    mode: str = "ra"
    username: UsernameRule = field(default_factory=UsernameRule)
    ca_chain: tuple[x509.Certificate, ...] = ()
    ca_subject_dn: str | None = None


@dataclass(frozen=True)
class EjbcaTarget:
    """What an alias asks of EJBCA: the CA, both profiles, and its ``[upstream]`` settings."""

    ca: str
    certificate_profile: str = "default"
    end_entity_profile: str = "default"
    upstream: AliasUpstream = field(default_factory=AliasUpstream)


def parse_target(alias: Section, *, allow_subject_dn: bool) -> EjbcaTarget:
    """Read ``ca``, ``certificate_profile``, ``end_entity_profile`` and
    ``[aliases.<name>.upstream]`` (problems are recorded on ``alias``)."""
    return EjbcaTarget(ca=alias.str("ca"),
                       certificate_profile=alias.str("certificate_profile", "default"),
                       end_entity_profile=alias.str("end_entity_profile", "default"),
                       upstream=parse_alias_upstream(alias.table("upstream"), allow_subject_dn=allow_subject_dn))


def parse_alias_upstream(sec: Section, *, allow_subject_dn: bool) -> AliasUpstream:
    """Validate ``[aliases.<name>.upstream]``."""
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
    return AliasUpstream(mode=mode, username=rule, ca_chain=chain, ca_subject_dn=subject_dn)
