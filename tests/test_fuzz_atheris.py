"""The coverage-guided harness (fuzz/fuzz_request.py) runs in CI, bounded in runs and time.

Longer runs are documented in docs/security.md; a crash leaves ``crash-<sha1>`` in
the working directory of the run (here: the test's tmp folder) with the input to replay.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

ROOT = Path(__file__).resolve().parent.parent
RUNS, SECONDS = 2500, 20


def test_fuzz_harness_bounded_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    done = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_request.py"), f"-runs={RUNS}", f"-max_total_time={SECONDS}",
         "-seed=7", "-timeout=10", "-rss_limit_mb=1024", "-print_final_stats=1", str(corpus)],
        cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS + 60,
        env={**os.environ, "FUZZ_STATE_DIR": str(tmp_path / "state")})
    log = done.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    tail = "\n".join(line for line in log.splitlines() if not line.startswith(("INFO: Instrumenting", "{")))[-3000:]
    assert done.returncode == 0 and not crashes, f"fuzzer failed ({done.returncode}), inputs {crashes}:\n{tail}"
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+)", log)
    assert runs and int(runs.group(1)) >= 200, tail
    print(f"atheris: {runs.group(1)} inputs, coverage {cov[-1] if cov else '?'} edges, corpus "
          f"{len(list(corpus.iterdir()))} files")
