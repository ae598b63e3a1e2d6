"""Packaging: the core distribution on its own (no vendor plugin, no zeep or lxml, no
top-level ``plugins`` package, a working local-CA gateway), and each
in-tree plugin as a distribution of its own that imports only the public plugin API."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from est_gateway import localmode
from tests.support import openssl
from tests.support.gateway import GatewayProcess, curl, free_port

ROOT = Path(__file__).resolve().parents[1]
#: what only the vendor plugins (plugins/<vendor>/) need (requests is the core's: est_gateway.plugin.http)
PLUGIN_ONLY = ("zeep", "lxml")

BLOCKER = f"""\
import sys

class _Absent:
    \"\"\"These modules are not installed with the core alone.\"\"\"
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {(*PLUGIN_ONLY, "plugins")!r} or name.startswith("est_gateway_"):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: core alone)", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


def test_the_core_wheel_holds_only_est_gateway_and_needs_no_plugin_dependency(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "est_gateway", source / "est_gateway", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "dist").glob("est_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        info = next(t for t in top if t.endswith(".dist-info"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(f"{info}/entry_points.txt").decode())
    assert top == {"est_gateway", info}
    required = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    names = {re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0].lower() for r in required}
    assert names and not names & set(PLUGIN_ONLY), required
    assert "requests" in names and "urllib3" not in names, required   # urllib3 only through requests
    assert dict(entry_points["est_gateway.backends"]) == {"local": "est_gateway.backends.local:LocalCABackend"}


def test_a_local_ca_gateway_runs_without_any_plugin_dependency(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    for module in ("zeep",):
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(blocker)}, timeout=60)
        assert "blocked: core alone" in probe.stderr          # the blocker really works
    folder, port = tmp_path / "est-local", free_port()
    gateway = GatewayProcess(folder / localmode.CONFIG_NAME, port, tmp_path / "gateway.log",
                             env={"PYTHONPATH": str(blocker)})
    gateway.start("local", "--state-dir", str(folder), "--port", str(port))
    try:
        instance = localmode.LocalInstance(folder.resolve())
        _, csr = openssl.new_csr(tmp_path, "dev", subject="/CN=core-alone")
        res = curl("-u", f"estuser:{instance.password()}", "-H", "Content-Type: application/pkcs10",
                   "--data-binary", f"@{csr}", f"{gateway.url}/simpleenroll", cacert=instance.trust_anchor)
        assert res.status == 200
        openssl.certs_from_pkcs7_b64(res.body, tmp_path / "dev.pem")
    finally:
        gateway.stop()
    assert "blocked" not in gateway.output()


PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))


def _imports(package: Path) -> set[str]:
    found = set()
    for source in package.rglob("*.py") if package.is_dir() else [package]:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_every_in_tree_plugin_exists() -> None:
    assert [p.name for p in PLUGINS] == ["cfssl", "django-ca", "ejbca"]


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_a_plugin_is_its_own_distribution_on_the_public_api_only(plugin: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(plugin, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    package = "est_gateway_" + plugin.name.replace("-", "_")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(f"{info}/entry_points.txt").decode())
    assert {n.split("/")[0] for n in names} == {package, info}
    assert f"{package}/py.typed" in names
    if plugin.name == "ejbca":
        assert f"{package}/soap/wsdl/ejbcaws.wsdl" in names      # package data the SOAP adapter loads
    targets = dict(entry_points["est_gateway.backends"]).values()
    assert targets and all(t.startswith(f"{package}.") or t.startswith(f"{package}:") for t in targets)
    core = {m for m in _imports(plugin / package) if m == "est_gateway" or m.startswith("est_gateway.")}
    assert core <= {"est_gateway.plugin", "est_gateway.plugin.http"}, core


def test_only_the_web_layer_imports_flask() -> None:
    """The core (operations, backends, the plugin API) never sees a Flask object (the
    operator console and the CRL/OCSP publication are Flask apps of their own, beside the web layer)."""
    web = {ROOT / "est_gateway" / "web", ROOT / "est_gateway" / "wsgi.py", ROOT / "est_gateway" / "console",
           ROOT / "est_gateway" / "publication"}
    outside = [p for p in (ROOT / "est_gateway").iterdir() if p not in web and (p.is_dir() or p.suffix == ".py")]
    imported = set().union(*(_imports(p) for p in outside))
    assert "est_gateway.operations" in _imports(ROOT / "est_gateway" / "web")   # the walk sees imports
    assert not {m for m in imported if m.split(".")[0] in ("flask", "werkzeug")}


def test_the_core_never_imports_a_plugin() -> None:
    imported = _imports(ROOT / "est_gateway")
    assert not {m for m in imported if m.split(".")[0] == "plugins" or m.startswith("est_gateway_")}
    assert not {m for m in imported if m.split(".")[0] in ("zeep", "lxml")}


def test_urllib3_is_reached_only_through_requests() -> None:
    """One HTTP stack for every upstream call: requests (which brings urllib3 along)."""
    for tree in (ROOT / "est_gateway", *(ROOT / "plugins").glob("*/est_gateway_*")):
        imported = _imports(tree)
        assert not {m for m in imported if m.split(".")[0] == "urllib3"}, tree
    assert "requests" in _imports(ROOT / "est_gateway")
