"""``[publication]``: the plain-HTTP address where the local CAs publish revocation, and
how long what they publish is valid."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from est_gateway.config.reader import Section
from est_gateway.publication.urls import url_path

DEFAULT_PORT = 8080


@dataclass(frozen=True)
class PublicationSettings:
    """Off (``enabled`` False) unless ``[publication] listen`` names an address."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: a CRL's nextUpdate is this long after its thisUpdate; a new one is made at half of it
    crl_validity_hours: int = 24
    #: an OCSP answer's nextUpdate is this long after it was made
    ocsp_validity_minutes: int = 60

    @property
    def url(self) -> str:
        """Where the publication listens, for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def parse_publication(sec: Section, server_host: str, server_port: int,
                      backends: Mapping[str, Any]) -> PublicationSettings:
    """Read ``[publication]`` and check every local CA's published URLs against it."""
    d = PublicationSettings()
    enabled = sec.has("listen")
    host, port = sec.address("listen", sec.str("listen", f"{d.host}:{d.port}"), (d.host, d.port))
    if enabled and port == server_port and (host == server_host or "0.0.0.0" in (host, server_host)
                                            or "::" in (host, server_host)):
        sec.error("listen", f"must differ from server.listen ({server_host}:{server_port}): revocation "
                            "is published in plain HTTP, never where EST is served")
    settings = PublicationSettings(
        enabled=enabled, host=host, port=port,
        crl_validity_hours=sec.int("crl_validity_hours", d.crl_validity_hours, minimum=1, maximum=24 * 366),
        ocsp_validity_minutes=sec.int("ocsp_validity_minutes", d.ocsp_validity_minutes, minimum=1,
                                      maximum=7 * 24 * 60),
    )
    sec.check_unknown()
    _check_urls(sec, enabled, backends)
    return settings


def _check_urls(sec: Section, enabled: bool, backends: Mapping[str, Any]) -> None:
    """Each published URL needs the listener, and names a path of its own."""
    from est_gateway.backends.local import LocalCABackend

    owners: dict[str, str] = {}
    for name, backend in backends.items():
        if not isinstance(backend, LocalCABackend):
            continue
        for ca_name, ca in backend.options.cas.items():
            for key, url in (("crl_url", ca.crl_url), ("ocsp_url", ca.ocsp_url)):
                if url is None:
                    continue
                where = f"backends.{name}.cas.{ca_name}.{key}"
                if not enabled:
                    sec.problems.add(where, 'is published by the plain-HTTP publication listener: set '
                                            '[publication] listen (e.g. "127.0.0.1:8080")')
                path = url_path(url)
                if path in owners:
                    sec.problems.add(where, f"names the path {path} of {owners[path]} too; give each its own")
                owners.setdefault(path, where)


def published_urls(backends: Mapping[str, Any], settings: PublicationSettings) -> dict[str, str]:
    """The first local CA's ``crl_url`` and ``ocsp_url`` that are served, for a banner."""
    from est_gateway.backends.local import LocalCABackend

    found: dict[str, str] = {}
    if not settings.enabled:
        return found
    for backend in backends.values():
        if isinstance(backend, LocalCABackend):
            for ca in backend.options.cas.values():
                for key, url in (("crl_url", ca.crl_url), ("ocsp_url", ca.ocsp_url)):
                    if url:
                        found.setdefault(key, url)
    return found
