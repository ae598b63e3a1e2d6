"""The one place EJBCA REST answers become results or ``est_gateway.errors``.

EJBCA's REST error body is ``{"error_code": N, "error_message": "..."}`` and its status
follows ``rest-common/config/ExceptionHandler.java`` (EJBCA CE 8.0): 403 for refused
authorisation, 404 for an unknown CA, profile or certificate, 409 for conflicts, 422 for
profile validation failures, 503 for an offline CA or crypto token, 500 for anything
else. Its 202 (an unwrapped ``WaitingForApprovalException``) never comes from the calls
the adapter makes for an enrollment: ``pkcs10enroll`` turns "waiting for approval" into a
400 refusal (:data:`APPROVALS_ENABLED`), ``certificaterequest`` adds or edits nothing.

``CertificateRestResource`` catches ``EjbcaException`` (and ``CesecoreException``) itself
in ``pkcs10enroll`` and ``certificaterequest`` and answers 400 with the exception's
message, and ``NotFoundException``, ``AuthLoginException``, ``AuthStatusException``,
``ApprovalException`` and ``CADoesntExistsException`` all extend one of them: on CE 8.0
(and newer Community releases) these are 400s told apart only by EJBCA's message
(:data:`LOGIN_REFUSED`, :data:`UNKNOWN_NAME`, :data:`APPROVALS_ENABLED`).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from est_gateway.plugin import BadRequest, UpstreamError, UpstreamUnavailable, clip
from est_gateway.plugin.http import UpstreamResponse
from est_gateway_ejbca.common import Meaning, credentials_refused, unknown_ca_or_profile

if TYPE_CHECKING:
    from est_gateway_ejbca.rest.backend import EjbcaRestBackend

log = logging.getLogger(__name__)

#: ``pkcs10enroll`` under an approval profile (HTTP 400): ``CertificateRequestSessionBean
#: .addOrEditUser`` rolls back and throws "Single transaction enrollment request rejected since
#: approvals are enabled for this CA (<caId>) or Certificate Profile (<cpId>)."; or, while an
#: approval for the end entity is open (asked for through EjbcaWS or the RA web),
#: ``ApprovalSessionBean.addApprovalRequest``'s "Approval request with approvalID <id> already
#: exists." (``approval.alreadyexists``)
APPROVALS_ENABLED = re.compile(r"^(Single transaction enrollment request rejected since approvals are "
                               r"enabled|Approval request with approvalID -?\d+ already exists)")
#: ``pkcs10enroll``'s unknown names (HTTP 400 on CE 8.0): ``EjbcaRestHelperSessionBean
#: .convertToEndEntityInformation`` 'CA with name "<ca>" doesn't exist', 'Certificate profile
#: with name "<cp>" doesn't exist', ``EndEntityProfileSessionBean.getEndEntityProfileId``
#: 'End Entity Profile of name "<eep>" was not found'
UNKNOWN_NAME = re.compile(r"^(CA with name \"?.*\"? doesn't exist|Certificate profile with name .* "
                          r"doesn't exist|End Entity Profile of name .* was not found)")
#: a 404 from the servlet container's router, not from EJBCA: the URL is wrong or the
#: REST protocol is not deployed (``{"error_code":404,"error_message":"RESTEASY003210: ..."}``)
ROUTING_404 = re.compile(r"^RESTEASY\d+")
#: EJBCA's messages when an end entity cannot enroll with this username and password
#: (src/intresources/ejbcaresources.en.properties): ``ra.wrongusernameorpassword`` (no such
#: end entity: SignSessionBean.createCertificateWS), ``authentication.invalidpwd``
#: (AuthLoginException), ``authentication.wrongstatus`` (AuthStatusException; CE 8.0 "Got
#: request with status GENERATED (40), NEW, FAILED or INPROCESS required: dev-1.", 8.1 and
#: later "... (40). Status NEW, FAILED or INPROCESS required: dev-1."),
#: ``authentication.usernotfound`` and older releases' "Could not find username"
LOGIN_REFUSED = re.compile(r"^(Wrong username or password|Got request for user with invalid password|"
                           r"Got request with status .* required|Got request for nonexisting user|"
                           r"Could not find username)", re.IGNORECASE)


class ResourceMissing(UpstreamError):
    """The REST resource does not exist on this EJBCA (a RESTEasy 404, not an EJBCA answer):
    a wrong ``url``, the REST protocol not deployed, or an EJBCA version without it."""


def interpret(response: UpstreamResponse, backend: EjbcaRestBackend, meaning: Meaning, *,
              raw: bool = False) -> Any:
    """A JSON object (bytes if ``raw``), ``None`` for an expected 404, or raise."""
    status = response.status_code
    if status in (200, 201):
        return response.content if raw else _json_object(response)
    error = _json_or_empty(response)
    reason = clip(error.get("error_message") or "")
    if status == 409 and meaning.already_revoked_is_done:  # AlreadyRevokedException
        return None
    if status == 400 and meaning.approvals_refused is not None and APPROVALS_ENABLED.match(reason):
        raise meaning.approvals_refused(reason)
    if status == 400 and UNKNOWN_NAME.match(reason):
        log.error("backend %s: EJBCA does not know a name this EST label uses (%s): check ca, "
                  "certificate_profile and end_entity_profile", backend.name, reason)
        raise unknown_ca_or_profile(reason)
    # 400 on CE 8.0 and newer Community releases; 403 where ExceptionHandler's mapping of
    # AuthLoginException/AuthStatusException applies
    if status in (400, 403) and meaning.refused is not None and LOGIN_REFUSED.match(reason):
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
