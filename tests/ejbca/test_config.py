"""Operator-configured upstream credentials: start-up checks with key paths, the
REQUESTS_CA_BUNDLE trap, the loud ``insecure`` switch, per-alias upstream settings."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from est_gateway.config.load import parse_config
from est_gateway.errors import ConfigError, UpstreamUnavailable
from est_gateway_ejbca.alias import EjbcaTarget
from tests.support.ejbca_standin import (
    CA_NAME,
    StandinEjbca,
    StandinServer,
    UpstreamPKI,
    make_backend,
    upstream_options,
)
from tests.support.pki import CA, write_pem

URL = "https://ejbca.test:8443/ejbca/ejbca-rest-api"



def config(pki: UpstreamPKI, tmp_path: Path, *, type_name: str = "ejbca-rest",
           upstream: dict[str, Any] | None = None, **backend: Any) -> dict[str, Any]:
    options = {**upstream_options(pki, URL), **backend}
    options = {k: v for k, v in options.items() if v is not None}
    alias: dict[str, Any] = {"backend": "ejbca", "ca": CA_NAME, "require_client_cert": True}
    if upstream is not None:
        alias["upstream"] = upstream
    return {"server": {"tls": False, "trusted_proxies": ["127.0.0.1"]},
            "backends": {"ejbca": {"type": type_name, **options}}, "aliases": {"est": alias}}


def problems(data: dict[str, Any], tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(data, base_dir=tmp_path)
    return raised.value.problems


@pytest.mark.parametrize("type_name", ["ejbca-rest", "ejbca-soap"])
def test_valid_configuration_loads(pki: UpstreamPKI, tmp_path: Path, type_name: str) -> None:
    loaded = parse_config(config(pki, tmp_path, type_name=type_name), base_dir=tmp_path)
    facts = loaded.backends["ejbca"].describe_state()
    assert facts["upstream"] == URL
    assert "PRIVATE" not in "".join(facts.values())


@pytest.mark.parametrize(("backend", "expected"), [
    ({"url": "http://ejbca.test/api"}, "backends.ejbca.url: \"http://ejbca.test/api\" must be an https:// URL"),
    ({"url": None}, "backends.ejbca.url: is required"),
    ({"client_key": "missing.key"}, "backends.ejbca.client_key: file"),
    ({"ca_bundle": None}, "backends.ejbca.ca_bundle: is required"),
    ({"client_key_passphrase": "hunter2"}, "backends.ejbca.client_key_passphrase: inline secrets are not accepted"),
    ({"read_timeout_s": 0}, "backends.ejbca.read_timeout_s: must be greater than 0"),
    ({"retries": 99}, "backends.ejbca.retries: must be at most 10"),
    ({"retry": 1}, "backends.ejbca.retry: unknown setting; did you mean \"retries\"?"),
])
def test_backend_problems_carry_key_paths(pki: UpstreamPKI, tmp_path: Path, backend: dict[str, Any],
                                          expected: str) -> None:
    found = problems(config(pki, tmp_path, **backend), tmp_path)
    assert any(p.startswith(expected) for p in found), found


def test_world_readable_key_is_refused(pki: UpstreamPKI, tmp_path: Path) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(pki.client_key_file.read_bytes())
    key.chmod(0o644)
    found = problems(config(pki, tmp_path, client_key=str(key)), tmp_path)
    assert found[0] == f"backends.ejbca.client_key: {key} is readable by every user (mode 644); chmod 600 it"


def test_key_that_does_not_match_the_certificate_is_refused(pki: UpstreamPKI, tmp_path: Path) -> None:
    other = write_pem(tmp_path / "other.key", CA.create().key)
    found = problems(config(pki, tmp_path, client_key=str(other)), tmp_path)
    assert found[0] == (f"backends.ejbca.client_key: {other} does not belong to the certificate in "
                        f"{pki.client_cert_file}")


def test_encrypted_key_needs_its_passphrase(pki: UpstreamPKI, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    key = pki.encrypted_key("s3cret")
    found = problems(config(pki, tmp_path, client_key=str(key)), tmp_path)
    assert "is encrypted; set client_key_passphrase_file or client_key_passphrase_env" in found[0]
    monkeypatch.setenv("RA_KEY_PASS", "wrong")
    found = problems(config(pki, tmp_path, client_key=str(key), client_key_passphrase_env="RA_KEY_PASS"), tmp_path)
    assert "passphrase is wrong" in found[0] and "wrong" not in found[0].replace("is wrong", "")
    monkeypatch.setenv("RA_KEY_PASS", "s3cret")
    parse_config(config(pki, tmp_path, client_key=str(key), client_key_passphrase_env="RA_KEY_PASS"),
                 base_dir=tmp_path)


def test_insecure_is_explicit_and_loud(pki: UpstreamPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        loaded = parse_config(config(pki, tmp_path, ca_bundle=None, insecure=True), base_dir=tmp_path)
    assert "is NOT verified" in caplog.text
    assert "NOT VERIFIED" in loaded.backends["ejbca"].describe_state()["upstream trust"]


@pytest.mark.parametrize(("upstream", "expected"), [
    ({"username_from": "email"},
     'aliases.est.upstream.username_from: "email" is not one of: CN, UID, serialNumber, DN'),
    ({"usernme_from": "CN"}, 'aliases.est.upstream.usernme_from: unknown setting; did you mean "username_from"?'),
    ({"mode": "enterprise"}, 'aliases.est.upstream.mode: "enterprise" is not one of: ra, client'),
    ({"ca_chain_file": "nope.pem"}, "aliases.est.upstream.ca_chain_file: file"),
])
def test_alias_upstream_problems_carry_key_paths(pki: UpstreamPKI, tmp_path: Path, upstream: dict[str, Any],
                                                 expected: str) -> None:
    found = problems(config(pki, tmp_path, upstream=upstream), tmp_path)
    assert any(p.startswith(expected) for p in found), found


def test_soap_takes_no_ca_subject_dn(pki: UpstreamPKI, tmp_path: Path) -> None:
    found = problems(config(pki, tmp_path, type_name="ejbca-soap", upstream={"ca_subject_dn": "CN=x"}), tmp_path)
    assert found == ["aliases.est.upstream.ca_subject_dn: unknown setting"]


# -- the REQUESTS_CA_BUNDLE trap (psf/requests#3829), against a real mutual-TLS server ------------

@pytest.mark.parametrize("type_name", ["ejbca-rest", "ejbca-soap"])
def test_environment_ca_bundles_do_not_replace_the_configured_one(
        pki: UpstreamPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, type_name: str) -> None:
    elsewhere = write_pem(tmp_path / "elsewhere.pem", CA.create("Unrelated CA").cert)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(elsewhere))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(elsewhere))
    monkeypatch.setenv("SSL_CERT_FILE", str(elsewhere))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # must not be used either
    target = EjbcaTarget(ca=CA_NAME, certificate_profile="ENDUSER", end_entity_profile="EMPTY")
    with StandinServer(StandinEjbca(version="8.0"), pki.server_context()) as server:
        url = server.rest_url if type_name == "ejbca-rest" else server.ws_url
        good = make_backend(type_name, upstream_options(pki, url), tmp_path)
        assert good.ca_certs(target) == server.standin.chain
        # and the configured bundle really is what verifies: a wrong one fails the handshake
        wrong = make_backend(type_name, upstream_options(pki, url, ca_bundle=str(elsewhere)), tmp_path)
        with pytest.raises(UpstreamUnavailable, match="TLS handshake"):
            wrong.ca_certs(target)


# -- client_pkcs12: the RA credential as EJBCA hands it out (token type P12) ---------------------

P12_PASSPHRASE = "p12 passphrase from the RA web"


def keystore(pki: UpstreamPKI, path: Path, *, passphrase: str = P12_PASSPHRASE, mode: int = 0o600,
             key: Any = None) -> Path:
    """The RA identity as a PKCS#12 keystore, the way EJBCA's RA web issues one."""
    cert, cas = (pki.client_cert, [pki.management.cert]) if key is None else (None, [pki.client_cert])
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"est-gateway RA", key or pki.client_key, cert, cas, BestAvailableEncryption(passphrase.encode())))
    path.chmod(mode)
    return path


def p12_options(pki: UpstreamPKI, url: str, p12: Path, secret: Path, **more: Any) -> dict[str, Any]:
    options = {**upstream_options(pki, url), "client_cert": None, "client_key": None,
               "client_pkcs12": str(p12), "client_pkcs12_passphrase_file": str(secret), **more}
    return {k: v for k, v in options.items() if v is not None}


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "p12.passphrase"
    path.write_text(P12_PASSPHRASE + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("type_name", ["ejbca-rest", "ejbca-soap"])
def test_a_pkcs12_keystore_authenticates_over_mutual_tls(pki: UpstreamPKI, server: Any, tmp_path: Path,
                                                         secret_file: Path, type_name: str) -> None:
    p12 = keystore(pki, tmp_path / "ra.p12")
    url = server.rest_url if type_name == "ejbca-rest" else server.ws_url
    backend = make_backend(type_name, p12_options(pki, url, p12, secret_file), tmp_path)
    before = len(server.standin.calls)
    backend.health()
    peer = server.standin.calls[before]["peer"]
    assert dict(x[0] for x in peer["subject"])["commonName"] == "est-gateway RA"
    assert backend.describe_state()["client certificate"] == str(p12)


def test_pkcs12_passphrase_from_the_environment(pki: UpstreamPKI, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RA_P12_PASS", P12_PASSPHRASE)
    p12 = keystore(pki, tmp_path / "ra.p12")
    data = config(pki, tmp_path, client_cert=None, client_key=None, client_pkcs12=str(p12),
                  client_pkcs12_passphrase_env="RA_P12_PASS")
    assert parse_config(data, base_dir=tmp_path).backends["ejbca"] is not None


@pytest.mark.parametrize(("case", "expected"), [
    ("inline", "backends.ejbca.client_pkcs12_passphrase: inline secrets are not accepted"),
    ("world-readable", "backends.ejbca.client_pkcs12: {p12} is readable by every user (mode 644); chmod 600 it"),
    ("wrong passphrase", "backends.ejbca.client_pkcs12: {p12} is not a readable PKCS#12 keystore "
                         "(or the passphrase is wrong)"),
    ("no passphrase", "backends.ejbca.client_pkcs12: {p12} is not a readable PKCS#12 keystore "
                      "(set client_pkcs12_passphrase_file or client_pkcs12_passphrase_env)"),
    ("key without its certificate", "backends.ejbca.client_pkcs12: {p12} must hold a private key and its "
                                    "certificate"),
    ("both identities", "backends.ejbca.client_cert: give either client_pkcs12 or client_cert + client_key"),
])
def test_pkcs12_problems_carry_key_paths(pki: UpstreamPKI, tmp_path: Path, secret_file: Path, case: str,
                                         expected: str) -> None:
    from tests.support.pki import rsa_key

    p12 = keystore(pki, tmp_path / "ra.p12", mode=0o644 if case == "world-readable" else 0o600,
                   key=rsa_key() if case == "key without its certificate" else None)
    backend: dict[str, Any] = {"client_cert": None, "client_key": None, "client_pkcs12": str(p12),
                               "client_pkcs12_passphrase_file": str(secret_file)}
    if case == "inline":
        backend = {**backend, "client_pkcs12_passphrase_file": None, "client_pkcs12_passphrase": "x"}
    elif case == "wrong passphrase":
        secret_file.write_text("not it")
    elif case == "no passphrase":
        backend["client_pkcs12_passphrase_file"] = None
    elif case == "both identities":
        backend["client_cert"] = str(pki.client_cert_file)
    found = problems(config(pki, tmp_path, **backend), tmp_path)
    assert expected.format(p12=p12) in found[0], found
    assert P12_PASSPHRASE not in " ".join(found)


@pytest.mark.parametrize("identity", ["pem", "pkcs12"])
def test_an_expiring_client_certificate_is_logged_at_start_up(pki: UpstreamPKI, tmp_path: Path,
                                                              secret_file: Path, identity: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    extra: dict[str, Any] = {}
    if identity == "pkcs12":
        extra = {"client_cert": None, "client_key": None, "client_pkcs12": str(keystore(pki, tmp_path / "ra.p12")),
                 "client_pkcs12_passphrase_file": str(secret_file)}
    days_left = (pki.client_cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    with caplog.at_level(logging.WARNING):
        parse_config(config(pki, tmp_path, credential_expiry_warning_days=max(days_left - 1, 0), **extra),
                     base_dir=tmp_path)
    assert "expires on" not in caplog.text
    with caplog.at_level(logging.WARNING):
        parse_config(config(pki, tmp_path, credential_expiry_warning_days=days_left + 2, **extra),
                     base_dir=tmp_path)
    assert f"expires on {pki.client_cert.not_valid_after_utc:%Y-%m-%d}" in caplog.text


def two_labels(pki: UpstreamPKI, tmp_path: Path, type_name: str, second_ca: str = CA_NAME,
               est_accepts: tuple[str, ...] = (), newkey_accepts: tuple[str, ...] = ()) -> dict[str, Any]:
    """``est`` and a stricter ``newkey`` (no same-key renewal) on one EJBCA backend."""
    data = config(pki, tmp_path, type_name=type_name)
    est = data["aliases"]["est"]
    data["aliases"]["newkey"] = {**est, "ca": second_ca, "certificate_profile": "NEWKEY",
                                 "allow_same_key_renewal": False,
                                 "accept_renewals_from": list(newkey_accepts)}
    est["accept_renewals_from"] = list(est_accepts)
    return data


@pytest.mark.parametrize("type_name", ["ejbca-rest", "ejbca-soap"])
def test_two_labels_on_one_ejbca_ca_must_be_declared_one_renewal_domain(
        pki: UpstreamPKI, tmp_path: Path, type_name: str) -> None:
    """EJBCA's revocation lookup answers by issuer and serial: a certificate of ``est``
    would renew on ``newkey`` (and escape its same-key ban) unless refused at start-up."""
    found = problems(two_labels(pki, tmp_path, type_name), tmp_path)
    assert any(p.startswith("aliases.est.accept_renewals_from: labels \"est\" and \"newkey\" issue "
                            'through backend "ejbca" certificates it cannot tell apart') for p in found), found
    # declared one way only: the label that does not list the other is named
    found = problems(two_labels(pki, tmp_path, type_name, est_accepts=("newkey",)), tmp_path)
    assert [p.split(":")[0] for p in found] == ["aliases.newkey.accept_renewals_from"], found
    # declared both ways, or different CAs: accepted
    declared = two_labels(pki, tmp_path, type_name, est_accepts=("newkey",), newkey_accepts=("est",))
    assert set(parse_config(declared, base_dir=tmp_path).aliases) == {"est", "newkey"}
    apart = two_labels(pki, tmp_path, type_name, second_ca="OtherCA")
    assert set(parse_config(apart, base_dir=tmp_path).aliases) == {"est", "newkey"}
