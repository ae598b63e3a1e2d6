"""A real django-ca (PyPI ``django-ca[api]``) on loopback, over HTTPS, for the adapter's tests.

It runs from its own virtual environment (``scripts/django-ca-venv.sh``, ``.cache/django-ca``),
never from the gateway's. One instance per test session: its own SQLite database, a root
and an issuing CA (``init_ca``), and the gateway's user holding exactly the permissions
``sign_certificate``, ``revoke_certificate``, ``view_certificate`` and
``view_certificateauthority`` (django-ca's ``create_api_user``). gunicorn serves it with
a TLS certificate from a test CA, so the gateway's upstream is HTTPS verified with a bundle.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from cryptography import x509

from tests.support.pki import CA, rsa_key, write_pem

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".cache" / "django-ca"
USERNAME = "est-gateway"
#: a second user that may only look (no sign_certificate): the 403 case
READONLY = "est-readonly"

SETTINGS = """\
import os
from pathlib import Path
HOME = Path(os.environ["DJANGO_CA_HOME"])
SECRET_KEY = "tests-only-django-ca-secret-key-not-used-elsewhere"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django_object_actions", "django_ca"]
MIDDLEWARE = []
ROOT_URLCONF = "urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(HOME / "ca.sqlite3"),
                         "OPTIONS": {"timeout": 20}}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(HOME / "files")}},
    "django-ca": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                  "OPTIONS": {"location": str(HOME / "keys")}},
}
CA_DEFAULT_HOSTNAME = os.environ["DJANGO_CA_HOSTNAME"]
CA_ENABLE_REST_API = True
# HTTP Basic makes django-ca check the password on every API call: with Django 5.2's
# default PBKDF2 (1,000,000 iterations) that is about 0.5 s of CPU here, 1.5 s per
# enrollment. The tests use PBKDF2 with fewer iterations, as Django advises for tests.
PASSWORD_HASHERS = ["hashers.TestPBKDF2PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"console": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["console"], "level": "WARNING"}}
"""

HASHERS = """\
from django.contrib.auth.hashers import PBKDF2PasswordHasher

class TestPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1000
"""

URLS = """\
from django.urls import include, path
urlpatterns = [path("django_ca/", include("django_ca.urls"))]
"""

WSGI = """\
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""

# Run once inside django-ca's virtual environment: what an operator does with manage.py
# (migrate, init_ca, a user with the API permissions), in one process to keep it fast.
SETUP = """\
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
import django
django.setup()
from django.core.files.storage import storages
from django.core.management import call_command
from django.contrib.auth.models import Permission, User
from django_ca.api.utils import create_api_user
from django_ca.models import CertificateAuthority
call_command("migrate", verbosity=0)
call_command("init_ca", "Test Root", "CN=django-ca Test Root,O=est-gateway tests", key_type="EC",
             api_enable=True, path_length=1, output_format="none")
root = CertificateAuthority.objects.get(name="Test Root")
call_command("init_ca", "Test Issuing", "CN=django-ca Test Issuing CA,O=est-gateway tests",
             key_type="EC", api_enable=True, parent=root, output_format="none")
issuing = CertificateAuthority.objects.get(name="Test Issuing")
# A CA whose private key is gone: django-ca accepts sign requests for it, and the order fails.
call_command("init_ca", "Keyless Issuing", "CN=django-ca Keyless CA,O=est-gateway tests",
             key_type="EC", api_enable=True, parent=root, output_format="none")
keyless = CertificateAuthority.objects.get(name="Keyless Issuing")
storages["django-ca"].delete(keyless.key_backend_options["path"])
user, password, readonly, readonly_password = sys.stdin.read().split()
create_api_user(user, password, change_certificateauthority=False)
viewer = User.objects.create_user(readonly, password=readonly_password)
viewer.user_permissions.add(Permission.objects.get(codename="view_certificateauthority"))
print(json.dumps({"root": root.serial, "issuing": issuing.serial}))
"""


def ensure_venv() -> Path:
    """django-ca's own virtual environment (the script creates or repairs it; else a no-op)."""
    subprocess.run(["bash", str(REPO / "scripts" / "django-ca-venv.sh"), str(VENV)], check=True, timeout=600)
    return VENV / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DjangoCa:
    """A set-up django-ca instance in ``home`` and the gunicorn serving it on ``port``."""

    home: Path
    port: int
    password: str
    readonly_password: str
    root_serial: str = ""
    issuing_serial: str = ""
    #: plain HTTP for OCSP and CRLs (as django-ca writes them into certificates)
    ocsp_port: int = field(default_factory=lambda: free_port())
    tls: CA = field(default_factory=lambda: CA.create("django-ca TLS Test CA"))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/django_ca/api"

    @property
    def ca_bundle(self) -> Path:
        return self.home / "tls-ca.pem"

    @property
    def log(self) -> Path:
        return self.home / "gunicorn.log"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DJANGO_CA_HOME": str(self.home), "DJANGO_SETTINGS_MODULE": "settings",
                "DJANGO_CA_HOSTNAME": f"127.0.0.1:{self.ocsp_port}", "PYTHONPATH": str(self.home)}

    def setup(self) -> DjangoCa:
        """Write the project files, migrate, create both CAs and the users (a few seconds)."""
        python = ensure_venv()
        self.home.mkdir(parents=True, exist_ok=True)
        for name, text in (("settings.py", SETTINGS), ("hashers.py", HASHERS), ("urls.py", URLS),
                           ("wsgi.py", WSGI), ("setup_ca.py", SETUP)):
            (self.home / name).write_text(text, encoding="utf-8")
        key = rsa_key()
        server = self.tls.issue(key, cn="127.0.0.1", eku=("serverAuth",),
                                sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        write_pem(self.home / "tls.pem", server)
        write_pem(self.home / "tls.key", key)
        write_pem(self.ca_bundle, self.tls.cert)
        done = subprocess.run([str(python), str(self.home / "setup_ca.py")], cwd=self.home, env=self.env(),
                              input=f"{USERNAME} {self.password} {READONLY} {self.readonly_password}\n".encode(),
                              capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"django-ca setup failed:\n{done.stderr.decode(errors='replace')}")
        serials = json.loads(done.stdout.decode().strip().splitlines()[-1])
        self.root_serial, self.issuing_serial = serials["root"], serials["issuing"]
        return self

    def start(self, timeout: float = 30.0) -> DjangoCa:
        """gunicorn with TLS on 127.0.0.1:port (the API), and one over plain HTTP on
        ocsp_port (OCSP, CRLs); returns once the API answers."""
        gunicorn = [str(VENV / "bin" / "gunicorn"), "--chdir", str(self.home), "--workers", "1",
                    "--threads", "4", "--no-control-socket"]
        out = open(self.log, "ab")
        self.procs = [
            subprocess.Popen([*gunicorn, "--bind", f"127.0.0.1:{self.port}", "--certfile", str(self.home / "tls.pem"),
                              "--keyfile", str(self.home / "tls.key"), "wsgi:application"],
                             cwd=self.home, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL),
            subprocess.Popen([*gunicorn, "--bind", f"127.0.0.1:{self.ocsp_port}", "wsgi:application"],
                             cwd=self.home, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)]
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{self.log.read_text()}")
            try:
                self.api("GET", "/ca/")
                with socket.create_connection(("127.0.0.1", self.ocsp_port), timeout=1):
                    return self
            except (requests.ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"django-ca did not answer within {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API as the gateway's user (what a test does "at the CA")."""
        with requests.Session() as session:
            session.trust_env = False
            response = session.request(method, self.api_url + path, auth=(USERNAME, self.password),
                                       verify=str(self.ca_bundle), timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def revoke(self, certificate: x509.Certificate, reason: str = "keyCompromise") -> None:
        """Revoke at the CA, through its API (``POST .../certs/{serial}/revoke/``)."""
        record = self.api("POST", f"/ca/{self.issuing_serial}/certs/{certificate.serial_number:X}/revoke/",
                          json={"reason": reason})
        assert record["revoked"] is True


def backend_section(ca: DjangoCa, secrets: Path, **more: Any) -> str:
    """``[backends.<name>]`` keys (TOML) for a backend talking to ``ca`` as the gateway's user."""
    password_file = secrets / "django-ca.password"
    if not password_file.exists():
        password_file.write_text(ca.password + "\n", encoding="utf-8")
        password_file.chmod(0o600)
    keys: dict[str, Any] = {"type": "django-ca", "url": ca.api_url, "ca_bundle": str(ca.ca_bundle),
                            "username": USERNAME, "password_file": str(password_file), **more}
    return "\n".join(f"{k} = {_toml(v)}" for k, v in keys.items()) + "\n"


def _toml(value: Any) -> str:
    """A TOML value: JSON's strings, numbers and arrays are TOML; tables become inline tables."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)



class FaultyUpstream:
    """A TLS server in django-ca's place (its certificate, so the gateway trusts it) that
    misbehaves: ``garbage`` (200 that is not JSON), ``hang`` (never answers), ``html-404``
    (Django's own 404 page: a wrong ``url``), or ``busy-queue``: everything is passed on to
    the real django-ca, but its orders stay ``pending`` (as with a Celery queue that has not
    run the task yet; this instance has none). Yields the API URL to configure."""

    def __init__(self, ca: DjangoCa, fault: str) -> None:
        self.ca, self.fault = ca, fault
        self.release = threading.Event()
        self.order_polls = 0

    def __enter__(self) -> str:
        fault, release, outer = self.fault, self.release, self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                content_type = "text/html"
                if fault == "hang":
                    release.wait(10)
                    return
                if fault == "busy-queue":
                    status, body = outer.relay(self.command, self.path, self.headers, self.rfile)
                    content_type = "application/json"
                else:
                    status, body = (200, b"<html>maintenance</html>") if fault == "garbage" else \
                        (404, b"<!doctype html><title>Not Found</title>")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca.home / "tls.pem", self.ca.home / "tls.key")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"https://127.0.0.1:{self.server.server_address[1]}/django_ca/api"

    def relay(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, bytes]:
        """Pass a call on to the real django-ca; an order's answer says ``pending``."""
        length = int(headers.get("Content-Length") or 0)
        with requests.Session() as session:
            session.trust_env = False
            answer = session.request(method, f"https://127.0.0.1:{self.ca.port}{path}",
                                     data=body.read(length) if length else None,
                                     headers={k: headers[k] for k in ("Authorization", "Content-Type")
                                              if headers.get(k)},
                                     verify=str(self.ca.ca_bundle), timeout=10)
        if "/orders/" in path and answer.status_code == 200:
            self.order_polls += 1
            return 200, json.dumps({**answer.json(), "status": "pending", "serial": None}).encode()
        return answer.status_code, answer.content

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
