"""The README's walk-through, executed as a reader runs it: against a fresh local instance
with a non-default state folder (with a space in its path) and port, starting from the
``export`` line of the banner, with bash, curl, openssl and the est-gateway command."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.gateway import GatewayProcess, free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough_blocks(markdown: str) -> list[str]:
    """The ```sh blocks of the "## Walk-through" section (up to its next heading)."""
    section = markdown.split("\n## Walk-through\n", 1)[1]
    section = re.split(r"^#{2,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def promised_outputs(blocks: list[str]) -> list[str]:
    """The answers the README shows in ``# → reason`` / ``#   status`` comments."""
    promised = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("# → ") or line.startswith("#   "):
                promised.append(line[4:].strip())
    return promised


def test_the_readme_walkthrough_runs_against_a_fresh_instance(tmp_path: Path) -> None:
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3 and all("$EST" in b for b in blocks)
    assert "est-local" not in "".join(blocks) and "8443" not in "".join(blocks)

    state, port = tmp_path / "my gateway state", free_port()
    gateway = GatewayProcess(state / "gateway.toml", port, tmp_path / "gateway.log")
    gateway.start("local", "--state-dir", str(state), "--port", str(port))
    try:
        exports = [line for line in gateway.output().splitlines() if line.startswith("export ")]
        assert len(exports) == 1, gateway.output()
        reader = tmp_path / "reader"
        reader.mkdir()
        script = "set -euo pipefail\n" + exports[0] + "\n" + "\n".join(blocks)
        env = {k: v for k, v in os.environ.items()
               if k not in ("EST", "TA", "PW", "EST_GATEWAY_CONFIG")}
        done = subprocess.run(["bash", "-c", script], cwd=reader, env=env, capture_output=True,
                              text=True, timeout=180)
    finally:
        gateway.stop()
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}\n{gateway.output()}"
    assert "subject=CN = dev1" in out and "subject=CN = sensor1" in out
    assert "TLS Web Client Authentication" in out
    assert re.search(r"^revoked [0-9a-f]+ \(CN=dev1\) at .*reason keyCompromise$", out, re.MULTILINE)
    # every answer the README promises is what the gateway said, in the README's order
    position = 0
    for text in promised_outputs(blocks):
        found = out.find(text, position)
        assert found >= 0, f"README promises {text!r}; the walk-through printed:\n{out}"
        position = found + len(text)
    assert position > 0
    # serverkeygen: the key part and the certificate part
    assert re.search(r"^content-type: application/pkcs8", out, re.IGNORECASE | re.MULTILINE)
    assert re.search(r"^content-type: application/pkcs7-mime", out, re.IGNORECASE | re.MULTILINE)
    assert "-----BEGIN CERTIFICATE-----" in (reader / "dev2.pem").read_text()
    # ... split into the key and the certificate as the README shows: a matching pair
    key = serialization.load_pem_private_key((reader / "keygen.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((reader / "keygen.pem").read_bytes())
    assert key.public_key() == cert.public_key()
