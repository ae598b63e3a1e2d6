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
from tests.support.doc_blocks import ROOT, run_script, sh_blocks
from tests.support.gateway import free_port

DOC = ROOT / "docs" / "django-ca.md"

#: the test's part, after the gateway's files: wait for the API, serve the gateway, enroll,
#: renew with the same key; device.pem is the renewed certificate
ENROLL = """
for i in $(seq 300); do curl -s -o /dev/null --cacert tls-ca.pem \\
  https://$DJANGO_CA_HOST:$DJANGO_CA_PORT/django_ca/api/ca/ && break; sleep 0.2; done
sed -i 's|^listen = .*|listen = "127.0.0.1:{port}"|' "$GW/django-ca.toml"
est-gateway serve --config "$GW/django-ca.toml" > gateway.log 2>&1 &
EST=https://127.0.0.1:{port}/.well-known/est TA="$GW/trust-anchor.pem" PW=$(cat "$GW/secrets/est.password")
for i in $(seq 150); do curl -s -o /dev/null --cacert "$TA" $EST/cacerts && break; sleep 0.2; done
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key -subj /CN=device1 \\
  -outform DER | base64 > device.b64
curl -sS --fail --cacert "$TA" -u estuser:$PW -H 'Content-Type: application/pkcs10' --data-binary @device.b64 \\
  $EST/simpleenroll | base64 -d | openssl pkcs7 -inform DER -print_certs -out first.pem
openssl req -new -key device.key -subj /CN=device1 -outform DER | base64 > same.b64
curl -sS --fail --cacert "$TA" --cert first.pem --key device.key -H 'Content-Type: application/pkcs10' \\
  --data-binary @same.b64 $EST/simplereenroll | base64 -d | openssl pkcs7 -inform DER -print_certs -out device.pem
echo "renewed with the same key: $(openssl x509 -in device.pem -noout -issuer)"
"""
CHECK = """
code=$(curl -sS -o answer.txt -w '%{http_code}' --cacert "$TA" --cert device.pem --key device.key \\
  -H 'Content-Type: application/pkcs10' --data-binary @same.b64 $EST/simplereenroll)
echo "after revocation: $code $(cat answer.txt)"
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
    script = "\n".join([*setup, gateway_side[0], ENROLL.replace("{port}", str(free_port())), gateway_side[1], CHECK])
    done = run_script(script, cwd=tmp_path, env=env, timeout=170)
    folder = tmp_path / "django-ca"
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("*.log")))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}{logs}"
    assert f"{gateway / 'django-ca.toml'}: OK" in done.stdout
    assert "renewed with the same key: issuer=CN = Example Issuing CA" in done.stdout
    assert "after revocation: 403 client certificate is revoked" in done.stdout, f"{done.stdout}{logs}"
    assert not (tmp_path / ".gunicorn").exists() and not list(tmp_path.glob("*.sock"))   # no control socket
