"""The event loop's writes: ``100 Continue`` sent at once when the socket takes it, skipped
(never waited for) when it would block; an answer written as far as the socket takes it,
the rest when it drains, in order."""

from __future__ import annotations

import selectors
import socket

from est_gateway.server.connection import PlainSocket
from est_gateway.server.http11 import CONTINUE


def read_exactly(peer: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = peer.recv(size - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


def test_the_interim_answer_goes_out_at_once_before_the_final_one() -> None:
    ours, peer = socket.socketpair()
    conn = PlainSocket(ours)
    try:
        peer.settimeout(5)
        conn.send_interim(CONTINUE)
        assert read_exactly(peer, len(CONTINUE)) == CONTINUE
        conn.queue(b"final")
        assert conn.flush() and conn.unsent == 0
        assert read_exactly(peer, 5) == b"final"
    finally:
        conn.close()
        peer.close()


def test_a_full_socket_never_makes_the_loop_wait_for_the_interim_answer() -> None:
    ours, peer = socket.socketpair()
    conn = PlainSocket(ours)
    try:
        filled = 0
        for size in (65536, 1):  # the peer reads nothing: fill both buffers to the last byte
            while True:
                try:
                    filled += ours.send(b"x" * size)
                except BlockingIOError:
                    break
        conn.send_interim(CONTINUE)      # returns at once: the socket is non-blocking
        peer.settimeout(5)
        assert read_exactly(peer, filled) == b"x" * filled
        conn.queue(b"final")
        assert conn.flush()
        # skipped, or (had the kernel found room for it after all) whole and before the answer
        rest = read_exactly(peer, 5)
        if rest != b"final":
            assert rest + read_exactly(peer, len(CONTINUE)) == CONTINUE + b"final"
    finally:
        conn.close()
        peer.close()


def test_an_answer_the_socket_cannot_take_waits_in_the_connection_and_never_blocks() -> None:
    ours, peer = socket.socketpair()
    conn = PlainSocket(ours)
    try:
        answer = bytes(range(256)) * 8192           # 2 MiB: more than both socket buffers
        conn.queue(answer)
        assert not conn.flush()                      # returns at once: the peer reads nothing
        assert 0 < conn.unsent < len(answer) and conn.wants == selectors.EVENT_WRITE
        conn.queue(b"next")                          # a later answer goes behind it
        peer.settimeout(5)
        got = b""
        while len(got) < len(answer) + 4:
            conn.flush()
            got += peer.recv(1 << 20)
        assert got == answer + b"next" and conn.unsent == 0
    finally:
        conn.close()
        peer.close()
