"""EST routes: ``/.well-known/est[/<label>]/<operation>``. Thin: parse → core → encode."""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, Response, current_app, request

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

blueprint = Blueprint("est", __name__)

#: operation → the one HTTP method it takes (HEAD is answered like GET by Flask).
METHODS = {
    "cacerts": "GET",
    "simpleenroll": "POST",
    "simplereenroll": "POST",
    "csrattrs": "GET",
    "serverkeygen": "POST",
    "fullcmc": "POST",
}
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def _service() -> ESTService:
    return current_app.extensions["est_gateway.service"]  # type: ignore[no-any-return]


@blueprint.route("/.well-known/est/<path:rest>", methods=ALL_METHODS)
def est(rest: str) -> Response:
    started = time.monotonic()
    service = _service()
    segments = rest.split("/")
    label, operation = (None, segments[0]) if len(segments) == 1 else (segments[0], segments[1])
    known_alias = (label or DEFAULT_ALIAS) in service.config.aliases
    known_op = len(segments) <= 2 and operation in METHODS
    # Unknown names are reported as "unknown": a client must not grow the metrics or the log.
    event = AuditEvent(request_id=uuid.uuid4().hex[:16],
                       alias=(label or DEFAULT_ALIAS) if known_alias else "unknown",
                       operation=operation if known_op else "unknown", method=request.method,
                       client_address=client_address(request.environ, service.config.server))
    try:
        if not known_op:
            raise NotFound(f'unknown EST operation "{segments[-1][:64]}"')
        alias = service.alias(label)
        wanted = METHODS[operation]
        if request.method not in (wanted, "HEAD" if wanted == "GET" else wanted):
            raise MethodNotAllowed([wanted])
        response = _dispatch(service, alias, operation, event)
        event.status = response.status_code
        event.outcome = {200: "ok", 202: "pending", 204: "empty"}.get(response.status_code, "ok")
        if response.status_code == 202:
            service.metrics.pending.labels(event.alias, event.operation).inc()
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
        service.metrics.requests.labels(event.alias, event.operation, str(event.status)).inc()
        service.metrics.latency.labels(event.alias, event.operation).observe(elapsed)


@blueprint.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    """For load balancers: 200 when every backend an alias uses answers, else 503."""
    report = _service().health()
    failing = {name: reason for name, reason in report.items() if reason}
    lines = [f"backend {name}: {reason or 'ok'}" for name, reason in report.items()]
    body = ("ok\n" if not failing else "unhealthy\n") + "\n".join(lines) + "\n"
    return Response(body, status=503 if failing else 200, content_type=wire.CT_TEXT)


@blueprint.route("/metrics", methods=["GET"])
def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(_service().metrics.render(), status=200, content_type=CONTENT_TYPE)


def _dispatch(service: ESTService, alias: AliasSettings, operation: str, event: AuditEvent) -> Response:
    if operation == "cacerts":
        return _encoded_response(service.cacerts(alias), wire.CT_PKCS7)
    if operation == "csrattrs":
        der = service.csrattrs(alias)
        if der is None:
            return Response(b"", status=204)  # libest's provisioning flow expects 204, not 404
        return _base64_response(der, wire.CT_CSRATTRS)
    if operation in ("simpleenroll", "simplereenroll", "serverkeygen"):
        body = _pkcs10_body()
        caller = _caller(service, event, read_basic=operation != "simplereenroll")
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


def _pkcs10_body() -> bytes:
    if request.mimetype != wire.CT_PKCS10:
        got = request.mimetype or "none"
        raise UnsupportedMediaType(f"Content-Type must be {wire.CT_PKCS10} (got {got})")
    return _read_body()


def _read_body() -> bytes:
    """The request body, refused with 413 past the limit, chunked bodies included
    (werkzeug silently truncates an over-long chunked body instead)."""
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    codings = [c.strip().lower() for c in request.headers.get("Transfer-Encoding", "").split(",") if c.strip()]
    if any(c != "chunked" for c in codings):
        raise NotSupported(f"Transfer-Encoding {', '.join(codings)} is not supported; send the body as is or chunked")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body too large (limit {limit} bytes)")
    try:
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


def _caller(service: ESTService, event: AuditEvent, *, read_basic: bool) -> Caller:
    credentials = None
    if read_basic:
        try:
            credentials = basic_credentials(list(request.headers.items()))
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
    response = Response(body, status=200, content_type=content_type)
    response.headers["Content-Transfer-Encoding"] = "base64"
    return response


def _pending_response(result: Pending) -> Response:
    """RFC 7030 §4.2.3: 202 with Retry-After in seconds and no body."""
    response = Response(b"", status=202)
    response.headers["Retry-After"] = str(int(result.retry_after))
    response.headers.remove("Content-Type")
    return response


def _issued_response(result: Issued | Pending) -> Response:
    if isinstance(result, Pending):
        return _pending_response(result)
    return _base64_response(wire.certs_only([result.certificate]), wire.CT_CERTS_ONLY)


def _keygen_response(result: ServerGeneratedKey | Pending) -> Response:
    if isinstance(result, Pending):
        return _pending_response(result)
    body, content_type = keygen.multipart(result.key_part, result.certificate)
    return Response(body, status=200, content_type=content_type)
