"""Table-driven tests of an HTTP backend's answers, with ``responses`` standing in for its CA.

Every call a backend makes through :class:`~est_gateway.plugin.http.UpstreamClient` goes
through a ``requests`` session, which ``responses`` intercepts: a test scripts the CA's
answer (a status and body, a redirect, or a transport fault) and checks what the backend
makes of it (the EST status, the reason, the log line), without a CA or a network::

    from est_gateway.testing.http import fault, mocked_backend, upstream_credentials

    @pytest.mark.parametrize("answer, status, reason", [
        (dict(status=500, json={}), 503, "unavailable"),
        (dict(body=fault("read-timeout")), 504, "did not answer"),
    ])
    def test_answers(tmp_path, answer, status, reason):
        options = {**upstream_credentials(tmp_path), "profile": "client"}
        with mocked_backend("myca", options, base_dir=tmp_path) as (backend, upstream):
            upstream.post("https://ca.test/api/sign", **answer)
            with pytest.raises(ESTError) as caught:
                backend.enroll(...)
        assert (caught.value.status, reason in caught.value.detail) == (status, True)

It needs ``responses`` (and pytest), which the gateway itself does not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from est_gateway.testing.contract import build_backend

#: the upstream URL of :func:`upstream_credentials` (nothing resolves it: responses answers)
URL = "https://ca.test"

#: the transport faults a CA's network can cause, as the exception ``requests`` raises for
#: each (pass one as ``body=`` to ``responses``; each call makes a new instance)
FAULTS: dict[str, Callable[[], Exception]] = {
    "refused": lambda: requests.ConnectionError("connection refused"),
    "connect-timeout": lambda: requests.ConnectTimeout("connect timed out"),
    "read-timeout": lambda: requests.ReadTimeout("read timed out"),
    "tls": lambda: requests.exceptions.SSLError("certificate verify failed"),
    "truncated": lambda: requests.exceptions.ChunkedEncodingError("connection broken: IncompleteRead"),
}


def fault(kind: str) -> Exception:
    """The exception for a transport fault (a key of :data:`FAULTS`)."""
    return FAULTS[kind]()


@dataclass(frozen=True)
class ThrowawayCA:
    """A P-256 CA made for one test: what a mocked upstream signs with, or trusts."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def create(cls, common_name: str) -> ThrowawayCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def issue(self, public_key: CertificatePublicKeyTypes, subject: x509.Name, *, days: int = 1) -> x509.Certificate:
        """An end-entity certificate for ``clientAuth``, as a CA signs a CSR."""
        now = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))

    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def upstream_credentials(folder: Path, *, url: str = URL, client_cert: bool = True) -> dict[str, Any]:
    """The connection keys of ``[backends.<name>]`` (``url``, ``ca_bundle``, and unless
    ``client_cert=False`` a client certificate and key, mode 600) with throwaway files in
    ``folder``, which :func:`~est_gateway.plugin.parse_upstream` accepts. Retries are on,
    with no backoff, so that a table does not wait."""
    tls_ca = ThrowawayCA.create("Mocked upstream TLS CA")
    bundle = folder / "upstream-ca.pem"
    bundle.write_text(tls_ca.pem())
    options: dict[str, Any] = {"url": url, "ca_bundle": str(bundle), "retries": 2, "retry_backoff_s": 0}
    if client_cert:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = tls_ca.issue(key.public_key(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "est-gateway")]),
                            days=365)
        cert_file, key_file = folder / "upstream-client.pem", folder / "upstream-client.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        options.update(client_cert=str(cert_file), client_key=str(key_file))
    return options


@contextmanager
def mocked_backend(type_name: str, options: Mapping[str, object], *, base_dir: Path,
                   name: str = "contract") -> Iterator[tuple[Any, responses.RequestsMock]]:
    """A started backend of type ``type_name`` (found through its entry point) and the
    ``responses`` mock that answers its upstream calls; a call nothing was scripted for is
    refused as a connection error. The backend is closed on exit."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as upstream:
        backend = build_backend(type_name, options, name=name, base_dir=base_dir)
        backend.start()
        try:
            yield backend, upstream
        finally:
            backend.close()
