"""Server-side key generation (RFC 7030 §4.4) and its multipart/mixed response.

The gateway generates the key pair in memory, builds a CSR with the client's subject
and subjectAltName signed by the new key, has any backend issue for it, and returns
the key as PKCS#8 with the certificate. The key is never written to disk or a log.
"""

from __future__ import annotations

import secrets

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from est_gateway import wire
from est_gateway.errors import BadRequest
from est_gateway.keys import PrivateKey, key_type_of, new_key, signature_hash

CT_PKCS8 = "application/pkcs8"


def choose_key_type(csr: x509.CertificateSigningRequest, policy: str) -> str:
    """The alias's fixed type, or (``"csr"``) the type of the key that signed the CSR."""
    if policy != "csr":
        return policy
    found = key_type_of(csr.public_key())
    if found is None:
        raise BadRequest("cannot tell which key to generate from the CSR's key; "
                         "use an RSA 2048/3072/4096 or EC P-256/P-384 key")
    return found


def generate(csr: x509.CertificateSigningRequest, key_type: str
             ) -> tuple[PrivateKey, x509.CertificateSigningRequest]:
    """A new key and a CSR for it with the client's subject and extension request."""
    key = new_key(key_type)
    builder = x509.CertificateSigningRequestBuilder().subject_name(csr.subject)
    for ext in wire.csr_extensions(csr):
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return key, builder.sign(key, signature_hash(key))


def plain_key_part(key: PrivateKey) -> tuple[str, bytes]:
    """The key as PKCS#8, protected by TLS alone (RFC 7030 §4.4.2)."""
    return CT_PKCS8, key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())


def multipart(key_part: tuple[str, bytes], certificate: x509.Certificate) -> tuple[bytes, str]:
    """Body and Content-Type of the serverkeygen answer: the key part and a certs-only part,
    each with its own Content-Type and Content-Transfer-Encoding (libest ignores parts without)."""
    boundary = f"est-{secrets.token_hex(12)}"
    parts = [key_part, (wire.CT_CERTS_ONLY, wire.certs_only([certificate]))]
    body = b""
    for content_type, der in parts:
        body += (f"--{boundary}\r\nContent-Type: {content_type}\r\n"
                 "Content-Transfer-Encoding: base64\r\n\r\n").encode()
        body += wire.encode_base64_body(der).replace(b"\n", b"\r\n")
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/mixed; boundary={boundary}"
