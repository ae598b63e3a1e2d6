"""scripts/test.sh installs Apache for the tests without leaving the system service running
or enabled. apt-get, sudo and systemctl are stand-ins here (a test must not install packages
or change services); they record what they were asked and run policy-rc.d as Debian's
invoke-rc.d does before starting a service."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

VENV_SH = Path(__file__).resolve().parent.parent / "scripts" / "venv.sh"

STAND_INS = {
    # invoke-rc.d runs policy-rc.d (if present) and starts nothing when it exits 101
    "apt-get": '''#!/bin/sh
echo "apt-get $*" >> "$CALLS"
case " $* " in *" install "*)
    if [ -x "$POLICY_RC_D" ]; then "$POLICY_RC_D" apache2 start; echo "policy-rc.d $?" >> "$CALLS"
    else echo "policy-rc.d none" >> "$CALLS"; fi;;
esac
''',
    "systemctl": '#!/bin/sh\necho "systemctl $*" >> "$CALLS"\n',
    "sudo": '#!/bin/sh\nexec "$@"\n',
}


def run_install_apache(tmp_path: Path, policy: Path, *packages: str) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
           "POLICY_RC_D": str(policy)}
    done = subprocess.run(["bash", "-c", f'set -euo pipefail; . "{VENV_SH}"; install_apache {" ".join(packages)}'],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "not started and not enabled" in done.stdout
    return calls.read_text().splitlines()


def test_apache_is_installed_without_starting_or_enabling_the_system_service(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    calls = run_install_apache(tmp_path, policy)
    install = next(i for i, c in enumerate(calls) if c.startswith("apt-get ") and " install " in c)
    assert "apache2" in calls[install].split()
    assert calls[install + 1] == "policy-rc.d 101"      # the service start was refused
    assert "systemctl disable --quiet apache2.service" in calls[install + 2:]
    assert "systemctl disable --quiet apache-htcacheclean.service" in calls[install + 2:]
    assert not policy.exists()                          # the temporary policy is gone


@pytest.mark.parametrize("existing", ["#!/bin/sh\nexit 101\n", "#!/bin/sh\nexit 0\n"])
def test_an_existing_policy_is_put_back(tmp_path: Path, existing: str) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text(existing)
    policy.chmod(0o755)
    calls = run_install_apache(tmp_path, policy)
    assert "policy-rc.d 101" in calls                   # refused during the installation
    assert policy.read_text() == existing               # and put back as it was
    assert "systemctl disable --quiet apache2.service" in calls


def test_mod_wsgi_is_installed_under_the_same_policy(tmp_path: Path) -> None:
    """libapache2-mod-wsgi-py3's postinst enables its module and restarts Apache."""
    policy = tmp_path / "policy-rc.d"
    calls = run_install_apache(tmp_path, policy, "libapache2-mod-wsgi-py3")
    install = next(i for i, c in enumerate(calls) if c.startswith("apt-get ") and " install " in c)
    assert calls[install].split()[-1] == "libapache2-mod-wsgi-py3" and "apache2" not in calls[install].split()
    assert calls[install + 1] == "policy-rc.d 101"
    assert not policy.exists()


# -- scripts/local.sh: says what it does, reinstalls only when a pyproject.toml changed --------

def _checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the checkout's scripts and pyproject files, with a .venv whose python and
    est-gateway are stand-ins recording their calls (a test installs nothing)."""
    repo = VENV_SH.parents[1]
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for script in ("local.sh", "venv.sh"):
        (checkout / "scripts" / script).write_text((repo / "scripts" / script).read_text())
    for pyproject in [repo / "pyproject.toml", *repo.glob("plugins/*/pyproject.toml")]:
        target = checkout / pyproject.relative_to(repo)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(pyproject.read_text())
    calls = tmp_path / "calls"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    for name in ("python", "est-gateway"):
        stand_in = checkout / ".venv" / "bin" / name
        stand_in.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        stand_in.chmod(0o755)
    return checkout, calls


def _local_sh(checkout: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(checkout / "scripts" / "local.sh"), "--port", "9443"],
                          capture_output=True, text=True, timeout=60)


def test_local_sh_says_what_it_installs_then_skips_it_until_a_pyproject_changes(tmp_path: Path) -> None:
    checkout, calls = _checkout(tmp_path)
    first = _local_sh(checkout)
    assert first.returncode == 0, first.stderr
    assert "local.sh: installing est-gateway and its plugins into .venv with pip" in first.stderr
    assert "local.sh: starting: est-gateway local --port 9443" in first.stderr
    installs = [c for c in calls.read_text().splitlines() if c.startswith("python -m pip install")]
    assert len(installs) == 1 and calls.read_text().splitlines()[-1] == "est-gateway local --port 9443"

    second = _local_sh(checkout)
    assert "no pyproject.toml changed since: not reinstalling" in second.stderr
    assert len([c for c in calls.read_text().splitlines() if c.startswith("python -m pip")]) == 1

    plugin = next(checkout.glob("plugins/*/pyproject.toml"))
    plugin.write_text(plugin.read_text() + "\n# a changed dependency\n")
    third = _local_sh(checkout)
    assert "installing est-gateway" in third.stderr
    assert len([c for c in calls.read_text().splitlines() if c.startswith("python -m pip")]) == 2
