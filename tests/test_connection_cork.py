"""A corked connection holds an answer's writes back and sends them in one write."""

from __future__ import annotations

import socket

import pytest

from est_gateway.server.connection import PlainSocket


def test_corked_writes_leave_together_on_uncork() -> None:
    ours, peer = socket.socketpair()
    conn = PlainSocket(ours)
    try:
        peer.setblocking(False)
        conn.cork()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        conn.sendall(b"body")
        with pytest.raises(BlockingIOError):   # nothing sent while corked
            peer.recv(100)
        conn.uncork()
        peer.setblocking(True)
        peer.settimeout(5)
        assert peer.recv(100) == b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
        conn.sendall(b"next")                   # uncorked: written at once
        assert peer.recv(100) == b"next"
    finally:
        conn.close()
        peer.close()
