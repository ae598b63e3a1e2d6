"""config/django-ca.toml loads, and once pointed at the real django-ca its backend is healthy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from est_gateway import localmode
from est_gateway.config.load import load_config
from est_gateway.errors import ConfigError
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


def test_two_labels_on_one_django_ca_ca_must_be_one_renewal_domain(tmp_path: Path) -> None:
    """The gateway looks a certificate up by CA and serial (or OCSP/CRL): a second label on the
    same CA would renew the first one's certificates, so start-up refuses it undeclared."""
    localmode.prepare(tmp_path, port=8443)
    (tmp_path / "upstream").mkdir()
    # any PEM certificate will do as the TLS trust anchor of a CA that is never contacted
    shutil.copy(tmp_path / "tls" / "server.pem", tmp_path / "upstream" / "django-ca-tls-ca.pem")
    password = tmp_path / "secrets" / "django-ca.password"
    password.write_text("secret\n")
    password.chmod(0o600)
    second = ('\n[aliases.strict]\nbackend = "django-ca"\nca = "{ca}"\ncertificate_profile = "server"\n'
              'username = "estuser"\npassword_file = "secrets/est.password"\n{accepts}\n')
    cases = [("Issuing CA", "", "aliases.est.accept_renewals_from"),
             ("12:AB:34:CD", "", "aliases.est.accept_renewals_from"),     # a serial: cannot be compared
             ("Issuing CA", 'accept_renewals_from = ["est"]', "aliases.est.accept_renewals_from")]
    for ca, accepts, problem in cases:
        (tmp_path / "django-ca.toml").write_text(EXAMPLE.read_text() + second.format(ca=ca, accepts=accepts))
        with pytest.raises(ConfigError) as raised:
            load_config(tmp_path / "django-ca.toml")
        assert any(p.startswith(f'{problem}: labels "est" and "strict" issue') for p in raised.value.problems)
    for ca, accepts in [("Other CA", ""), ("Issuing CA", 'accept_renewals_from = ["est"]')]:
        text = EXAMPLE.read_text() + second.format(ca=ca, accepts=accepts)
        if accepts:
            text = text.replace('certificate_profile = "client"', 'certificate_profile = "client"\n'
                                'accept_renewals_from = ["strict"]', 1)
        (tmp_path / "django-ca.toml").write_text(text)
        assert set(load_config(tmp_path / "django-ca.toml").aliases) == {"est", "strict"}

