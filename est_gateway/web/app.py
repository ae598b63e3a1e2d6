"""The WSGI application: its factory, the routing of its seven fixed routes, and the one
place errors become HTTP responses.

A plain WSGI callable (PEP 3333), no web framework: the EST surface is fixed
(``/.well-known/est[/<label>]/<operation>``, ``/healthz``, ``/metrics``), and a framework's
request context, URL map and response objects cost more CPU per request than the EST work
of a keep-alive ``cacerts`` (issue 14).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from est_gateway import keywrap
from est_gateway.backends.base import CABackend
from est_gateway.backends.local.authority import utcnow
from est_gateway.config.model import GatewayConfig
from est_gateway.errors import ESTError, MethodNotAllowed, NotFound
from est_gateway.metrics import Metrics
from est_gateway.operations import DEFAULT_ALIAS, ESTService
from est_gateway.web import views
from est_gateway.web.wsgi import Environ, Response, StartResponse, request_method, request_path, text_response

log = logging.getLogger("est_gateway")

EST_PREFIX = "/.well-known/est/"
NOT_FOUND = "not found; EST lives under /.well-known/est/"
INTERNAL_ERROR = "internal error; the gateway's log has the details"
#: the paths of /healthz and /metrics (a trailing slash was always accepted)
HEALTHZ = frozenset({"/healthz", "/healthz/"})
METRICS = frozenset({"/metrics", "/metrics/"})
READ_METHODS = ["GET", "HEAD"]


class ESTApplication:
    """The gateway's WSGI application around one :class:`ESTService`."""

    def __init__(self, service: ESTService) -> None:
        self.service = service

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        method = "GET"
        try:
            method = request_method(environ)
            response = self.route(environ, method)
        except ESTError as exc:
            response = render_error(exc)
        except Exception:
            response = render_unexpected()
        return response.send(start_response, head=method == "HEAD")

    def answers_at_once(self, method: str, path: str) -> bool:
        """Whether the answer to ``method path`` is made from memory alone, never waiting on
        a CA, a disk or a lock: the server then answers it in its event loop, without a
        hand-off to a thread and back. ``cacerts`` of a backend whose chains are in memory
        and ``csrattrs`` (from the configuration); anything else, or a path that is not
        exactly one of theirs, is answered on a thread as always."""
        found = self._backend_of(path) if method in READ_METHODS else None
        if found is None:
            return False
        backend, operation = found
        return operation == "csrattrs" or (operation == "cacerts" and backend.ca_certs_in_memory)

    def runs_in_loop(self, method: str, path: str) -> bool:
        """Whether ``method path`` is an enrollment whose every wait goes through
        :mod:`est_gateway.waits` (the backend says so: ``CABackend.enrolls_in_loop``): the
        server then runs it in a greenlet of its event loop, on one thread, instead of handing
        it to a pool thread. A wrong "no" costs thread hand-offs; a "yes" must never block."""
        found = self._backend_of(path) if method == "POST" else None
        return found is not None and found[1] == "simpleenroll" and found[0].enrolls_in_loop

    def _backend_of(self, path: str) -> tuple[CABackend[Any], str] | None:
        """The backend and the operation of an exact EST path of a configured label."""
        if not path.startswith(EST_PREFIX):
            return None
        segments = path[len(EST_PREFIX):].split("/")
        if len(segments) > 2:
            return None
        label, operation = (None, segments[0]) if len(segments) == 1 else (segments[0], segments[1])
        config = self.service.config
        alias = config.aliases.get(label or DEFAULT_ALIAS) if label != "" else None
        return None if alias is None else (config.backends[alias.backend], operation)

    def route(self, environ: Environ, method: str) -> Response:
        """Exact paths, no redirects: anything else is a plain 404."""
        path = request_path(environ)
        if path.startswith(EST_PREFIX):
            rest = path[len(EST_PREFIX):]
            if rest and rest[0] != "/":
                return views.est(self.service, environ, method, rest)
        elif path in HEALTHZ:
            _allow(method, READ_METHODS)
            return views.healthz(self.service)
        elif path in METRICS:
            _allow(method, READ_METHODS)
            return views.metrics(self.service)
        raise NotFound(NOT_FOUND)


def _allow(method: str, allowed: list[str]) -> None:
    if method not in allowed:
        raise MethodNotAllowed(allowed)


def create_app(config: GatewayConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> ESTApplication:
    """Build the WSGI application for a validated (and started) configuration."""
    return ESTApplication(ESTService(config, clock, Metrics(), key_signer=_key_signer(config)))


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


def render_error(error: ESTError) -> Response:
    """Every error of the tree: its status, its short client-safe reason, its headers."""
    if error.status >= 500:
        log.warning("request failed: %s %s", error.status, error.detail)
    return text_response(error.status, error.detail, error.headers())


def render_unexpected() -> Response:
    """Anything not in the error tree: logged with its traceback, never shown to the client."""
    log.exception("unexpected error while handling a request")
    return text_response(500, INTERNAL_ERROR)
