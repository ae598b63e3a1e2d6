"""Client connections as gunicorn's parser sees them: blocking sockets, with bounds.

Underneath, sockets are non-blocking and every read or write waits in ``select`` for at
most the per-operation timeout *and* never past the connection's ``deadline``. The
deadline bounds a whole request, so a client that drips one byte at a time (slowloris)
cannot hold a thread longer than ``request_timeout_s``, which a per-read timeout alone
would allow.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Connection:
    """Base of :class:`PlainSocket` and ``TLSSocket``: timeouts, deadline, socket plumbing."""

    #: exceptions meaning "wait until readable / writable, then call again"
    WANT_READ: tuple[type[BaseException], ...] = ()
    WANT_WRITE: tuple[type[BaseException], ...] = ()

    def __init__(self, raw: socket.socket) -> None:
        raw.setblocking(False)
        self._raw = raw
        self._timeout: float | None = None
        #: absolute time.monotonic() after which no read or write waits any longer
        self.deadline: float | None = None
        self.info: Any = None

    def _io(self, call: Callable[..., T], *args: Any, reading: bool) -> T:
        end = self._end()
        while True:
            try:
                return call(*args)
            except self.WANT_READ:
                self._wait(end, read=True)
            except self.WANT_WRITE:
                self._wait(end, read=False)
            except BlockingIOError:
                self._wait(end, read=reading)

    def _end(self) -> float | None:
        ends = [t for t in (self.deadline, None if self._timeout is None else time.monotonic() + self._timeout)
                if t is not None]
        return min(ends) if ends else None

    def _wait(self, end: float | None, *, read: bool) -> None:
        remaining = None if end is None else end - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("client too slow")
        fds = [self._raw]
        ready = select.select(fds, [], [], remaining) if read else select.select([], fds, [], remaining)
        if not any(ready):
            raise TimeoutError("client too slow")

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self.send(view[:16384])
            view = view[sent:]

    def send(self, data: bytes | memoryview) -> int:
        raise NotImplementedError

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def close(self) -> None:
        self._raw.close()

    @property
    def family(self) -> int:
        return int(self._raw.family)

    def fileno(self) -> int:
        return self._raw.fileno()

    def getsockname(self) -> Any:
        return self._raw.getsockname()

    def getpeername(self) -> Any:
        return self._raw.getpeername()

    def setsockopt(self, *args: Any) -> None:
        self._raw.setsockopt(*args)


class PlainSocket(Connection):
    """Plain HTTP (behind a proxy), with the same bounds as TLS connections."""

    def recv(self, size: int) -> bytes:
        return self._io(self._raw.recv, size, reading=True)

    def send(self, data: bytes | memoryview) -> int:
        return self._io(self._raw.send, data, reading=False)

    def shutdown(self, how: int) -> None:
        self._raw.shutdown(how)
