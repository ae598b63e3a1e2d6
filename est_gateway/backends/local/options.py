"""Settings of the built-in CA: its CAs, certificate profiles and end-entity profiles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.x509.oid import NameOID

from est_gateway.backends.local.authority import EXTENDED_KEY_USAGES, KEY_TYPES, KEY_USAGES
from est_gateway.config.reader import Section
from est_gateway.publication.urls import read_url

SUBJECT_FIELDS = {
    "CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER, "UID": NameOID.USER_ID,
    "emailAddress": NameOID.EMAIL_ADDRESS, "DC": NameOID.DOMAIN_COMPONENT,
}
SAN_TYPES = ("dns", "ip", "email", "uri")
#: who signs the OCSP answers of a CA: a delegated responder certificate it issues, or itself
OCSP_SIGNERS = ("responder", "ca")


@dataclass(frozen=True)
class LocalTarget:
    """What an alias asks of the built-in CA: ``ca`` and its two profile names."""

    ca: str
    certificate_profile: str = "default"
    end_entity_profile: str = "default"


@dataclass(frozen=True)
class CASettings:
    key_type: str = "rsa-2048"
    hierarchy: str = "root"            # "root" or "root+issuing"
    common_name: str = ""
    organization: str | None = None
    validity_days: int = 3650
    #: where its CRL is published, written into every certificate it issues (None: no CRL)
    crl_url: str | None = None
    #: where its OCSP responder answers, written into every certificate it issues (None: none)
    ocsp_url: str | None = None
    ocsp_signer: str = "responder"


@dataclass(frozen=True)
class CertificateProfile:
    validity_days: int = 365
    key_usage: tuple[str, ...] = ("digitalSignature", "keyEncipherment")
    extended_key_usage: tuple[str, ...] = ("clientAuth",)
    san_types: tuple[str, ...] = SAN_TYPES
    max_sans: int = 20
    #: whether a dNSName may be a wildcard ("*.example.com")
    allow_wildcard_dns: bool = False


@dataclass(frozen=True)
class EndEntityProfile:
    required_subject: tuple[str, ...] = ("CN",)
    allowed_subject: tuple[str, ...] = tuple(SUBJECT_FIELDS)
    max_value_length: int = 128


@dataclass(frozen=True)
class LocalOptions:
    state_dir: Path
    cas: dict[str, CASettings]
    certificate_profiles: dict[str, CertificateProfile] = field(default_factory=dict)
    end_entity_profiles: dict[str, EndEntityProfile] = field(default_factory=dict)
    #: "auto" issues at once; "manual" queues every request for the operator (202 + Retry-After)
    approval: str = "auto"
    retry_after_s: int = 60


def parse_options(sec: Section) -> LocalOptions:
    """Read ``[backends.<name>]`` of ``type = "local"``; problems go to ``sec.problems``."""
    state_dir = sec.path_value("state_dir")
    cas = {name: _ca(name, s) for name, s in sec.table("cas", required=True).subtables().items()}
    if sec.has("cas") and not cas:
        sec.error("cas", 'define at least one CA, e.g. [backends.local.cas."EST CA"]')
    cps = {n: _cert_profile(s) for n, s in sec.table("certificate_profiles").subtables().items()}
    eeps = {n: _ee_profile(s) for n, s in sec.table("end_entity_profiles").subtables().items()}
    cps.setdefault("default", CertificateProfile())
    eeps.setdefault("default", EndEntityProfile())
    return LocalOptions(state_dir=state_dir or Path("."), cas=cas,
                        certificate_profiles=cps, end_entity_profiles=eeps,
                        approval=sec.str("approval", "auto", choices=("auto", "manual")),
                        retry_after_s=sec.int("retry_after_s", 60, minimum=1, maximum=172800))


def _ca(name: str, sec: Section) -> CASettings:
    d = CASettings()
    ca = CASettings(
        key_type=sec.str("key_type", d.key_type, choices=KEY_TYPES),
        hierarchy=sec.str("hierarchy", d.hierarchy, choices=("root", "root+issuing")),
        common_name=sec.str("common_name", name),
        organization=sec.str("organization", None),
        validity_days=sec.int("validity_days", d.validity_days, minimum=30, maximum=36500),
        crl_url=read_url(sec, "crl_url"),
        ocsp_url=read_url(sec, "ocsp_url"),
        ocsp_signer=sec.str("ocsp_signer", d.ocsp_signer, choices=OCSP_SIGNERS),
    )
    sec.check_unknown()
    return ca


def _cert_profile(sec: Section) -> CertificateProfile:
    d = CertificateProfile()
    profile = CertificateProfile(
        validity_days=sec.int("validity_days", d.validity_days, minimum=1, maximum=3650),
        key_usage=tuple(sec.str_list("key_usage", list(d.key_usage), choices=KEY_USAGES)),
        extended_key_usage=tuple(sec.str_list("extended_key_usage", list(d.extended_key_usage),
                                              choices=tuple(EXTENDED_KEY_USAGES))),
        san_types=tuple(sec.str_list("san_types", list(d.san_types), choices=SAN_TYPES)),
        max_sans=sec.int("max_sans", d.max_sans, minimum=0, maximum=1000),
        allow_wildcard_dns=sec.bool("allow_wildcard_dns", d.allow_wildcard_dns),
    )
    sec.check_unknown()
    return profile


def _ee_profile(sec: Section) -> EndEntityProfile:
    d = EndEntityProfile()
    fields = tuple(SUBJECT_FIELDS)
    profile = EndEntityProfile(
        required_subject=tuple(sec.str_list("required_subject", list(d.required_subject), choices=fields)),
        allowed_subject=tuple(sec.str_list("allowed_subject", list(d.allowed_subject), choices=fields)),
        max_value_length=sec.int("max_value_length", d.max_value_length, minimum=1, maximum=1024),
    )
    missing = [f for f in profile.required_subject if f not in profile.allowed_subject]
    if missing:
        sec.error("required_subject", f"{', '.join(missing)} must also be in allowed_subject")
    sec.check_unknown()
    return profile
