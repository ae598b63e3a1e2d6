"""Faults the EJBCA stand-in does not model: connection resets mid-response, an expired
upstream TLS certificate, and a stand-in that goes away and comes back on the same port."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import struct
import threading
from typing import Any

from cryptography import x509

from tests.support import ejbca_standin
from tests.support.ejbca_standin import StandinEjbca, UpstreamPKI
from tests.support.pki import rsa_key, write_pem


class _ResettingHandler(ejbca_standin._Handler):
    """``standin.fault`` "reset-mid-response": status line, headers and part of the body,
    then a TCP reset; "reset-before-response": the request is read, then a reset."""

    def _dispatch(self) -> None:
        fault = self.server.standin.fault
        if fault not in ("reset-mid-response", "reset-before-response"):
            return super()._dispatch()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.standin.calls.append({"method": self.command, "path": self.path, "fault": fault})
        if fault == "reset-mid-response":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                             b'{"certificate": "MIIB')
            self.wfile.flush()
        # No close_notify and SO_LINGER 0: the close is a TCP reset, not a clean end.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
        return None

    def setup(self) -> None:
        super().setup()
        self.server.live.add(self.connection)   # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


class FaultServer:
    """The stand-in behind HTTPS on a chosen (or free) port; can stop and start again there."""

    def __init__(self, standin: StandinEjbca, context: ssl.SSLContext, port: int = 0) -> None:
        self.standin, self.context = standin, context
        self.port = port
        self.httpd: Any = None

    def start(self) -> FaultServer:
        httpd = ejbca_standin._Server(("127.0.0.1", self.port), _ResettingHandler)
        httpd.standin = self.standin
        httpd.live = set()
        # A hang outlives the gateway's read timeout: writing to the closed connection then
        # is expected, not worth socketserver's traceback on stderr.
        httpd.handle_error = lambda request, address: None
        httpd.socket = self.context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = int(httpd.server_address[1])
        self.httpd = httpd
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down as a crashed upstream is: listener closed, kept-alive connections cut."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            for conn in list(self.httpd.live):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.httpd = None

    @property
    def rest_url(self) -> str:
        return f"https://127.0.0.1:{self.port}{ejbca_standin.REST}"

    @property
    def ws_url(self) -> str:
        return f"https://127.0.0.1:{self.port}{ejbca_standin.WS}"


def expired_server_context(pki: UpstreamPKI) -> ssl.SSLContext:
    """A server context whose certificate comes from the trusted management CA but expired."""
    key = rsa_key()
    now = dt.datetime.now(dt.UTC)
    cert = pki.management.issue(key, cn="127.0.0.1", eku=("serverAuth",),
                                sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                                not_before=now - dt.timedelta(days=60), not_after=now - dt.timedelta(days=1))
    write_pem(pki.folder / "expired-server.pem", cert)
    write_pem(pki.folder / "expired-server.key", key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.folder / "expired-server.pem", pki.folder / "expired-server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(pki.ca_bundle))
    return context
