"""The console's pages: overview, certificates of the built-in CA (search, detail, PEM,
revoke behind a confirmation), pending approvals, the audit log, login and logout."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any, TypeVar

import flask
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask, g, render_template, request

from est_gateway.audit import AuditFile
from est_gateway.backends.local import LocalCABackend
from est_gateway.backends.local.store import REVOCATION_REASONS, Record
from est_gateway.console import activity, auth
from est_gateway.errors import BadRequest, NotFound, Unauthorized
from est_gateway.operations import DEFAULT_ALIAS, UNKNOWN_USER, ESTService

F = TypeVar("F", bound=Callable[..., Any])
PAGE_SIZE = 25
AUDIT_LINES = 200
STATUSES = ("valid", "superseded", "revoked")
MAX_QUERY = 256


def register(app: Flask, service: ESTService, audit_file: AuditFile | None) -> None:
    """Add every page of the console to ``app``."""
    config = service.config
    local = {name: b for name, b in config.backends.items() if isinstance(b, LocalCABackend)}
    labels = sorted(config.aliases)
    default_alias = config.aliases.get(DEFAULT_ALIAS)
    default_local = (default_alias.backend if default_alias is not None and default_alias.backend in local
                     else min(local, default=""))

    def route(rule: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[F], F]:
        return app.route(rule, methods=list(methods), provide_automatic_options=False)

    def backend(name: str) -> LocalCABackend:
        found = local.get(name)
        if found is None:
            raise NotFound(f'no built-in CA backend "{name[:64]}"')
        return found

    def record(name: str, serial: str) -> Record:
        try:
            found = backend(name).store.get(serial)
        except ValueError as exc:
            raise NotFound(str(exc)) from None
        if found is None:
            raise NotFound(f"no certificate with serial {serial[:80]} on record")
        return found

    @route("/login", ("GET", "POST"))
    def login() -> Any:
        target = _local_target(request.values.get("next", ""))
        if request.method == "GET":
            if g.admin is not None:
                return flask.redirect(target, 303)
            return render_template("login.html", next=target, error=None, console=config.console)
        method = request.form.get("method", "password")
        username = request.form.get("username", "")[:MAX_QUERY]
        try:
            admin = auth.authenticate(service, method=method, username=username,
                                      password=request.form.get("password", "")[:1024])
        except Unauthorized as exc:
            # A name other than the admin's may be a password typed in the wrong field.
            tried = username if username == config.console.admin_username else UNKNOWN_USER
            g.action = {"action": "login", "outcome": exc.detail,
                        "admin": tried if method == "password" else "certificate"}
            return render_template("login.html", next=target, error=exc.detail, console=config.console), 401
        auth.sign_in(admin, service)
        g.admin = admin
        g.action = {"action": "login", "outcome": f"signed in by {admin.via}"}
        return flask.redirect(target, 303)

    @route("/logout", ("POST",))
    def logout() -> Any:
        g.action = {"action": "logout", "outcome": "signed out"}
        flask.session.clear()
        return flask.redirect(flask.url_for("login"), 303)

    @route("/")
    def overview() -> str:
        health = service.health()
        rows = [{"label": name, "backend": alias.backend, "type": _type_of(config.backends[alias.backend]),
                 "health": health.get(alias.backend)} for name, alias in sorted(config.aliases.items())]
        counts = activity.hourly(activity.entries(audit_file), dt.datetime.now(dt.UTC)) if audit_file else None
        chart = _chart(counts) if counts else None
        totals = {name: b.store.count() for name, b in local.items()}
        return render_template("overview.html", rows=rows, chart=chart, counts=counts, totals=totals,
                               audit_file=audit_file)

    @route("/certificates")
    def certificates() -> str:
        text = request.args.get("q", "").strip()[:MAX_QUERY]
        label = request.args.get("label", "")
        status = request.args.get("status", "")
        if label and label not in labels:
            raise BadRequest(f'unknown label "{label[:64]}"')
        if status and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        page = _page_number(request.args.get("page", "1"))
        # One built-in CA at a time (the default label's, else the first): exact pages.
        chosen = request.args.get("backend", "") or default_local
        found: list[Record] = []
        total = 0
        if local:
            found, total = backend(chosen).store.search(text=text, alias=label or None, status=status or None,
                                                        offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        return render_template("certificates.html", found=found, total=total, page=page, pages=pages,
                               q=text, label=label, status=status, labels=labels, statuses=STATUSES,
                               backends=sorted(local), chosen=chosen)

    @route("/certificates/<name>/<serial>")
    def certificate(name: str, serial: str) -> str:
        found = record(name, serial)
        return render_template("certificate.html", backend=name, record=found,
                               decoded=_decoded(found.certificate()))

    @route("/certificates/<name>/<serial>.pem")
    def certificate_pem(name: str, serial: str) -> flask.Response:
        found = record(name, serial)
        g.action = {"action": "download", "backend": name, "serial": found.serial, "outcome": "PEM"}
        pem = found.certificate().public_bytes(Encoding.PEM)
        return flask.Response(pem, 200, content_type="application/x-pem-file",
                              headers={"Content-Disposition": f'attachment; filename="{found.serial}.pem"'})

    @route("/certificates/<name>/<serial>/revoke", ("GET", "POST"))
    def revoke(name: str, serial: str) -> Any:
        found = record(name, serial)
        if request.method == "GET":
            return render_template("revoke.html", backend=name, record=found, reasons=REVOCATION_REASONS)
        reason = request.form.get("reason", "")
        g.action = {"action": "revoke", "backend": name, "alias": found.alias, "serial": found.serial,
                    "subject": found.subject, "reason": reason[:64]}
        if reason not in REVOCATION_REASONS:
            raise BadRequest(f"reason must be one of {', '.join(REVOCATION_REASONS)}")
        try:
            done = backend(name).store.revoke(found.serial, reason, service.clock())
        except (LookupError, ValueError) as exc:
            g.action["outcome"] = _message(exc)
            raise BadRequest(_message(exc)) from None
        g.action["outcome"] = "revoked"
        flask.flash(f"revoked {done.serial} ({done.subject}), reason {reason}")
        return flask.redirect(flask.url_for("certificate", name=name, serial=done.serial), 303)

    @route("/pending")
    def pending() -> str:
        show_all = request.args.get("all") == "1"
        found = [(name, p) for name, b in sorted(local.items())
                 for p in b.store.pending_list(status=None if show_all else "pending")]
        return render_template("pending.html", found=found, show_all=show_all, has_local=bool(local))

    @route("/pending/<name>/<request_id>/<decision>", ("POST",))
    def decide(name: str, request_id: str, decision: str) -> Any:
        if decision not in ("approve", "reject"):
            raise NotFound("decide with approve or reject")
        store = backend(name).store
        reason = request.form.get("reason", "").strip()[:200] or None
        g.action = {"action": decision, "backend": name, "approval_reference": request_id[:64]}
        try:
            done = store.pending_decide(request_id, f"{decision}d" if decision == "approve" else "rejected",
                                        service.clock(), reason if decision == "reject" else None)
        except (LookupError, ValueError) as exc:
            g.action["outcome"] = _message(exc)
            raise BadRequest(_message(exc)) from None
        g.action.update(alias=done.alias, subject=done.subject, outcome=done.status)
        flask.flash(f"{done.status} request {done.id} ({done.subject})")
        return flask.redirect(flask.url_for("pending"), 303)

    @route("/audit")
    def audit() -> str:
        wanted = activity.AuditFilter(label=request.args.get("label", "")[:64],
                                      operation=request.args.get("operation", "")[:64],
                                      outcome=request.args.get("outcome", ""),
                                      text=request.args.get("q", "").strip()[:MAX_QUERY])
        lines = [e for e in activity.entries(audit_file) if wanted.matches(e)][:AUDIT_LINES]
        return render_template("audit.html", lines=lines, wanted=wanted, labels=labels,
                               audit_file=audit_file, limit=AUDIT_LINES)


def _type_of(backend: object) -> str:
    """A backend's ``type`` as the configuration names it."""
    return getattr(type(backend), "type_name", "") or type(backend).__name__


def _local_target(value: str) -> str:
    """Where to go after logging in: a path of this console only (never another site)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _page_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise BadRequest("page must be a number from 1")
    return int(text)


def _message(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def _chart(counts: activity.HourlyCounts) -> dict[str, Any]:
    """Two bar series in one SVG, drawn here: no script, no style attribute (the CSP)."""
    scale = max(max(counts.enrollments), max(counts.failures), 1)
    width, height = 480.0, 120.0
    step = width / activity.HOURS
    return {"width": width, "height": height, "scale": scale,
            "ok": activity.bars(counts.enrollments, counts.start, width=width, height=height, offset=1, scale=scale),
            "failed": activity.bars(counts.failures, counts.start, width=width, height=height,
                                    offset=step / 2, scale=scale),
            "bar_width": round(step / 2 - 1.5, 1), "first": counts.start.strftime("%H:00"),
            "total_ok": sum(counts.enrollments), "total_failed": sum(counts.failures)}


def _decoded(cert: x509.Certificate) -> list[tuple[str, str]]:
    """The certificate's fields as an operator reads them."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_text = f"RSA {key.key_size} bits"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_text = f"EC {key.curve.name}"
    else:
        key_text = type(key).__name__
    rows = [("Subject", cert.subject.rfc4514_string()), ("Issuer", cert.issuer.rfc4514_string()),
            ("Serial", format(cert.serial_number, "x")),
            ("Not before", cert.not_valid_before_utc.isoformat()), ("Not after", cert.not_valid_after_utc.isoformat()),
            ("Public key", key_text),
            ("Signature", getattr(cert.signature_hash_algorithm, "name", "none")),
            ("SHA-256 fingerprint", cert.fingerprint(hashes.SHA256()).hex(":"))]
    for ext in cert.extensions:
        name = getattr(ext.oid, "_name", None) or ext.oid.dotted_string
        rows.append((f"{name}{' (critical)' if ext.critical else ''}", _extension_text(ext.value)))
    return rows


def _extension_text(value: x509.ExtensionType) -> str:
    if isinstance(value, x509.SubjectAlternativeName):
        return ", ".join(str(n.value) for n in value)
    if isinstance(value, x509.ExtendedKeyUsage):
        return ", ".join(getattr(u, "_name", u.dotted_string) for u in value)
    if isinstance(value, x509.BasicConstraints):
        return f"CA: {value.ca}" + (f", path length {value.path_length}" if value.path_length is not None else "")
    if isinstance(value, (x509.SubjectKeyIdentifier,)):
        return value.digest.hex(":")
    if isinstance(value, x509.AuthorityKeyIdentifier) and value.key_identifier:
        return value.key_identifier.hex(":")
    if isinstance(value, x509.KeyUsage):
        names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "key_cert_sign", "crl_sign")
        return ", ".join(n for n in names if getattr(value, n))
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "…"
