"""/cacerts answers the chain the backend gives now, also when it changes (a backend that
learns or is given a new chain, e.g. after a CA renewal), although the answer is kept."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509

from est_gateway import wire
from tests.support.inproc import start
from tests.support.pki import CA


def answered_chain(gw: object) -> set[bytes]:
    response = gw.request("GET", "/.well-known/est/cacerts")  # type: ignore[attr-defined]
    assert response.status_code == 200
    certs = wire.read_certs_only(base64.b64decode(b"".join(response.data.split())))
    return {c.tbs_certificate_bytes for c in certs}


def test_cacerts_follows_a_changed_chain(tmp_path: Path) -> None:
    gw = start(tmp_path / "gw")
    backend = gw.config.backends["local"]
    loaded = backend._cas["EST CA"]   # type: ignore[attr-defined]
    before = {c.tbs_certificate_bytes for c in loaded.chain}
    assert answered_chain(gw) == before
    assert answered_chain(gw) == before          # the kept answer
    renewed: x509.Certificate = CA.create("Renewed EST CA").cert
    loaded.chain = [renewed, *loaded.chain[1:]]
    assert answered_chain(gw) == {c.tbs_certificate_bytes for c in loaded.chain} != before
