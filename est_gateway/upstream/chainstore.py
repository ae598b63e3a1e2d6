"""CA chains learnt from enrollment answers, kept in a state folder so that a restart and
every worker process serve them (EJBCA before 8.1 offers no CA download over REST).

One PEM file per CA name (``<folder>/ca-chain-<sha256 of the name>.pem``), written to a
temporary file and renamed, so a reader never sees half a chain. Readers re-read a file
whose identity (inode, modification time, size) changed, so a chain one worker learns
reaches the others. A
folder that cannot be written is logged once and the chain is kept in memory only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

log = logging.getLogger(__name__)


class ChainStore:
    """Per-CA chains: memory first, then the state folder."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[x509.Certificate, ...]] = {}
        self._seen: dict[str, tuple[int, int, int]] = {}
        self._warned = False

    def _path(self, ca: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"ca-chain-{hashlib.sha256(ca.encode()).hexdigest()[:32]}.pem"

    def get(self, ca: str) -> tuple[x509.Certificate, ...]:
        """The chain last learnt for ``ca`` by any process sharing the folder; ``()`` if none."""
        path = self._path(ca)
        if path is not None:
            mtime = _signature(path)
            if mtime is not None and self._seen.get(ca) != mtime:
                try:
                    chain = tuple(x509.load_pem_x509_certificates(path.read_bytes()))
                except (OSError, ValueError):
                    log.warning("ignoring the unreadable CA chain file %s", path)
                else:
                    with self._lock:
                        self._memory[ca], self._seen[ca] = chain, mtime
        with self._lock:
            return self._memory.get(ca, ())

    def put(self, ca: str, chain: tuple[x509.Certificate, ...]) -> None:
        """Remember ``chain`` for ``ca``; written only when it changed."""
        with self._lock:
            if self._memory.get(ca) == chain:
                return
            self._memory[ca] = chain
        path = self._path(ca)
        if path is None:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ca-chain-", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(b"".join(c.public_bytes(Encoding.PEM) for c in chain))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            written = _signature(path)
            with self._lock:
                if written is not None:
                    self._seen[ca] = written
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot keep the learnt CA chain in %s (%s); it lives in this process "
                            "only until the next restart", path.parent, exc.strerror)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
