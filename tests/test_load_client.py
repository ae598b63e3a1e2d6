"""The load client's TLS connection under a gateway killed mid-connect.

A gateway SIGKILLed with connections in its accept queue resets them. CPython 3.11's
``SSLContext.wrap_socket`` on such a connected-then-reset socket moves the descriptor into
a new SSLSocket and raises ECONNRESET without closing it, so the garbage collector later
reports it (a ResourceWarning, an error here) from whatever code runs. The client therefore
wraps its socket before connecting it: a reset can only come after, with the socket in hand.
"""

from __future__ import annotations

import errno
import gc
import socket
import ssl
import threading

import pytest

from tests.support.load import TLSConnection


class _RecordingContext(ssl.SSLContext):
    """A real client context that notes whether each socket it wraps was already connected."""

    wrapped_connected: list[bool]

    def wrap_socket(self, sock: socket.socket, *args: object, **kwargs: object) -> ssl.SSLSocket:
        try:
            sock.getpeername()
            self.wrapped_connected.append(True)
        except OSError as exc:
            assert exc.errno == errno.ENOTCONN, exc
            self.wrapped_connected.append(False)
        return super().wrap_socket(sock, *args, **kwargs)  # type: ignore[arg-type]


def test_a_connection_reset_in_the_accept_queue_leaves_no_socket_behind() -> None:
    context = _RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.wrapped_connected = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reset = threading.Timer(0.3, listener.close)   # never accepts; closing resets the queued connection
    reset.start()
    conn = TLSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        with pytest.raises(OSError):
            conn.connect()
    finally:
        conn.close()
        reset.join()
    assert context.wrapped_connected == [False], "a connected socket was wrapped: a reset there strands it"
    gc.collect()   # anything left unclosed would be reported here, an error under filterwarnings=error
