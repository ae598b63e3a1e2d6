"""The operator console: a Flask app of its own, served on ``[console] listen`` beside the
EST app of the same worker and sharing its :class:`ESTService` (backends, throttle,
metrics). Server-rendered pages; every action works without JavaScript."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from typing import Any

import flask
from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from est_gateway.audit import AuditFile, emit_fields
from est_gateway.config.model import GatewayConfig
from est_gateway.console import auth, pages
from est_gateway.errors import ESTError
from est_gateway.identity import client_address
from est_gateway.operations import ESTService
from est_gateway.web.responses import Response, render_error, render_unexpected, text_response

log = logging.getLogger(__name__)

#: no script at all, styles and images from the console itself, never framed
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: endpoints open without a session
PUBLIC = frozenset({"login", "static"})


def create_console_app(config: GatewayConfig, service: ESTService) -> Flask:
    """The console of ``config`` (``[console]``, enabled), serving ``service``: the one the
    EST app of the same worker serves (``est_gateway.web.make_service``)."""
    settings = config.console
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.update(
        SECRET_KEY=settings.secret or os.urandom(32),
        SESSION_COOKIE_NAME="est_console",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=settings.session_idle_timeout_s),
        MAX_CONTENT_LENGTH=64 * 1024,
        MAX_FORM_MEMORY_SIZE=16 * 1024,
    )
    audit_file = AuditFile(settings.audit_file, settings.audit_file_max_bytes) if settings.audit_file else None
    pages.register(app, service, audit_file)

    @app.before_request
    def require_admin() -> Any:
        g.admin = auth.current_admin(service, settings.session_idle_timeout_s)
        if request.method == "POST":
            auth.check_csrf()
        if g.admin is None and request.endpoint not in PUBLIC:
            return flask.redirect(flask.url_for("login", next=request.full_path.rstrip("?")), 303)
        return None

    @app.context_processor
    def template_values() -> dict[str, Any]:
        return {"admin": g.get("admin"), "csrf_token": auth.csrf_token, "csrf_field": auth.CSRF_FIELD}

    @app.after_request
    def finish(response: flask.Response) -> flask.Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        action = g.get("action")
        if action is not None:
            _audit(service, action, response.status_code)
        return response

    _error_handlers(app)
    return app


def _audit(service: ESTService, action: dict[str, object], status: int) -> None:
    """One audit line per console action, naming the admin (or the name a login tried)."""
    admin = g.get("admin")
    emit_fields({"request_id": os.urandom(8).hex(), "console": True,
                 "admin": action.pop("admin", None) or (admin.name if admin else None),
                 "client_address": client_address(request.environ, service.config.server),
                 "method": request.method, "status": status, **action})


def _error_handlers(app: Flask) -> None:
    """Short ``text/plain`` reasons, as everywhere in the gateway; a failed login is the
    login page again (:mod:`est_gateway.console.pages`)."""
    def http(error: HTTPException) -> Response:
        if error.code is None or error.code >= 500:
            return render_unexpected(error)
        return text_response(error.code, "not found" if error.code == 404 else error.name.lower())

    def unreadable_record(error: sqlite3.Error) -> Response:
        log.warning("console: the local CA's record cannot be read: %s", error)
        return text_response(503, "the local CA's record cannot be read right now; try again", {"Retry-After": "5"})

    app.register_error_handler(sqlite3.Error, unreadable_record)
    app.register_error_handler(ESTError, render_error)
    app.register_error_handler(HTTPException, http)
    app.register_error_handler(Exception, render_unexpected)
