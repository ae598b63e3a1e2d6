"""Running a document's procedure as a reader does: its ```sh blocks, in order, in one bash."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: bash, after a doc's set-up: serve the gateway of $GW/{config} on {port}, enroll a device, renew it
#: with the same key; device.pem is the renewed certificate (never asked about before)
ENROLL_AND_RENEW = """
sed -i '0,/^listen = /s|^listen = .*|listen = "127.0.0.1:{port}"|' "$GW/{config}"   # [server]'s, the first
est-gateway serve --config "$GW/{config}" > gateway.log 2>&1 &
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
#: bash, after the doc's revocation of device.pem: its renewal's status and reason
RENEW_REVOKED = """
code=$(curl -sS -o answer.txt -w '%{http_code}' --cacert "$TA" --cert device.pem --key device.key \\
  -H 'Content-Type: application/pkcs10' --data-binary @same.b64 $EST/simplereenroll)
echo "after revocation: $code $(cat answer.txt)"
"""


def enroll_and_renew(config: str, port: int) -> str:
    return ENROLL_AND_RENEW.replace("{config}", config).replace("{port}", str(port))


def sh_blocks(markdown: str, section: str) -> list[str]:
    """The ```sh blocks of the section headed ``section`` (up to the next heading of its level)."""
    level, _, _ = section.partition(" ")
    text = markdown.split(f"\n{section}\n", 1)[1]
    text = re.split(rf"^{level} ", text, maxsplit=1, flags=re.MULTILINE)[0]
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def run_script(script: str, *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``set -euo pipefail`` + ``script`` in bash, with the gateway's venv first on PATH; every
    process it leaves running in the background (servers) is stopped afterwards."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    out_file, err_file = cwd / "script.stdout", cwd / "script.stderr"
    # Files, not pipes: the servers the script leaves running hold its output open.
    with out_file.open("w") as out, err_file.open("w") as err:
        proc = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, text=True,
                                env={**os.environ, **env, "PATH": path}, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _stop_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_file.read_text(), err_file.read_text())


def _stop_group(pgid: int, grace_s: float = 20.0) -> None:
    """SIGTERM the script's session (its servers stop gracefully); SIGKILL it after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
