"""Client connections, driven only by the worker's event loop (``est_gateway.server.loop``).

Nothing here ever blocks: :meth:`Connection.handshake_step`, :meth:`Connection.read_nowait`,
:meth:`Connection.send_interim` and :meth:`Connection.flush` do what the socket allows now
and say which selector event to wait for. An answer is queued whole (:meth:`Connection.queue`)
and written by the loop as the socket drains; the loop bounds how long that may take.
"""

from __future__ import annotations

import selectors
import socket
from typing import Any

#: bytes handed to one write (one TLS record's worth)
WRITE_CHUNK = 16384


class Connection:
    """Base of :class:`PlainSocket` and ``TLSSocket``: the non-blocking socket plumbing."""

    #: exceptions meaning "wait until readable / writable, then call again"
    WANT_READ: tuple[type[BaseException], ...] = ()
    WANT_WRITE: tuple[type[BaseException], ...] = ()

    def __init__(self, raw: socket.socket) -> None:
        raw.setblocking(False)
        self._raw = raw
        self.info: Any = None
        #: the selector event the last call that could not finish waits for
        self.wants = selectors.EVENT_READ
        #: bytes queued for the client (an interim answer, then the answer) and how far written
        self._out = b""
        self._sent = 0

    # -- reading -----------------------------------------------------------------------------

    def handshake_step(self) -> int:
        """Advance the handshake: 0 when complete, else the selector event it waits for."""
        return 0

    def read_nowait(self, size: int) -> bytes | None:
        """What has arrived (at most ``size`` bytes), None if nothing yet, b"" at the end."""
        try:
            return self._raw.recv(size)
        except BlockingIOError:
            self.wants = selectors.EVENT_READ
            return None
        except (ConnectionResetError, TimeoutError):
            return b""

    # -- writing -----------------------------------------------------------------------------

    def send_interim(self, data: bytes) -> None:
        """Send a short interim answer (``100 Continue``) if the socket takes it now; what it
        does not take is written before the final answer."""
        if self.unsent:      # bytes of an earlier interim answer go first
            self.queue(data)
            return
        try:
            sent = self._send_nowait(data)
        except self._would_block:
            self._out, self._sent = self._retry_unsent(data), 0
            return
        except OSError:
            return   # the connection is gone; reading notices
        self._out, self._sent = data[sent:], 0

    def queue(self, data: bytes) -> None:
        """Queue an answer behind whatever is still unsent; :meth:`flush` writes it."""
        self._out = self._out[self._sent:] + data if self.unsent else data
        self._sent = 0

    @property
    def unsent(self) -> int:
        """Bytes queued and not yet written."""
        return len(self._out) - self._sent

    def flush(self) -> bool:
        """Write what the socket takes now; True when nothing is left. Otherwise :attr:`wants`
        is the event to wait for. OSError: the connection is gone."""
        out = memoryview(self._out)
        while self._sent < len(out):
            try:
                # TLS: a write that would block is repeated with the same bytes, as OpenSSL asks
                self._sent += self._send_nowait(out[self._sent:self._sent + WRITE_CHUNK])
            except self.WANT_READ:
                self.wants = selectors.EVENT_READ
                return False
            except self._waits_to_write:
                self.wants = selectors.EVENT_WRITE
                return False
        self._out, self._sent = b"", 0     # the answer is not kept once it is written
        self.wants = selectors.EVENT_READ
        return True

    def _send_nowait(self, data: bytes | memoryview) -> int:
        return self._raw.send(data)

    @property
    def _waits_to_write(self) -> tuple[type[BaseException], ...]:
        return (BlockingIOError, *self.WANT_WRITE)

    @property
    def _would_block(self) -> tuple[type[BaseException], ...]:
        """What a write that would have to wait raises."""
        return (BlockingIOError, *self.WANT_READ, *self.WANT_WRITE)

    def _retry_unsent(self, data: bytes) -> bytes:
        """What must still go out after a write that would have blocked: nothing (a plain
        socket took none of it; RFC 9110 §10.1.1 lets the client send its body anyway)."""
        return b""

    # -- socket plumbing ---------------------------------------------------------------------

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


class PlainSocket(Connection):
    """Plain HTTP (behind a proxy), with the same bounds as TLS connections."""
