"""Checks that what CFSSL issued is what the alias asked for, before anyone gets it.

CFSSL does not fail on an unknown profile name: it signs with its default profile
(``signer.Policy`` lookup falls back to ``Default``). It also rebuilds the subject from
its own name fields (C, ST, L, O, OU, CN, serialNumber), dropping any other attribute of
the CSR. Either way the certificate is not what the EST client asked for: refuse it.
"""

from __future__ import annotations

import logging
from collections import Counter

from cryptography import x509

from est_gateway.plugin import UpstreamError, issued_by, requested_sans, spki
from est_gateway_cfssl.options import CfsslTarget

log = logging.getLogger(__name__)


def check_issued(certificate: x509.Certificate, csr: x509.CertificateSigningRequest,
                 signer: x509.Certificate, target: CfsslTarget, backend: str) -> None:
    """Raise a 502 naming what differs (and log it for the operator, with the serial)."""
    problem = _difference(certificate, csr, signer, target)
    if problem is not None:
        log.error("backend %s: CFSSL issued serial %d with profile %r but %s; it was not handed out "
                  "(check that the profile exists in CFSSL's signing configuration)",
                  backend, certificate.serial_number, target.profile, problem)
        raise UpstreamError(f"the upstream CA issued a certificate this EST label does not allow: {problem}")


def _difference(certificate: x509.Certificate, csr: x509.CertificateSigningRequest,
                signer: x509.Certificate, target: CfsslTarget) -> str | None:
    if not issued_by(certificate, signer):
        return "it is not signed by the CA certificate cacerts serves"
    if spki(certificate.public_key()) != spki(csr.public_key()):
        return "it certifies another key than the CSR's"
    missing = Counter(_attributes(csr.subject)) - Counter(_attributes(certificate.subject))
    added = Counter(_attributes(certificate.subject)) - Counter(_attributes(csr.subject))
    if missing or added:
        names = sorted({oid for oid, _ in missing} | {oid for oid, _ in added})
        return f"its subject differs from the CSR's in {', '.join(names)}"
    if set(requested_sans(csr)) != _sans(certificate):
        return "its subjectAltName differs from the CSR's"
    usages = _extended_usages(certificate)
    lacking = [name for name, oid in zip(target.usages, target.usage_oids, strict=True) if oid not in usages]
    if lacking:
        return f"it lacks the extended key usage {', '.join(lacking)}"
    return None


def _attributes(name: x509.Name) -> list[tuple[str, str]]:
    return [(attribute.rfc4514_attribute_name, str(attribute.value)) for attribute in name]


def _sans(certificate: x509.Certificate) -> set[x509.GeneralName]:
    try:
        return set(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return set()


def _extended_usages(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()
