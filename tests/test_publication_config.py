"""[publication] and the local CAs' crl_url / ocsp_url: every problem with its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from est_gateway.config.load import parse_config
from est_gateway.errors import ConfigError
from tests.support.publication import publishing_config


def problems(folder: Path, **options: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        publishing_config(folder, **options)
    return caught.value.problems


def test_a_valid_configuration_is_exposed_on_the_config(tmp_path: Path) -> None:
    config = publishing_config(tmp_path, port=8099, publication={"crl_validity_hours": 6})
    settings = config.publication
    assert settings.enabled and (settings.host, settings.port, settings.crl_validity_hours) == ("127.0.0.1", 8099, 6)
    assert settings.url == "http://127.0.0.1:8099/"
    ca = config.backends["local"].options.cas["EST CA"]  # type: ignore[attr-defined]
    assert ca.crl_url == "http://127.0.0.1:8099/crl/est-ca.crl" and ca.ocsp_signer == "responder"


def minimal(folder: Path, ca: dict[str, Any]) -> dict[str, Any]:
    """A configuration without [publication] whose CA "A" has ``ca``'s options."""
    password = folder / "pw"
    password.write_text("secret\n")
    password.chmod(0o600)
    return {"server": {"tls": False},
            "backends": {"local": {"type": "local", "state_dir": str(folder / "s"), "cas": {"A": ca}}},
            "aliases": {"est": {"backend": "local", "ca": "A", "username": "u", "password_file": str(password)}}}


def test_without_publication_it_is_off(tmp_path: Path) -> None:
    assert parse_config(minimal(tmp_path, {}), base_dir=tmp_path).publication.enabled is False


@pytest.mark.parametrize(("options", "expected"), [
    ({"ca": {"crl_url": "https://pki.example/crl"}},
     'backends.local.cas.EST CA.crl_url: "https://pki.example/crl" must be an http:// URL'),
    ({"ca": {"ocsp_url": "http://pki.example/ocsp?x=1"}},
     'backends.local.cas.EST CA.ocsp_url: "http://pki.example/ocsp?x=1" must be an http:// URL'),
    ({"ca": {"ocsp_url": "http:///ocsp"}}, "backends.local.cas.EST CA.ocsp_url: "),
    ({"ca": {"ocsp_url": "http://127.0.0.1:8080/crl/est-ca.crl"}},
     "backends.local.cas.EST CA.ocsp_url: names the path /crl/est-ca.crl of backends.local.cas.EST CA.crl_url too"),
    ({"ca": {"ocsp_signer": "root"}}, 'backends.local.cas.EST CA.ocsp_signer: "root" is not one of: responder, ca'),
    ({"publication": {"listen": "8080"}}, 'publication.listen: "8080" is not "<address>:<port>"'),
    ({"publication": {"listen": "127.0.0.1:18443"}}, "publication.listen: must differ from server.listen"),
    ({"publication": {"crl_validity_hours": 0}}, "publication.crl_validity_hours: must be at least 1, not 0"),
    ({"publication": {"ocsp_validty_minutes": 5}},
     'publication.ocsp_validty_minutes: unknown setting; did you mean "ocsp_validity_minutes"?'),
])
def test_problems_name_their_key(tmp_path: Path, options: dict[str, Any], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(tmp_path, **options)), problems(tmp_path, **options)


def test_published_urls_need_the_listener(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(tmp_path, {"crl_url": "http://pki.example/a.crl"}), base_dir=tmp_path)
    assert caught.value.problems == [
        'backends.local.cas.A.crl_url: is published by the plain-HTTP publication listener: set '
        '[publication] listen (e.g. "127.0.0.1:8080")']


@pytest.mark.parametrize(("port", "published"), [(8443, 8080), (9443, 9444)])
def test_local_mode_publishes_beside_est(tmp_path: Path, port: int, published: int) -> None:
    from est_gateway import localmode
    from est_gateway.config import load_config

    instance, _ = localmode.prepare(tmp_path / "est-local", port=port)
    config = load_config(instance.config)
    assert (config.publication.enabled, config.publication.port) == (True, published)
    ca = config.backends["local"].options.cas["EST CA"]  # type: ignore[attr-defined]
    assert (ca.crl_url, ca.ocsp_url) == (f"http://127.0.0.1:{published}/crl/est-ca.crl",
                                         f"http://127.0.0.1:{published}/ocsp/est-ca")
