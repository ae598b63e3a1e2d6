"""The gateway's WSGI app in this process, for fast hostile-input tests (hypothesis, atheris).

A local-mode folder (as ``est-gateway local`` creates it) is loaded and its backends are
started; requests go through Flask's test client, which calls the same application the
server serves. A TLS identity can be injected the way the
TLS worker exposes it.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from werkzeug.test import TestResponse

from est_gateway import localmode
from est_gateway.backends.local import authority
from est_gateway.config import GatewayConfig, load_config
from est_gateway.identity import TLS_ENVIRON_KEY, TLSInfo
from est_gateway.passwords import PasswordHash
from est_gateway.web.app import create_app
from tests.support.pki import CA, csr_der, make_csr, p256_key, rsa_key

#: Statuses a hostile request may get: success, pending, the 4xx family, and 501 for an
#: optional operation that is not offered. Never 500 (nor any other 5xx: the local CA
#: has no upstream that could be down).
ALLOWED_STATUSES = frozenset({200, 202, 204} | set(range(400, 500)) | {501})
MAX_REASON = 1024


class InProcessGateway:
    """A started configuration and its Flask app, plus material to build requests from.
    (Not a dataclass: hypothesis prints every field of one with each failing example.)"""

    def __init__(self, folder: Path, config: GatewayConfig, app: Flask, password: str,
                 ca_key: authority.PrivateKey, ca_cert: x509.Certificate) -> None:
        self.folder, self.config, self.app, self.password = folder, config, app, password
        self.ca_key, self.ca_cert = ca_key, ca_cert
        self.keys: dict[str, Any] = {}

    def __repr__(self) -> str:   # hypothesis prints the fixture with each failing example
        return f"InProcessGateway({self.folder})"

    def auth(self, password: str | None = None) -> dict[str, str]:
        token = base64.b64encode(f"{localmode.USERNAME}:{password or self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(self, method: str, path: str, *, headers: Iterable[tuple[str, str]] = (),
                body: bytes = b"", tls: TLSInfo | None = None,
                environ: dict[str, Any] | None = None) -> TestResponse:
        base: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "https"}
        base[TLS_ENVIRON_KEY] = tls if tls is not None else TLSInfo(version="TLSv1.3")
        base.update(environ or {})
        client = self.app.test_client()
        # PATH_INFO as the server gives it (percent-decoded, latin-1), not re-parsed as a URL:
        # "//x" must stay a path, not become a host name.
        raw = urllib.parse.unquote_to_bytes(path).decode("latin-1")
        return client.open("/", method=method, headers=list(headers), data=body, environ_base=base,
                           environ_overrides={"PATH_INFO": raw, "RAW_URI": path, "REQUEST_URI": path})

    def client_cert(self, cn: str = "inproc-device", *, issuer: CA | None = None, **kw: Any
                    ) -> tuple[x509.Certificate, Any]:
        """A leaf (and its key) from the EST CA unless ``issuer`` is given; not recorded."""
        key = self.keys.setdefault("leaf", p256_key())
        ca = issuer or CA(self.ca_key, self.ca_cert)
        return ca.issue(key, cn=cn, **kw), key

    def tls_with(self, *certs: x509.Certificate) -> TLSInfo:
        return TLSInfo(version="TLSv1.3", peer_chain=tuple(c.public_bytes(Encoding.DER) for c in certs),
                       tls_exporter=b"\x00" * 32)


def start(folder: Path, extra_config: str = "") -> InProcessGateway:
    """Create (or reuse) a local-mode folder, load it, start its backends, build the app."""
    instance, created = localmode.prepare(folder, port=8443)
    if created:
        # The same password, hashed with scrypt's cheapest accepted cost: thousands of
        # authenticated requests per test must not each spend 60 ms in the hash.
        cheap = PasswordHash.create(instance.password(), log_n=10).render()
        text = instance.config.read_text(encoding="utf-8") + "\n" + extra_config
        text = text.replace('password_file = "secrets/est.password"', f'password_hash = "{cheap}"')
        instance.config.write_text(text, encoding="utf-8")
    config = load_config(instance.config)
    for backend in config.backends.values():
        backend.start()
    ca_dir = instance.folder / "local-ca" / "cas" / "EST-CA"
    chain = x509.load_pem_x509_certificates((ca_dir / "chain.pem").read_bytes())
    return InProcessGateway(instance.folder, config, create_app(config), instance.password(),
                            authority.load_key(ca_dir / "signing.key"), chain[0])


def valid_csr_der(cn: str = "fuzz-device", *, rsa: bool = False, **kw: Any) -> bytes:
    return csr_der(make_csr(rsa_key() if rsa else p256_key(), cn=cn, **kw))


def check_response(response: TestResponse, *, what: object = "", method: str = "GET") -> None:
    """The hostile-input invariant: an allowed status; a 4xx/5xx is a short text/plain
    reason with no stack trace (HEAD: headers only)."""
    status = response.status_code
    body = response.get_data()
    assert status in ALLOWED_STATUSES, f"status {status} for {what!r}: {body[:300]!r}"
    if status >= 400 and method != "HEAD":
        ctype = response.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain"), f"{status} with Content-Type {ctype!r} for {what!r}"
        text = body.decode("utf-8")
        assert text.strip(), f"{status} without a reason for {what!r}"
        assert len(body) <= MAX_REASON, f"{status} reason of {len(body)} bytes for {what!r}"
        assert "Traceback" not in text and not re.search(r'File ".*", line \d+', text)
    if status == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Basic ")
    if status == 405:
        assert response.headers.get("Allow")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
