"""csrattrs (RFC 7030 §4.5): the RFC's example decoded, re-encoded and rebuilt from settings."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from est_gateway.csrattrs import CsrAttrs, CsrAttrsPolicy, decode, resolve_oid
from est_gateway.errors import BadRequest
from tests.support.pki import make_csr, p256_key, rsa_key

RFC7030_EXAMPLE = "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw=="
CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"
EC_PUBLIC_KEY, SECP384R1 = "1.2.840.10045.2.1", "1.3.132.0.34"
EXTENSION_REQUEST, MAC_ADDRESS = "1.2.840.113549.1.9.14", "1.3.6.1.1.1.1.22"
ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3"


def _oid_der(dotted: str) -> bytes:
    from asn1crypto import core
    return bytes(core.ObjectIdentifier(dotted).dump())


def test_rfc7030_example_decodes_to_its_four_items() -> None:
    items = decode(base64.b64decode(RFC7030_EXAMPLE))
    assert items == [
        (CHALLENGE_PASSWORD, []),
        (EC_PUBLIC_KEY, [_oid_der(SECP384R1)]),
        (EXTENSION_REQUEST, [_oid_der(MAC_ADDRESS)]),
        (ECDSA_WITH_SHA384, []),
    ]


def test_rfc7030_example_re_encodes_byte_for_byte() -> None:
    der = base64.b64decode(RFC7030_EXAMPLE)
    assert CsrAttrs.load(der).dump(force=True) == der


def test_configuring_the_example_contents_gives_an_equivalent_structure() -> None:
    policy = CsrAttrsPolicy(attributes=(resolve_oid("challengePassword"),),
                            extension_requests=(resolve_oid("macAddress"),),
                            key_type="ec-p384", signature_hash="sha384")
    ours = decode(policy.encode())
    theirs = decode(base64.b64decode(RFC7030_EXAMPLE))
    assert sorted(ours) == sorted(theirs)          # compared as content, not bytes
    assert policy.encode() == base64.b64decode(RFC7030_EXAMPLE)  # and here even the order matches


def test_rsa_template_matches_the_rfc9908_example() -> None:
    policy = CsrAttrsPolicy(attributes=(CHALLENGE_PASSWORD,), key_type="rsa-4096", signature_hash="sha256")
    assert base64.b64encode(policy.encode()).decode() == \
        "MCkGCSqGSIb3DQEJBzARBgkqhkiG9w0BAQExBAICEAAGCSqGSIb3DQEBCw=="


def test_empty_policy_is_empty() -> None:
    assert CsrAttrsPolicy().empty
    assert decode(base64.b64decode("MAA=")) == []


def test_names_and_dotted_oids_resolve_and_nonsense_does_not() -> None:
    assert resolve_oid("macAddress") == MAC_ADDRESS
    assert resolve_oid("1.2.3.4") == "1.2.3.4"
    with pytest.raises(ValueError, match="neither a known name"):
        resolve_oid("mac-address")


ENFORCED = CsrAttrsPolicy(attributes=(CHALLENGE_PASSWORD,), extension_requests=(MAC_ADDRESS,),
                          key_type="ec-p256", signature_hash="sha256", enforce=True)


def _csr_with_mac(key: object, *, challenge: str | None = "x", hash_alg: hashes.HashAlgorithm | None = None
                  ) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "mac")]))
    builder = builder.add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier(MAC_ADDRESS), bytes.fromhex("0406001122334455")),
        critical=False)
    if challenge is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hash_alg or hashes.SHA256())  # type: ignore[arg-type]


def test_enforcement_accepts_a_complete_csr() -> None:
    ENFORCED.check(_csr_with_mac(p256_key()))


@pytest.mark.parametrize("csr, missing", [
    (lambda: _csr_with_mac(p256_key(), challenge=None), "challengePassword"),
    (lambda: make_csr(p256_key(), challenge_password="x"), "extension macAddress"),
    (lambda: _csr_with_mac(rsa_key()), "a ec-p256 key"),
    (lambda: _csr_with_mac(p256_key(), hash_alg=hashes.SHA384()), "a sha256 signature"),
])
def test_enforcement_names_what_is_missing(csr, missing: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadRequest, match=f"CSR lacks what /csrattrs asks for: .*{missing}"):
        ENFORCED.check(csr())


def test_without_enforcement_nothing_is_refused() -> None:
    CsrAttrsPolicy(attributes=(CHALLENGE_PASSWORD,)).check(make_csr(rsa_key()))
