"""config/django-ca.toml loads, and once pointed at the real django-ca its backend is healthy."""

from __future__ import annotations

import shutil
from pathlib import Path

from est_gateway import localmode
from est_gateway.config.load import load_config
from est_gateway_django_ca.target import DjangoCaTarget
from tests.support.django_ca import DjangoCa

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "django-ca.toml"


def test_example_loads_and_is_healthy_against_django_ca(django_ca: DjangoCa, tmp_path: Path) -> None:
    localmode.prepare(tmp_path, port=8443)  # tls/ and secrets/ as the example expects
    (tmp_path / "upstream").mkdir()
    shutil.copy(django_ca.ca_bundle, tmp_path / "upstream" / "django-ca-tls-ca.pem")
    password = tmp_path / "secrets" / "django-ca.password"
    password.write_text(django_ca.password + "\n")
    password.chmod(0o600)              # secret files others can read are refused
    password.chmod(0o600)
    text = EXAMPLE.read_text().replace("https://ca.example.org/django_ca/api", django_ca.api_url)
    (tmp_path / "django-ca.toml").write_text(text.replace('ca = "Issuing CA"', 'ca = "Test Issuing"'))
    config = load_config(tmp_path / "django-ca.toml")
    backend = config.backends["django-ca"]
    assert backend.type_name == "django-ca"
    assert config.aliases["est"].target == DjangoCaTarget(ca="Test Issuing", profile="client")
    backend.start()
    backend.health()
    assert [c.subject for c in backend.ca_certs(config.aliases["est"].target)][0].rfc4514_string() == \
        "O=est-gateway tests,CN=django-ca Test Issuing CA"
