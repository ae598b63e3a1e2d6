"""The CFSSL adapter's options never show its HMAC key (repr, str, tracebacks)."""

from __future__ import annotations

from pathlib import Path

from est_gateway.upstream.revocation import RevocationSettings
from est_gateway_cfssl.options import CfsslOptions


def test_the_options_never_show_the_auth_key(tmp_path: Path) -> None:
    key = bytes.fromhex("5ec2e7" * 11)
    options = CfsslOptions(upstream=None, auth_key=key, revocation=RevocationSettings(), base_dir=tmp_path)
    shown = repr(options) + str(options)
    assert key.hex() not in shown and repr(key) not in shown and "5ec2e7" not in shown
    assert "CfsslOptions(" in shown
