"""The one place EJBCA REST answers become results or ``est_gateway.errors``.

EJBCA's REST error body is ``{"error_code": N, "error_message": "..."}`` and its status
follows ``rest-common/config/ExceptionHandler.java`` (EJBCA CE 8.0): 400 for EJBCA errors
of ``pkcs10enroll`` and bad input, 403 for refused authentication/authorisation, 404 for
an unknown CA, profile, end entity or certificate, 409 for conflicts, 422 for profile
validation failures, 503 for an offline CA or crypto token, 500 for anything else;
202 ``{"status_code":202,"info_message":...}`` while an approval is pending.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import requests

from est_gateway.backends.base import Pending
from est_gateway.errors import BadRequest, UpstreamError, UpstreamUnavailable
from plugins.upstream.ejbca import Meaning, clip, credentials_refused

if TYPE_CHECKING:
    from plugins.ejbca_rest.backend import EjbcaRestBackend

log = logging.getLogger(__name__)


def interpret(response: requests.Response, backend: EjbcaRestBackend, meaning: Meaning, *,
              raw: bool = False) -> Any:
    """A JSON object (bytes if ``raw``), ``None`` for an expected 404, a :class:`Pending`, or raise."""
    status = response.status_code
    if status in (200, 201):
        return response.content if raw else _json_object(response)
    if status == 202 and meaning.pending_allowed:
        info = _json_or_empty(response)
        return Pending(retry_after=backend.options.pending_retry_after_s,
                       reference=clip(info.get("info_message") or info.get("link") or "", 120))
    reason = clip(_json_or_empty(response).get("error_message") or "")
    if status in (400, 409, 413, 422):
        raise BadRequest(f"the CA refused the request: {reason or f'HTTP {status}'}")
    if status == 404:
        if meaning.not_found is None:
            return None
        raise meaning.not_found(reason)
    if status in (401, 403):
        if meaning.refused is not None:
            log.warning("backend %s: EJBCA answered %s (%s); if every request fails so, check the "
                        "gateway's own credentials", backend.name, status, reason)
            raise meaning.refused(reason)
        raise credentials_refused(backend.name, backend.upstream.url, f"HTTP {status}: {reason}")
    if status >= 500:
        log.warning("backend %s: EJBCA answered HTTP %s: %s", backend.name, status, reason)
        raise UpstreamUnavailable(f"the upstream CA is unavailable (HTTP {status})")
    raise UpstreamError(f"the upstream CA answered with an unexpected HTTP {status}")


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise UpstreamError("the upstream CA answered with something that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamError("the upstream CA answered with unexpected JSON")
    return data


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
