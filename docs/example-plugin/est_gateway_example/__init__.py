"""An example est-gateway backend: a CA whose key and certificate are files.

Everything comes from :mod:`est_gateway.plugin`, the public plugin API. Configuration::

    [backends.files]
    type = "example-file-ca"
    ca_cert = "ca/ca.pem"          # PEM; the CA certificate cacerts serves
    ca_key = "ca/ca.key"           # PEM, unencrypted, mode 600
    state_dir = "state/files"      # issued/<serial>.pem; revoked/<serial> marks a revocation

    [aliases.est]
    backend = "files"
    validity_days = 30             # this backend's alias keys (its target)
    usages = ["clientAuth"]
    username = "estuser"
    password_file = "secrets/est.password"

The CA operator revokes a certificate by creating ``<state_dir>/revoked/<serial>`` (the
serial in lower-case hex). Every worker process and thread shares the files, so the
backend is safe to call concurrently; it calls nothing remote, so no call can hang.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from est_gateway.plugin import (
    CABackend,
    EnrollRequest,
    Issued,
    ReenrollRequest,
    RevocationStatus,
    Section,
    UpstreamUnavailable,
    issued_by,
    requested_sans,
)

CAKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: the extended key usages an alias may ask for
USAGES = {"clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH, "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH}


@dataclass(frozen=True)
class FileCATarget:
    """What an alias asks of this CA (the backend's own, typed and frozen)."""

    validity_days: int = 30
    usages: tuple[str, ...] = ("clientAuth",)


class FileCABackend(CABackend[FileCATarget]):
    """Signs with a CA key from a file; keeps every issued certificate as a file."""

    def __init__(self, name: str, ca: tuple[x509.Certificate, CAKey] | None, state_dir: Path) -> None:
        super().__init__(name)
        #: ``None`` only after a configuration problem (the gateway then never serves)
        self._ca = ca
        self.state_dir = state_dir

    @property
    def certificate(self) -> x509.Certificate:
        return self._loaded()[0]

    def _loaded(self) -> tuple[x509.Certificate, CAKey]:
        if self._ca is None:
            raise UpstreamUnavailable(f"backend {self.name} has no usable CA key")
        return self._ca

    # -- configuration: every problem recorded on the section, with its key ---------------

    @classmethod
    def from_options(cls, name: str, options: Section) -> FileCABackend:
        cert_path = options.path_value("ca_cert", must_exist=True)
        key_path = options.path_value("ca_key", must_exist=True)
        state_dir = options.path_value("state_dir", f"state/{name}") or Path(f"state/{name}")
        certificate: x509.Certificate | None = None
        key: CAKey | None = None
        if cert_path is not None and cert_path.is_file():
            try:
                certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except ValueError:
                options.error("ca_cert", f"{cert_path} holds no PEM certificate")
        if key_path is not None and key_path.is_file():
            try:
                loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except (ValueError, TypeError):
                options.error("ca_key", f"{key_path} holds no unencrypted PEM private key")
            else:
                if not isinstance(loaded, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
                    options.error("ca_key", "must be an RSA or EC key")
                elif certificate is not None and loaded.public_key() != certificate.public_key():
                    options.error("ca_key", f"does not belong to the certificate in {cert_path}")
                else:
                    key = loaded
        return cls(name, (certificate, key) if certificate is not None and key is not None else None, state_dir)

    def parse_target(self, alias: Section) -> FileCATarget:
        """This backend's keys of ``[aliases.<name>]``; the core reads (and checks) the rest."""
        days = alias.int("validity_days", 30, minimum=1, maximum=825)
        usages = alias.str_list("usages", ["clientAuth"], choices=tuple(USAGES))
        if not usages:
            alias.error("usages", "name at least one extended key usage")
        return FileCATarget(validity_days=days, usages=tuple(usages))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Before the workers fork: create the folders (nothing to connect to)."""
        for sub in ("issued", "revoked"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def describe_state(self) -> dict[str, str]:
        return {"CA": self.certificate.subject.rfc4514_string(), "state folder": str(self.state_dir)}

    # -- EST operations -----------------------------------------------------------------------

    def ca_certs(self, target: FileCATarget) -> list[x509.Certificate]:
        return [self.certificate]

    def enroll(self, request: EnrollRequest[FileCATarget]) -> Issued:
        """Sign the CSR (the core has verified it and the client) and record the result."""
        target, csr = request.target, request.csr
        ca_cert, ca_key = self._loaded()
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(csr.subject)
                   .issuer_name(ca_cert.subject)
                   .public_key(csr.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(min(now + dt.timedelta(days=target.validity_days),
                                        ca_cert.not_valid_after_utc))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([USAGES[u] for u in target.usages]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        sans = requested_sans(csr)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        self._record(certificate)
        return Issued(certificate, (ca_cert,))

    def reenroll(self, request: ReenrollRequest[FileCATarget]) -> Issued:
        """The core checked the client's current certificate; renewal is another signature."""
        return self.enroll(request)

    def revocation_status(self, certificate: x509.Certificate, target: FileCATarget) -> RevocationStatus:
        serial = format(certificate.serial_number, "x")
        record = self.state_dir / "issued" / f"{serial}.pem"
        try:
            known = issued_by(certificate, self.certificate) and record.read_bytes() == _pem(certificate)
        except FileNotFoundError:
            known = False
        except OSError as exc:
            raise UpstreamUnavailable(f"the CA's records cannot be read ({exc.strerror})") from None
        if not known:
            return RevocationStatus(known=False, revoked=False)
        return RevocationStatus(known=True, revoked=(self.state_dir / "revoked" / serial).exists())

    def _record(self, certificate: x509.Certificate) -> None:
        """Written to a temporary file and renamed: no reader sees half a record."""
        folder = self.state_dir / "issued"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".issued-")
        with os.fdopen(fd, "wb") as out:
            out.write(_pem(certificate))
        os.replace(tmp, folder / f"{format(certificate.serial_number, 'x')}.pem")


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)

