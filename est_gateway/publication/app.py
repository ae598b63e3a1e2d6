"""The publication's Flask application: each local CA's CRL and OCSP responder at the paths
of its configured URLs, in plain HTTP, with the gateway's short ``text/plain`` errors."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, request

from est_gateway.backends.local import LocalCABackend
from est_gateway.backends.local.authority import utcnow
from est_gateway.config.model import GatewayConfig
from est_gateway.errors import MethodNotAllowed, UnsupportedMediaType, UpstreamUnavailable
from est_gateway.publication.crl import PublishedCRL
from est_gateway.publication.ocsp import MALFORMED, OCSP_REQUEST, OCSP_RESPONSE, OCSPResponder
from est_gateway.publication.responder import CASigner, DelegatedSigner
from est_gateway.publication.urls import url_path
from est_gateway.web.responses import Response, add_error_handlers, text_response

log = logging.getLogger(__name__)

CT_CRL = "application/pkix-crl"
#: largest OCSP request accepted in a POST body (one certificate asked about: ~100 bytes)
MAX_OCSP_REQUEST_BYTES = 16 * 1024
NOT_FOUND = "not found; this address publishes the local CAs' CRLs and OCSP answers"
#: the key of an app's Publication in ``app.extensions``
EXTENSION = "est_gateway.publication"


@dataclass
class Publication:
    """What is published where: CRLs by exact path, OCSP responders by path (GET requests
    below it)."""

    crls: dict[str, PublishedCRL] = field(default_factory=dict)
    responders: dict[str, OCSPResponder] = field(default_factory=dict)

    def responder_for(self, path: str) -> tuple[OCSPResponder, str | None] | None:
        """The responder at ``path`` (with None: a POST's path) or above it (with the rest
        of the path: a GET's encoded request); the longest path wins."""
        if path in self.responders:
            return self.responders[path], None
        for prefix in sorted(self.responders, key=len, reverse=True):
            base = prefix.rstrip("/") + "/"
            if path.startswith(base):
                return self.responders[prefix], path[len(base):]
        return None


def publication_of(config: GatewayConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> Publication:
    """The CRLs and responders of every started local CA that publishes them."""
    settings = config.publication
    published = Publication()
    for backend in config.backends.values():
        if not isinstance(backend, LocalCABackend):
            continue
        for ca_name, ca_settings in backend.options.cas.items():
            if not (ca_settings.crl_url or ca_settings.ocsp_url):
                continue
            ca = backend.loaded_ca(ca_name)
            folder = backend.ca_folder(ca_name)
            if ca_settings.crl_url:
                published.crls[url_path(ca_settings.crl_url)] = PublishedCRL(
                    ca_name=ca_name, issuer=ca.certificate, key=ca.key, store=backend.store, folder=folder,
                    validity=dt.timedelta(hours=settings.crl_validity_hours), clock=clock)
            if ca_settings.ocsp_url:
                signer: CASigner | DelegatedSigner = CASigner(ca.certificate, ca.key)
                if ca_settings.ocsp_signer == "responder":
                    signer = DelegatedSigner(ca_name=ca_name, issuer=ca.certificate, issuer_key=ca.key,
                                             key_type=ca_settings.key_type, store=backend.store, folder=folder,
                                             clock=clock)
                published.responders[url_path(ca_settings.ocsp_url)] = OCSPResponder(
                    ca_name=ca_name, issuer=ca.certificate, store=backend.store, signer=signer,
                    validity=dt.timedelta(minutes=settings.ocsp_validity_minutes), clock=clock)
    return published


def create_publication_app(config: GatewayConfig, *, clock: Callable[[], dt.datetime] = utcnow) -> Flask:
    """The publication application of a validated and started configuration."""
    published = publication_of(config, clock=clock)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_OCSP_REQUEST_BYTES
    app.extensions[EXTENSION] = published

    def publish(rest: str = "") -> Response:
        return answer(published, request.environ.get("PATH_INFO") or "/")

    for rule in ("/", "/<path:rest>"):
        app.add_url_rule(rule, "publish", publish, methods=["GET", "POST"], merge_slashes=False,
                         strict_slashes=False, provide_automatic_options=False)
    add_error_handlers(app)
    return app


def answer(published: Publication, path: str) -> Response:
    """The answer to the request being served, at ``path`` (percent-decoded)."""
    crl = published.crls.get(path)
    if crl is not None:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(["GET", "HEAD"])
        try:
            return Response(crl.current(), 200, content_type=CT_CRL)
        except (sqlite3.Error, OSError) as exc:
            log.warning("CRL of %s: the record cannot be read or the CRL not written: %s", crl.ca_name, exc)
            raise UpstreamUnavailable("the CRL cannot be made right now; try again later") from None
    found = published.responder_for(path)
    if found is None:
        return text_response(404, NOT_FOUND)
    responder, encoded = found
    if encoded is None and request.method == "POST":
        if request.mimetype != OCSP_REQUEST:
            raise UnsupportedMediaType(f"an OCSP request is POSTed as {OCSP_REQUEST}")
        der = request.get_data(cache=False)
    elif request.method in ("GET", "HEAD"):
        der = _decoded(encoded or "")
    else:
        raise MethodNotAllowed(["GET", "HEAD"])
    body = responder.answer(der) if der else MALFORMED
    return Response(body, 200, content_type=OCSP_RESPONSE)


def _decoded(text: str) -> bytes:
    """An OCSP GET's request (RFC 6960 Appendix A.1: base64 of the DER, URL-encoded, which the
    path has undone); the URL-safe alphabet and missing padding are accepted too. Empty
    when it is no base64."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return b""
