"""How the gateway reaches an upstream CA: URL, mutual-TLS identity, trust, timeouts, retries.

Read from ``[backends.<name>]`` by every HTTP-based adapter. The identity is
``client_cert`` + ``client_key`` or ``client_pkcs12``. Secrets come from files or the
environment only (``client_key_passphrase_file``/``_env``,
``client_pkcs12_passphrase_file``/``_env``), never inline.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from est_gateway.config.reader import Section
from est_gateway.upstream.credentials import (
    CredentialError,
    client_tls_context,
    client_tls_context_pkcs12,
    server_trust_context,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamSettings:
    """Validated connection settings; ``tls`` carries the client key, so it is never printed."""

    url: str
    ca_bundle: Path | None
    #: ``None`` when the upstream authenticates the gateway otherwise (HTTP Basic: django-ca)
    client_cert: Path | None
    insecure: bool
    connect_timeout_s: float
    read_timeout_s: float
    retries: int
    retry_backoff_s: float
    tls: ssl.SSLContext = field(repr=False, compare=False)
    #: consecutive unreachable calls before failing fast (0 = never), and for how long
    breaker_failures: int = 5
    breaker_cooldown_s: float = 15.0

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.read_timeout_s)

    @property
    def verify(self) -> str | bool:
        """The ``verify=`` passed on every request (never left to ``REQUESTS_CA_BUNDLE``)."""
        return False if self.insecure else str(self.ca_bundle)

    def describe(self) -> dict[str, str]:
        trust = "NOT VERIFIED (insecure = true)" if self.insecure else str(self.ca_bundle)
        facts = {"upstream": self.url, "upstream trust": trust,
                 "timeouts": f"connect {self.connect_timeout_s:g}s, read {self.read_timeout_s:g}s"}
        if self.client_cert is not None:
            facts["client certificate"] = str(self.client_cert)
        return facts


def parse_upstream(sec: Section, *, client_cert_required: bool = True) -> UpstreamSettings | None:
    """Read and check the connection keys of ``sec``; ``None`` if any problem was recorded.

    ``client_cert_required=False``: ``client_cert``/``client_key`` are optional, for an
    upstream that authenticates the gateway another way (django-ca: HTTP Basic).
    """
    before = len(sec.problems.items)
    url = sec.str("url")
    if isinstance(url, str) and url:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            why = ("the gateway authenticates to this upstream with mutual TLS" if client_cert_required
                   else "the gateway's credentials must not cross the network in clear")
            sec.error("url", f'"{url}" must be an https:// URL ({why})')
    keystore = sec.path_value("client_pkcs12", None, must_exist=True)
    cert: Path | None = None
    key: Path | None = None
    if sec.has("client_pkcs12"):
        for pem_key in ("client_cert", "client_key", "client_key_passphrase_file",
                        "client_key_passphrase_env"):
            if sec.raw(pem_key) is not None:
                sec.error(pem_key, "give either client_pkcs12 or client_cert + client_key, not both")
        passphrase = sec.secret("client_pkcs12_passphrase", required=False)
    else:
        with_identity = client_cert_required or sec.has("client_cert") or sec.has("client_key")
        cert = sec.path_value("client_cert", must_exist=True) if with_identity else None
        key = sec.path_value("client_key", must_exist=True) if with_identity else None
        passphrase = sec.secret("client_key_passphrase", required=False)
    warn_days = sec.int("credential_expiry_warning_days", 30, minimum=0, maximum=3650)
    insecure = sec.bool("insecure", False)
    bundle = sec.path_value("ca_bundle", None, must_exist=True)
    if bundle is None and insecure is False and not sec.has("ca_bundle"):
        sec.error("ca_bundle", "is required: the CA certificate(s) that issued the upstream's TLS "
                               "certificate (PEM); verification is only skipped with insecure = true")
    connect = sec.number("connect_timeout_s", 5.0)
    read = sec.number("read_timeout_s", 30.0)
    retries = sec.int("retries", 2, minimum=0, maximum=10)
    backoff = sec.number("retry_backoff_s", 0.5, allow_zero=True)
    breaker_failures = sec.int("circuit_breaker_failures", 5, minimum=0, maximum=1000)
    breaker_cooldown = sec.number("circuit_breaker_cooldown_s", 15.0)
    if len(sec.problems.items) != before:
        return None
    trust = None if insecure else bundle
    try:
        identity: Path | None = None
        if keystore is not None:
            context = client_tls_context_pkcs12(keystore, passphrase, trust, warn_days=warn_days)
            identity = keystore
        elif cert is not None and key is not None:
            context = client_tls_context(cert, key, passphrase, trust, warn_days=warn_days)
            identity = cert
        else:   # no client identity: the upstream authenticates the gateway otherwise
            context = server_trust_context(trust)
    except CredentialError as exc:
        sec.error(exc.key, exc.message)
        return None
    if insecure:
        log.warning("backend %s: insecure = true: the TLS certificate of %s is NOT verified; "
                    "anyone on the network path can impersonate the CA", sec.path, url)
    return UpstreamSettings(url=url.rstrip("/"), ca_bundle=bundle, client_cert=identity,
                            insecure=bool(insecure), connect_timeout_s=connect,
                            read_timeout_s=read, retries=retries, retry_backoff_s=backoff,
                            tls=context, breaker_failures=breaker_failures,
                            breaker_cooldown_s=breaker_cooldown)
