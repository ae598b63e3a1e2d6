"""glibc malloc settings for the gateway's processes (no-ops where glibc is absent).

A process's resident memory (RSS) counts every page it touched and did not give back,
freed or not, and a worker counts the pages it shares with the arbiter it was forked from.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_malloc(arenas: int = 2, mmap_threshold: int = 1024 * 1024) -> None:
    """In a worker, before its threads start. glibc gives every thread its own malloc arena,
    which grows a worker's resident memory with its thread count; two arenas keep it near
    that of a single thread.

    A fixed mmap threshold keeps glibc from raising it after a large block is freed (its
    default): otherwise the first scrypt check's 16 MiB buffer is mapped and unmapped, but
    every later one comes from an arena and stays resident after it is freed. Blocks above
    the threshold are mapped for their lifetime and returned to the system when freed."""
    libc = _libc()
    if libc is None:
        return
    try:
        libc.mallopt(M_ARENA_MAX, arenas)
        libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)   # also stops its dynamic raise
    except AttributeError:
        pass


def release_freed_heap() -> None:
    """In the arbiter, before it forks a worker: give back the heap pages it freed while
    loading. Hashing a ``password_file``'s password with scrypt takes 16 MiB, which glibc
    takes from the heap and keeps resident once freed; every worker inherited those pages
    and counted them in its RSS (measured: a worker's heap 21.6 MiB at start, 8.8 after)."""
    libc = _libc()
    if libc is None:
        return
    try:
        libc.malloc_trim(0)
    except AttributeError:
        pass
