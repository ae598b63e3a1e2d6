"""A real CFSSL CA in a temporary folder: ``cfssl serve`` over mutual TLS, ``ocspserve``, CRLs.

Everything is made by the Debian ``golang-cfssl`` tools themselves (``gencert -initca``,
``gencert``, ``ocsprefresh``, ``ocspdump``, ``gencrl``); nothing outside the folder is
touched. The certificate database is SQLite with the tables of CFSSL's
``certdb/sqlite`` migration (the package ships none). ``ocspserve`` reads its responses
file only at start, so :meth:`CfsslCA.publish_revocations` refreshes, dumps and restarts it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from cryptography import x509

from tests.support.gateway import free_port
from tests.support.httpd import BackgroundServer, QuietHandler

CLIENT_PROFILE = "est-client"
#: a profile whose name CFSSL knows but which signs without authentication
UNAUTHENTICATED_PROFILE = "noauth"
#: CFSSL's certdb/sqlite migration, as docs/cfssl.md ships it
SCHEMA = (Path(__file__).resolve().parents[2] / "contrib" / "cfssl" / "certdb-sqlite.sql").read_text(encoding="utf-8")


def cfssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["cfssl", *args], cwd=cwd, input=stdin, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"cfssl {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def _write_pair(folder: Path, name: str, output: bytes) -> None:
    """What ``cfssljson -bare NAME`` does: NAME.pem and NAME-key.pem (mode 600)."""
    data = json.loads(output)
    (folder / f"{name}.pem").write_text(data["cert"], encoding="ascii")
    key = folder / f"{name}-key.pem"
    key.write_text(data["key"], encoding="ascii")
    key.chmod(0o600)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else bytes(value).decode("ascii")


class _Daemon:
    """One cfssl subprocess on a fixed port; restartable on the same port."""

    def __init__(self, args: list[str], port: int, log: Path, cwd: Path) -> None:
        self.args, self.port, self.log, self.cwd = args, port, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["cfssl", *self.args], cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cfssl {self.args[0]} exited:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"cfssl {self.args[0]} did not listen:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class _CrlServer(BackgroundServer):
    crl = b""


class _CrlHandler(QuietHandler):
    server: _CrlServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_body(200 if self.server.crl else 404, self.server.crl, "application/pkix-crl")


class CfsslCA:
    """The CA's folder, its ``cfssl serve`` (HTTPS, client certificates) and ``ocspserve``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port, self.ocsp_port = free_port(), free_port()
        self._make_pki()
        self.auth_key_file = folder / "auth.key"
        self.auth_key_file.write_text(os.urandom(32).hex(), encoding="ascii")   # CFSSL wants no newline
        self.auth_key_file.chmod(0o600)
        self._write_config()
        with sqlite3.connect(folder / "certs.db") as db:
            db.executescript(SCHEMA)
        db.close()
        (folder / "db.json").write_text(json.dumps({"driver": "sqlite3", "data_source": str(folder / "certs.db")}),
                                        encoding="ascii")
        self.serve = _Daemon([
            "serve", "-address", "127.0.0.1", "-port", str(self.port), "-ca", "ca.pem", "-ca-key", "ca-key.pem",
            "-config", "config.json", "-db-config", "db.json",
            "-tls-cert", "tls.pem", "-tls-key", "tls-key.pem",
            "-mutual-tls-ca", "ca.pem", "-mutual-tls-cn", "^est-gateway$"], self.port, folder / "serve.log", folder)
        self.ocspserve = _Daemon(["ocspserve", "-address", "127.0.0.1", "-port", str(self.ocsp_port),
                                  "-responses", "responses"], self.ocsp_port, folder / "ocsp.log", folder)
        self.crl_server: _CrlServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ocsp_url(self) -> str:
        return f"http://127.0.0.1:{self.ocsp_port}"

    @property
    def crl_url(self) -> str:
        assert self.crl_server is not None
        return f"http://127.0.0.1:{self.crl_server.port}/ca.crl"

    @property
    def ca_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.folder / "ca.pem").read_bytes())

    def _make_pki(self) -> None:
        f = self.folder
        (f / "ca-csr.json").write_text(json.dumps({"CN": "CFSSL Test CA", "key": {"algo": "ecdsa", "size": 256},
                                                   "names": [{"O": "est-gateway tests"}]}))
        _write_pair(f, "ca", cfssl("gencert", "-initca", "ca-csr.json", cwd=f))
        (f / "issue.json").write_text(json.dumps({"signing": {"default": {"expiry": "24h"}, "profiles": {
            "tls": {"expiry": "24h", "usages": ["digital signature", "server auth"]},
            "client": {"expiry": "24h", "usages": ["digital signature", "client auth"]},
            "ocsp": {"expiry": "24h", "usages": ["digital signature", "ocsp signing"]}}}}))
        for name, cn, profile, hosts in (("tls", "127.0.0.1", "tls", ["127.0.0.1"]),
                                         ("client", "est-gateway", "client", []),
                                         ("intruder", "intruder", "client", []),
                                         ("ocsp", "CFSSL Test OCSP", "ocsp", [])):
            (f / f"{name}-csr.json").write_text(json.dumps({"CN": cn, "hosts": hosts,
                                                            "key": {"algo": "ecdsa", "size": 256}}))
            _write_pair(f, name, cfssl("gencert", "-ca", "ca.pem", "-ca-key", "ca-key.pem", "-config",
                                       "issue.json", "-profile", profile, f"{name}-csr.json", cwd=f))

    def _write_config(self) -> None:
        auth = {"k1": {"type": "standard", "key": f"file:{self.auth_key_file}"}}
        ocsp = self.ocsp_url
        config = {"signing": {
            # The default profile deliberately gives serverAuth: what CFSSL signs with for an
            # unknown profile name.
            "default": {"expiry": "168h", "usages": ["digital signature", "key encipherment", "server auth"],
                        "ocsp_url": ocsp, "auth_key": "k1"},
            "profiles": {
                CLIENT_PROFILE: {"expiry": "24h", "usages": ["digital signature", "key encipherment",
                                                             "client auth"], "ocsp_url": ocsp, "auth_key": "k1"},
                UNAUTHENTICATED_PROFILE: {"expiry": "24h", "usages": ["digital signature", "client auth"]},
            }}, "auth_keys": auth}
        (self.folder / "config.json").write_text(json.dumps(config, indent=1), encoding="ascii")

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> CfsslCA:
        self.serve.start()
        self.publish_revocations()
        return self

    def stop(self) -> None:
        self.serve.stop()
        self.ocspserve.stop()
        if self.crl_server is not None:
            self.crl_server.stop()
            self.crl_server = None

    # -- the CA operator's side --------------------------------------------------------------

    def session(self, client: str = "client") -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.folder / "ca.pem")
        session.cert = (str(self.folder / f"{client}.pem"), str(self.folder / f"{client}-key.pem"))
        return session

    def revoke(self, certificate: x509.Certificate, reason: str = "keyCompromise") -> None:
        """CFSSL's own revoke API (decimal serial, the empty AKI this version stores), then
        publish the new status by OCSP and CRL."""
        with self.session() as session:
            answer = session.post(f"{self.url}/api/v1/cfssl/revoke", json={
                "serial": str(certificate.serial_number), "authority_key_id": "", "reason": reason})
        assert answer.status_code == 200, answer.text
        self.publish_revocations()

    def publish_revocations(self) -> None:
        """``ocsprefresh`` + ``ocspdump``, restart ``ocspserve``; a new CRL from ``gencrl``."""
        f = self.folder
        cfssl("ocsprefresh", "-db-config", "db.json", "-ca", "ca.pem", "-responder", "ocsp.pem",
              "-responder-key", "ocsp-key.pem", cwd=f)
        (f / "responses").write_bytes(cfssl("ocspdump", "-db-config", "db.json", cwd=f))
        self.ocspserve.stop()
        self.ocspserve.start()
        with sqlite3.connect(f / "certs.db") as db:
            rows = db.execute("SELECT serial_number FROM certificates WHERE status = 'revoked'").fetchall()
        db.close()
        (f / "revoked.txt").write_text("".join(f"{_text(r[0])}\n" for r in rows), encoding="ascii")
        crl = base64.b64decode(cfssl("gencrl", "revoked.txt", "ca.pem", "ca-key.pem", cwd=f))
        if self.crl_server is None:
            self.crl_server = _CrlServer(("127.0.0.1", 0), _CrlHandler).run()
        self.crl_server.crl = crl

    def backend_options(self, **more: Any) -> dict[str, Any]:
        """``[backends.<name>]`` for this CA (short timeouts for tests)."""
        f = self.folder
        return {"url": self.url, "client_cert": str(f / "client.pem"), "client_key": str(f / "client-key.pem"),
                "ca_bundle": str(f / "ca.pem"), "auth_key_file": str(self.auth_key_file),
                "connect_timeout_s": 1, "read_timeout_s": 2, "retries": 1, "retry_backoff_s": 0.01,
                "revocation": {"methods": ["ocsp"], "max_cache_s": 0, "timeout_s": 2}, **more}
