"""The one place EjbcaWS answers and faults become results or ``est_gateway.errors``.

Fault beans (EJBCA's WSDL): ``EjbcaException``/``CesecoreException``/``NotFoundException``/
``CADoesntExistsException``/``ApprovalException`` carry ``{errorCode{internalErrorCode},
message}``; ``WaitingForApprovalException`` carries ``{requestId, message}``;
``AuthorizationDeniedException`` and ``UserDoesntFullfillEndEntityProfile`` a ``message``.
Error codes are cesecore's ``ErrorCode`` constants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lxml import etree
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault, TransportError

from est_gateway.plugin import BadRequest, Forbidden, Pending, UpstreamError, UpstreamUnavailable, clip
from est_gateway_ejbca.common import ApprovalAlreadyExists, Meaning, credentials_refused

if TYPE_CHECKING:
    from est_gateway_ejbca.soap.backend import EjbcaSoapBackend

log = logging.getLogger(__name__)

#: ``internalErrorCode`` values: the CA cannot sign right now
OFFLINE_CODES = frozenset({"CA_OFFLINE", "CA INVALID TOKEN PIN"})
#: the end entity cannot enroll with this password/status (client mode)
LOGIN_CODES = frozenset({"LOGIN_ERROR", "USER_WRONG_STATUS", "USER_NOT_FOUND"})
#: the CA or a profile the alias names does not exist
MISSING_CODES = frozenset({"CA_NOT_EXISTS", "CERT_PROFILE_NOT_EXISTS", "EE_PROFILE_NOT_EXISTS"})


def invoke(backend: EjbcaSoapBackend, call: Callable[[], Any], meaning: Meaning) -> Any:
    """Run one EjbcaWS call: its result, ``None`` for an expected "not found", a
    :class:`Pending`, or an ``ESTError``. Transport failures already are ``ESTError``s
    (``est_gateway.plugin.http``)."""
    try:
        return call()
    except Fault as fault:
        return _fault(backend, fault, meaning)
    except TransportError as exc:
        status = exc.status_code
        if status in (401, 403):
            raise credentials_refused(backend.name, backend.upstream.url, f"HTTP {status}") from None
        if status >= 500:
            log.warning("backend %s: EjbcaWS answered HTTP %s without a SOAP fault", backend.name, status)
            raise UpstreamUnavailable(f"the upstream CA is unavailable (HTTP {status})") from None
        raise UpstreamError(f"the upstream CA answered HTTP {status} with no usable SOAP "
                            "message") from None
    except (ZeepError, etree.LxmlError, ValueError, AttributeError, TypeError) as exc:
        # zeep's recovering parser (strict=False) fails with AttributeError on non-XML bodies
        log.warning("backend %s: unreadable EjbcaWS answer: %s", backend.name, type(exc).__name__)
        raise UpstreamError("the upstream CA answered with an unreadable SOAP message") from None


def _fault(backend: EjbcaSoapBackend, fault: Fault, meaning: Meaning) -> Any:
    if fault.code is None and not isinstance(fault.detail, etree._Element):
        # zeep's "Unknown fault": an HTTP error status whose body is XML but no SOAP Fault
        log.warning("backend %s: EjbcaWS answered an HTTP error without a SOAP fault", backend.name)
        raise UpstreamUnavailable("the upstream CA is unavailable (HTTP error)")
    kind, code, message, request_id = _detail(fault)
    reason = clip(message or fault.message)
    if kind == "WaitingForApprovalException" and meaning.pending_allowed:
        return Pending(retry_after=backend.options.pending_retry_after_s,
                       reference=f"approval request {request_id}" if request_id else "")
    if kind == "AlreadyRevokedException" and meaning.already_revoked_is_done:
        return None
    if kind == "AuthorizationDeniedException" or code == "NOT_AUTHORIZED":
        raise credentials_refused(backend.name, backend.upstream.url, f"{kind}: {reason}")
    if code in OFFLINE_CODES:
        log.warning("backend %s: the CA is offline (%s)", backend.name, reason)
        raise UpstreamUnavailable("the CA is offline")
    if kind in ("NotFoundException", "CADoesntExistsException") or code in MISSING_CODES:
        if meaning.not_found is None:
            return None
        raise meaning.not_found(reason)
    if code in LOGIN_CODES:
        if meaning.login_refused_is_none:
            return None
        raise (meaning.refused or Forbidden)(reason)
    if code == "APPROVAL_ALREADY_EXISTS" and meaning.pending_allowed:
        raise ApprovalAlreadyExists(reason)
    if kind in ("UserDoesntFullfillEndEntityProfile", "ApprovalException", "WaitingForApprovalException"):
        raise BadRequest(f"the CA refused the request: {reason}")
    if kind in ("EjbcaException", "CesecoreException") and code != "INTERNAL_ERROR":
        raise BadRequest(f"the CA refused the request: {reason}")
    log.error("backend %s: EjbcaWS fault %s (%s): %s", backend.name, kind or fault.code,
              code or "-", reason)
    raise UpstreamError("the upstream CA failed to process the request")


def _detail(fault: Fault) -> tuple[str, str, str, str]:
    """The fault bean's name, ``internalErrorCode``, ``message`` and ``requestId``."""
    detail = fault.detail
    beans = [c for c in detail if isinstance(c.tag, str)] if isinstance(detail, etree._Element) else []
    if not beans:
        return "", "", "", ""
    bean = beans[0]
    kind = etree.QName(bean).localname
    return (kind, (bean.findtext("errorCode/internalErrorCode") or "").strip(),
            bean.findtext("message") or "", (bean.findtext("requestId") or "").strip())
