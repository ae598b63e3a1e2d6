"""What an alias asks of django-ca, parsed from its ``ca``, ``certificate_profile`` and
``[aliases.<name>.upstream]`` into a frozen :class:`DjangoCaTarget`.

- ``ca``: the issuing CA's name or serial (hex, colons optional) as django-ca lists it;
- ``certificate_profile``: a django-ca profile (e.g. ``"client"``); its key usage,
  extended key usage and lifetime are sent with every request, because django-ca's REST
  sign stores the profile's name but applies none of its extensions;
- ``[aliases.<name>.upstream] validity_days``: overrides the profile's lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass

from est_gateway.plugin import Section


@dataclass(frozen=True)
class DjangoCaTarget:
    """The issuing CA (name or serial), the profile, and an optional fixed lifetime."""

    ca: str
    profile: str
    validity_days: int | None = None

    @property
    def ca_serial(self) -> str | None:
        """``ca`` as django-ca writes serials (upper-case hex, no colons), if it is one."""
        text = self.ca.replace(":", "").upper()
        return text if text and all(c in "0123456789ABCDEF" for c in text) and len(text) >= 8 else None


def parse_target(alias: Section) -> DjangoCaTarget:
    """Read ``ca``, ``certificate_profile`` and ``[upstream] validity_days`` of an alias
    (problems are recorded on ``alias``)."""
    ca = alias.str("ca")
    profile = alias.str("certificate_profile", "default")
    if profile == "default":    # what other CAs call their default; django-ca needs a name
        alias.error("certificate_profile", 'is required: the django-ca profile, e.g. "client"')
    if alias.str("end_entity_profile", "default") != "default":
        alias.error("end_entity_profile", "django-ca has no end-entity profiles; remove it")
    sec = alias.table("upstream")
    days = sec.int("validity_days", None, minimum=1, maximum=3650)
    sec.check_unknown()
    return DjangoCaTarget(ca=ca.strip(), profile=profile, validity_days=days)
