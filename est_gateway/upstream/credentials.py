"""Start-up checks of the operator's upstream credentials, and the TLS context built from them.

The identity is a PEM pair (``client_cert`` + ``client_key``) or a PKCS#12 keystore
(``client_pkcs12``, what EJBCA's RA web hands out as token type P12). The key may be
passphrase-protected: ``requests``' ``cert=`` cannot decrypt keys, so the identity is
loaded into an :class:`ssl.SSLContext` (``load_cert_chain(password=...)``) that the HTTP
session uses. Checked once, before serving: files readable, the key (or keystore) not
readable by every user, the key matching the certificate, the CA bundle holding
certificates; a certificate that expires within the warning period is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import ssl
import stat
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    PublicFormat,
    pkcs12,
)

log = logging.getLogger(__name__)


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


def check_key_file_mode(path: Path, key: str = "client_key") -> None:
    """A private key readable by every local user is refused (``chmod 600`` it)."""
    mode = path.stat().st_mode
    if mode & stat.S_IROTH:
        raise CredentialError(key, f"{path} is readable by every user (mode "
                                   f"{stat.S_IMODE(mode):o}); chmod 600 it")


def warn_if_expiring(certificate: x509.Certificate, source: Path, warn_days: int,
                     now: dt.datetime | None = None) -> None:
    """Log the client certificate's coming (or past) expiry: the CA will refuse it then."""
    now = now or dt.datetime.now(dt.UTC)
    left = certificate.not_valid_after_utc - now
    when = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    if left <= dt.timedelta(0):
        log.error("the upstream client certificate in %s expired on %s; the CA will refuse it",
                  source, when)
    elif left <= dt.timedelta(days=warn_days):
        log.warning("the upstream client certificate in %s expires on %s (in %d days); renew it",
                    source, when, left.days)


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
                       ca_bundle: Path | None, *, warn_days: int = 30) -> ssl.SSLContext:
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
    warn_if_expiring(certs[0], cert_path, warn_days)
    context = server_trust_context(ca_bundle)
    try:
        context.load_cert_chain(str(cert_path), str(key_path), password=passphrase)
    except ssl.SSLError as exc:
        raise CredentialError("client_key", f"OpenSSL refused the key pair: {exc.reason}") from None
    return context


def client_tls_context_pkcs12(path: Path, passphrase: str | None, ca_bundle: Path | None, *,
                              warn_days: int = 30) -> ssl.SSLContext:
    """Like :func:`client_tls_context`, for a PKCS#12 keystore (key, certificate, chain).

    ``ssl`` loads identities from files only: the pair goes to a private temporary folder,
    the key encrypted with a one-time random passphrase, and is removed once loaded.
    """
    data = _read(path, "client_pkcs12")
    check_key_file_mode(path, "client_pkcs12")
    try:
        bundle = pkcs12.load_pkcs12(data, passphrase.encode() if passphrase is not None else None)
    except ValueError:
        hint = ("set client_pkcs12_passphrase_file or client_pkcs12_passphrase_env"
                if passphrase is None else "or the passphrase is wrong")
        raise CredentialError("client_pkcs12", f"{path} is not a readable PKCS#12 keystore ({hint})") from None
    if bundle.key is None or bundle.cert is None:  # OpenSSL pairs the certificate with the key
        raise CredentialError("client_pkcs12", f"{path} must hold a private key and its certificate")
    certificate = bundle.cert.certificate
    warn_if_expiring(certificate, path, warn_days)
    context = server_trust_context(ca_bundle)
    one_time = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="est-gateway-p12-") as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        chain = [certificate, *(c.certificate for c in bundle.additional_certs)]
        cert_file.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain))
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(bundle.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                               BestAvailableEncryption(one_time.encode())))
        try:
            context.load_cert_chain(str(cert_file), str(key_file), password=one_time)
        except ssl.SSLError as exc:
            raise CredentialError("client_pkcs12", f"OpenSSL refused the key pair: {exc.reason}") from None
    return context
