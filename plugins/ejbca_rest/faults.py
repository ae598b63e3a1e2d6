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
import re
from typing import TYPE_CHECKING, Any

import requests

from est_gateway.backends.base import Pending
from est_gateway.errors import BadRequest, UpstreamError, UpstreamUnavailable
from plugins.upstream.ejbca import ApprovalAlreadyExists, Meaning, clip, credentials_refused

if TYPE_CHECKING:
    from plugins.ejbca_rest.backend import EjbcaRestBackend

log = logging.getLogger(__name__)

#: ``ApprovalException`` with ``APPROVAL_ALREADY_EXISTS`` (HTTP 400): EJBCA's message is
#: "Approval request with id <approvalId> already exists" (intresources
#: ``approval.alreadyexists``); the REST body carries no EJBCA error code, only the text
APPROVAL_EXISTS = re.compile(r"approval.*already exists|APPROVAL_ALREADY_EXISTS", re.IGNORECASE)
#: a 404 from the servlet container's router, not from EJBCA: the URL is wrong or the
#: REST protocol is not deployed (``{"error_code":404,"error_message":"RESTEASY003210: ..."}``)
ROUTING_404 = re.compile(r"^RESTEASY\d+")


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
    error = _json_or_empty(response)
    reason = clip(error.get("error_message") or "")
    if status in (400, 409) and meaning.pending_allowed and APPROVAL_EXISTS.search(reason):
        raise ApprovalAlreadyExists(reason)
    if status in (400, 409, 413, 422):
        raise BadRequest(f"the CA refused the request: {reason or f'HTTP {status}'}")
    if status == 404:
        if "error_message" not in error or ROUTING_404.match(reason):
            log.error("backend %s: %s answered HTTP 404 (%s): check url (EJBCA's REST base is "
                      "/ejbca/ejbca-rest-api) and that the REST protocol is enabled", backend.name,
                      backend.upstream.url, reason or "not an EJBCA error body")
            raise UpstreamError("the upstream CA does not offer this REST resource (HTTP 404)")
        if meaning.not_found is None:
            return None
        raise meaning.not_found(reason)
    if status in (401, 403):
        if meaning.login_refused_is_none and status == 403:
            return None  # AuthLoginException/AuthStatusException: not this end entity's password
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
