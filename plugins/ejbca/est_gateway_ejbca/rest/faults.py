"""The one place EJBCA REST answers become results or ``est_gateway.errors``.

EJBCA's REST error body is ``{"error_code": N, "error_message": "..."}`` and its status
follows ``rest-common/config/ExceptionHandler.java`` (EJBCA CE 8.0): 403 for refused
authorisation, 404 for an unknown CA, profile or certificate, 409 for conflicts, 422 for
profile validation failures, 503 for an offline CA or crypto token, 500 for anything
else; 202 ``{"status_code":202,"info_message":...}`` while an approval is pending.

But ``CertificateRestResource`` catches ``EjbcaException`` itself in ``pkcs10enroll`` and
``certificaterequest`` and answers 400 with the exception's message, and
``NotFoundException``, ``AuthLoginException`` and ``AuthStatusException`` all extend it:
on CE 8.0 (and newer Community releases) "no such end entity", "wrong password" and
"wrong status" are 400s, told apart only by EJBCA's message (:data:`LOGIN_REFUSED`).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from est_gateway.plugin import BadRequest, Pending, UpstreamError, UpstreamUnavailable, clip
from est_gateway.plugin.http import UpstreamResponse
from est_gateway_ejbca.common import ApprovalAlreadyExists, Meaning, credentials_refused

if TYPE_CHECKING:
    from est_gateway_ejbca.rest.backend import EjbcaRestBackend

log = logging.getLogger(__name__)

#: ``ApprovalException`` with ``APPROVAL_ALREADY_EXISTS`` (HTTP 400): EJBCA's message is
#: "Approval request with id <approvalId> already exists" (intresources
#: ``approval.alreadyexists``); the REST body carries no EJBCA error code, only the text
APPROVAL_EXISTS = re.compile(r"approval.*already exists|APPROVAL_ALREADY_EXISTS", re.IGNORECASE)
#: a 404 from the servlet container's router, not from EJBCA: the URL is wrong or the
#: REST protocol is not deployed (``{"error_code":404,"error_message":"RESTEASY003210: ..."}``)
ROUTING_404 = re.compile(r"^RESTEASY\d+")
#: EJBCA's messages when an end entity cannot enroll with this username and password
#: (ejbcaresources.en.properties, EJBCA CE 8.0): ``ra.wrongusernameorpassword`` (no such
#: end entity: SignSessionBean.createCertificateWS), ``authentication.invalidpwd``
#: (AuthLoginException), ``authentication.wrongstatus`` (AuthStatusException, e.g. "Got
#: request with status GENERATED (40), NEW, FAILED or INPROCESS required: dev-1."),
#: ``authentication.usernotfound`` and older releases' "Could not find username"
LOGIN_REFUSED = re.compile(r"^(Wrong username or password|Got request for user with invalid password|"
                           r"Got request with status .* required|Got request for nonexisting user|"
                           r"Could not find username)", re.IGNORECASE)


class ResourceMissing(UpstreamError):
    """The REST resource does not exist on this EJBCA (a RESTEasy 404, not an EJBCA answer):
    a wrong ``url``, the REST protocol not deployed, or an EJBCA version without it."""


def interpret(response: UpstreamResponse, backend: EjbcaRestBackend, meaning: Meaning, *,
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
    if status == 409 and meaning.already_revoked_is_done:  # AlreadyRevokedException
        return None
    if status in (400, 409) and meaning.pending_allowed and APPROVAL_EXISTS.search(reason):
        raise ApprovalAlreadyExists(reason)
    authenticates = meaning.login_refused_is_none or meaning.refused is not None
    # 400 on CE 8.0 and newer Community releases; 403 where ExceptionHandler's mapping of
    # AuthLoginException/AuthStatusException applies
    if status in (400, 403) and authenticates and LOGIN_REFUSED.match(reason):
        if meaning.login_refused_is_none:
            return None  # not this end entity, status or password: add/edit it and enroll
        assert meaning.refused is not None
        raise meaning.refused(reason)
    if status in (400, 409, 413, 422):
        raise BadRequest(f"the CA refused the request: {reason or f'HTTP {status}'}")
    if status == 404:
        if "error_message" not in error or ROUTING_404.match(reason):
            if not meaning.missing_is_quiet:
                log.error("backend %s: %s answered HTTP 404 (%s): check url (EJBCA's REST base is "
                          "/ejbca/ejbca-rest-api) and that the REST protocol is enabled", backend.name,
                          backend.upstream.url, reason or "not an EJBCA error body")
            raise ResourceMissing("the upstream CA does not offer this REST resource (HTTP 404)")
        if meaning.not_found is None:
            return None
        raise meaning.not_found(reason)
    if status in (401, 403):  # AuthorizationDeniedException: the gateway's RA role lacks a right
        raise credentials_refused(backend.name, backend.upstream.url, f"HTTP {status}: {reason}")
    if status >= 500:
        log.warning("backend %s: EJBCA answered HTTP %s: %s", backend.name, status, reason)
        raise UpstreamUnavailable(f"the upstream CA is unavailable (HTTP {status})")
    raise UpstreamError(f"the upstream CA answered with an unexpected HTTP {status}")


def _json_object(response: UpstreamResponse) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise UpstreamError("the upstream CA answered with something that is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamError("the upstream CA answered with unexpected JSON")
    return data


def _json_or_empty(response: UpstreamResponse) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
