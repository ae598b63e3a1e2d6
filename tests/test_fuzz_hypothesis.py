"""Hostile input, property-based: everything a client controls, in process.

Bodies (raw bytes, base64 of anything, a real CSR broken at every DER nesting level,
CSRs with odd extensions, names and keys), headers (Content-Type variants, duplicate or
malformed Authorization, giant values), paths (dots, slashes, percent-encoding, unicode,
very long) and client-certificate chains all go through the real WSGI app. The invariant
(tests/support/inproc.check_response): never a 500, always an allowed status, a 4xx is a
short text/plain reason; each request finishes within a time bound; memory stays bounded.

``HYPOTHESIS_PROFILE=long`` runs 50x the examples (see docs/security.md).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import time
import tracemalloc
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import HealthCheck, assume, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from tests.conftest import EXTRA_ALIASES
from tests.support import der
from tests.support.inproc import InProcessGateway, check_response, start, valid_csr_der
from tests.support.pki import CA

settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                          print_blob=True)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=6000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The gateway runs with Python's default warning filters in production; cryptography's
# "attribute length" UserWarning for over-long names must not turn into an exception here.
pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")

PER_REQUEST_S = 5.0
ENROLL = "/.well-known/est/simpleenroll"
REENROLL = "/.well-known/est/simplereenroll"
CERTAUTH = "/.well-known/est/certauth/simpleenroll"
PKCS10 = ("Content-Type", "application/pkcs10")
STATS: dict[str, int] = {}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    yield start(tmp_path_factory.mktemp("fuzz") / "est-local", EXTRA_ALIASES)


@pytest.fixture(scope="module")
def base_csr() -> bytes:
    return valid_csr_der("fuzz-device", sans=[x509.DNSName("fuzz.example")])


def send(gw: InProcessGateway, method: str, path: str, *, headers: list[tuple[str, str]] | None = None,
         body: bytes = b"", source: str = "127.0.0.1", tls: object = None, what: object = None):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = gw.request(method, path, headers=headers or [], body=body, tls=tls,  # type: ignore[arg-type]
                          environ={"REMOTE_ADDR": source})
    elapsed = time.monotonic() - started
    check_response(response, method=method, what=what if what is not None else (method, path, headers, body[:200]))
    assert elapsed < PER_REQUEST_S, f"{elapsed:.1f}s for {what!r}"
    STATS[path.split("/")[-1][:20]] = STATS.get(path.split("/")[-1][:20], 0) + 1
    if currently_in_test_context():
        event(f"status {response.status_code}")
    return response


def enroll(gw: InProcessGateway, body: bytes, **kw: object):  # type: ignore[no-untyped-def]
    return send(gw, "POST", ENROLL, headers=[PKCS10, *gw.auth().items()], body=body, **kw)  # type: ignore[arg-type]


# -- bodies -------------------------------------------------------------------------------

@given(st.binary(max_size=3000))
def test_any_body_bytes(gw: InProcessGateway, body: bytes) -> None:
    enroll(gw, body)


@given(st.binary(max_size=2000), st.sampled_from([b"", b"\n", b"\r\n", b" ", b"\t", b"=", b"\x00", b"-"]),
       st.integers(min_value=1, max_value=80))
def test_base64_of_any_bytes_with_any_wrapping(gw: InProcessGateway, payload: bytes, sep: bytes, width: int) -> None:
    text = base64.b64encode(payload)
    enroll(gw, sep.join(text[i:i + width] for i in range(0, len(text), width)))


MUTATIONS = ("hostile_length", "length", "tag", "content", "nested_content", "truncate", "duplicate",
             "remove", "flip")


@given(st.data())
def test_csr_broken_at_every_der_level(gw: InProcessGateway, base_csr: bytes, data: st.DataObject) -> None:
    nodes = der.walk(base_csr)
    node = data.draw(st.sampled_from(nodes), label="node")
    kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    event(f"mutation {kind} at depth {node.depth}")
    if kind == "hostile_length":
        mutated = der.replace_length(base_csr, node, data.draw(st.sampled_from(der.HOSTILE_LENGTHS)))
    elif kind == "length":
        mutated = der.set_length(base_csr, node, data.draw(st.integers(0, 2**40)))
    elif kind == "tag":
        mutated = der.replace_tag(base_csr, node, data.draw(st.integers(0, 255)))
    elif kind == "content":
        mutated = der.replace_content(base_csr, node, data.draw(st.binary(max_size=300)))
    elif kind == "nested_content":
        mutated = der.replace_content_nested(base_csr, nodes, node, data.draw(st.binary(max_size=300)))
    elif kind == "truncate":
        mutated = der.truncate(base_csr, node, data.draw(st.integers(0, 8)))
    elif kind == "duplicate":
        mutated = der.duplicate(base_csr, node)
    elif kind == "remove":
        mutated = der.remove(base_csr, node)
    else:
        pos = data.draw(st.integers(node.start, node.end - 1))
        mutated = base_csr[:pos] + bytes([base_csr[pos] ^ data.draw(st.integers(1, 255))]) + base_csr[pos + 1:]
    enroll(gw, base64.encodebytes(mutated), what=(kind, node, mutated.hex()))


# -- well-formed CSRs with odd content ----------------------------------------------------

KEYS = {
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "p521": ec.generate_private_key(ec.SECP521R1()),
    "k256": ec.generate_private_key(ec.SECP256K1()),
    "brainpool": ec.generate_private_key(ec.BrainpoolP256R1()),
    "rsa1024": rsa.generate_private_key(65537, 1024),
    "rsa2048": rsa.generate_private_key(65537, 2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
}
HASHES = {"sha256": hashes.SHA256(), "sha512": hashes.SHA512(),
          "sha224": hashes.SHA224(), "sha3_256": hashes.SHA3_256()}

oids = st.lists(st.integers(0, 2**31), min_size=1, max_size=8).map(
    lambda arcs: ObjectIdentifier("1.3." + ".".join(map(str, arcs))))
# cryptography's builder takes only A-labels; unicode names reach the parser through the
# DER mutations above instead.
ascii_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80)


def _safe(kind: type, value: str) -> x509.GeneralName:
    try:
        return kind(value)  # type: ignore[no-any-return]
    except ValueError:
        return x509.DNSName("fallback.example")


general_names = st.one_of(
    ascii_text.map(lambda v: _safe(x509.DNSName, v)), ascii_text.map(lambda v: _safe(x509.RFC822Name, v + "@x")),
    ascii_text.map(lambda v: _safe(x509.UniformResourceIdentifier, "urn:" + v)),
    st.ip_addresses().map(lambda a: x509.IPAddress(ipaddress.ip_address(a))),
    oids.map(x509.RegisteredID),
    st.tuples(oids, st.binary(max_size=50)).map(
        lambda t: x509.OtherName(t[0], b"\x04" + der.encode_length(len(t[1])) + t[1])),
    st.text(min_size=1, max_size=80).map(
        lambda v: x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, v, _validate=False)]))),
)
name_attrs = st.tuples(st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.COUNTRY_NAME,
                                        NameOID.SERIAL_NUMBER, NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT,
                                        NameOID.USER_ID, ObjectIdentifier("1.3.6.1.4.1.99999.1")]),
                       st.text(min_size=1, max_size=300))
extensions = st.one_of(
    st.tuples(oids, st.binary(max_size=200), st.booleans()).map(
        lambda t: (x509.UnrecognizedExtension(t[0], t[1]), t[2])),
    st.tuples(st.lists(general_names, min_size=1, max_size=40), st.booleans()).map(
        lambda t: (x509.SubjectAlternativeName(t[0]), t[1])),
    st.tuples(st.booleans(), st.one_of(st.none(), st.integers(0, 10))).map(
        lambda t: (x509.BasicConstraints(ca=t[0], path_length=t[1] if t[0] else None), True)),
    st.just((x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.5.29.37.0")]), False)),
)


@st.composite
def odd_csrs(draw: st.DrawFn) -> bytes:
    key_name = draw(st.sampled_from(sorted(KEYS)))
    key = KEYS[key_name]
    attrs = draw(st.lists(name_attrs, max_size=6))
    names = []
    for oid, value in attrs:
        if oid == NameOID.COUNTRY_NAME:
            value = (value + "XX")[:2]
        names.append(x509.NameAttribute(oid, value, _validate=False))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    seen: set[ObjectIdentifier] = set()
    for ext, critical in draw(st.lists(extensions, max_size=4)):
        if ext.oid in seen:
            continue
        seen.add(ext.oid)
        builder = builder.add_extension(ext, critical=critical)
    if draw(st.booleans()):
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD,
                                        draw(st.binary(max_size=100)))
    hash_name = "none" if key_name == "ed25519" else draw(st.sampled_from(sorted(HASHES)))
    event(f"key {key_name} hash {hash_name}")
    try:
        csr = builder.sign(key, None if key_name == "ed25519" else HASHES[hash_name])
    except (ValueError, UnicodeError, UnsupportedAlgorithm, TypeError):
        assume(False)
    return csr.public_bytes(der_encoding())


def der_encoding():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.serialization import Encoding
    return Encoding.DER


@given(odd_csrs())
@settings(max_examples=60)
def test_well_formed_csrs_with_odd_names_extensions_keys_and_hashes(gw: InProcessGateway, csr: bytes) -> None:
    response = enroll(gw, base64.encodebytes(csr))
    if response.status_code == 200:
        event("issued")


# -- headers ------------------------------------------------------------------------------

CONTENT_TYPES = ["application/pkcs10", "APPLICATION/PKCS10", "application/pkcs10; charset=utf-8",
                 "application/pkcs10;", " application/pkcs10 ", "application/pkcs10\t", "application/pkcs",
                 "application/pkcs10x", "application/pkcs7-mime", "text/plain", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "", ";", "application/pkcs10; a=\"b\\\"", "\x7f", "é/ü"]
header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                       max_size=300)


@given(st.lists(st.one_of(st.sampled_from(CONTENT_TYPES), header_value), max_size=3))
def test_content_type_variants(gw: InProcessGateway, base_csr: bytes, ctypes: list[str]) -> None:
    headers = [("Content-Type", c) for c in ctypes] + list(gw.auth().items())
    send(gw, "POST", ENROLL, headers=headers, body=base64.encodebytes(base_csr))


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


authorizations = st.one_of(
    header_value,
    st.binary(max_size=200).map(_basic),                       # not UTF-8, no colon, ...
    st.text(max_size=100).map(lambda t: _basic(t.encode())),
    st.sampled_from(["Basic", "Basic ", "basic  ", "Bearer x", "Digest username=x", "Basic ====",
                     "Basic Og==", "Basic " + "A" * 20000, _basic(b"estuser:" + b"x" * 10000),
                     _basic(b":"), _basic(b"estuser"), _basic("estuser:pässwörd".encode("latin-1"))]),
)


@given(st.lists(authorizations, max_size=3), st.sampled_from([ENROLL, REENROLL, CERTAUTH]))
def test_authorization_variants_never_authenticate_or_crash(gw: InProcessGateway, base_csr: bytes,
                                                            values: list[str], path: str) -> None:
    headers = [PKCS10] + [("Authorization", v) for v in values]
    response = send(gw, "POST", path, headers=headers, body=base64.encodebytes(base_csr), source="192.0.2.7")
    assert response.status_code != 200, f"issued for Authorization {values!r}"


@given(st.sampled_from(["X-Filler", "Content-Type", "Authorization", "Host", "User-Agent", "X-SSL-Client-Cert"]),
       st.integers(10_000, 300_000), st.integers(1, 50))
@settings(max_examples=25)
def test_giant_and_many_headers(gw: InProcessGateway, base_csr: bytes, name: str, size: int, count: int) -> None:
    headers = [PKCS10, *gw.auth().items()] + [(name, "a" * (size // count))] * count
    send(gw, "POST", ENROLL, headers=headers, body=base64.encodebytes(base_csr), source="192.0.2.8",
         what=(name, size, count))


# -- paths and methods --------------------------------------------------------------------

segment = st.one_of(
    st.sampled_from([".", "..", "", "est", "newkey", "certauth", "cacerts", "simpleenroll", "%2e%2e", "%2F",
                     "est%2Fcacerts", "cacerts%00", "%00", "%ff", "%", "%zz", "~", "est.", ".est", "a" * 5000,
                     "\u00e9st", "\u202e", "\ufeff", "\U0001f600", "%C3%A9", "est;x=1", "est?x", "est#x"]),
    st.text(max_size=80),
)


@given(st.lists(segment, min_size=0, max_size=6), st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE",
                                                                   "OPTIONS", "PATCH", "TRACE", "PROPFIND"]),
       st.booleans())
def test_paths_and_methods(gw: InProcessGateway, segments: list[str], method: str, quote: bool) -> None:
    rest = "/".join(segments)
    if quote:
        rest = urllib.parse.quote(rest, safe="/%")
    rest = urllib.parse.quote(rest, safe="/%") if not quote else rest   # a request line is ASCII
    for prefix in ("/.well-known/est/", "/"):
        send(gw, method, prefix + rest, headers=[PKCS10, *gw.auth().items()], body=b"MA==",
             what=(method, prefix + rest))


# -- client certificates as presented in the TLS session ----------------------------------

@given(st.lists(st.one_of(st.binary(max_size=500), st.sampled_from(["leaf", "ca", "foreign", "selfsigned"])),
                min_size=1, max_size=4),
       st.sampled_from([REENROLL, ENROLL, CERTAUTH, "/.well-known/est/bound/simpleenroll",
                        "/.well-known/est/serverkeygen", "/.well-known/est/attrs/simpleenroll",
                        "/.well-known/est/manual/simpleenroll"]))
@settings(max_examples=60)
def test_presented_chains_of_garbage_or_wrong_certificates(gw: InProcessGateway, base_csr: bytes,
                                                           chain: list[object], path: str) -> None:
    leaf, _ = gw.client_cert("fuzz-device", sans=[x509.DNSName("fuzz.example")])
    foreign = CA.create("Foreign fuzz CA")
    wrong, _ = gw.client_cert("fuzz-device", issuer=foreign, sans=[x509.DNSName("fuzz.example")])
    by_name = {"leaf": leaf, "ca": gw.ca_cert, "foreign": wrong, "selfsigned": foreign.cert}
    items = [c if isinstance(c, bytes) else by_name[c].public_bytes(der_encoding()) for c in chain]  # type: ignore[index]
    from est_gateway.identity import TLSInfo
    tls = TLSInfo(version="TLSv1.2", peer_chain=tuple(items), tls_unique=b"\x01" * 12)
    response = send(gw, "POST", path, headers=[PKCS10], body=base64.encodebytes(base_csr), tls=tls,
                    source="192.0.2.9")
    if items[0] != leaf.public_bytes(der_encoding()):
        assert response.status_code != 200, f"authenticated by {chain!r}"


# -- sanity and bounds --------------------------------------------------------------------

def test_the_fuzzed_app_still_issues(gw: InProcessGateway) -> None:
    """Positive control: the same app and credentials do issue for a valid CSR (so the
    properties above reach the CSR checks rather than stopping at authentication)."""
    response = enroll(gw, base64.encodebytes(valid_csr_der("control-device")))
    assert response.status_code == 200, response.get_data()


@pytest.mark.parametrize("size", [60 * 1024, 1024 * 1024, 16 * 1024 * 1024])
def test_oversized_bodies_are_refused_with_bounded_memory(gw: InProcessGateway, size: int) -> None:
    body = b"A" * size
    tracemalloc.start()
    try:
        response = enroll(gw, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code in (400, 413)
    limit = gw.config.server.max_body_bytes
    if size > limit:
        assert response.status_code == 413
    # werkzeug's test client holds the body once; the app must not copy it many times over
    assert peak < 3 * size + 8 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte body"


def test_statistics_file(tmp_path: Path) -> None:
    """Not a check: prints how many requests the properties above sent (for the report)."""
    print(f"fuzz requests by operation: {STATS}; total {sum(STATS.values())}")
