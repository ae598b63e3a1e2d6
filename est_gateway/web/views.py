"""EST routes: ``/.well-known/est[/<label>]/<operation>``. Thin: parse → core → encode."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Blueprint, Response, current_app, request

from est_gateway import keygen, wire
from est_gateway.backends.base import Issued, Pending
from est_gateway.errors import (
    BadRequest,
    ESTError,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from est_gateway.identity import (
    MalformedAuthorization,
    basic_credentials,
    client_address,
    presented_certificate,
    tls_info,
)
from est_gateway.operations import Caller, ESTService, ServerGeneratedKey

blueprint = Blueprint("est", __name__)
audit = logging.getLogger("est_gateway.audit")

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
    request_id = uuid.uuid4().hex[:16]
    segments = rest.split("/")
    label, operation = (None, segments[0]) if len(segments) == 1 else (segments[0], segments[1])
    status, outcome = 500, "error"
    try:
        if len(segments) > 2 or operation not in METHODS:
            raise NotFound(f'unknown EST operation "{"/".join(segments[-1:])}"')
        service = _service()
        alias = service.alias(label)
        wanted = METHODS[operation]
        if request.method not in (wanted, "HEAD" if wanted == "GET" else wanted):
            raise MethodNotAllowed([wanted])
        response = _dispatch(service, alias, operation, request_id)
        status, outcome = response.status_code, "ok"
        return response
    except ESTError as exc:
        status, outcome = exc.status, exc.detail
        raise
    finally:
        audit.info("request_id=%s alias=%s operation=%s status=%s outcome=%r ms=%.1f",
                   request_id, label or "est", operation, status, outcome,
                   (time.monotonic() - started) * 1000)


def _dispatch(service: ESTService, alias: object, operation: str, request_id: str) -> Response:
    if operation == "cacerts":
        return _base64_response(service.cacerts(alias), wire.CT_PKCS7)  # type: ignore[arg-type]
    if operation == "csrattrs":
        der = service.csrattrs(alias)  # type: ignore[arg-type]
        if der is None:
            return Response(b"", status=204)  # libest's provisioning flow expects 204, not 404
        return _base64_response(der, wire.CT_CSRATTRS)
    if operation in ("simpleenroll", "simplereenroll", "serverkeygen"):
        body = _pkcs10_body()
        caller = _caller(service, request_id, read_basic=operation != "simplereenroll")
        if operation == "serverkeygen":
            return _keygen_response(service.serverkeygen(alias, body, caller))  # type: ignore[arg-type]
        handler = service.simpleenroll if operation == "simpleenroll" else service.simplereenroll
        return _issued_response(handler(alias, body, caller))  # type: ignore[arg-type]
    raise NotSupported(f"{operation} is not supported for this EST label")


def _pkcs10_body() -> bytes:
    if request.mimetype != wire.CT_PKCS10:
        got = request.mimetype or "none"
        raise UnsupportedMediaType(f"Content-Type must be {wire.CT_PKCS10} (got {got})")
    return _read_body()


def _read_body() -> bytes:
    """The request body, refused with 413 past the limit, chunked bodies included
    (werkzeug silently truncates an over-long chunked body instead)."""
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body too large (limit {limit} bytes)")
    data = request.environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body too large (limit {limit} bytes)")
    return bytes(data)


def _caller(service: ESTService, request_id: str, *, read_basic: bool) -> Caller:
    credentials = None
    if read_basic:
        try:
            credentials = basic_credentials(list(request.headers.items()))
        except MalformedAuthorization as exc:
            raise BadRequest(str(exc)) from None
    return Caller(
        credentials=credentials,
        certificate=presented_certificate(request.environ, service.config.server),
        address=client_address(request.environ, service.config.server),
        request_id=request_id,
        tls=tls_info(request.environ),
    )


def _base64_response(der: bytes, content_type: str) -> Response:
    response = Response(wire.encode_base64_body(der), status=200, content_type=content_type)
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
    body, content_type = keygen.multipart(result.key, result.certificate)
    return Response(body, status=200, content_type=content_type)
