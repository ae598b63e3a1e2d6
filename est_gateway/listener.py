"""The gateway's TCP socket, bound before anything else at start-up (see ``est-gateway serve``).

Bound first, a busy port is one clear line, before any banner and before anything is
created. Imports nothing of the serving code: ``prometheus_client`` must not be imported
before the metrics folder is set up.
"""

from __future__ import annotations

import errno
import socket

from est_gateway.config.model import ServerSettings


class StartupError(Exception):
    """The gateway cannot start: one line for the operator."""


def bind(server: ServerSettings, *, change_port: str) -> socket.socket | None:
    """The bound TCP socket gunicorn will listen and serve on (None for a Unix socket, which
    gunicorn creates with its umask). ``change_port`` tells the operator how to choose
    another port (``--port``, or the configuration's ``listen``)."""
    if server.unix_socket is not None:
        return None
    return bind_address(server.host, server.port, change_port=change_port)


def bind_address(host: str, port: int, *, change_port: str) -> socket.socket:
    """A TCP socket bound to ``host``:``port``; :class:`StartupError` naming it if not."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)      # as gunicorn binds
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen on {address}: another program is listening there; "
                               f"stop it or choose another port ({change_port})") from None
        raise StartupError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    # Bound, not yet listening: connections are refused until gunicorn listens, as
    # before, so a client never waits on a gateway that is still starting (or failing).
    return sock
