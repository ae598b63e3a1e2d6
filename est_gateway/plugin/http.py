"""HTTP helpers for plugins whose CA speaks HTTP(S) (``requests``, a dependency of the gateway).

- :class:`UpstreamClient`: calls on one ``requests.Session`` per process presenting the
  gateway's client identity (PEM pair, encrypted PEM or PKCS#12, from
  :func:`est_gateway.plugin.parse_upstream`) and trusting exactly the configured ``ca_bundle``
  (``trust_env = False``: no ``REQUESTS_CA_BUNDLE``, ``HTTPS_PROXY`` or ``.netrc``), with
  timeouts, no redirects followed, no cookies kept, retries of idempotent calls, and a
  :class:`~est_gateway.plugin.CircuitBreaker` (503 + Retry-After while the CA is down).
  ``request()`` returns an :class:`UpstreamResponse` (``status_code``, case-insensitive
  ``headers``, ``content``, ``text``, ``json()`` raising :class:`InvalidJSON`, a ``ValueError``);
  ``send()`` is one exchange on the process's session (``session()``), and ``call()`` runs
  the same retries and breaker around it, for a CA library that drives the exchange (zeep);
- :func:`upstream_session`: a session of the same kind, for another ``SSLContext`` or for a
  library that changes the session it is given;
- :func:`transport_error`: a ``requests`` failure as the matching ``ESTError`` (a :class:`Failure`);
- :func:`redirect_refused`: a 3xx answer, logged and refused (502);
- :class:`RevocationChecker`: revocation status from the CA's OCSP responder or CRL,
  cached until the answer's nextUpdate (:class:`RevocationSettings` reads
  ``[backends.<name>.revocation]``; :func:`to_status` makes the backend's answer).

Tests intercept these sessions with ``responses`` (see :mod:`est_gateway.testing.http`).
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
    upstream_session,
)

__all__ = ["RETRY_STATUSES", "CertStatus", "Failure", "InvalidJSON", "Revocation", "RevocationChecker",
           "RevocationSettings", "UpstreamClient", "UpstreamResponse", "redirect_refused", "to_status",
           "transport_error", "upstream_session"]
