"""The public API for CA-backend plugins: import everything a backend needs from here.

A backend is a subclass of :class:`CABackend`, registered under the entry-point group
``est_gateway.backends`` of its own distribution, e.g.::

    [project.entry-points."est_gateway.backends"]
    my-ca = "est_gateway_myca:MyCABackend"

Its lifecycle (what the server calls, when, from which process and thread):

1. :meth:`CABackend.from_options` parses ``[backends.<name>]`` through a :class:`Section`
   (typed getters that record every problem with its key path instead of raising), then
   :meth:`CABackend.parse_target` parses the backend's keys of each ``[aliases.<name>]``
   into the backend's own frozen target. The core stores the target opaquely on the alias
   and hands it back in every call (``request.target``, ``target``).
2. :meth:`CABackend.start` once, before the worker processes are forked.
3. The EST operations (:meth:`~CABackend.ca_certs`, :meth:`~CABackend.enroll`,
   :meth:`~CABackend.reenroll`, :meth:`~CABackend.revocation_status`,
   :meth:`~CABackend.health`) are called concurrently from N threads in each worker
   process: be thread-safe, open connections per process (after the fork) and bound every
   upstream call in time. Raise the error classes below; anything else is a 500.
4. :meth:`CABackend.close` at shutdown, in each worker process and in the arbiter.

Helpers for HTTP upstreams (mutual-TLS pools trusting only the configured bundle, retries,
the OCSP/CRL revocation checker) live in :mod:`est_gateway.plugin.http`; they use requests,
a dependency of the gateway itself.

The contract test suite every backend runs is :mod:`est_gateway.testing`. See
docs/plugins.md for a complete example.
"""

from est_gateway.backends.base import (
    CABackend,
    EnrollRequest,
    Issued,
    Pending,
    ReenrollRequest,
    Requester,
    RevocationStatus,
    TargetT,
)
from est_gateway.config.reader import REQUIRED, Problems, Section
from est_gateway.errors import (
    BadRequest,
    ConfigError,
    ESTError,
    Forbidden,
    NotSupported,
    Rejected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from est_gateway.upstream.answers import clip, issued_by
from est_gateway.upstream.breaker import CircuitBreaker
from est_gateway.upstream.cache import ExpiringCache
from est_gateway.upstream.chainstore import ChainStore
from est_gateway.upstream.credentials import (
    CredentialError,
    client_tls_context,
    client_tls_context_pkcs12,
    server_trust_context,
    spki,
)
from est_gateway.upstream.settings import UpstreamSettings, parse_upstream
from est_gateway.wire import requested_sans

__all__ = [
    "REQUIRED", "BadRequest", "CABackend", "ChainStore", "CircuitBreaker", "ConfigError", "CredentialError",
    "ESTError", "EnrollRequest", "ExpiringCache", "Forbidden", "Issued", "NotSupported", "Pending",
    "Problems", "ReenrollRequest", "Rejected", "Requester", "RevocationStatus", "Section", "TargetT",
    "UpstreamError", "UpstreamSettings", "UpstreamTimeout", "UpstreamUnavailable", "clip",
    "client_tls_context", "client_tls_context_pkcs12", "issued_by", "parse_upstream", "requested_sans",
    "server_trust_context", "spki",
]
