"""What the gateway answers, and the one place errors become answers: every error is a short
``text/plain`` reason (RFC 8951 §5) with its status and headers, never an HTML page."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import flask
from werkzeug.exceptions import BadHost, HTTPException

from est_gateway.errors import ESTError, MethodNotAllowed
from est_gateway.wire import CT_TEXT

log = logging.getLogger("est_gateway")

NOT_FOUND = "not found; EST lives under /.well-known/est/"
INTERNAL_ERROR = "internal error; the gateway's log has the details"


class Response(flask.Response):
    """An answer. One without a body (202, 204) has no Content-Type: none is assumed."""

    default_mimetype = None


def text_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    """A short ``text/plain`` reason."""
    body = (reason.rstrip("\n") + "\n").encode("utf-8")
    return Response(body, status, headers=dict(headers or {}), content_type=CT_TEXT)


def render_error(error: ESTError) -> Response:
    """Every error of the tree: its status, its short client-safe reason, its headers."""
    if error.status >= 500:
        log.warning("request failed: %s %s", error.status, error.detail)
    return text_response(error.status, error.detail, error.headers())


def render_http(error: HTTPException) -> Response:
    """werkzeug's own refusals (no route, a method a route does not take, a bad Host) in the
    gateway's words."""
    if error.code == 404:
        return text_response(404, NOT_FOUND)
    if error.code == 405:
        return render_error(MethodNotAllowed(sorted(getattr(error, "valid_methods", None) or [])))
    if isinstance(error, BadHost):
        return text_response(400, "bad request: invalid Host header")
    if error.code is None or error.code >= 500:
        return render_unexpected(error)
    return text_response(error.code, error.name.lower())


def render_unexpected(error: Exception | None = None) -> Response:
    """Anything not in the error tree: logged with its traceback, never shown to the client."""
    log.error("unexpected error while handling a request", exc_info=error or True)
    return text_response(500, INTERNAL_ERROR)


def add_error_handlers(scaffold: flask.Flask | flask.Blueprint) -> None:
    """The handlers of an app or a blueprint (a blueprint's cover its own views only)."""
    scaffold.register_error_handler(ESTError, render_error)
    scaffold.register_error_handler(HTTPException, render_http)
    scaffold.register_error_handler(Exception, render_unexpected)
