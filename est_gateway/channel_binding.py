"""Channel binding of a CSR to the TLS session it arrives on (RFC 7030 §3.5).

The CSR's challengePassword must equal base64(tls-unique) on TLS 1.2 (RFC 5929), or
base64 of the RFC 9266 ``tls-exporter`` value on TLS 1.3. The values come from our
own TLS endpoint (``est_gateway.server.tls``); behind a proxy they do not exist.
A client whose verified certificate carries id-kp-cmcRA (an RA enrolling on behalf of
devices) is exempt, as RFC 7030 §3.5 allows.
"""

from __future__ import annotations

import base64
import hmac

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from est_gateway.errors import Unauthorized
from est_gateway.identity import TLSInfo

ID_KP_CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR's challengePassword attribute as text, or None."""
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def expected_value(tls: TLSInfo) -> str | None:
    """base64 of the binding this connection's client must put in challengePassword."""
    raw = tls.tls_exporter if tls.version == "TLSv1.3" else tls.tls_unique
    return base64.b64encode(raw).decode() if raw else None


def is_registration_authority(cert: x509.Certificate | None) -> bool:
    if cert is None:
        return False
    try:
        return ID_KP_CMC_RA in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def check(csr: x509.CertificateSigningRequest, tls: TLSInfo | None,
          verified_client: x509.Certificate | None, *, realm: str | None) -> None:
    """Raise 401 unless the CSR is bound to this TLS session (or the client is an RA)."""
    if is_registration_authority(verified_client):
        return
    if tls is None:
        raise Unauthorized("channel binding needs TLS terminated by the gateway", realm=realm)
    expected = expected_value(tls)
    given = challenge_password(csr)
    if given is None:
        raise Unauthorized("channel binding required: the CSR's challengePassword must carry "
                           "base64(tls-unique) on TLS 1.2 or base64(tls-exporter) on TLS 1.3", realm=realm)
    if expected is None or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("channel binding mismatch: the CSR's challengePassword does not match "
                           "this TLS session", realm=realm)
