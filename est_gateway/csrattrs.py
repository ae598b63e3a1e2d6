"""CSR attributes (RFC 7030 §4.5, RFC 8951 §4): what an alias asks clients to put in a CSR.

``CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID``,
``AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }``.
An operator lists attribute OIDs, extension-request entries, the key type (as an
attribute whose values name the curve or the RSA size, as in the RFC 7030 §4.5.2
example) and the signature hash. With ``enforce``, a CSR lacking any of it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509

from est_gateway.errors import BadRequest
from est_gateway.keys import key_type_of
from est_gateway.wire import csr_extensions

# Names an operator may use instead of dotted OIDs.
OID_NAMES = {
    "challengePassword": "1.2.840.113549.1.9.7",
    "extensionRequest": "1.2.840.113549.1.9.14",
    "macAddress": "1.3.6.1.1.1.1.22",
    "serialNumber": "2.5.4.5",
    "subjectAltName": "2.5.29.17",
    "keyUsage": "2.5.29.15",
    "extKeyUsage": "2.5.29.37",
}
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
CURVES = {"ec-p256": "1.2.840.10045.3.1.7", "ec-p384": "1.3.132.0.34"}
SIGNATURES = {
    ("rsa", "sha256"): "1.2.840.113549.1.1.11",
    ("rsa", "sha384"): "1.2.840.113549.1.1.12",
    ("rsa", "sha512"): "1.2.840.113549.1.1.13",
    ("ec", "sha256"): "1.2.840.10045.4.3.2",
    ("ec", "sha384"): "1.2.840.10045.4.3.3",
    ("ec", "sha512"): "1.2.840.10045.4.3.4",
}
HASHES = ("sha256", "sha384", "sha512")


class _AttrValues(core.SetOf):  # type: ignore[misc]
    _child_spec = core.Any


class _Attribute(core.Sequence):  # type: ignore[misc]
    _fields = [("type", core.ObjectIdentifier), ("values", _AttrValues)]


class _AttrOrOID(core.Choice):  # type: ignore[misc]
    _alternatives = [("oid", core.ObjectIdentifier), ("attribute", _Attribute)]


class CsrAttrs(core.SequenceOf):  # type: ignore[misc]
    """The DER structure served by ``/csrattrs``."""

    _child_spec = _AttrOrOID


def resolve_oid(name: str) -> str:
    """A dotted OID from a name in :data:`OID_NAMES` or a dotted string; ValueError otherwise."""
    oid = OID_NAMES.get(name, name)
    parts = oid.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f'"{name}" is neither a known name ({", ".join(OID_NAMES)}) nor a dotted OID')
    return oid


@dataclass(frozen=True)
class CsrAttrsPolicy:
    """An alias's csrattrs, validated at start-up."""

    attributes: tuple[str, ...] = ()          # dotted OIDs, e.g. challengePassword
    extension_requests: tuple[str, ...] = ()  # dotted OIDs inside extensionRequest
    key_type: str | None = None
    signature_hash: str | None = None
    enforce: bool = False

    @property
    def empty(self) -> bool:
        return not (self.attributes or self.extension_requests or self.key_type or self.signature_hash)

    def encode(self) -> bytes:
        """DER ``CsrAttrs`` in the order of the RFC 7030 §4.5.2 example."""
        items: list[_AttrOrOID] = [_oid(o) for o in self.attributes]
        if self.key_type:
            if self.key_type.startswith("rsa-"):
                items.append(_attr(RSA_ENCRYPTION, [core.Integer(int(self.key_type[4:]))]))
            else:
                items.append(_attr(EC_PUBLIC_KEY, [core.ObjectIdentifier(CURVES[self.key_type])]))
        if self.extension_requests:
            items.append(_attr(OID_NAMES["extensionRequest"],
                               [core.ObjectIdentifier(o) for o in self.extension_requests]))
        if self.signature_hash:
            family = "rsa" if (self.key_type or "rsa").startswith("rsa") else "ec"
            items.append(_oid(SIGNATURES[(family, self.signature_hash)]))
        return bytes(CsrAttrs(items).dump())

    def check(self, csr: x509.CertificateSigningRequest) -> None:
        """With ``enforce``: refuse (400) a CSR lacking what csrattrs asks for, naming it."""
        if not self.enforce:
            return
        missing: list[str] = []
        present = {attr.oid.dotted_string for attr in csr.attributes}
        missing += [_name(o) for o in self.attributes if o not in present]
        if self.extension_requests:
            exts = {e.oid.dotted_string for e in csr_extensions(csr)}
            missing += [f"extension {_name(o)}" for o in self.extension_requests if o not in exts]
        if self.key_type and key_type_of(csr.public_key()) != self.key_type:
            missing.append(f"a {self.key_type} key")
        if self.signature_hash:
            algo = csr.signature_hash_algorithm
            if algo is None or algo.name != self.signature_hash:
                missing.append(f"a {self.signature_hash} signature")
        if missing:
            raise BadRequest(f"CSR lacks what /csrattrs asks for: {', '.join(missing)}")


def decode(der: bytes) -> list[tuple[str, list[bytes]]]:
    """A CsrAttrs as ``(oid, [DER of each value])`` items (OIDs alone have no values)."""
    parsed = CsrAttrs.load(der, strict=True)
    items: list[tuple[str, list[bytes]]] = []
    for item in parsed:
        if item.name == "oid":
            items.append((item.chosen.dotted, []))
        else:
            items.append((item.chosen["type"].dotted, [v.dump() for v in item.chosen["values"]]))
    return items


def _oid(dotted: str) -> _AttrOrOID:
    return _AttrOrOID(name="oid", value=core.ObjectIdentifier(dotted))


def _attr(dotted: str, values: list[core.Asn1Value]) -> _AttrOrOID:
    return _AttrOrOID(name="attribute", value=_Attribute({"type": dotted, "values": values}))


def _name(dotted: str) -> str:
    for name, oid in OID_NAMES.items():
        if oid == dotted:
            return name
    return dotted
