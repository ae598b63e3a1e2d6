"""Small loopback HTTP(S) servers for tests: quiet handlers, background serving, clean stop."""

from __future__ import annotations

import http.server
import ssl
import sys
import threading
from typing import Any, Self


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """No access log on stderr; a client that hung up before the answer is not an error."""

    def send_body(self, status: int, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


class BackgroundServer(http.server.ThreadingHTTPServer):
    """Serves from a daemon thread once :meth:`run` is called; :meth:`stop` closes it quickly."""

    daemon_threads = True

    def run(self) -> Self:
        # a short poll interval: shutdown() waits for it, once per test
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (the test's point, often) is not worth a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    @property
    def port(self) -> int:
        return int(self.server_address[1])
