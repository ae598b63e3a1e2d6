"""The one place ``cfssl serve`` is called and its answers become results or ``est_gateway.errors``.

CFSSL's API (``api/api.go``, CFSSL 1.2) answers every call with the envelope
``{"success": bool, "result": ..., "errors": [{"code", "message"}], "messages": []}``:
HTTP 200 on success, 400 for a bad request or a refused ``authsign`` token ("invalid
token"; "no authentication provider" when the profile names no ``auth_key``), 405 for a
wrong method, 500 for signer failures. Two answers do not use the envelope: the
``-mutual-tls-cn`` check answers 403 with the plain text "Invalid CN", and an unknown
path is Go's plain-text "404 page not found". Error codes are CFSSL's ``errors`` package
(category * 1000 + reason): 5xxx policy, 9xxx CSR.

``authsign`` (``auth/auth.go``, ``api/signhandler``): the body is
``{"token": base64(HMAC-SHA256(key, R)), "request": base64(R)}`` where R is the exact JSON
bytes of the sign request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any

from est_gateway.plugin import BadRequest, UpstreamError, UpstreamUnavailable, clip
from est_gateway.plugin.http import UpstreamClient, UpstreamResponse

log = logging.getLogger(__name__)

INFO = "/api/v1/cfssl/info"
AUTHSIGN = "/api/v1/cfssl/authsign"
#: CFSSL error categories a client's CSR causes (``errors.PolicyError``, ``errors.CSRError``)
CLIENT_CATEGORIES = (5, 9)
#: what ``authsign`` answers a valid token whose request lacks the CSR
MISSING_CSR = "missing parameter 'certificate_request'"


class CfsslApi:
    """Calls one ``cfssl serve`` over the shared mutual-TLS client (breaker, timeouts)."""

    def __init__(self, backend: str, client: UpstreamClient, auth_key: bytes) -> None:
        self.backend = backend
        self.client = client
        self._auth_key = auth_key

    @property
    def url(self) -> str:
        return self.client.settings.url

    def info(self, label: str, profile: str) -> dict[str, Any]:
        """``POST /api/v1/cfssl/info``: the signer's certificate and the profile's usages."""
        return self._post(INFO, json.dumps({"label": label, "profile": profile}).encode(), idempotent=True)

    def authsign(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/v1/cfssl/authsign`` with ``request`` authenticated by the HMAC key."""
        raw = json.dumps(request).encode()
        return self._post(AUTHSIGN, self._signed(raw), idempotent=False, profile=str(request.get("profile", "")))

    def check_auth_key(self, profile: str, label: str) -> None:
        """An ``authsign`` without a CSR: CFSSL checks the token first, then answers "missing
        parameter" for a good one, so the key is proven and nothing is issued."""
        raw = json.dumps({"profile": profile, "label": label}).encode()
        self._post(AUTHSIGN, self._signed(raw), idempotent=True, profile=profile,
                   expected=MISSING_CSR)

    def _signed(self, raw: bytes) -> bytes:
        token = hmac.new(self._auth_key, raw, hashlib.sha256).digest()
        return json.dumps({"token": base64.b64encode(token).decode(),
                           "request": base64.b64encode(raw).decode()}).encode()

    def _post(self, path: str, body: bytes, *, idempotent: bool, profile: str = "",
              expected: str | None = None) -> dict[str, Any]:
        response = self.client.request("POST", self.url + path, idempotent=idempotent, data=body,
                                       headers={"Content-Type": "application/json"})
        return self._interpret(response, profile, expected)

    def _interpret(self, response: UpstreamResponse, profile: str, expected: str | None) -> dict[str, Any]:
        status = response.status_code
        envelope = _envelope(response)
        if expected is not None and status == 400 and _first_error(envelope)[1] == expected:
            return {}
        if status == 200:
            if envelope is None or envelope.get("success") is not True or not isinstance(envelope.get("result"), dict):
                raise UpstreamError("the upstream CA answered with something that is not CFSSL's JSON")
            result: dict[str, Any] = envelope["result"]
            return result
        code, message = _first_error(envelope)
        if status == 403:
            log.error("backend %s: %s refused the gateway's client certificate (HTTP 403 %s): its CN "
                      "must match cfssl serve's -mutual-tls-cn pattern", self.backend, self.url,
                      clip(response.text, 80))
            raise UpstreamError("the upstream CA refused the gateway's credentials")
        if status == 400 and message in ("invalid token", "authentication required"):
            log.error("backend %s: %s refused the authsign token (%s): auth_key_file/auth_key_env must "
                      "hold the same hex key as the auth_keys entry that profile %r names in CFSSL's "
                      "signing configuration", self.backend, self.url, message, profile)
            raise UpstreamError("the upstream CA refused the gateway's credentials")
        if status == 400 and message == "no authentication provider":
            log.error("backend %s: CFSSL profile %r (or its default profile) names no auth_key: add "
                      '"auth_key" to the profile in CFSSL\'s signing configuration', self.backend, profile)
            raise UpstreamError("the upstream CA's profile is not set up for authenticated signing")
        if status == 400 and code is not None and code // 1000 in CLIENT_CATEGORIES:
            raise BadRequest(f"the CA refused the request: {message}")
        if status in (404, 405):
            log.error("backend %s: %s answered HTTP %s: url must be the base of cfssl serve "
                      "(https://host:port, without /api/v1/cfssl)", self.backend, self.url, status)
            raise UpstreamError(f"the upstream CA does not offer this API (HTTP {status})")
        if status >= 500:
            log.warning("backend %s: CFSSL answered HTTP %s: %s", self.backend, status, message)
            raise UpstreamUnavailable(f"the upstream CA is unavailable (HTTP {status})")
        raise UpstreamError(f"the upstream CA refused the call: {message or f'HTTP {status}'}")


def _envelope(response: UpstreamResponse) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _first_error(envelope: dict[str, Any] | None) -> tuple[int | None, str]:
    errors = (envelope or {}).get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, ""
    code = errors[0].get("code")
    return (code if isinstance(code, int) else None), clip(errors[0].get("message"), 200)
