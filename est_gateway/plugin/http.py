"""HTTP helpers for plugins whose CA speaks HTTP(S) (urllib3, a dependency of the gateway).

- :class:`UpstreamClient`: calls through one urllib3 pool per process presenting the
  gateway's client identity (PEM pair or PKCS#12, from :func:`est_gateway.plugin.parse_upstream`)
  and trusting exactly the configured ``ca_bundle`` (urllib3 reads no environment variable),
  with timeouts, no redirects followed, retries of idempotent calls, and a
  :class:`~est_gateway.plugin.CircuitBreaker` (503 + Retry-After while the CA is down).
  ``request()`` returns an :class:`UpstreamResponse` (``status_code``, case-insensitive
  ``headers``, ``content``, ``text``, ``json()`` raising :class:`InvalidJSON`, a ``ValueError``);
  ``call()`` runs the same retries and breaker around another HTTP stack (zeep's ``requests``);
- :func:`transport_error`: a urllib3 failure as the matching ``ESTError`` (a :class:`Failure`);
- :func:`redirect_refused`: a 3xx answer from another HTTP stack, logged and refused (502);
- :class:`RevocationChecker`: revocation status from the CA's OCSP responder or CRL,
  cached until the answer's nextUpdate (:class:`RevocationSettings` reads
  ``[backends.<name>.revocation]``; :func:`to_status` makes the backend's answer).
"""

from est_gateway.upstream.revocation import CertStatus, Revocation, RevocationChecker, RevocationSettings, to_status
from est_gateway.upstream.session import (
    RETRY_STATUSES,
    Failure,
    InvalidJSON,
    UpstreamClient,
    UpstreamResponse,
    redirect_refused,
    transport_error,
)

__all__ = ["RETRY_STATUSES", "CertStatus", "Failure", "InvalidJSON", "Revocation", "RevocationChecker",
           "RevocationSettings", "UpstreamClient", "UpstreamResponse", "redirect_refused", "to_status",
           "transport_error"]
