"""The gateway's Flask application: its factory, and the service an app serves.

``create_app`` registers the ``est`` and ``ops`` blueprints (:mod:`est_gateway.web.blueprints`)
and the error handlers that answer every error, werkzeug's own included, with a short
``text/plain`` reason (:mod:`est_gateway.web.responses`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from est_gateway import keywrap
from est_gateway.backends.local.authority import utcnow
from est_gateway.config.model import GatewayConfig
from est_gateway.metrics import Metrics
from est_gateway.operations import ESTService
from est_gateway.web.blueprints import est_blueprint, ops_blueprint
from est_gateway.web.responses import add_error_handlers

#: the key of an app's ESTService in ``app.extensions``
EXTENSION = "est_gateway"


def create_app(config: GatewayConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> Flask:
    """Build the application for a validated (and started) configuration."""
    service = make_service(config, clock=clock)
    app = Flask(__name__, static_folder=None)
    app.extensions[EXTENSION] = service
    app.register_blueprint(est_blueprint(service))
    app.register_blueprint(ops_blueprint(service))
    add_error_handlers(app)
    return app


def make_service(config: GatewayConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> ESTService:
    """The EST service of a validated (and started) configuration."""
    return ESTService(config, clock, Metrics(), key_signer=_key_signer(config))


def service_of(app: Flask) -> ESTService:
    """The service an app made by :func:`create_app` serves."""
    service: ESTService = app.extensions[EXTENSION]
    return service


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
