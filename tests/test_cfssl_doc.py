"""docs/cfssl.md's set-up, run as written against the real CFSSL (Debian's golang-cfssl): the
two CAs and the service certificates, the auth key without a newline, the shipped certdb
schema, cfssl serve with its allow-list and ocspserve, the gateway's files as
config/cfssl.toml names them; then a device enrolls and renews with the same key through the
gateway (the example's default), and the doc's revoke example, under that allow-list, makes
the next renewal a 403."""

from __future__ import annotations

from pathlib import Path

from est_gateway import localmode
from tests.support.doc_blocks import ROOT, run_script, sh_blocks
from tests.support.gateway import free_port

DOC = ROOT / "docs" / "cfssl.md"
SECTION = "## The CA side, from nothing"

#: the test's part, between the doc's step 4 (the gateway's files) and 5 (revoking): serve
#: the gateway, enroll, renew with the same key; device.pem is the renewed certificate
ENROLL = """
sed -i 's|^listen = .*|listen = "127.0.0.1:{port}"|' "$GW/cfssl.toml"
est-gateway serve --config "$GW/cfssl.toml" > gateway.log 2>&1 &
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
#: after the doc's revoke example: the revoked certificate's renewal
CHECK = """
code=$(curl -sS -o answer.txt -w '%{http_code}' --cacert "$TA" --cert device.pem --key device.key \\
  -H 'Content-Type: application/pkcs10' --data-binary @same.b64 $EST/simplereenroll)
echo "after revocation: $code $(cat answer.txt)"
"""


def test_the_cfssl_setup_runs_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(DOC.read_text(encoding="utf-8"), SECTION)
    assert len(blocks) == 6, blocks
    gateway = tmp_path / "gw"
    localmode.prepare(gateway, port=8443)       # tls/ and secrets/est.password, as any gateway has
    env = {"CFSSL_HOST": "127.0.0.1", "CFSSL_PORT": str(free_port()), "OCSP_PORT": str(free_port()),
           "GW": str(gateway), "EST_GATEWAY_SRC": str(ROOT)}
    script = "\n".join([*blocks[:5], ENROLL.replace("{port}", str(free_port())), blocks[5], CHECK])
    done = run_script(script, cwd=tmp_path, env=env, timeout=150)
    folder = tmp_path / "cfssl-ca"
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(folder.glob("*.log")))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}{logs}"
    assert f"{gateway / 'cfssl.toml'}: OK" in done.stdout
    assert (folder / "cfssl-auth.key").read_bytes().strip() == (folder / "cfssl-auth.key").read_bytes()
    assert "renewed with the same key: issuer=CN = Example Device CA" in done.stdout
    assert '"success":true' in done.stdout                     # the operator's revoke, allow-listed
    assert "after revocation: 403 client certificate is revoked" in done.stdout, f"{done.stdout}{logs}"
