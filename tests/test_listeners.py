"""More than one address: each listener's connections reach its own application, over TLS
or plain HTTP as the listener says, in the same worker processes as EST."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from est_gateway import localmode
from est_gateway.server.runner import Listener
from tests.support.gateway import curl, free_port, listening

#: a gateway whose EST listener is the local CA's, plus a TLS and a plain listener, each
#: with an application that names itself
SCRIPT = textwrap.dedent("""\
    import sys
    from est_gateway.cli import _start
    from est_gateway.config import load_config
    from est_gateway.server.runner import GatewayServer, Listener
    from est_gateway.web.app import create_app

    def named(name):
        def app(environ, start_response):
            body = f"{name} {environ['wsgi.url_scheme']} {environ['PATH_INFO']}".encode()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        return app

    config = load_config(sys.argv[1])
    _start(config)
    more = [Listener("secure", "127.0.0.1", int(sys.argv[2]), True, named("secure")),
            Listener("plain", "127.0.0.1", int(sys.argv[3]), False, named("plain"))]
    GatewayServer(config, create_app(config), more=more).run()
""")


@pytest.fixture
def gateway(tmp_path: Path):  # type: ignore[no-untyped-def]
    est, secure, plain = free_port(), free_port(), free_port()
    instance, _ = localmode.prepare(tmp_path / "est-local", port=est)
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, str(script), str(instance.config), str(secure), str(plain)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not listening(plain):
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
            time.sleep(0.2)
        yield instance, est, secure, plain
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def gateway_log(instance: localmode.LocalInstance) -> str:
    return (instance.folder.parent / "gateway.log").read_text()


def test_each_listener_reaches_its_own_application(gateway) -> None:  # type: ignore[no-untyped-def]
    instance, est, secure, plain = gateway
    assert curl(f"https://127.0.0.1:{secure}/x", cacert=instance.trust_anchor).body == b"secure https /x"
    assert curl(f"http://127.0.0.1:{plain}/y").body == b"plain http /y"
    cacerts = curl(f"https://127.0.0.1:{est}/.well-known/est/cacerts", cacert=instance.trust_anchor)
    assert cacerts.status == 200 and cacerts.headers["content-type"] == "application/pkcs7-mime"
    listening = [line for line in gateway_log(instance).splitlines() if "Listening at:" in line]
    assert listening and all(f"https://127.0.0.1:{secure}/ (secure)" in line and f"http://127.0.0.1:{plain}/ (plain)"
                             in line and f"https://127.0.0.1:{est}/.well-known/est" in line for line in listening)


def test_a_plain_listener_does_not_speak_tls_and_a_tls_one_not_plain(gateway) -> None:  # type: ignore[no-untyped-def]
    instance, _est, secure, plain = gateway
    with pytest.raises(RuntimeError, match="curl failed"):
        curl(f"https://127.0.0.1:{plain}/y", cacert=instance.trust_anchor, timeout=10)
    with pytest.raises(RuntimeError, match="curl failed"):
        curl(f"http://127.0.0.1:{secure}/x", timeout=10)


def test_a_listener_names_its_address_as_gunicorn_binds_it() -> None:
    def app(environ: object, start_response: object) -> list[bytes]:
        return []

    assert Listener("console", "127.0.0.1", 8444, True, app).bind == "127.0.0.1:8444"
    assert Listener("console", "::1", 8444, True, app).bind == "[::1]:8444"
