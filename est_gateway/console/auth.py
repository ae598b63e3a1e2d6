"""Who the admin is: a client certificate from ``[console] admin_ca`` or the admin's
username and password; kept in a signed session cookie with an idle timeout, and a CSRF
token every state-changing form carries."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding
from flask import request, session

from est_gateway.errors import BadRequest, Unauthorized
from est_gateway.identity import UntrustedCertificate, client_address, presented_certificate, verify_client_certificate
from est_gateway.operations import ESTService

#: the scope of console logins in the failure throttle and the password memory: no EST
#: label can be called so (labels begin with a letter or digit), so neither is shared
THROTTLE_SCOPE = "<console>"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Admin:
    """The signed-in admin, as audit lines name them."""

    name: str
    via: str    # "password" or "certificate"


def csrf_token() -> str:
    """This session's token (made on first use), for the forms of a page."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """A POST must carry this session's token: another site cannot post a form as the admin."""
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise BadRequest("bad request: missing or wrong CSRF token; reload the page and try again")


def current_admin(service: ESTService, idle_timeout_s: float, now: Callable[[], float] = time.time) -> Admin | None:
    """The admin of this session, unless it has been idle too long (or its certificate
    is no longer the one on the connection); refreshes the idle clock."""
    name, via, seen = session.get("admin"), session.get("via"), session.get("seen")
    if not isinstance(name, str) or not isinstance(seen, (int, float)) or via not in ("password", "certificate"):
        return None
    if now() - seen > idle_timeout_s:
        session.clear()
        return None
    if via == "certificate" and session.get("cert") != _certificate_fingerprint(service):
        session.clear()
        return None
    session["seen"] = now()
    return Admin(name, via)


def sign_in(admin: Admin, service: ESTService, now: Callable[[], float] = time.time) -> None:
    """A new session for ``admin`` (never the one the login form came in: no fixation)."""
    session.clear()
    session.permanent = True
    session.update(admin=admin.name, via=admin.via, seen=now(), csrf=secrets.token_urlsafe(32))
    if admin.via == "certificate":
        session["cert"] = _certificate_fingerprint(service)


def authenticate(service: ESTService, *, method: str, username: str = "", password: str = "") -> Admin:
    """Check a login; a failure counts against the gateway's throttle (429 past its limit)."""
    address = client_address(request.environ, service.config.server)
    attempt = service.throttle.begin(address, THROTTLE_SCOPE)
    failed = True
    try:
        admin = (_by_certificate(service) if method == "certificate"
                 else _by_password(service, username, password))
        failed = False
        return admin
    finally:
        service.throttle.end(attempt, failed=failed)


def _by_password(service: ESTService, username: str, password: str) -> Admin:
    console = service.config.console
    stored = console.admin_password
    if console.admin_username is None or stored is None:
        raise Unauthorized("this console takes admin client certificates only")
    # The hash is computed for any name, so a wrong name takes as long as a wrong password.
    good_password = service.passwords.verify(THROTTLE_SCOPE, stored, password)
    good_name = hmac.compare_digest(username.encode(), console.admin_username.encode())
    if not (good_name and good_password):
        raise Unauthorized("wrong username or password")
    return Admin(console.admin_username, "password")


def _by_certificate(service: ESTService) -> Admin:
    anchors = service.config.console.admin_cas
    presented = presented_certificate(request.environ, service.config.server)
    if not anchors:
        raise Unauthorized("this console takes the admin's username and password only")
    if presented is None:
        raise Unauthorized("no client certificate was presented on this connection")
    try:
        cert = verify_client_certificate(presented, list(anchors), service.clock(), keys=service.config.limits)
    except UntrustedCertificate as exc:
        raise Unauthorized(str(exc).replace("this alias", "this console")) from None
    return Admin(f"cert:{cert.subject.rfc4514_string()}", "certificate")


def _certificate_fingerprint(service: ESTService) -> str | None:
    presented = presented_certificate(request.environ, service.config.server)
    if presented is None:
        return None
    return hashlib.sha256(presented.leaf.public_bytes(Encoding.DER)).hexdigest()
