"""The one error tree of the gateway.

Every failure a client can cause or observe is one of these classes; the web layer
renders them in one place (``est_gateway.web.responses``) as ``text/plain`` bodies
(RFC 8951 §5). Details are client-safe by construction: never put a password, a key
or an upstream credential into one.
"""

from __future__ import annotations


class ESTError(Exception):
    """Base of all client-visible errors: an HTTP status and a short reason."""

    status: int = 500
    default_detail = "internal error"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        self.detail = detail or self.default_detail
        self.retry_after = retry_after
        super().__init__(self.detail)

    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (Retry-After, WWW-Authenticate)."""
        if self.retry_after is not None:
            return {"Retry-After": str(int(self.retry_after))}
        return {}


class BadRequest(ESTError):
    """Malformed base64/DER, invalid CSR signature, CSR that breaks a profile (400)."""

    status = 400
    default_detail = "bad request"


class Unauthorized(ESTError):
    """Missing or wrong credentials (401). Carries the Basic challenge libest waits for."""

    status = 401
    default_detail = "authentication required"

    def __init__(self, detail: str | None = None, *, realm: str | None = None) -> None:
        super().__init__(detail)
        self.realm = realm

    def headers(self) -> dict[str, str]:
        if self.realm is None:
            return {}
        return {"WWW-Authenticate": f'Basic realm="{self.realm}"'}


class Forbidden(ESTError):
    """The identity is known but not allowed: revoked, changed Subject/SAN, policy (403)."""

    status = 403
    default_detail = "forbidden"


class Rejected(Forbidden):
    """The CA operator rejected a request that waited for approval (RFC 7030 §4.2.3 → 403)."""

    def __init__(self, detail: str, *, reference: str) -> None:
        super().__init__(detail)
        self.reference = reference


class NotFound(ESTError):
    """Unknown alias (EST label) or operation (404)."""

    status = 404
    default_detail = "not found"


class MethodNotAllowed(ESTError):
    """Wrong HTTP method for the operation (405)."""

    status = 405
    default_detail = "method not allowed"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(f"method not allowed; use {', '.join(allowed)}")
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class RequestTimeout(ESTError):
    """The request (its body) did not arrive within the time limit (408)."""

    status = 408
    default_detail = "request not received within the time limit"


class PayloadTooLarge(ESTError):
    """Request body over the configured limit (413)."""

    status = 413
    default_detail = "request body too large"


class UnsupportedMediaType(ESTError):
    """Wrong Content-Type for the operation (415)."""

    status = 415
    default_detail = "unsupported media type"


class TooManyRequests(ESTError):
    """Rate limited (429 + Retry-After)."""

    status = 429
    default_detail = "too many requests"


class NotSupported(ESTError):
    """An optional EST operation the backend or alias does not offer (501)."""

    status = 501
    default_detail = "operation not supported for this alias"


class UpstreamError(ESTError):
    """The upstream CA answered something unusable or refused our own credentials (502)."""

    status = 502
    default_detail = "upstream CA error"


class UpstreamUnavailable(ESTError):
    """The upstream CA is down, offline or unreachable (503 + Retry-After)."""

    status = 503
    default_detail = "upstream CA unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = 30) -> None:
        super().__init__(detail, retry_after=retry_after)


class UpstreamTimeout(ESTError):
    """The upstream CA did not answer within the configured timeout (504)."""

    status = 504
    default_detail = "upstream CA timed out"


class ConfigError(Exception):
    """A configuration that must not start: every problem, each with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"configuration has {len(self.problems)} problem(s):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)
