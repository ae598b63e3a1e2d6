"""EST wire formats (RFC 7030 §4, RFC 8951 §3): base64 bodies, PKCS#10 in, PKCS#7 out."""

from __future__ import annotations

import base64
import binascii

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, pkcs7

from est_gateway.errors import BadRequest, Forbidden

# Content types, byte for byte: libest compares them by prefix with exactly one space.
CT_PKCS10 = "application/pkcs10"
CT_PKCS7 = "application/pkcs7-mime"
CT_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CT_CSRATTRS = "application/csrattrs"
CT_TEXT = "text/plain; charset=utf-8"

_WHITESPACE = b"\r\n\t "
_B64_LINE = 64


def decode_base64_body(body: bytes) -> bytes:
    """Decode a base64 request body whatever its CTE header said (RFC 8951 §3).

    CR, LF, space and tab are tolerated anywhere; any line length or none.
    Raises ``ValueError`` for anything that is not base64.
    """
    compact = body.translate(None, _WHITESPACE)
    if not compact:
        raise ValueError("empty body; expected base64-encoded DER")
    try:
        # strict: any byte outside the alphabet, a misplaced or missing "=", or data after
        # the padding is refused (what b64decode(validate=True) refuses, without its regex)
        return binascii.a2b_base64(compact, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueError("body is not valid base64") from None


def encode_base64_body(der: bytes) -> bytes:
    """Base64 wrapped at 64 columns with a trailing newline (what libest can read)."""
    text = base64.b64encode(der)
    lines = [text[i:i + _B64_LINE] for i in range(0, len(text), _B64_LINE)]
    return b"\n".join(lines) + b"\n"


def parse_csr(der: bytes) -> x509.CertificateSigningRequest:
    """Parse a DER PKCS#10 request and verify its self-signature (proof of possession)."""
    csr = load_csr(der)
    verify_csr_signature(csr)
    return csr


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    """Parse a DER PKCS#10 request without verifying it (check limits first, then verify)."""
    try:
        return x509.load_der_x509_csr(der)
    except x509.InvalidVersion:
        raise ValueError("CSR version is not v1 (0)") from None
    except ValueError:
        raise ValueError("body is base64 but not a DER PKCS#10 certificate request") from None


def verify_csr_signature(csr: x509.CertificateSigningRequest) -> None:
    """Proof of possession: the CSR's self-signature verifies."""
    try:
        valid = csr.is_signature_valid
    except Exception:  # unsupported algorithms surface here
        raise ValueError("CSR signature algorithm is not supported") from None
    if not valid:
        raise ValueError("CSR signature does not verify")


def extension_refusal(item: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    """Why ``item``'s extensions cannot be read, or None. cryptography parses them all on
    first access and raises ValueError, DuplicateExtension, or, for a GeneralName type it
    does not support (x400Address, ediPartyName) anywhere in them, UnsupportedGeneralNameType,
    which is no ValueError: every reader of client-sent extensions asks here first."""
    try:
        _ = item.extensions   # parsed (and kept) on first access
    except x509.UnsupportedGeneralNameType:
        return "a name of an unsupported type (x400Address or ediPartyName)"
    except x509.DuplicateExtension:
        return "a duplicate extension"
    except ValueError:
        return "a malformed extension"
    return None


def csr_extensions(csr: x509.CertificateSigningRequest) -> x509.Extensions:
    """A CSR's requested extensions (400 with the reason when they cannot be read)."""
    refusal = extension_refusal(csr)
    if refusal is not None:
        raise BadRequest(f"CSR extension request is malformed: {refusal}")
    return csr.extensions


def requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """The subjectAltNames a CSR's extension request asks for (400 when it is malformed)."""
    # a search rather than get_extension_for_class, whose miss (most devices ask for no
    # SAN) costs an exception; parsing refuses a duplicate, so the first is the only one
    for extension in csr_extensions(csr):
        if isinstance(extension.value, x509.SubjectAlternativeName):
            return list(extension.value)
    return []


def certificate_sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The subjectAltNames of a certificate, in its order (403 when they cannot be read:
    only a client certificate can have such extensions)."""
    refusal = extension_refusal(cert)
    if refusal is not None:
        raise Forbidden(f"client certificate has {refusal}")
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def certs_only(certificates: list[x509.Certificate]) -> bytes:
    """A degenerate (certs-only) PKCS#7 SignedData in DER."""
    return pkcs7.serialize_certificates(certificates, Encoding.DER)


def read_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only PKCS#7 (a SET: order carries no meaning)."""
    return pkcs7.load_der_pkcs7_certificates(der)



def spki(key: CertificatePublicKeyTypes) -> bytes:
    """A public key as DER SubjectPublicKeyInfo (how keys are compared)."""
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
