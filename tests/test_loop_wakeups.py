"""The event loop's wake-ups (est_gateway.server.loop): a connection given back by the
loop's own thread (an answer made in the loop) is taken back without a write to the
wake-up pipe and without the loop waiting in ``select`` meanwhile; one given back by
another thread wakes it."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from est_gateway.config.model import ServerSettings
from est_gateway.server import loop as loop_module
from est_gateway.server.http11 import Limits
from est_gateway.server.loop import Client, ConnectionLoop
from est_gateway.server.tls import ClientChainLimits

ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"
REQUEST = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


class Served:
    """A loop on a plain listener whose answers are made by ``answer(client)``."""

    def __init__(self, answer_in: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.answer_in = answer_in
        self.running = True
        self.wakes = 0
        self.answerers: list[threading.Thread] = []
        self.blocking_selects_while_given_back = 0
        self.loop = ConnectionLoop(
            [self.listener], ServerSettings(), tls_context=None, chain_limits=ClientChainLimits(8, 10, 32768),
            dispatch=self._dispatch, alive=lambda: self.running, heartbeat=lambda: None, wakeup_fds=[],
            log=logging.getLogger("test-loop"), max_connections=64,
            limits=Limits(max_fields=100, max_field_bytes=16384, max_body=65536))
        wake_w = self.loop._wake_w
        real_write, real_select = os.write, self.loop.selector.select

        def counting_write(fd: int, data: bytes) -> int:
            if fd == wake_w:
                self.wakes += 1
            return real_write(fd, data)

        def watched_select(timeout: float | None = None) -> Any:
            if timeout and self.loop._returned:
                self.blocking_selects_while_given_back += 1
            return real_select(timeout)

        self._patch = (counting_write, watched_select)

    def _dispatch(self, client: Client) -> None:
        def answer() -> None:
            client.request = None
            client.conn.write_nowait(ANSWER)
            self.loop.give_back(client, keep_alive=True)
        if self.answer_in == "loop":
            answer()
        else:
            self.answerers.append(threading.Thread(target=answer))
            self.answerers[-1].start()


@pytest.fixture(params=["loop", "thread"])
def served(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    it = Served(request.param)
    counting_write, watched_select = it._patch
    monkeypatch.setattr(loop_module.os, "write", counting_write)
    monkeypatch.setattr(it.loop.selector, "select", watched_select)
    runner = threading.Thread(target=it.loop.run)
    runner.start()
    yield it
    it.running = False
    runner.join(10)
    it.listener.close()


def test_answers_made_in_the_loop_wake_nothing_and_are_taken_back_at_once(served: Served) -> None:
    with socket.create_connection(served.listener.getsockname(), timeout=10) as client:
        for _ in range(20):                        # one keep-alive connection, request after request
            client.sendall(REQUEST)
            got = b""
            while not got.endswith(b"\r\n\r\n"):
                got += client.recv(4096)
            assert got == ANSWER
    if served.answer_in == "loop":
        assert served.wakes == 0
        assert served.blocking_selects_while_given_back == 0
    else:                                          # another thread must wake the loop
        for answerer in served.answerers:          # each gives back after its answer is sent
            answerer.join(10)
        assert served.wakes >= 20
