"""The gateway's views: EST (``/.well-known/est[/<label>]/<operation>``), health and metrics.
Thin: read the request → the core (:mod:`est_gateway.operations`, which sees no Flask
object) → encode the answer."""

from __future__ import annotations

import os
import time

from flask import Request

from est_gateway import keygen, wire
from est_gateway.audit import AuditEvent
from est_gateway.backends.base import Issued, Pending
from est_gateway.config.model import AliasSettings
from est_gateway.errors import (
    BadRequest,
    ESTError,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    Rejected,
    RequestTimeout,
    UnsupportedMediaType,
)
from est_gateway.identity import (
    MalformedAuthorization,
    basic_credentials,
    client_address,
    presented_certificate,
    tls_info,
)
from est_gateway.metrics import CONTENT_TYPE
from est_gateway.operations import DEFAULT_ALIAS, Caller, ESTService, ServerGeneratedKey
from est_gateway.web.responses import Response

#: operation → the one HTTP method it takes (HEAD is answered like GET).
METHODS = {
    "cacerts": "GET",
    "simpleenroll": "POST",
    "simplereenroll": "POST",
    "csrattrs": "GET",
    "serverkeygen": "POST",
    "fullcmc": "POST",
}
_OUTCOMES = {200: "ok", 202: "pending", 204: "empty"}


def est(service: ESTService, request: Request, label: str | None, operation: str, *, exact: bool = True
        ) -> Response:
    """One EST request. ``exact``: the path was ``[<label>/]<operation>``; otherwise it had
    more segments (or an empty one) and ``operation`` is its last, named in the 404."""
    started = time.monotonic()
    method = request.method
    known_alias = (label or DEFAULT_ALIAS) in service.config.aliases
    known_op = exact and operation in METHODS
    # Unknown names are reported as "unknown": a client must not grow the metrics or the log.
    event = AuditEvent(request_id=os.urandom(8).hex(),
                       alias=(label or DEFAULT_ALIAS) if known_alias else "unknown",
                       operation=operation if known_op else "unknown", method=method,
                       client_address=client_address(request.environ, service.config.server))
    try:
        if not known_op:
            raise NotFound(f'unknown EST operation "{operation[:64]}"')
        alias = service.alias(label)
        wanted = METHODS[operation]
        if method != wanted and not (method == "HEAD" and wanted == "GET"):
            raise MethodNotAllowed([wanted])
        response = _dispatch(service, request, alias, operation, event)
        event.status = response.status_code
        event.outcome = _OUTCOMES.get(response.status_code, "ok")
        return response
    except ESTError as exc:
        event.status, event.outcome = exc.status, exc.detail
        if isinstance(exc, Rejected):
            event.approval_reference = exc.reference
        raise
    finally:
        elapsed = time.monotonic() - started
        event.latency_ms = round(elapsed * 1000, 1)
        event.emit()
        service.metrics.observe_request(event.alias, event.operation, event.status, elapsed)


def healthz(service: ESTService) -> Response:
    """For load balancers: 200 when every backend an alias uses answers, else 503."""
    report = service.health()
    failing = {name: reason for name, reason in report.items() if reason}
    lines = [f"backend {name}: {reason or 'ok'}" for name, reason in report.items()]
    body = ("ok\n" if not failing else "unhealthy\n") + "\n".join(lines) + "\n"
    return Response(body.encode("utf-8"), 503 if failing else 200, content_type=wire.CT_TEXT)


def metrics(service: ESTService) -> Response:
    """Prometheus text exposition."""
    return Response(service.metrics.render(), 200, content_type=CONTENT_TYPE)


def _dispatch(service: ESTService, request: Request, alias: AliasSettings, operation: str,
              event: AuditEvent) -> Response:
    if operation == "cacerts":
        return _encoded_response(service.cacerts(alias), wire.CT_PKCS7)
    if operation == "csrattrs":
        der = service.csrattrs(alias)
        if der is None:
            return Response(status=204)  # libest's provisioning flow expects 204, not 404
        return _base64_response(der, wire.CT_CSRATTRS)
    if operation in ("simpleenroll", "simplereenroll", "serverkeygen"):
        body = _pkcs10_body(request, service.config.server.max_body_bytes)
        caller = _caller(service, request, event, read_basic=operation != "simplereenroll")
        if operation == "serverkeygen":
            keyed = service.serverkeygen(alias, body, caller)
            _audit_result(event, keyed)
            return _keygen_response(keyed)
        handler = service.simpleenroll if operation == "simpleenroll" else service.simplereenroll
        result = handler(alias, body, caller)
        _audit_result(event, result)
        return _issued_response(result)
    raise NotSupported(f"{operation} is not supported for this EST label")


def _audit_result(event: AuditEvent, result: Issued | ServerGeneratedKey | Pending) -> None:
    if isinstance(result, Pending):
        event.approval_reference = result.reference or None
        return
    event.issued_serial = format(result.certificate.serial_number, "x")
    event.approval_reference = result.approval_reference or None


def _pkcs10_body(request: Request, limit: int) -> bytes:
    got = request.mimetype
    if got != wire.CT_PKCS10:
        raise UnsupportedMediaType(f"Content-Type must be {wire.CT_PKCS10} (got {got or 'none'})")
    return _read_body(request, limit)


def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past the limit, chunked bodies included: at most
    limit + 1 bytes are read, whatever the declared length."""
    codings = [c.strip().lower() for c in request.headers.get("Transfer-Encoding", "").split(",") if c.strip()]
    if any(c != "chunked" for c in codings):
        raise NotSupported(f"Transfer-Encoding {', '.join(codings)} is not supported; send the body as is or chunked")
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body too large (limit {limit} bytes)")
    try:
        # The server's stream as it is (not werkzeug's wrapper of it): its chunked decoder's
        # and its timeout's errors are answered below.
        data = request.environ["wsgi.input"].read(limit + 1)
    except TimeoutError:
        raise RequestTimeout("request body not received within the time limit") from None
    except OSError:
        raise BadRequest("request body ended early") from None
    except Exception:  # the server's chunked-coding parser: bad sizes, missing CRLF, ...
        raise BadRequest("malformed chunked request body") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"request body too large (limit {limit} bytes)")
    return bytes(data)


def _caller(service: ESTService, request: Request, event: AuditEvent, *, read_basic: bool) -> Caller:
    credentials = None
    if read_basic:
        authorization = request.headers.get("Authorization")
        try:
            credentials = basic_credentials([] if authorization is None else [("Authorization", authorization)])
        except MalformedAuthorization as exc:
            raise BadRequest(str(exc)) from None
    return Caller(
        credentials=credentials,
        certificate=presented_certificate(request.environ, service.config.server),
        address=event.client_address,
        request_id=event.request_id,
        tls=tls_info(request.environ),
        audit=event,
    )


def _base64_response(der: bytes, content_type: str) -> Response:
    return _encoded_response(wire.encode_base64_body(der), content_type)


def _encoded_response(body: bytes, content_type: str) -> Response:
    """A body already base64-encoded (RFC 8951 §3: Content-Transfer-Encoding is informative)."""
    return Response(body, 200, {"Content-Transfer-Encoding": "base64"}, content_type=content_type)


def _pending_response(result: Pending) -> Response:
    """RFC 7030 §4.2.3: 202 with Retry-After in seconds, no body and no Content-Type."""
    return Response(status=202, headers={"Retry-After": str(int(result.retry_after))})


def _issued_response(result: Issued | Pending) -> Response:
    if isinstance(result, Pending):
        return _pending_response(result)
    return _base64_response(wire.certs_only([result.certificate]), wire.CT_CERTS_ONLY)


def _keygen_response(result: ServerGeneratedKey | Pending) -> Response:
    if isinstance(result, Pending):
        return _pending_response(result)
    body, content_type = keygen.multipart(result.key_part, result.certificate)
    return Response(body, 200, content_type=content_type)
