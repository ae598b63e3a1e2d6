"""Settings of the CFSSL adapter: ``[backends.<name>]`` and each alias's target.

Backend keys beyond the shared upstream ones (``url``, ``client_cert``, ``client_key``,
``ca_bundle``, timeouts, retries, circuit breaker; ``est_gateway.plugin.parse_upstream``):

- ``auth_key_file`` / ``auth_key_env``: the hex HMAC key of the ``auth_keys`` entry the
  CFSSL profiles name (``"type": "standard"``); never inline;
- ``cacerts_cache_s``: how long the CA certificate from ``info`` is reused;
- ``[backends.<name>.revocation]``: the generic OCSP/CRL checker (``est_gateway.plugin.http``).

Per alias (:class:`CfsslTarget`, parsed by the backend), ``ca`` is CFSSL's signer
``label`` and ``certificate_profile`` its signing profile; ``[aliases.<name>.upstream]
usages`` lists the extended key usages the issued certificate must carry (default
``["clientAuth"]``): CFSSL answers an unknown profile name with its default profile
instead of an error, so what was issued is checked.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from est_gateway.plugin import Section, UpstreamSettings, parse_upstream
from est_gateway.plugin.http import RevocationSettings

#: EKU names an alias may require, as RFC 5280 and CFSSL's configuration spell them
USAGES: dict[str, ObjectIdentifier] = {
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}
#: how CFSSL's configuration and info endpoint name them (``config.ExtKeyUsage``)
CFSSL_USAGE_NAMES = {"clientAuth": "client auth", "serverAuth": "server auth",
                     "codeSigning": "code signing", "emailProtection": "email protection"}
#: the end-entity profile default of the core (CFSSL has no such thing)
NO_END_ENTITY_PROFILE = "default"


@dataclass(frozen=True)
class CfsslOptions:
    """``[backends.<name>]`` of a CFSSL backend, validated; ``auth_key`` is never printed."""

    upstream: UpstreamSettings | None
    auth_key: bytes = field(repr=False)
    revocation: RevocationSettings
    #: the configuration file's folder (relative paths in alias settings)
    base_dir: Path
    cacerts_cache_s: float = 300.0

    @classmethod
    def parse(cls, options: Section) -> CfsslOptions:
        upstream = parse_upstream(options)
        return cls(upstream=upstream, auth_key=_auth_key(options),
                   revocation=RevocationSettings.from_section(options.table("revocation")),
                   base_dir=options.base_dir,
                   cacerts_cache_s=options.number("cacerts_cache_s", 300.0, allow_zero=True))


def _auth_key(options: Section) -> bytes:
    """CFSSL's ``standard`` auth provider key: hex, decoded (``auth/auth.go``)."""
    text = options.secret("auth_key", required=True)
    if text is None:
        return b""
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 16:
        name = "auth_key_file" if options.has("auth_key_file") else "auth_key_env"
        options.error(name, "must hold CFSSL's auth key as hex, at least 16 bytes (e.g. the output of "
                            "`openssl rand -hex 32`), the same as in CFSSL's auth_keys")
        return b""
    return key


@dataclass(frozen=True)
class CfsslTarget:
    """What an alias asks of CFSSL."""

    label: str
    profile: str
    usages: tuple[str, ...] = ("clientAuth",)

    @property
    def usage_oids(self) -> tuple[ObjectIdentifier, ...]:
        return tuple(USAGES[u] for u in self.usages)

    @classmethod
    def parse(cls, alias: Section) -> CfsslTarget:
        """``ca`` (the signer label), ``certificate_profile`` and ``[upstream] usages`` of an
        alias; problems are recorded on ``alias``."""
        if alias.str("end_entity_profile", NO_END_ENTITY_PROFILE) != NO_END_ENTITY_PROFILE:
            alias.error("end_entity_profile", "CFSSL has no end-entity profiles; remove this key")
        sec = alias.table("upstream")
        usages = sec.str_list("usages", ["clientAuth"], choices=tuple(USAGES))
        if not usages:
            sec.error("usages", "name at least one extended key usage the certificates must carry")
        sec.check_unknown()
        return cls(label=alias.str("ca"), profile=alias.str("certificate_profile", "default"),
                   usages=tuple(usages) or ("clientAuth",))
