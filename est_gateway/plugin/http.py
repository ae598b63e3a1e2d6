"""HTTP helpers for plugins whose CA speaks HTTP(S); they need ``requests`` (list it among
your plugin's dependencies: a gateway with only the built-in CA does not install it).

- :class:`UpstreamClient`: per-thread, per-process ``requests`` sessions presenting the
  gateway's client identity (PEM pair or PKCS#12, from :func:`est_gateway.plugin.parse_upstream`),
  ``verify=`` and timeouts passed on every call, retries of idempotent calls, and a
  :class:`~est_gateway.plugin.CircuitBreaker` (503 + Retry-After while the CA is down);
- :func:`transport_error`: a ``requests`` failure as the matching ``ESTError``;
- :class:`RevocationChecker`: revocation status from the CA's OCSP responder or CRL,
  cached until the answer's nextUpdate (:class:`RevocationSettings` reads
  ``[backends.<name>.revocation]``; :func:`to_status` makes the backend's answer).
"""

from est_gateway.upstream.revocation import CertStatus, Revocation, RevocationChecker, RevocationSettings, to_status
from est_gateway.upstream.session import RETRY_STATUSES, UpstreamClient, new_session, transport_error

__all__ = ["RETRY_STATUSES", "CertStatus", "Revocation", "RevocationChecker", "RevocationSettings",
           "UpstreamClient", "new_session", "to_status", "transport_error"]
