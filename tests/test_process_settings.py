"""Settings of the gateway's worker processes: glibc malloc (est_gateway.server.memory, freed
memory given back instead of staying resident in every worker) and their threads' scheduling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.gateway import curl, local_instance
from tests.support.pki import csr_b64, make_csr, p256_key

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc, /proc, SCHED_BATCH are Linux's")

MiB = 1024 * 1024
#: what one scrypt check of a password takes (log2 N = 14, r = 8: 128 * r * N bytes)
SCRYPT_BUFFER = 16 * MiB
ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> list[int]:
    """Run ``code`` in a fresh interpreter; the integers it prints."""
    code = "import os\nfrom tests.test_process_settings import heap_rss\n" + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    return [int(word) for word in out.split()]


def heap_rss(pid: int) -> int:
    """Resident bytes of a process's brk heap (where glibc's freed blocks stay)."""
    rss, name = 0, None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            name = parts[5] if len(parts) > 5 else None
        elif name == "[heap]" and line.startswith("Rss:"):
            rss += int(parts[1]) * 1024
    return rss


def test_release_freed_heap_gives_back_freed_scrypt_buffers() -> None:
    """Untuned glibc keeps the second scrypt buffer on the heap after it is freed (see
    below); releasing the freed heap gives its pages back."""
    before, after = _run("""
        import hashlib
        from est_gateway.server.memory import release_freed_heap
        for _ in range(3):
            hashlib.scrypt(b"password", salt=b"s" * 16, n=2**14, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
        print(heap_rss(os.getpid()))
        release_freed_heap()
        print(heap_rss(os.getpid()))
    """)
    assert before - after > SCRYPT_BUFFER * 3 // 4, (before, after)


@pytest.mark.parametrize("tuned", [True, False])
def test_with_tune_malloc_repeated_scrypt_checks_stay_off_the_heap(tuned: bool) -> None:
    """glibc's default raises its mmap threshold when the first 16 MiB block is unmapped, so
    the second one comes from the heap and stays resident; the worker's setting keeps each
    one mapped for its lifetime. (The untuned run shows the test can tell the two apart.)"""
    before, after = _run(f"""
        import hashlib
        from est_gateway.server.memory import tune_malloc
        if {tuned}:
            tune_malloc()
        print(heap_rss(os.getpid()))
        for _ in range(3):
            hashlib.scrypt(b"password", salt=b"s" * 16, n=2**14, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
        print(heap_rss(os.getpid()))
    """)
    grown = after - before
    if tuned:
        assert grown < 4 * MiB, grown
    else:
        assert grown > SCRYPT_BUFFER * 3 // 4, grown


def test_workers_do_not_inherit_the_arbiters_freed_scrypt_buffer(tmp_path: Path) -> None:
    """Local mode's password_file is hashed with scrypt when the arbiter loads the
    configuration; the 16 MiB it freed must not be resident in the workers forked after."""
    _, process = local_instance(tmp_path / "est-local")
    process.start()
    try:
        workers = process.workers(2)
        heaps = [heap_rss(pid) for pid in workers]
    finally:
        assert process.stop() == 0
    assert all(heap < SCRYPT_BUFFER for heap in heaps), heaps


def _name(pid: int, tid: str) -> str:
    return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()


def _policy(pid: int, tid: str) -> int:
    """A thread's scheduling policy: field 41 of /proc/<pid>/task/<tid>/stat."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[38])


def test_only_the_commit_thread_of_a_worker_runs_under_sched_batch(tmp_path: Path) -> None:
    """The commit thread (named est-commit) runs under SCHED_BATCH, so that waking it for a
    commit does not take the core from the event loop (est_gateway.server.cooperative); the
    loop and the request pool keep the normal policy (their latency would suffer)."""
    instance, process = local_instance(tmp_path / "est-local")
    process.start()
    try:
        workers = process.workers(2)
        # a local enrollment starts the commit thread, /healthz the pool's threads
        for _ in range(6):
            assert curl(f"https://127.0.0.1:{process.port}/healthz", cacert=instance.trust_anchor).status == 200
            assert curl("-u", f"estuser:{instance.password()}", "-H", "Content-Type: application/pkcs10",
                        "--data-binary", csr_b64(make_csr(p256_key(), cn="sched")).decode(),
                        f"https://127.0.0.1:{process.port}/.well-known/est/simpleenroll",
                        cacert=instance.trust_anchor).status == 200
        threads = {(pid, tid): (_policy(pid, tid), _name(pid, tid))
                   for pid in workers for tid in os.listdir(f"/proc/{pid}/task")}
    finally:
        assert process.stop() == 0
    commit = {key for key, (_, name) in threads.items() if name == "est-commit"}
    assert commit and {threads[key][0] for key in commit} == {os.SCHED_BATCH}, threads
    others = {key: policy for key, (policy, _) in threads.items() if key not in commit}
    assert len(others) > len(workers) and set(others.values()) == {os.SCHED_OTHER}, threads
