"""End-entity usernames derived from the request subject, like EJBCA's name-generation scheme.

EJBCA's RA modes (CMP, EST) name end entities with ``ra.namegenerationscheme = DN`` and
``ra.namegenerationparameters = CN`` by default, plus an optional prefix and postfix
(EJBCA ``EstConfiguration``). The name must be the same for every request of a subject,
so that a renewal edits the existing end entity: a default EJBCA CA refuses a second end
entity with the same subject DN or public key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from est_gateway.plugin import BadRequest

#: where the username comes from: one subject attribute, or the whole DN
SOURCES = {"CN": NameOID.COMMON_NAME, "UID": NameOID.USER_ID,
           "serialNumber": NameOID.SERIAL_NUMBER, "DN": None}


@dataclass(frozen=True)
class UsernameRule:
    """``prefix + <subject part> + suffix``."""

    source: str = "CN"
    prefix: str = ""
    suffix: str = ""

    def derive(self, subject: x509.Name) -> str:
        """The username for ``subject``; 400 when the subject lacks the chosen part."""
        oid = SOURCES[self.source]
        if oid is None:
            core = subject.rfc4514_string()
        else:
            values = subject.get_attributes_for_oid(oid)
            core = str(values[0].value).strip() if values else ""
        if not core:
            raise BadRequest(f"the request subject has no {self.source}, which this EST label "
                             "uses as the CA's end-entity username")
        return f"{self.prefix}{core}{self.suffix}"
