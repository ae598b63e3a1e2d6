"""docs/embedding.md: the EST blueprint in a Flask app of one's own, run exactly as the
document shows it, through Flask's test client."""

from __future__ import annotations

import base64
import re
import runpy
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import pkcs7
from flask import Flask

from est_gateway import localmode
from est_gateway.web import make_service
from est_gateway.web.blueprints import ops_blueprint
from tests.support.pki import csr_der, make_csr, p256_key

ROOT = Path(__file__).resolve().parents[1]
EST = "/.well-known/est"


def documented_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Flask, str]:
    """The document's app, on a fresh local-mode folder; and that folder's EST password."""
    namespace, password = documented_module(tmp_path, monkeypatch)
    return namespace["app"], password


def documented_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], str]:
    """The globals of the document's module, and the local-mode folder's EST password."""
    [code] = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "embedding.md").read_text(), re.S | re.M)
    instance, _ = localmode.prepare(tmp_path / "est-local")
    module = tmp_path / "myapp.py"
    module.write_text(code)
    monkeypatch.setenv("EST_GATEWAY_CONFIG", str(instance.config))
    namespace = runpy.run_path(str(module), run_name="myapp")
    assert isinstance(namespace["app"], Flask)
    return namespace, instance.password()


def test_a_foreign_flask_app_enrolls_through_the_est_blueprint(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    app, password = documented_app(tmp_path, monkeypatch)
    client = app.test_client()
    https = "https://localhost"
    cacerts = client.get(f"{EST}/cacerts", base_url=https)
    assert cacerts.status_code == 200 and cacerts.headers["Content-Transfer-Encoding"] == "base64"
    chain = pkcs7.load_der_pkcs7_certificates(base64.b64decode(cacerts.get_data()))
    key = p256_key()
    token = base64.b64encode(f"{localmode.USERNAME}:{password}".encode()).decode()
    enrolled = client.post(f"{EST}/simpleenroll", data=base64.encodebytes(csr_der(make_csr(key, cn="embedded"))),
                           headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {token}"},
                           base_url=https)
    assert enrolled.status_code == 200, enrolled.get_data()
    [cert] = pkcs7.load_der_pkcs7_certificates(base64.b64decode(enrolled.get_data()))
    assert cert.subject.rfc4514_string() == "CN=embedded" and cert.issuer in {ca.subject for ca in chain}
    assert cert.public_key() == key.public_key()
    # The gateway's refusals, in its words, under the foreign app's blueprint registration.
    refused = client.post(f"{EST}/simpleenroll", data=b"x", headers={"Content-Type": "application/pkcs10"},
                          base_url=https)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert refused.headers["Content-Type"] == "text/plain; charset=utf-8"
    wrong = client.open(f"{EST}/cacerts", method="TRACE", base_url=https)
    assert (wrong.status_code, wrong.get_data(), wrong.headers["Allow"]) == (405, b"method not allowed; use GET\n",
                                                                             "GET")
    assert client.get(f"{EST}/nolabel/cacerts").get_data() == b'unknown EST label "nolabel"\n'


def test_the_foreign_apps_own_routes_and_error_pages_stay_its_own(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = documented_app(tmp_path, monkeypatch)

    @app.get("/broken")
    def broken() -> str:
        raise RuntimeError("the foreign app's own fault")

    client = app.test_client()
    assert (client.get("/").status_code, client.get("/").get_data()) == (200, b"my own page")
    for path in ("/nowhere", f"{EST}/", "/healthz"):     # no EST route: Flask's own 404 page
        page = client.get(path)
        assert page.status_code == 404 and page.mimetype == "text/html", path
    page = client.get("/broken")
    assert page.status_code == 500 and page.mimetype == "text/html"
    # The EST rules merge no slashes, whatever the foreign app's URL map does: no redirect.
    assert app.url_map.merge_slashes
    merged = client.get("/.well-known//est/cacerts")
    assert merged.status_code == 404 and "Location" not in merged.headers


def test_the_ops_blueprint_adds_healthz_and_metrics_to_a_foreign_app(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    namespace, _ = documented_module(tmp_path, monkeypatch)
    app: Flask = namespace["app"]
    app.register_blueprint(ops_blueprint(make_service(namespace["config"])))
    client = app.test_client()
    health = client.get("/healthz/")
    assert (health.status_code, health.get_data().splitlines()[0]) == (200, b"ok")
    assert client.head("/metrics").status_code == 200
