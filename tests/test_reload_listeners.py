"""A reload rebuilds the other listeners' applications too: after SIGHUP the workers
serve the new one on the same address; a listener moved to another address is refused
(new sockets need a restart) and the running ones keep serving."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from est_gateway import localmode
from tests.support.gateway import children_of, curl, free_port

#: a gateway whose rebuild reads the extra listener's port and answer from a file
SCRIPT = textwrap.dedent("""\
    import logging
    import sys
    from pathlib import Path
    from est_gateway.cli import _start
    from est_gateway.config import load_config
    from est_gateway.server.runner import GatewayServer, Listener, Served
    from est_gateway.web.app import create_app

    def named(text):
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [text.encode()]
        return app

    def build():
        config = load_config(sys.argv[1])
        _start(config)
        port, text = Path(sys.argv[2]).read_text().split()
        return Served(config, create_app(config), (Listener("console", "127.0.0.1", int(port), False, named(text)),))

    logging.basicConfig(level="INFO")
    first = build()
    GatewayServer(first.config, first.app, more=first.more, rebuild=build).run()
""")


def _reloaded(proc: subprocess.Popen[bytes], log: Path, count: int) -> None:
    """Wait until the ``count``-th reload is logged and its workers alone serve."""
    before = children_of(proc.pid)
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while log.read_text().count("Hang up") < count or not (now := children_of(proc.pid)) \
            or set(now) & set(before):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def test_a_reload_serves_the_new_listener_app_and_refuses_a_moved_listener(tmp_path: Path) -> None:
    est, console = free_port(), free_port()
    instance, _ = localmode.prepare(tmp_path / "est-local", port=est)
    script, listener, log_path = tmp_path / "serve.py", tmp_path / "listener.txt", tmp_path / "gateway.log"
    script.write_text(SCRIPT)
    listener.write_text(f"{console} first")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(instance.config), str(listener)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(children_of(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert curl(f"http://127.0.0.1:{console}/").body == b"first"
        listener.write_text(f"{console} second")
        _reloaded(proc, log_path, 1)
        assert curl(f"http://127.0.0.1:{console}/").body == b"second"
        listener.write_text(f"{free_port()} third")
        _reloaded(proc, log_path, 2)
        assert curl(f"http://127.0.0.1:{console}/").body == b"second"
        assert curl(f"https://127.0.0.1:{est}/.well-known/est/cacerts", cacert=instance.trust_anchor).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    assert text.count("reloaded") == 1 and "the listening addresses changed" in text, text[-3000:]
    assert "Traceback" not in text
