"""docs/example-plugin, the plugin docs/plugins.md walks through, as a plugin author ships it:
built and installed as its own distribution, found through its entry point, and passing
the public contract suite (est_gateway.testing) with its own tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from est_gateway.testing import BackendContract

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-plugin"
#: the backends that run the contract suite (tests/test_contract.py, tests/test_remote.py)
CONTRACT_SUITES = 2
#: the example's own tests beyond the contract suite (two, and the remote backend's answer table)
OWN_TESTS = 2 + 7


def _run(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_example_plugin_installs_and_passes_the_contract_suite(tmp_path: Path) -> None:
    source, site, run = tmp_path / "source", tmp_path / "site", tmp_path / "run"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    _run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
         "--target", str(site), str(source), cwd=tmp_path, env=os.environ.copy())

    # The gateway's registry finds it by its entry point, imported from the installed copy.
    found = _run(sys.executable, "-c", "from est_gateway.backends.registry import BackendRegistry; "
                 "import inspect; cls = BackendRegistry().load('example-file-ca'); "
                 "print(cls.__name__, inspect.getfile(cls))", cwd=tmp_path, env=env)
    name, path = found.split()
    assert name == "FileCABackend" and Path(path).is_relative_to(site)

    # Its own tests, run apart from its source: the contract suite against the installed plugin.
    run.mkdir()
    shutil.copytree(source / "tests", run / "tests")
    shutil.copy(source / "pyproject.toml", run / "pyproject.toml")     # its pytest settings
    shutil.rmtree(source)
    out = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=run, env=env)
    contract = len([name for name in dir(BackendContract) if name.startswith("test_")])
    assert re.search(rf"\b{CONTRACT_SUITES * contract + OWN_TESTS} passed\b", out), out
    assert not re.search(r"\b(failed|skipped|error|xfailed)\b", out), out
