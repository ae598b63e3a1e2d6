"""The one place django-ca's REST answers become JSON or ``est_gateway.errors``.

django-ca 3.2 (django-ninja): 200 with JSON; 401 ``{"detail": "Unauthorized"}`` for an
unknown user or wrong password; 403 ``{"detail": "Forbidden"}`` when the user lacks the
endpoint's permission (``django_ca/api/auth.py``); 404 ``{"detail": "Not Found"}`` for an
unknown, disabled, expired or API-disabled CA and an unknown profile; 422 ``{"detail":
[...]}`` for a body that fails validation (e.g. a CSR that is not PEM); 400 ``{"detail":
"..."}`` for a CSR it cannot parse. Observed on the real server, not documented: an
unknown certificate serial or order slug is an HTML 500 (``Model.DoesNotExist`` escapes
the view), so the adapter never asks for a serial the CA did not sign.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from est_gateway.plugin import BadRequest, ESTError, UpstreamError, UpstreamUnavailable, clip
from est_gateway.plugin.http import UpstreamResponse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """What one REST call means: for messages, and what a 404 is."""

    what: str
    #: the django-ca permission the endpoint checks (named in the operator's log on 403)
    permission: str
    not_found: Callable[[str], ESTError]


def interpret(response: UpstreamResponse, call: Call, backend: str, url: str) -> Any:
    """The JSON answer of a 200, or raise the matching ``ESTError`` (and log what to fix)."""
    status = response.status_code
    if status == 200:
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(f"django-ca answered {call.what} with something that is not JSON") from None
    detail = _detail(response)
    if status == 401:
        log.error("backend %s: django-ca at %s refused the gateway's username or password (HTTP 401) "
                  "for %s: check username and password_file/password_env of [backends.%s] against "
                  "the django-ca user", backend, url, call.what, backend)
        raise UpstreamError("the upstream CA refused the gateway's credentials")
    if status == 403:
        log.error("backend %s: django-ca at %s refused %s (HTTP 403): the gateway's django-ca user "
                  "lacks the permission %s", backend, url, call.what, call.permission)
        raise UpstreamError("the upstream CA refused the gateway's credentials")
    if status == 404:
        if not detail:   # Django's own HTML 404: no django-ca API under this URL
            log.error("backend %s: %s answered HTTP 404 without an API body for %s: check url (the "
                      "base of django-ca's REST API, e.g. https://ca.example.org/django_ca/api) and "
                      "CA_ENABLE_REST_API = True", backend, url, call.what)
            raise UpstreamError("the upstream CA does not offer this REST resource (HTTP 404)")
        raise call.not_found(detail)
    if status in (400, 422):
        raise BadRequest(f"the CA refused the request: {detail or f'HTTP {status}'}")
    if status >= 500:
        log.warning("backend %s: django-ca answered %s with HTTP %s", backend, call.what, status)
        raise UpstreamUnavailable(f"the upstream CA is unavailable (HTTP {status})")
    raise UpstreamError(f"the upstream CA answered {call.what} with an unexpected HTTP {status}")


def _detail(response: UpstreamResponse) -> str:
    """django-ninja's ``detail``: a string, or a list of validation errors with ``msg``."""
    try:
        data = response.json()
    except ValueError:
        return ""
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return clip(detail, 200)
