"""Client connections, used two ways.

The worker's event loop (``est_gateway.server.loop``) drives them non-blocking:
:meth:`Connection.handshake_step`, :meth:`Connection.read_nowait` and
:meth:`Connection.send_interim` never wait. A thread then writes the answer to the
complete request with :meth:`Connection.sendall`, whose every write waits in ``select``
for at most the per-operation timeout *and* never past the connection's ``deadline``: a
client that reads its answer one byte at a time cannot hold a thread longer than
``request_timeout_s``, which a per-write timeout alone would allow.
"""

from __future__ import annotations

import select
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
#: bytes handed to one write (one TLS record's worth)
WRITE_CHUNK = 16384


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
        #: the selector event :meth:`read_nowait` waits for when it returned None
        self.wants = selectors.EVENT_READ
        #: an interim answer the socket did not take at once: sent before the next write
        self._unsent = b""

    # -- non-blocking, for the event loop ---------------------------------------------------

    def handshake_step(self) -> int:
        """Advance the handshake: 0 when complete, else the selector event it waits for."""
        return 0

    def read_nowait(self, size: int) -> bytes | None:
        """What has arrived (at most ``size`` bytes), None if nothing yet, b"" at the end."""
        try:
            return self._raw.recv(size)
        except BlockingIOError:
            return None
        except (ConnectionResetError, TimeoutError):
            return b""

    def pending(self) -> int:
        """Bytes read from the socket but not yet returned (TLS records); plain sockets: 0."""
        return 0

    def send_interim(self, data: bytes) -> None:
        """Send a short interim answer (``100 Continue``) if the socket takes it now; what it
        does not take is sent before the final answer. Never waits."""
        try:
            sent = self._send_nowait(data)
        except self._would_block:
            self._unsent = self._retry_unsent(data)
            return
        except OSError:
            return   # the connection is gone; reading notices
        self._unsent = data[sent:]

    def _send_nowait(self, data: bytes) -> int:
        return self._raw.send(data)

    def write_nowait(self, data: bytes) -> None:
        """Write what the socket takes now and keep the rest for :meth:`sendall`, which a
        thread calls when :attr:`unsent` (never waits; OSError when the connection is gone)."""
        view = memoryview(self._unsent + data if self._unsent else data)
        self._unsent = b""
        while view:
            try:
                sent = self._send_nowait(bytes(view[:WRITE_CHUNK]))
            except self._would_block:
                # TLS: OpenSSL wants the same bytes again; plain: none of them were sent
                self._unsent = bytes(view)
                return
            view = view[sent:]

    @property
    def _would_block(self) -> tuple[type[BaseException], ...]:
        """What a write that would have to wait raises."""
        return (BlockingIOError, *self.WANT_READ, *self.WANT_WRITE)

    @property
    def unsent(self) -> bool:
        """Part of an answer is still to be written (see :meth:`write_nowait`)."""
        return bool(self._unsent)

    def _retry_unsent(self, data: bytes) -> bytes:
        """What must still go out after a write that would have blocked: nothing (a plain
        socket took none of it; RFC 9110 §10.1.1 lets the client send its body anyway)."""
        return b""

    # -- blocking with bounds, for the thread serving a request ------------------------------

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
        if self._unsent:
            unsent, self._unsent = self._unsent, b""
            self.sendall(unsent)
        view = memoryview(data)
        while view:
            sent = self.send(view[:WRITE_CHUNK])
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

    def shutdown(self, how: int) -> None:
        self._raw.shutdown(how)

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

    def send(self, data: bytes | memoryview) -> int:
        return self._io(self._raw.send, data, reading=False)
