"""The backend contract: what every :class:`CABackend` must do, as a reusable test class.

Like certbot's ``dns_test_common``, a backend's own tests subclass :class:`BackendContract`
and provide two fixtures and one method; pytest then runs every contract test against that
backend::

    class TestMyCAContract(BackendContract):
        @pytest.fixture
        def backend(self): ...          # a started backend
        @pytest.fixture
        def alias_settings(self): ...   # its keys of [aliases.<name>], as TOML gives them
        def revoke(self, backend, certificate): ...   # revoke through the CA itself

The ``target`` fixture is what the backend's ``parse_target`` makes of ``alias_settings``
(override it to test another target).

The checks follow RFC 7030: ``cacerts`` returns CA certificates (§4.1.3), enrollment
certifies the CSR's key and subject (§4.2.1), re-enrollment issues for the same subject
with a new key (§4.2.2), and the revocation lookup the core performs before renewals
(see ``est_gateway.operations``) tells issued, revoked and foreign certificates apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from est_gateway.backends.base import (
    CABackend,
    EnrollRequest,
    Issued,
    ReenrollRequest,
    Requester,
    RevocationStatus,
)
from est_gateway.backends.local import authority
from est_gateway.config.reader import Problems, Section
from est_gateway.errors import ConfigError

#: a key no backend reads: the contract checks it is left for the core to report
UNKNOWN_KEY = "no_such_contract_setting"


def build_backend(type_name: str, options: Mapping[str, object], *, name: str = "contract",
                  base_dir: Path | None = None) -> Any:
    """The backend registered as ``type_name`` (through its entry point, as the gateway
    finds it), built from ``[backends.<name>]`` = ``options`` (without ``type``) as the
    configuration loader builds it; :class:`ConfigError` with every problem. Not started."""
    from est_gateway.backends.registry import BackendRegistry

    problems = Problems()
    section = Section(dict(options), f"backends.{name}", problems, base_dir or Path.cwd())
    backend = BackendRegistry().load(type_name).from_options(name, section)
    section.check_unknown()
    problems.raise_if_any()
    return backend


def target_problems(backend: CABackend[Any], settings: Mapping[str, object], *, path: str = "aliases.est",
                    base_dir: Path | None = None) -> tuple[object, list[str]]:
    """What ``backend.parse_target`` makes of the alias table ``settings`` (as TOML gives it),
    and every problem, unknown keys included (``settings`` holds only the backend's keys)."""
    problems = Problems()
    section = Section(dict(settings), path, problems, base_dir or Path.cwd())
    target = backend.parse_target(section)
    section.check_unknown()
    return target, problems.items


def parse_target(backend: CABackend[Any], settings: Mapping[str, object], *, path: str = "aliases.est",
                 base_dir: Path | None = None) -> Any:
    """The target ``backend`` parses from ``settings``; :class:`ConfigError` on any problem."""
    target, problems = target_problems(backend, settings, path=path, base_dir=base_dir)
    if problems:
        raise ConfigError(problems)
    return target


def new_csr(common_name: str) -> x509.CertificateSigningRequest:
    """A P-256 CSR for ``CN=<common_name>``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


class BackendContract:
    """Mixin of contract tests; subclasses provide ``backend``, ``alias_settings`` and ``revoke``."""

    @pytest.fixture
    def backend(self) -> CABackend[Any]:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @pytest.fixture
    def alias_settings(self) -> dict[str, object]:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @pytest.fixture
    def target(self, backend: CABackend[Any], alias_settings: dict[str, object]) -> Any:
        return parse_target(backend, alias_settings, path="aliases.contract")

    def revoke(self, backend: CABackend[Any], certificate: x509.Certificate) -> None:
        """Revoke ``certificate`` through the CA (not through the backend interface)."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def enroll(backend: CABackend[Any], target: Any,
               csr: x509.CertificateSigningRequest) -> Issued:
        request = EnrollRequest(csr=csr, alias="contract", target=target,
                                requester=Requester(username="contract"),
                                request_id=uuid.uuid4().hex)
        issued = backend.enroll(request)
        assert isinstance(issued, Issued), f"expected a certificate, got {issued!r}"
        return issued

    @staticmethod
    def unique_name() -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    # -- the contract ----------------------------------------------------------------------

    def test_target_is_a_frozen_value(self, backend: CABackend[Any], alias_settings: dict[str, object]) -> None:
        target, problems = target_problems(backend, alias_settings, path="aliases.contract")
        assert problems == []
        assert dataclasses.is_dataclass(target) and not isinstance(target, type)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, dataclasses.fields(target)[0].name, None)
        assert hash(target) == hash(dataclasses.replace(target))

    def test_unknown_alias_keys_are_left_to_the_core(self, backend: CABackend[Any],
                                                     alias_settings: dict[str, object]) -> None:
        _, problems = target_problems(backend, {**alias_settings, UNKNOWN_KEY: "x"}, path="aliases.contract")
        assert problems == [f"aliases.contract.{UNKNOWN_KEY}: unknown setting"]


    def test_cacerts_are_ca_certificates(self, backend: CABackend[Any], target: Any) -> None:
        chain = backend.ca_certs(target)
        assert chain, "cacerts must return at least the issuing CA"
        for cert in chain:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            assert constraints.ca, f"{cert.subject.rfc4514_string()} is not a CA certificate"

    def test_enroll_certifies_the_csr(self, backend: CABackend[Any], target: Any) -> None:
        csr = new_csr(self.unique_name())
        issued = self.enroll(backend, target, csr)
        cert = issued.certificate
        assert cert.public_key() == csr.public_key()
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == \
            csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        anchors = {c.subject.rfc4514_string(): c for c in backend.ca_certs(target)}
        issuer = anchors.get(cert.issuer.rfc4514_string())
        assert issuer is not None, "the issuer must be among the cacerts certificates"
        cert.verify_directly_issued_by(issuer)
        assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC)

    def test_issued_chain_starts_at_the_issuer(self, backend: CABackend[Any], target: Any) -> None:
        issued = self.enroll(backend, target, new_csr(self.unique_name()))
        if issued.chain:
            assert issued.chain[0].subject == issued.certificate.issuer

    def test_reenroll_renews_the_same_subject(self, backend: CABackend[Any], target: Any) -> None:
        name = self.unique_name()
        first = self.enroll(backend, target, new_csr(name)).certificate
        csr = new_csr(name)
        request = ReenrollRequest(csr=csr, alias="contract", target=target,
                                  requester=Requester(certificate=first),
                                  request_id=uuid.uuid4().hex, current=first)
        renewed = backend.reenroll(request)
        assert isinstance(renewed, Issued)
        assert renewed.certificate.subject == first.subject
        assert renewed.certificate.public_key() == csr.public_key()
        assert renewed.certificate.serial_number != first.serial_number

    def test_issued_certificate_is_known_and_good(self, backend: CABackend[Any], target: Any) -> None:
        cert = self.enroll(backend, target, new_csr(self.unique_name())).certificate
        status = backend.revocation_status(cert, target)
        assert status.known and not status.revoked and not status.superseded
        assert status.label in (None, "contract"), "a CA that records labels reports the issuing one"

    def test_revoked_certificate_is_reported(self, backend: CABackend[Any], target: Any) -> None:
        cert = self.enroll(backend, target, new_csr(self.unique_name())).certificate
        self.revoke(backend, cert)
        status = backend.revocation_status(cert, target)
        assert status.known and status.revoked

    def test_foreign_certificate_is_unknown(self, backend: CABackend[Any], target: Any) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        foreign = authority.build_ca(authority.name("Contract Foreign CA"), key, issuer=None,
                                     issuer_key=None, days=1, now=now)
        status = backend.revocation_status(foreign, target)
        assert status == RevocationStatus(known=False, revoked=False)

    def test_describe_state_is_printable_and_secret_free(self, backend: CABackend[Any]) -> None:
        facts = backend.describe_state()
        for key, value in facts.items():
            assert isinstance(key, str) and isinstance(value, str)
            assert "PRIVATE KEY" not in value
