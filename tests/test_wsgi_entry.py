"""``est_gateway.wsgi`` (built by ``est_gateway.hosting``): the app for other WSGI servers,
from ``$EST_GATEWAY_CONFIG``.

In this process (werkzeug's test client calls the app) and in fresh interpreters, as a
WSGI server imports it; and under a real gunicorn with its stock sync workers."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from werkzeug.test import Client

from est_gateway import localmode, wire
from est_gateway.errors import ConfigError
from est_gateway.hosting import load_application
from tests.support import pki
from tests.support.apache import proxy_gateway_config
from tests.support.gateway import curl, free_port, listening, local_instance

RENEW_REFUSED = b"simplereenroll needs the certificate being renewed as TLS client certificate\n"


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> localmode.LocalInstance:
    return local_instance(tmp_path_factory.mktemp("wsgi-entry") / "est-local")[0]


def _config(instance: localmode.LocalInstance, name: str, server_extra: str = "") -> Path:
    return proxy_gateway_config(instance, name, free_port(), ["127.0.0.1"], server_extra=server_extra)


def _auth(instance: localmode.LocalInstance) -> dict[str, str]:
    token = base64.b64encode(f"{localmode.USERNAME}:{instance.password()}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _post(client: Client, path: str, body: bytes, headers: dict[str, str], **environ: str) -> tuple[int, bytes]:
    res = client.post(path, data=body, headers={"Content-Type": "application/pkcs10", **headers},
                      environ_base={"REMOTE_ADDR": "192.0.2.7", **environ})
    return res.status_code, res.get_data()


def _issued(status: int, body: bytes) -> x509.Certificate:
    assert status == 200, body
    return wire.read_certs_only(base64.b64decode(body))[0]


def test_the_app_enrolls_and_renews_with_mod_ssl_certificates(instance: localmode.LocalInstance) -> None:
    app = Client(load_application(_config(instance, "mod-ssl", 'client_cert_source = "mod_ssl"\n')))
    res = app.get("/.well-known/est/cacerts")
    assert res.status_code == 200 and res.headers["Content-Type"] == "application/pkcs7-mime"
    key = pki.p256_key()
    csr = pki.csr_b64(pki.make_csr(key, cn="wsgi-device"))
    first = _issued(*_post(app, "/.well-known/est/simpleenroll", csr, _auth(instance)))
    pem = first.public_bytes(Encoding.PEM).decode()
    renewed = _issued(*_post(app, "/.well-known/est/simplereenroll", csr, {}, SSL_CLIENT_CERT=pem))
    assert renewed.serial_number != first.serial_number
    assert renewed.subject == first.subject


def test_a_forged_ssl_client_cert_renews_nothing_without_the_setting(instance: localmode.LocalInstance) -> None:
    """A real, valid certificate of this CA in SSL_CLIENT_CERT: believed only with the opt-in."""
    key = pki.p256_key()
    csr = pki.csr_b64(pki.make_csr(key, cn="forged-device"))
    with_setting = Client(load_application(_config(instance, "forged-on", 'client_cert_source = "mod_ssl"\n')))
    pem = _issued(*_post(with_setting, "/.well-known/est/simpleenroll", csr, _auth(instance))
                  ).public_bytes(Encoding.PEM).decode()
    without = Client(load_application(_config(instance, "forged-off")))
    assert _post(without, "/.well-known/est/simplereenroll", csr, {}, SSL_CLIENT_CERT=pem) == (403, RENEW_REFUSED)
    assert _post(with_setting, "/.well-known/est/simplereenroll", csr, {}, SSL_CLIENT_CERT=pem)[0] == 200


def test_a_configuration_that_does_not_validate_is_logged_and_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[server]\ntls = false\nworkers = "two"\n')
    with pytest.raises(ConfigError) as info:
        load_application(path)
    assert len(info.value.problems) == 5     # every problem at once, as `serve` reports them
    for problem in info.value.problems:
        assert f"{path}: {problem}" in caplog.messages
    assert f"{path}: server.workers: must be a whole number, not the string \"two\"" in caplog.messages


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "EST_GATEWAY_CONFIG"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60)


def test_application_without_the_variable_fails_loudly() -> None:
    done = _python("from est_gateway.wsgi import application")
    assert done.returncode != 0
    assert "ERROR est_gateway.hosting: EST_GATEWAY_CONFIG is not set in the process environment" in done.stderr


def test_application_with_a_broken_configuration_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server]\ntls = false\n")
    done = _python("from est_gateway.wsgi import application", EST_GATEWAY_CONFIG=str(path))
    assert done.returncode != 0
    assert f"ERROR est_gateway.hosting: {path}: backends: is required (a table)" in done.stderr
    assert "est_gateway.errors.ConfigError: configuration has 4 problem(s)" in done.stderr


def test_application_from_the_variable(instance: localmode.LocalInstance) -> None:
    # uWSGI takes the callable from the module's namespace (no getattr): it must be there.
    code = ("import importlib\n"
            "from werkzeug.test import Client\n"
            "application = vars(importlib.import_module('est_gateway.wsgi'))['application']\n"
            "print(Client(application).get('/.well-known/est/cacerts').status_code)")
    done = _python(code, EST_GATEWAY_CONFIG=str(_config(instance, "from-env")))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200\n"
    assert "INFO est_gateway.hosting: est-gateway loaded" in done.stderr


LOADED = re.compile(r"INFO est_gateway\.hosting: est-gateway loaded \S+ in process (\d+)")
BOOTED = re.compile(r"Booting worker with pid: (\d+)")


@dataclass
class Gunicorn:
    url: str
    log: Path
    arbiter: int
    #: who loads the app: "workers" (each its own) or "arbiter" (--preload, before forking)
    loader: str

    def pids(self, pattern: re.Pattern[str]) -> set[int]:
        return {int(pid) for pid in pattern.findall(self.log.read_text())}


@pytest.fixture()
def gunicorn(request: pytest.FixtureRequest, instance: localmode.LocalInstance, tmp_path: Path) -> Iterator[Gunicorn]:
    """gunicorn with 2 sync workers, started once both workers are up and the expected
    number of processes has loaded the app (``--preload``: the arbiter, before it forks)."""
    loader = request.param
    options, loads = (["--preload"], 1) if loader == "arbiter" else ([], 2)
    port = free_port()
    log = tmp_path / "gunicorn.log"
    args = [sys.executable, "-m", "gunicorn", "--no-control-socket", "--bind", f"127.0.0.1:{port}",
            "--workers", "2", *options, "est_gateway.wsgi:application"]
    env = os.environ | {"EST_GATEWAY_CONFIG": str(_config(instance, "gunicorn"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Gunicorn(f"http://127.0.0.1:{port}/.well-known/est", log, proc.pid, loader)
    try:
        deadline = time.monotonic() + 60
        while len(server.pids(BOOTED)) < 2 or len(server.pids(LOADED)) < loads or not listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.e2e
@pytest.mark.parametrize("gunicorn", ["workers", "arbiter"], indirect=True)
def test_under_gunicorn(gunicorn: Gunicorn, instance: localmode.LocalInstance, tmp_path: Path) -> None:
    """Plain gunicorn behind a proxy: password enrollment, then renewal with the certificate
    in the proxy's header from the trusted address."""
    url = gunicorn.url
    assert curl(f"{url}/cacerts").status == 200
    key = pki.p256_key()
    csr = pki.make_csr(key, cn="gunicorn-device")
    (tmp_path / "csr.b64").write_bytes(pki.csr_b64(csr))
    auth = f"{localmode.USERNAME}:{instance.password()}"
    post = ("-H", "Content-Type: application/pkcs10", "--data-binary", f"@{tmp_path / 'csr.b64'}")
    res = curl("-u", auth, *post, f"{url}/simpleenroll")
    cert = _issued(res.status, res.body)
    header = cert.public_bytes(Encoding.PEM).decode().replace("\n", " ")
    res = curl("-H", f"X-SSL-Client-Cert: {header}", *post, f"{url}/simplereenroll")
    assert _issued(res.status, res.body).subject == cert.subject
    expected = gunicorn.pids(BOOTED) if gunicorn.loader == "workers" else {gunicorn.arbiter}
    assert gunicorn.pids(LOADED) == expected
