"""docs/cfssl.md's set-up, run as written against the real CFSSL (Debian's golang-cfssl): the
two CAs and the service certificates, the auth key without a newline, the shipped certdb
schema, cfssl serve with its allow-list and ocspserve, the gateway's files as
config/cfssl.toml names them; then a device enrolls and renews with the same key through the
gateway (the example's default), and the doc's revoke example, under that allow-list, makes
the next renewal a 403."""

from __future__ import annotations

from pathlib import Path

from est_gateway import localmode
from tests.support.doc_blocks import RENEW_REVOKED, ROOT, enroll_and_renew, run_script, sh_blocks
from tests.support.gateway import free_port

DOC = ROOT / "docs" / "cfssl.md"
SECTION = "## The CA side, from nothing"

def test_the_cfssl_setup_runs_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(DOC.read_text(encoding="utf-8"), SECTION)
    assert len(blocks) == 6, blocks
    gateway = tmp_path / "gw"
    localmode.prepare(gateway, port=8443)       # tls/ and secrets/est.password, as any gateway has
    env = {"CFSSL_HOST": "127.0.0.1", "CFSSL_PORT": str(free_port()), "OCSP_PORT": str(free_port()),
           "GW": str(gateway), "EST_GATEWAY_SRC": str(ROOT)}
    script = "\n".join([*blocks[:5], enroll_and_renew("cfssl.toml", free_port()), blocks[5], RENEW_REVOKED])
    done = run_script(script, cwd=tmp_path, env=env, timeout=150)
    folder = tmp_path / "cfssl-ca"
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(folder.glob("*.log")))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}{logs}"
    assert f"{gateway / 'cfssl.toml'}: OK" in done.stdout
    assert (folder / "cfssl-auth.key").read_bytes().strip() == (folder / "cfssl-auth.key").read_bytes()
    assert "renewed with the same key: issuer=CN = Example Device CA" in done.stdout
    assert '"success":true' in done.stdout                     # the operator's revoke, allow-listed
    assert "after revocation: 403 client certificate is revoked" in done.stdout, f"{done.stdout}{logs}"
