"""Start-up checks of the operator's upstream credentials, and the TLS context built from them.

The key may be passphrase-protected: ``requests``' ``cert=`` cannot decrypt keys, so the
identity is loaded into an :class:`ssl.SSLContext` (``load_cert_chain(password=...)``) that
the HTTP session uses. Checked once, before serving: files readable, the key not readable
by every user, the key matching the certificate, the CA bundle holding certificates.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


class CredentialError(Exception):
    """A credential problem, attributed to the configuration key it came from."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialError(key, f"cannot read {path}: {exc.strerror}") from None


def check_key_file_mode(path: Path) -> None:
    """A private key readable by every local user is refused (``chmod 600`` it)."""
    mode = path.stat().st_mode
    if mode & stat.S_IROTH:
        raise CredentialError("client_key", f"{path} is readable by every user (mode "
                                            f"{stat.S_IMODE(mode):o}); chmod 600 it")


def spki(public_key: object) -> bytes:
    """DER SubjectPublicKeyInfo, to compare keys."""
    der: bytes = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]
    return der


def server_trust_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """An ``SSLContext`` trusting only ``ca_bundle`` (``None``: ``insecure = true``, no checks)."""
    if ca_bundle is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            x509.load_pem_x509_certificates(_read(ca_bundle, "ca_bundle"))
        except ValueError:
            raise CredentialError("ca_bundle", f"{ca_bundle} holds no PEM certificate") from None
        context = ssl.create_default_context(cafile=str(ca_bundle))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client_tls_context(cert_path: Path, key_path: Path, passphrase: str | None,
                       ca_bundle: Path | None) -> ssl.SSLContext:
    """An ``SSLContext`` presenting the client identity and trusting only ``ca_bundle``.

    ``ca_bundle=None`` means the operator set ``insecure = true``: no verification at all.
    """
    cert_pem = _read(cert_path, "client_cert")
    key_pem = _read(key_path, "client_key")
    check_key_file_mode(key_path)
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CredentialError("client_cert", f"{cert_path} holds no PEM certificate") from None
    password = passphrase.encode() if passphrase is not None else None
    try:
        key = serialization.load_pem_private_key(key_pem, password=password)
    except TypeError:
        hint = ("is encrypted; set client_key_passphrase_file or client_key_passphrase_env"
                if password is None else "is not encrypted; remove the passphrase setting")
        raise CredentialError("client_key", f"{key_path} {hint}") from None
    except ValueError:
        raise CredentialError("client_key", f"{key_path} is not a PEM private key, or the "
                                            "passphrase is wrong") from None
    if spki(key.public_key()) != spki(certs[0].public_key()):
        raise CredentialError("client_key", f"{key_path} does not belong to the certificate in "
                                            f"{cert_path}")
    context = server_trust_context(ca_bundle)
    try:
        context.load_cert_chain(str(cert_path), str(key_path), password=passphrase)
    except ssl.SSLError as exc:
        raise CredentialError("client_key", f"OpenSSL refused the key pair: {exc.reason}") from None
    return context
