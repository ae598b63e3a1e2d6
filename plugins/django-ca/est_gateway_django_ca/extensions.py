"""The extensions sent with a sign request, and the check of what django-ca issued.

django-ca's REST sign (``api_sign_certificate`` in ``django_ca/tasks.py``, 3.2) stores the
profile's name but applies none of its extensions nor its lifetime: the adapter reads the
profile (``GET /profiles/{name}/``) and sends its extensions explicitly, with the CSR's
subjectAltNames, then checks that the certificate carries them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from est_gateway.plugin import BadRequest, UpstreamError, spki

#: django-ca's names of key usage bits are cryptography's ``KeyUsage`` attribute names
KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
EKU_NAMES = {"clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH, "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
             "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING, "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
             "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING, "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING}
DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


@dataclass(frozen=True)
class Profile:
    """What a django-ca profile asks for: its extensions (as the API writes them) and lifetime."""

    name: str
    extensions: tuple[dict[str, Any], ...]
    lifetime: dt.timedelta | None

    @classmethod
    def from_api(cls, name: str, data: Any) -> Profile:
        if not isinstance(data, dict) or not isinstance(data.get("extensions") or {}, dict):
            raise UpstreamError(f'django-ca answered profile "{name}" with unexpected JSON')
        extensions = tuple(ext for ext in (data.get("extensions") or {}).values()
                           if isinstance(ext, dict) and ext.get("type") != "subject_alternative_name")
        return cls(name=name, extensions=extensions, lifetime=_duration(data.get("expires")))

    def key_usage(self) -> set[str]:
        return set(self._values("key_usage"))

    def extended_key_usage(self) -> set[x509.ObjectIdentifier]:
        found = set()
        for value in self._values("extended_key_usage"):
            oid = EKU_NAMES.get(value)
            if oid is None and re.fullmatch(r"\d+(\.\d+)+", value):
                oid = x509.ObjectIdentifier(value)
            if oid is not None:
                found.add(oid)
        return found

    def _values(self, kind: str) -> list[str]:
        for ext in self.extensions:
            if ext.get("type") == kind and isinstance(ext.get("value"), list):
                return [str(v) for v in ext["value"]]
        return []


def _duration(value: object) -> dt.timedelta | None:
    """django-ca's ``expires`` (an ISO 8601 duration such as ``P100DT00H00M00S``)."""
    match = DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds) or None


def subject_json(name: x509.Name) -> list[dict[str, str]]:
    """A subject in django-ca's ``NameModel`` form: ``[{"oid": ..., "value": ...}]``, in order."""
    return [{"oid": attr.oid.dotted_string, "value": str(attr.value)} for attr in name]


def san_json(names: list[x509.GeneralName]) -> list[dict[str, str]]:
    """subjectAltNames in django-ca's ``GeneralNameModel`` form; other kinds are refused (400)."""
    out = []
    for name in names:
        if isinstance(name, x509.DNSName):
            out.append({"type": "DNS", "value": name.value})
        elif isinstance(name, x509.IPAddress):
            out.append({"type": "IP", "value": str(name.value)})
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append({"type": "URI", "value": name.value})
        elif isinstance(name, x509.RFC822Name):
            out.append({"type": "email", "value": name.value})
        else:
            raise BadRequest(f"this EST label cannot pass a {type(name).__name__} subjectAltName to django-ca")
    return out


def request_extensions(profile: Profile, sans: list[x509.GeneralName]) -> list[dict[str, Any]]:
    """The profile's extensions plus the CSR's subjectAltNames, for the sign request."""
    extensions = [dict(ext) for ext in profile.extensions]
    if sans:
        extensions.append({"type": "subject_alternative_name", "critical": False, "value": san_json(sans)})
    return extensions


def check_issued(cert: x509.Certificate, csr: x509.CertificateSigningRequest,
                 sans: list[x509.GeneralName], profile: Profile) -> list[str]:
    """What differs between the certificate and what was asked (empty when it matches)."""
    problems = []
    if spki(cert.public_key()) != spki(csr.public_key()):
        problems.append("another public key")
    if cert.subject != csr.subject:
        problems.append(f"subject {cert.subject.rfc4514_string()!r}")
    wanted_ku = profile.key_usage()
    if wanted_ku:
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            got = {name for name in KEY_USAGES if _bit(usage, name)}
        except x509.ExtensionNotFound:
            got = set()
        if got != wanted_ku:
            problems.append(f"key usage {sorted(got)} instead of {sorted(wanted_ku)}")
    wanted_eku = profile.extended_key_usage()
    if wanted_eku:
        try:
            got_eku = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            got_eku = set()
        if not wanted_eku <= got_eku:
            missing = sorted(o._name for o in wanted_eku - got_eku)
            problems.append(f"no extended key usage {', '.join(missing)}")
    try:
        got_sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        got_sans = set()
    if got_sans != set(sans):
        problems.append("other subjectAltNames than the CSR's")
    return problems


def _bit(usage: x509.KeyUsage, name: str) -> bool:
    if name in ("encipher_only", "decipher_only") and not usage.key_agreement:
        return False   # cryptography raises for these unless keyAgreement is set
    return bool(getattr(usage, name))

