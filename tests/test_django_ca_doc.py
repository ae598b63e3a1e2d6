"""docs/django-ca.md's set-up, run as written with the real django-ca 3.2 (its own virtual
environment, .cache/django-ca): the Django project, migrate, a root and an issuing CA
(--parent by serial), the gateway's user, the API served by gunicorn over HTTPS with
--no-control-socket; then the gateway's files as config/django-ca.toml names them, a device
that enrolls and renews with the same key (the example's default), and the doc's revoke
command making its next renewal a 403."""

from __future__ import annotations

from pathlib import Path

from est_gateway import localmode
from tests.support.django_ca import ensure_venv
from tests.support.doc_blocks import RENEW_REVOKED, ROOT, enroll_and_renew, run_script, sh_blocks
from tests.support.gateway import free_port

DOC = ROOT / "docs" / "django-ca.md"

#: django-ca's API answers once its gunicorn has booted
WAIT_FOR_API = """
for i in $(seq 300); do curl -s -o /dev/null --cacert tls-ca.pem \\
  https://$DJANGO_CA_HOST:$DJANGO_CA_PORT/django_ca/api/ca/ && break; sleep 0.2; done
"""


def test_the_django_ca_setup_runs_as_written(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    setup = sh_blocks(text, "## 1. Prepare django-ca, from nothing")
    gateway_side = sh_blocks(text, "## 2. Point the gateway at it")
    assert (len(setup), len(gateway_side)) == (5, 2)
    gateway = tmp_path / "gw"
    localmode.prepare(gateway, port=8443)       # tls/ and secrets/est.password, as any gateway has
    env = {"DJANGO_CA_HOST": "127.0.0.1", "DJANGO_CA_PORT": str(free_port()), "VENV": str(ensure_venv().parents[1]),
           "GW": str(gateway), "EST_GATEWAY_SRC": str(ROOT), "HOME": str(tmp_path), "XDG_RUNTIME_DIR": ""}
    script = "\n".join([*setup, gateway_side[0], WAIT_FOR_API,
                        enroll_and_renew("django-ca.toml", free_port()), gateway_side[1], RENEW_REVOKED])
    done = run_script(script, cwd=tmp_path, env=env, timeout=170)
    folder = tmp_path / "django-ca"
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("*.log")))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}{logs}"
    assert f"{gateway / 'django-ca.toml'}: OK" in done.stdout
    assert "renewed with the same key: issuer=CN = Example Issuing CA" in done.stdout
    assert "after revocation: 403 client certificate is revoked" in done.stdout, f"{done.stdout}{logs}"
    assert not (tmp_path / ".gunicorn").exists() and not list(tmp_path.glob("*.sock"))   # no control socket
