"""Encrypted delivery of a server-generated key (RFC 7030 §4.4.1.2 and §4.4.2).

A client that puts ``AsymmetricDecryptKeyIdentifier`` (the subject key identifier of a
key of its own) into its serverkeygen CSR gets the new private key as a CMS
EnvelopedData encrypted to the certificate of that key, wrapped in a SignedData signed
by the party that generated the key: this gateway, with its TLS server key. The key
the client names must be that of the client certificate it authenticated with, and an
RSA key (the CMS envelope ``cryptography`` builds uses RSA key transport).
``DecryptKeyIdentifier`` (a symmetric key shared beforehand) is not offered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from est_gateway.errors import BadRequest, Forbidden, NotSupported
from est_gateway.keys import PrivateKey

DECRYPT_KEY_IDENTIFIER = x509.ObjectIdentifier("1.2.840.113549.1.9.16.2.37")
ASYMMETRIC_DECRYPT_KEY_IDENTIFIER = x509.ObjectIdentifier("1.2.840.113549.1.9.16.2.54")
CT_SERVER_GENERATED_KEY = "application/pkcs7-mime; smime-type=server-generated-key"


@dataclass(frozen=True)
class KeySigner:
    """Who signs encrypted keys: the gateway's own TLS server certificate and key."""

    certificate: x509.Certificate
    key: PrivateKey


def recipient(csr: x509.CertificateSigningRequest, client: x509.Certificate | None) -> x509.Certificate | None:
    """The certificate to encrypt the new key to, or None when the client did not ask."""
    oids = {a.oid for a in csr.attributes}
    if DECRYPT_KEY_IDENTIFIER in oids:
        raise NotSupported("DecryptKeyIdentifier (a pre-shared symmetric key) is not supported; "
                           "use AsymmetricDecryptKeyIdentifier or no key encryption")
    if ASYMMETRIC_DECRYPT_KEY_IDENTIFIER not in oids:
        return None
    wanted = _key_identifier(csr)
    if client is None:
        raise Forbidden("AsymmetricDecryptKeyIdentifier names a key; authenticate with the "
                        "TLS client certificate of that key")
    if wanted != x509.SubjectKeyIdentifier.from_public_key(client.public_key()).digest and wanted != _ski(client):
        raise Forbidden("AsymmetricDecryptKeyIdentifier does not name the key of the TLS client certificate")
    if not isinstance(client.public_key(), rsa.RSAPublicKey):
        raise NotSupported("the key named by AsymmetricDecryptKeyIdentifier must be an RSA key")
    return client


def _key_identifier(csr: x509.CertificateSigningRequest) -> bytes:
    value = csr.attributes.get_attribute_for_oid(ASYMMETRIC_DECRYPT_KEY_IDENTIFIER).value
    if not isinstance(value, bytes) or not value:
        raise BadRequest("AsymmetricDecryptKeyIdentifier is empty or malformed")
    return value


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def wrap(key: PrivateKey, to: x509.Certificate, signer: KeySigner, now: dt.datetime) -> bytes:
    """DER ContentInfo: SignedData(EnvelopedData(PKCS#8 key)) per RFC 7030 §4.4.2."""
    # asn1crypto's CMS and X.509 modules (1.5 MiB per worker) are loaded when first needed
    from asn1crypto import cms
    from asn1crypto import x509 as asn1_x509

    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    enveloped = (pkcs7.PKCS7EnvelopeBuilder().set_data(pkcs8).add_recipient(to)
                 .set_content_encryption_algorithm(algorithms.AES256)
                 .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))  # no S/MIME text mangling
    econtent = cms.ContentInfo.load(enveloped)["content"].untag().dump()   # the EnvelopedData itself
    signed_attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": ["enveloped_data"]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": core.UTCTime(now)})]}),
        cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(econtent).digest()]}),
    ])
    signature, algorithm = _sign(signer.key, signed_attrs.dump())
    cert = asn1_x509.Certificate.load(signer.certificate.public_bytes(serialization.Encoding.DER))
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": {"algorithm": algorithm},
        "signature": signature,
    })
    signed = cms.SignedData({
        "version": "v3",   # eContentType is not id-data (RFC 5652 §5.1)
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "enveloped_data", "content": core.ParsableOctetString(econtent)},
        "certificates": [cert],
        "signer_infos": [signer_info],
    })
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _sign(key: PrivateKey, data: bytes) -> tuple[bytes, str]:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256()), "sha256_rsa"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256())), "sha256_ecdsa"
    raise NotSupported("the gateway's TLS key cannot sign encrypted keys")
