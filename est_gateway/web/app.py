"""The Flask application factory and the one place errors become HTTP responses."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from est_gateway import keywrap
from est_gateway.backends.local.authority import utcnow
from est_gateway.config.model import GatewayConfig
from est_gateway.errors import ESTError
from est_gateway.metrics import Metrics
from est_gateway.operations import ESTService
from est_gateway.web import views
from est_gateway.wire import CT_TEXT

log = logging.getLogger("est_gateway")

SERVICE_KEY = "est_gateway.service"


def create_app(config: GatewayConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> Flask:
    """Build the WSGI application for a validated (and started) configuration."""
    app = Flask("est_gateway")
    # No redirects to "canonical" paths (an HTML 308): every odd path gets a plain 404.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.extensions[SERVICE_KEY] = ESTService(config, clock, Metrics(), key_signer=_key_signer(config))
    app.register_blueprint(views.blueprint)
    app.register_error_handler(ESTError, render_est_error)
    app.register_error_handler(HTTPException, render_http_exception)
    app.register_error_handler(Exception, render_unexpected)
    return app


def _key_signer(config: GatewayConfig) -> keywrap.KeySigner | None:
    """The gateway's TLS certificate and key sign server-generated keys it encrypts."""
    server = config.server
    if not (server.tls and server.tls_cert and server.tls_key):
        return None
    try:
        cert = x509.load_pem_x509_certificates(server.tls_cert.read_bytes())[0]
        key = serialization.load_pem_private_key(server.tls_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None    # the TLS server refuses such files at start-up anyway
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return None
    return keywrap.KeySigner(cert, key)


def text_response(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    """A short ``text/plain`` reason (RFC 8951 §5)."""
    response = Response(reason.rstrip("\n") + "\n", status=status, content_type=CT_TEXT)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def render_est_error(error: ESTError) -> Response:
    if error.status >= 500:
        log.warning("request failed: %s %s", error.status, error.detail)
    return text_response(error.status, error.detail, error.headers())


def render_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    reasons = {
        404: "not found; EST lives under /.well-known/est/",
        413: "request body too large",
    }
    reason = reasons.get(status, error.name.lower())
    headers = {}
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return text_response(status, reason, headers)


def render_unexpected(error: Exception) -> Response:
    """Anything not in the error tree: logged with its traceback, never shown to the client."""
    log.exception("unexpected error while handling a request")
    return text_response(500, "internal error; the gateway's log has the details")
