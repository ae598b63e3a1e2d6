"""End to end: curl/openssl → real gateway process → stand-in EJBCA over mutual TLS.

One gateway serves six aliases: ``est`` (REST adapter, passphrase-protected client key
from the environment), ``soap`` (SOAP adapter, with ``approval_secret``), ``fresh`` (REST, a
backend that has not learnt its chain yet), ``named`` (REST with ``ca_subject_dn``: the
public webdist), ``refused`` (nothing listens upstream) and ``untrusted`` (the upstream
presents a certificate from a CA the gateway does not trust). The stand-in is an EJBCA CE
8.0 that answers ``/v1/ca`` with a 404 (as some installations report): no CA download over
REST.
Faults are switched on the stand-in while the gateway runs; after each, the gateway must
still serve.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from lxml import etree

from est_gateway import localmode
from tests.support.ejbca_standin import (
    CA_NAME,
    REST,
    REVOKE_END_ENTITY,
    WS,
    StandinEjbca,
    StandinServer,
    UpstreamPKI,
)
from tests.support.gateway import (
    GatewayProcess,
    UpstreamGateway,
    certificates,
    curl,
    free_port,
    leaf,
    serverkeygen_parts,
)

pytestmark = pytest.mark.e2e

PASSPHRASE = "correct horse battery staple"
APPROVAL_SECRET = "an approval secret of forty-two characters"

CONFIG = """\
[server]
listen = "127.0.0.1:{port}"
tls_cert = "tls/server.pem"
tls_key = "tls/server.key"
workers = 1
log_level = "debug"

[backends.rest]
type = "ejbca-rest"
url = "{rest_url}"
client_cert = "{pki}/ra-client.pem"
client_key = "{encrypted_key}"
client_key_passphrase_env = "EJBCA_CLIENT_KEY_PASSPHRASE"
ca_bundle = "{pki}/upstream-ca.pem"
connect_timeout_s = 1
read_timeout_s = 1
retries = 0
pending_retry_after_s = 120

[backends.soap]
type = "ejbca-soap"
url = "{ws_url}"
client_cert = "{pki}/ra-client.pem"
client_key = "{pki}/ra-client.key"
ca_bundle = "{pki}/upstream-ca.pem"
read_timeout_s = 1
retries = 0
revoke_superseded = true
approval_secret_env = "EJBCA_APPROVAL_SECRET"

[backends.fresh]
{plain_rest}

[backends.named]
{plain_rest}
cacerts_source = "webdist"

[backends.refused]
type = "ejbca-rest"
url = "https://127.0.0.1:{closed_port}/ejbca/ejbca-rest-api"
client_cert = "{pki}/ra-client.pem"
client_key = "{pki}/ra-client.key"
ca_bundle = "{pki}/upstream-ca.pem"
retries = 1
retry_backoff_s = 0.05

[backends.untrusted]
type = "ejbca-rest"
url = "{untrusted_url}"
client_cert = "{pki}/ra-client.pem"
client_key = "{pki}/ra-client.key"
ca_bundle = "{pki}/upstream-ca.pem"

{aliases}

[aliases.named]
backend = "named"
ca = "{ca}"
certificate_profile = "ENDUSER"
end_entity_profile = "EMPTY"
username = "estuser"
password_file = "secrets/est.password"

[aliases.named.upstream]
ca_subject_dn = "{ca_dn}"
"""

#: a REST backend that has learnt no chain yet
PLAIN_REST = """\
type = "ejbca-rest"
url = "{rest_url}"
client_cert = "{pki}/ra-client.pem"
client_key = "{pki}/ra-client.key"
ca_bundle = "{pki}/upstream-ca.pem"
retries = 0"""

ALIAS = """\
[aliases.{name}]
backend = "{backend}"
ca = "{ca}"
certificate_profile = "ENDUSER"
end_entity_profile = "EMPTY"
username = "estuser"
password_file = "secrets/est.password"

[aliases.{name}.upstream]
username_from = "CN"
username_prefix = "est-"
"""


@dataclass
class Setup(UpstreamGateway):
    standin: StandinEjbca


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("ejbca-e2e")
    pki = UpstreamPKI(folder / "upstream")
    encrypted = pki.encrypted_key(PASSPHRASE)
    standin = StandinEjbca(ca_resource=False)
    with StandinServer(standin, pki.server_context()) as server, \
            StandinServer(StandinEjbca(), pki.server_context(untrusted=True)) as untrusted:
        port = free_port()
        instance, _ = localmode.prepare(folder / "gateway", port=port)
        aliases = "\n".join(ALIAS.format(name=n, backend=b, ca=CA_NAME) for n, b in
                            (("est", "rest"), ("soap", "soap"), ("fresh", "fresh"), ("refused", "refused"),
                             ("untrusted", "untrusted")))
        config = instance.folder / "ejbca.toml"
        config.write_text(CONFIG.format(port=port, rest_url=server.rest_url, ws_url=server.ws_url,
                                        pki=pki.folder, encrypted_key=encrypted,
                                        closed_port=free_port(), untrusted_url=untrusted.rest_url,
                                        aliases=aliases, ca=CA_NAME,
                                        plain_rest=PLAIN_REST.format(rest_url=server.rest_url, pki=pki.folder),
                                        ca_dn=standin.ca_cert.subject.rfc4514_string()), encoding="utf-8")
        gateway = GatewayProcess(config, port, folder / "gateway.log",
                                 env={"EJBCA_CLIENT_KEY_PASSPHRASE": PASSPHRASE,
                                      "EJBCA_APPROVAL_SECRET": APPROVAL_SECRET})
        gateway.start()
        try:
            yield Setup(gateway, instance.folder, instance.trust_anchor, instance.password(), standin)
        finally:
            gateway.stop()
            assert PASSPHRASE not in gateway.output() and APPROVAL_SECRET not in gateway.output()


def new_csr(folder: Path, cn: str, name: str) -> bytes:
    """openssl makes the key and the CSR, the way an operator's device would."""
    key, der = folder / f"{name}.key", folder / f"{name}.csr.der"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-subj", f"/CN={cn}", "-outform", "DER",
                    "-out", str(der)], check=True, capture_output=True)
    return base64.encodebytes(der.read_bytes())


@pytest.mark.parametrize("alias", ["est", "soap"])
def test_cacerts_enroll_reenroll_and_revoked_renewal(setup: Setup, alias: str) -> None:
    cn = f"device-{alias}"
    answer = curl(f"{setup.gateway.url}/{alias}/cacerts", cacert=setup.trust_anchor)
    if alias == "est":  # CE 8.0 REST: no CA download; the chain comes with the first enrollment
        assert answer.status == 503, answer.body
        assert b"not known yet" in answer.body and answer.headers["retry-after"].isdigit()
    else:  # EjbcaWS: getLastCAChain
        assert answer.status == 200, answer.body

    enrolled = setup.enroll(alias, new_csr(setup.folder, cn, f"{alias}-1"))
    assert enrolled.status == 200, enrolled.body
    answer = curl(f"{setup.gateway.url}/{alias}/cacerts", cacert=setup.trust_anchor)
    assert answer.status == 200, answer.body
    assert {c.subject for c in certificates(answer.body)} == \
        {c.subject for c in setup.standin.chain}
    first = leaf(enrolled.body)
    assert first.issuer == setup.standin.ca_cert.subject
    assert f"est-{cn}" in setup.standin.end_entities  # username = prefix + CN

    (setup.folder / f"{alias}-1.pem").write_bytes(first.public_bytes(pkcs7.serialization.Encoding.PEM))
    tls = ("--cert", str(setup.folder / f"{alias}-1.pem"), "--key", str(setup.folder / f"{alias}-1.key"))
    renewed = setup.post(alias, "simplereenroll", new_csr(setup.folder, cn, f"{alias}-2"), *tls)
    assert renewed.status == 200, renewed.body
    second = leaf(renewed.body)
    assert second.subject == first.subject and second.serial_number != first.serial_number
    # the renewal updated the same end entity: one entity for the subject
    assert [u for u in setup.standin.end_entities if cn in u] == [f"est-{cn}"]
    # supersede_on_renewal (default) + revoke_superseded (on for soap only): revoked as superseded
    issuance = setup.standin.lookup(first.issuer.rfc4514_string(), f"{first.serial_number:X}")
    assert issuance is not None and issuance.revoked_reason == (4 if alias == "soap" else -1)

    setup.standin.revoke(first)
    refused = setup.post(alias, "simplereenroll", new_csr(setup.folder, cn, f"{alias}-3"), *tls)
    assert refused.status == 403, refused.body
    assert b"revoked" in refused.body


def test_a_failed_revocation_as_superseded_still_delivers_the_renewal(setup: Setup) -> None:
    """The renewal is issued before the old certificate is revoked: a refused revocation is
    logged for the operator, the device still gets its new certificate."""
    cn = "device-supersede-refused"
    first = leaf(setup.enroll("soap", new_csr(setup.folder, cn, "sr-1")).body)
    (setup.folder / "sr-1.pem").write_bytes(first.public_bytes(pkcs7.serialization.Encoding.PEM))
    tls = ("--cert", str(setup.folder / "sr-1.pem"), "--key", str(setup.folder / "sr-1.key"))
    setup.standin.denied.add(REVOKE_END_ENTITY)
    try:
        renewed = setup.post("soap", "simplereenroll", new_csr(setup.folder, cn, "sr-2"), *tls)
    finally:
        setup.standin.denied.discard(REVOKE_END_ENTITY)
    assert renewed.status == 200, renewed.body
    assert leaf(renewed.body).subject == first.subject
    assert f"renewed certificate serial {first.serial_number:X} was not superseded" in setup.gateway.output()
    issuance = setup.standin.lookup(first.issuer.rfc4514_string(), f"{first.serial_number:X}")
    assert issuance is not None and issuance.revoked_reason == -1


def test_mutual_tls_reached_the_upstream(setup: Setup) -> None:
    setup.enroll("est", new_csr(setup.folder, "device-mtls", "mtls"))
    peers = [call["peer"] for call in setup.standin.calls if call["peer"]]
    assert peers, "the stand-in saw no client certificate"
    subjects = {dict(x[0] for x in peer["subject"])["commonName"] for peer in peers}
    assert subjects == {"est-gateway RA"}


def test_approvals_soap_waits_and_delivers_rest_refuses_clearly(setup: Setup) -> None:
    """With an approval profile on the CA: SOAP answers 202 + Retry-After (still 202 while the
    approval is open), and after the approver approves, the device's repeat of the same
    request gets its certificate. REST: EJBCA refuses pkcs10enroll and keeps nothing, so the
    device gets a 502 naming the way out, and the gateway's log names the CA and profile."""
    setup.standin.approval = True
    try:
        csr = new_csr(setup.folder, "device-approval-soap", "approval-soap")
        first = setup.enroll("soap", csr)
        assert first.status == 202, first.body
        assert first.headers["retry-after"] == "300"
        assert setup.enroll("soap", csr).status == 202  # APPROVAL_ALREADY_EXISTS: still waiting
        [opened] = setup.standin.open_approvals("est-device-approval-soap")
        refused = setup.enroll("est", new_csr(setup.folder, "device-approval-rest", "approval-rest"))
        assert refused.status == 502, refused.body
        assert b"SOAP adapter" in refused.body and b"client mode" in refused.body
        assert "est-device-approval-rest" not in setup.standin.end_entities
        assert setup.standin.open_approvals("est-device-approval-rest") == []
        assert f"for CA '{CA_NAME}', certificate profile 'ENDUSER'" in setup.gateway.output()
        setup.standin.approve(opened.request_id)
        issued = setup.enroll("soap", csr)
        assert issued.status == 200, issued.body
        assert leaf(issued.body).subject.rfc4514_string() == "CN=device-approval-soap"
    finally:
        setup.standin.approval = False


@pytest.mark.parametrize(("fault", "status"), [
    ("500", 503), ("garbage", 502), ("truncated", 502), ("hang", 504),
])
@pytest.mark.parametrize("alias", ["est", "soap"])
def test_upstream_faults_map_and_the_gateway_keeps_serving(setup: Setup, alias: str, fault: str,
                                                          status: int) -> None:
    setup.standin.fault, setup.standin.hang_s = fault, 2.5
    try:
        answer = setup.enroll(alias, new_csr(setup.folder, f"device-{fault}", "fault"))
    finally:
        setup.standin.fault = None
    assert answer.status == status, answer.body
    assert answer.headers["content-type"].startswith("text/plain")
    if status == 503:
        assert answer.headers["retry-after"].isdigit()
    assert b"Traceback" not in answer.body
    assert setup.enroll(alias, new_csr(setup.folder, f"device-after-{fault}", "after")).status == 200


@pytest.mark.parametrize("alias", ["refused", "untrusted"])
def test_unreachable_or_untrusted_upstream_is_503(setup: Setup, alias: str) -> None:
    answer = setup.enroll(alias, new_csr(setup.folder, f"device-{alias}", alias))
    assert answer.status == 503, answer.body
    assert answer.headers["retry-after"].isdigit()
    assert setup.enroll("est", new_csr(setup.folder, f"device-after-{alias}", "after")).status == 200
    if alias == "untrusted":
        assert "TLS with the upstream CA" in setup.gateway.output()


@pytest.mark.parametrize("alias", ["est", "soap"])
def test_serverkeygen_through_ejbca(setup: Setup, alias: str) -> None:
    """The gateway generates the key; EJBCA issues for it like for any CSR (RFC 7030 §4.4)."""
    answer = setup.post(alias, "serverkeygen", new_csr(setup.folder, f"keygen-{alias}", f"keygen-{alias}"),
                        "-u", f"estuser:{setup.password}")
    assert answer.status == 200, answer.body
    key, cert = serverkeygen_parts(answer)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert cert.subject.rfc4514_string() == f"CN=keygen-{alias}"


def _end_entity_passwords(standin: StandinEjbca) -> set[str]:
    """Every end-entity password the gateway sent upstream (REST JSON, EjbcaWS editUser and
    pkcs10Request), read from the requests the stand-in received."""
    found = set()
    for call in standin.calls:
        body = call["body"]
        if call["path"].startswith(REST) and body.startswith(b"{"):
            password = json.loads(body).get("password")
            if password:
                found.add(password)
        elif call["path"] == WS and body:
            tree = etree.fromstring(body)
            found |= {e.text for e in tree.iter() if etree.QName(e).localname == "password" and e.text}
            found |= {e.text for e in tree.iter("arg1") if e.getparent() is not None and e.text
                      and etree.QName(e.getparent()).localname == "pkcs10Request"}
    return found


def test_end_entity_passwords_never_reach_a_log_line_or_a_response(setup: Setup) -> None:
    """Issue 10 §6: the one-time password the gateway sets at EJBCA appears in no log line
    (the gateway logs at debug level here) and in no response, through enrollment, renewal,
    an approval wait and an upstream fault."""
    answers = []
    for alias in ("est", "soap"):
        cn = f"secret-{alias}"
        enrolled = setup.enroll(alias, new_csr(setup.folder, cn, f"secret-{alias}-1"))
        assert enrolled.status == 200, enrolled.body
        (setup.folder / f"secret-{alias}-1.pem").write_bytes(
            leaf(enrolled.body).public_bytes(pkcs7.serialization.Encoding.PEM))
        tls = ("--cert", str(setup.folder / f"secret-{alias}-1.pem"),
               "--key", str(setup.folder / f"secret-{alias}-1.key"))
        answers += [enrolled, setup.post(alias, "simplereenroll", new_csr(setup.folder, cn, "secret-2"), *tls)]
        setup.standin.approval = True
        try:
            answers.append(setup.enroll(alias, new_csr(setup.folder, f"secret-wait-{alias}", "secret-3")))
        finally:
            setup.standin.approval = False
        setup.standin.fault = "garbage"
        try:
            answers.append(setup.enroll(alias, new_csr(setup.folder, f"secret-fault-{alias}", "secret-4")))
        finally:
            setup.standin.fault = None
    assert [a.status for a in answers] == [200, 200, 502, 502] + [200, 200, 202, 502]
    passwords = _end_entity_passwords(setup.standin)
    assert len(passwords) >= 6
    log = setup.gateway.output()
    assert "simplereenroll" in log and "DEBUG" in log
    for password in passwords:
        assert password not in log
        for answer in answers:
            assert password.encode() not in answer.body
            assert all(password not in v for v in answer.headers.values())


def test_startup_lines_name_the_version_and_the_chain_source(setup: Setup) -> None:
    out = setup.gateway.output()
    assert "backend rest: version: EJBCA 8.0.0 Community, CA download: not offered, chain: from " \
           "enrollment responses" in out
    assert "backend soap: version: EJBCA 8.0.0 Community, CA download: offered (getLastCAChain)" in out
    assert 'backend named: version: EJBCA 8.0.0 Community, CA download: not used (cacerts_source = ' \
           '"webdist"), chain: from the public webdist (' in out


def test_an_optional_client_certificate_does_not_fail_simpleenroll_while_the_chain_is_unknown(
        setup: Setup) -> None:
    """``fresh`` knows no chain yet (CE 8.0 REST): checking a presented client certificate is
    impossible, and must not fail an enrollment that the password authenticates."""
    pki = setup.folder.parent / "upstream"
    before = curl(f"{setup.gateway.url}/fresh/cacerts", cacert=setup.trust_anchor)
    assert before.status == 503, before.body
    answer = setup.post("fresh", "simpleenroll", new_csr(setup.folder, "device-fresh", "fresh"),
                        "-u", f"estuser:{setup.password}", "--cert", str(pki / "ra-client.pem"),
                        "--key", str(pki / "ra-client.key"))
    assert answer.status == 200, answer.body
    assert curl(f"{setup.gateway.url}/fresh/cacerts", cacert=setup.trust_anchor).status == 200


def test_without_v1_ca_a_label_with_ca_subject_dn_serves_cacerts_from_the_first_request(setup: Setup) -> None:
    """``named``'s backend has learnt no chain, but the label names its CA's subject DN: the
    public webdist serves the chain before any enrollment."""
    answer = curl(f"{setup.gateway.url}/named/cacerts", cacert=setup.trust_anchor)
    assert answer.status == 200, answer.body
    assert {c.subject for c in certificates(answer.body)} == {c.subject for c in setup.standin.chain}
    assert any(c["path"].startswith("/ejbca/publicweb/webdist/certdist") for c in setup.standin.calls)


def test_a_restarted_gateway_serves_the_learnt_chain_at_once(setup: Setup) -> None:
    """Runs last: the chain learnt from enrollments is in the state folder, not only in memory."""
    assert list((setup.folder / "state" / "rest").glob("ca-chain-*.pem"))
    setup.gateway.stop()
    setup.gateway.start()
    answer = curl(f"{setup.gateway.url}/est/cacerts", cacert=setup.trust_anchor)
    assert answer.status == 200, answer.body
    assert {c.subject for c in certificates(answer.body)} == {c.subject for c in setup.standin.chain}
