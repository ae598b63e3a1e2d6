"""The gateway's two blueprints: ``est`` (``/.well-known/est[/<label>]/<operation>``) and
``ops`` (``/healthz``, ``/metrics``). Exact paths: a doubled slash inside a path is not
merged and no path is ever redirected."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, request
from flask.sansio.blueprints import BlueprintSetupState

from est_gateway.operations import ESTService
from est_gateway.web import views
from est_gateway.web.responses import Response, add_error_handlers

EST_PREFIX = "/.well-known/est"


def est_blueprint(service: ESTService) -> Blueprint:
    """The EST routes of ``service``, with their own error handlers (short ``text/plain``
    reasons): an app that registers it keeps its own routes and error pages."""
    bp = Blueprint("est", __name__)

    def operation(operation: str) -> Response:
        return views.est(service, request, None, operation)

    def labelled(label: str, operation: str) -> Response:
        return views.est(service, request, label, operation)

    def other(rest: str) -> Response:
        """A path with more segments, or an empty one: a 404 that names its last segment."""
        segments = rest.split("/")
        return views.est(service, request, segments[0], segments[-1], exact=False)

    _route(bp, f"{EST_PREFIX}/<operation>", operation)
    _route(bp, f"{EST_PREFIX}/<label>/<operation>", labelled)
    _route(bp, f"{EST_PREFIX}/<path:rest>", other)
    bp.record(_every_method)
    add_error_handlers(bp)
    return bp


def _every_method(state: BlueprintSetupState) -> None:
    """The EST rules take every method (werkzeug's "no method list"; Flask always makes one):
    the view answers a wrong one itself, a 405 naming the operation's one method, and
    audits it. Runs after the blueprint's rules were added to the app's URL map."""
    own = f"{state.name_prefix}.{state.name}.".lstrip(".")
    for rule in state.app.url_map.iter_rules():
        if rule.endpoint.startswith(own):
            rule.methods = None


def ops_blueprint(service: ESTService) -> Blueprint:
    """``/healthz`` and ``/metrics`` (GET and HEAD; a trailing slash is accepted as is)."""
    bp = Blueprint("ops", __name__)

    def healthz() -> Response:
        return views.healthz(service)

    def metrics() -> Response:
        return views.metrics(service)

    _route(bp, "/healthz", healthz, strict_slashes=False)
    _route(bp, "/metrics", metrics, strict_slashes=False)
    return bp


def _route(bp: Blueprint, rule: str, view: Callable[..., Response], *, strict_slashes: bool = True) -> None:
    """A GET route (werkzeug adds HEAD) without Flask's automatic OPTIONS answer; neither a
    doubled slash nor (``strict_slashes=False``) a trailing one is ever redirected."""
    bp.add_url_rule(rule, view_func=view, methods=["GET"], merge_slashes=False, strict_slashes=strict_slashes,
                    provide_automatic_options=False)
