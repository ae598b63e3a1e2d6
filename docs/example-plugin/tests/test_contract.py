"""The example backend runs est-gateway's public contract suite, loaded through its entry point."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from est_gateway.errors import ConfigError
from est_gateway.testing import BackendContract, build_backend, target_problems
from est_gateway_example import FileCABackend, FileCATarget


def write_ca(folder: Path) -> dict[str, str]:
    """A CA key and certificate in ``folder``, as the operator provides them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example File CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    (folder / "ca.key").chmod(0o600)
    return {"ca_cert": "ca.pem", "ca_key": "ca.key", "state_dir": "state"}


class TestFileCAContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Any:
        backend = build_backend("example-file-ca", write_ca(tmp_path), base_dir=tmp_path)
        assert isinstance(backend, FileCABackend)
        backend.start()
        yield backend
        backend.close()

    @pytest.fixture
    def alias_settings(self) -> dict[str, object]:
        return {"validity_days": 7, "usages": ["clientAuth"]}

    def revoke(self, backend: Any, certificate: x509.Certificate) -> None:
        """The CA operator's act: a marker file named after the serial."""
        (backend.state_dir / "revoked" / format(certificate.serial_number, "x")).touch()


def test_alias_settings_become_the_target(tmp_path: Path) -> None:
    backend = build_backend("example-file-ca", write_ca(tmp_path), base_dir=tmp_path)
    target, problems = target_problems(backend, {"validity_days": 90, "usages": ["serverAuth"]})
    assert problems == [] and target == FileCATarget(validity_days=90, usages=("serverAuth",))
    _, problems = target_problems(backend, {"validity_day": 90})
    assert problems == ['aliases.est.validity_day: unknown setting; did you mean "validity_days"?']


def test_every_configuration_problem_names_its_key(tmp_path: Path) -> None:
    (tmp_path / "not-a-key.pem").write_text("nothing here\n")
    with pytest.raises(ConfigError) as caught:
        build_backend("example-file-ca", {"ca_cert": "missing.pem", "ca_key": "not-a-key.pem", "stat_dir": "x"},
                      base_dir=tmp_path)
    problems = "\n".join(caught.value.problems)
    assert "backends.contract.ca_cert: file" in problems and "does not exist" in problems
    assert "backends.contract.ca_key:" in problems and "no unencrypted PEM private key" in problems
    assert 'backends.contract.stat_dir: unknown setting; did you mean "state_dir"?' in problems
