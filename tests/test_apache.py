"""The gateway behind a real, private Apache httpd built from contrib/apache.

Apache terminates TLS on its own loopback port and forwards the client certificate
in a header; the gateway listens in plain HTTP and believes that header only from
127.0.0.1, the address Apache connects from. Clients that must not be believed use
other loopback addresses (127.0.0.2, 127.0.0.3).
"""

from __future__ import annotations

import base64
import concurrent.futures
import grp
import re
import shutil
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from est_gateway import localmode, wire
from est_gateway.backends.local import authority
from tests.conftest import Gateway
from tests.support import openssl, pki
from tests.support.apache import ApacheProcess, missing_apache, proxy_gateway_config
from tests.support.gateway import CurlResult, GatewayProcess, children_of, free_port, local_instance
from tests.support.logs import audit_events

pytestmark = pytest.mark.e2e

APACHE_ADDRESS = "127.0.0.1"     # where Apache connects to the gateway from: trusted
UNTRUSTED = "127.0.0.2"          # a client talking to the gateway directly
CLIENT = "127.0.0.3"             # a client of Apache, as X-Forwarded-For should name it

PARTNER_ALIAS = """
# Added by the Apache tests: enrollment authenticated by a certificate from a partner CA
# whose issuing CA only the client sends (Apache forwards it as X-SSL-Client-Chain-0).
[aliases.partner]
backend = "local"
ca = "EST CA"
require_client_cert = true
trusted_client_cas_file = "partner-root.pem"
"""


@dataclass
class Site(Gateway):
    """The local instance's gateway in proxy mode (``process``) behind a private Apache."""

    apache: ApacheProcess

    @property
    def url(self) -> str:
        return self.apache.url

    @property
    def direct(self) -> str:
        return f"http://127.0.0.1:{self.process.port}/.well-known/est"

    def reenroll(self, url: str, csr: Path, *extra: str) -> CurlResult:
        return self.curl(*extra, "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
                         f"{url}/simplereenroll")


def apache_for(folder: Path, instance: localmode.LocalInstance, *, gateway: str = "",
               members: tuple[str, str] | None = None) -> ApacheProcess:
    """A private Apache with the contrib site (and balancer) on a free loopback port."""
    port = free_port()
    defines = {"EST_VHOST": f"127.0.0.1:{port}", "EST_SERVER_NAME": "localhost",
               "EST_TLS_CERT": str(instance.folder / "tls" / "server.pem"),
               "EST_TLS_KEY": str(instance.folder / "tls" / "server.key")}
    if members:
        defines |= {"EST_GATEWAY_1": members[0], "EST_GATEWAY_2": members[1]}
    else:
        defines["EST_GATEWAY"] = gateway
    return ApacheProcess(folder, port, defines, balancer=members is not None)


@pytest.fixture(scope="module")
def partner() -> tuple[pki.CA, pki.CA]:
    """A partner root and its issuing CA (only the root is configured at the gateway)."""
    root = pki.CA.create("Partner Root")
    key = pki.rsa_key()
    issuing = authority.build_ca(authority.name("Partner Issuing"), key, issuer=root.cert,
                                 issuer_key=root.key, days=30, now=pki.NOW, path_length=0)
    return root, pki.CA(key, issuing)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, partner: tuple[pki.CA, pki.CA]) -> Iterator[Site]:
    why = missing_apache()
    if why:
        pytest.fail(why, pytrace=False)      # CI installs apache2: never a silent skip
    folder = tmp_path_factory.mktemp("apache-site") / "est-local"
    instance, _ = local_instance(folder, extra_config=PARTNER_ALIAS)
    pki.write_pem(instance.folder / "partner-root.pem", partner[0].cert)   # read at gateway start
    port = free_port()
    gateway = GatewayProcess(proxy_gateway_config(instance, "proxy-1", port, [APACHE_ADDRESS]),
                             port, instance.folder / "proxy-1.log")
    apache = apache_for(tmp_path_factory.mktemp("apache-1"), instance,
                        gateway=f"http://127.0.0.1:{port}")
    try:
        gateway.start()
        apache.start()
        yield Site(instance, gateway, tmp_path_factory.mktemp("apache-client"), apache)
    finally:
        apache.stop()
        gateway.stop()


def _issued(res: CurlResult, out: Path) -> str:
    assert res.status == 200, res.body
    assert res.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    openssl.certs_from_pkcs7_b64(res.body, out)
    return openssl.serial_of(out)


def _record_field(site: Site, serial: str, name: str) -> str:
    shown = site.cli("show", serial)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith(name + " "))
    return line.split(None, 1)[1]


def test_workflow_through_apache(site: Site) -> None:
    """cacerts → enroll (password) → re-enroll (TLS client certificate) → revoke → refused."""
    work = site.work
    res = site.curl(f"{site.url}/cacerts")
    assert res.status == 200
    assert res.headers["content-type"] == "application/pkcs7-mime"
    assert res.headers["content-transfer-encoding"] == "base64"
    certs = wire.read_certs_only(base64.b64decode(res.body))
    assert {c.subject.rfc4514_string() for c in certs} == {
        "CN=est-gateway Local EST CA", "CN=est-gateway Local EST CA Root"}
    assert site.curl(f"https://127.0.0.1:{site.apache.port}/").status == 404   # only EST is proxied

    key, csr = openssl.new_csr(work, "wf1", subject="/CN=apache-router/O=Acme", san="DNS:router.example")
    # The client's own X-Forwarded-For is dropped by Apache; the record names its real address.
    res = site.curl("--interface", CLIENT, "-H", "X-Forwarded-For: 198.51.100.66", *site.enroll_args(csr))
    serial1 = _issued(res, work / "wf1.pem")
    assert _record_field(site, serial1, "requester") == f"user={localmode.USERNAME} addr={CLIENT}"

    key2, csr2 = openssl.new_csr(work, "wf2", subject="/CN=apache-router/O=Acme", san="DNS:router.example")
    res = site.reenroll(site.url, csr2, "--cert", str(work / "wf1.pem"), "--key", str(key))
    serial2 = _issued(res, work / "wf2.pem")
    assert serial2 != serial1
    assert f"#{serial1.lower().lstrip('0')}" in _record_field(site, serial2, "requester")

    done = site.cli("revoke", serial2, "--reason", "keyCompromise")
    assert done.returncode == 0, done.stderr
    _, csr3 = openssl.new_csr(work, "wf3", subject="/CN=apache-router/O=Acme", key=key2,
                              san="DNS:router.example")
    res = site.reenroll(site.url, csr3, "--cert", str(work / "wf2.pem"), "--key", str(key2))
    assert res.status == 403
    assert res.body == b"client certificate is revoked\n"


def test_forwarded_chain_reaches_the_gateway(site: Site, partner: tuple[pki.CA, pki.CA]) -> None:
    """A client certificate from a partner's issuing CA verifies only with the chain the
    client sent, which Apache forwards as X-SSL-Client-Chain-0."""
    root, issuing = partner
    work = site.work
    key = pki.p256_key()
    leaf = issuing.issue(key, cn="partner-device")
    pki.write_pem(work / "partner-tls.key", key)
    pki.write_pem(work / "partner-leaf.pem", leaf)
    pki.write_pem(work / "partner-chain.pem", leaf, issuing.cert)
    _, csr = openssl.new_csr(work, "partner-csr", subject="/CN=partner-device")
    url = f"{site.url}/partner/simpleenroll"
    args = ("-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}", url)

    res = site.curl(*args)
    assert res.status == 401 and b"requires a TLS client certificate" in res.body   # no "(null)" cert
    res = site.curl("--cert", str(work / "partner-leaf.pem"), "--key", str(work / "partner-tls.key"), *args)
    assert res.status == 401 and b"does not chain" in res.body
    res = site.curl("--cert", str(work / "partner-chain.pem"), "--key", str(work / "partner-tls.key"), *args)
    _issued(res, work / "partner-issued.pem")


@pytest.fixture(scope="module")
def spoofable(site: Site) -> tuple[Path, Path, str]:
    """A valid, unrevoked certificate (and a CSR to renew it) a spoofer would like to be."""
    key, csr = openssl.new_csr(site.work, "victim", subject="/CN=victim")
    _issued(site.curl(*site.enroll_args(csr)), site.work / "victim.pem")
    pem = (site.work / "victim.pem").read_text()
    return csr, key, pem.replace("\n", " ")     # the form Apache itself forwards


def test_spoofed_header_through_apache_is_replaced(site: Site, spoofable: tuple[Path, Path, str],
                                                   partner: tuple[pki.CA, pki.CA]) -> None:
    csr, _, header = spoofable
    for name in ("X-SSL-Client-Cert", "x-ssl-client-cert", "X_SSL_Client_Cert"):
        res = site.reenroll(site.url, csr, "-H", f"{name}: {header}", "-H", f"X-SSL-Client-Chain-0: {header}")
        assert res.status == 403, (name, res.body)
        assert res.body == b"simplereenroll needs the certificate being renewed as TLS client certificate\n"
    # With a real (foreign) TLS client certificate, Apache's header names that one, not ours.
    key = pki.p256_key()
    pki.write_pem(site.work / "foreign.pem", pki.CA.create("Foreign CA").issue(key, cn="victim"))
    pki.write_pem(site.work / "foreign.key", key)
    res = site.reenroll(site.url, csr, "--cert", str(site.work / "foreign.pem"), "--key",
                        str(site.work / "foreign.key"), "-H", f"X-SSL-Client-Cert: {header}")
    assert res.status == 403 and b"does not chain" in res.body


def test_header_straight_to_the_gateway_counts_only_from_the_proxy(
        site: Site, spoofable: tuple[Path, Path, str]) -> None:
    csr, _, header = spoofable
    res = site.reenroll(site.direct, csr, "--interface", UNTRUSTED, "-H", f"X-SSL-Client-Cert: {header}")
    assert res.status == 403
    assert res.body == b"simplereenroll needs the certificate being renewed as TLS client certificate\n"
    assert f"ignored X-SSL-Client-Cert header from untrusted address {UNTRUSTED}" in site.process.output()
    # Control: the same request from Apache's address is believed, so the refusal above
    # was the address check and nothing else.
    res = site.reenroll(site.direct, csr, "--interface", APACHE_ADDRESS, "-H", f"X-SSL-Client-Cert: {header}")
    assert res.status == 200, res.body


def _enrollments_served(gateway: GatewayProcess) -> int:
    """Successful enrollments in the gateway's JSON audit log."""
    return sum(e["operation"] == "simpleenroll" and e["status"] == 200 for e in audit_events(gateway.output()))


def test_balancer_two_instances_share_one_local_ca(site: Site, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Concurrent enrollments through mod_proxy_balancer to two gateways on one state folder."""
    port2 = free_port()
    second = GatewayProcess(proxy_gateway_config(site.instance, "proxy-2", port2, [APACHE_ADDRESS]),
                            port2, site.instance.folder / "proxy-2.log")
    members = (f"http://127.0.0.1:{site.process.port}", f"http://127.0.0.1:{port2}")
    apache = apache_for(tmp_path_factory.mktemp("apache-lb"), site.instance, members=members)
    count = 16
    csrs = []
    for i in range(count):
        path = site.work / f"lb-{i}.b64"
        path.write_bytes(pki.csr_b64(pki.make_csr(pki.p256_key(), cn=f"balanced-{i}")))
        csrs.append(path)
    before = [_enrollments_served(site.process), 0]
    try:
        second.start()
        apache.start()
        url = f"{apache.url}/simpleenroll"
        auth = f"{localmode.USERNAME}:{site.instance.password()}"
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda p: site.curl("-u", auth, "-H", "Content-Type: application/pkcs10",
                                                        "--data-binary", f"@{p}", url), csrs))
        served = [_enrollments_served(site.process) - before[0], _enrollments_served(second)]
    finally:
        apache.stop()
        second.stop()
    assert [r.status for r in results] == [200] * count, [r.body for r in results if r.status != 200]
    issued = [wire.read_certs_only(base64.b64decode(r.body))[0] for r in results]
    serials = [format(c.serial_number, "x") for c in issued]
    assert len(set(serials)) == count
    assert sorted(c.subject.rfc4514_string() for c in issued) == sorted(f"CN=balanced-{i}" for i in range(count))
    assert sum(served) == count and min(served) > 0, served   # both instances took requests

    db = site.instance.folder / "local-ca" / "certificates.sqlite3"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT serial, subject, der FROM certificates WHERE subject LIKE 'CN=balanced-%'"
                            ).fetchall()
    conn.close()
    assert sorted(r[0] for r in rows) == sorted(serials)           # each recorded exactly once
    recorded = {r[0]: x509.load_der_x509_certificate(r[2]) for r in rows}
    assert all(recorded[format(c.serial_number, "x")] == c for c in issued)
    listed = site.cli("list", "--limit", "1000").stdout
    assert all(listed.count(s) == 1 for s in serials)


def test_apache_is_stopped_by_its_pid_even_when_the_test_fails(site: Site, tmp_path: Path) -> None:
    apache = apache_for(tmp_path / "apache", site.instance, gateway="http://127.0.0.1:9")
    children: list[int] = []
    with pytest.raises(RuntimeError, match="simulated failure"):
        try:
            apache.start()           # returns once the PidFile names the process it started
            deadline = time.monotonic() + 10
            while not children and time.monotonic() < deadline:
                children = children_of(apache.pid or -1)   # forked right after the parent binds
                time.sleep(0.05)
            raise RuntimeError("simulated failure")
        finally:
            apache.stop()
    assert children, "Apache's parent had no child processes"
    assert not apache.pid_file.exists()                  # Apache removes it on a clean stop
    for pid in [apache.pid, *children]:
        assert not Path(f"/proc/{pid}").exists(), f"Apache process {pid} survived"


def test_apache_to_the_gateway_over_a_unix_socket(site: Site, tmp_path_factory: pytest.TempPathFactory) -> None:
    """listen = "unix:<path>" with trusted_proxies = ["unix"]: Apache (as www-data, the
    socket's group) forwards to it; a forwarded certificate is believed only there."""
    folder = Path(tempfile.mkdtemp(prefix="est-unix-", dir="/tmp"))   # Apache's children must reach it
    folder.chmod(0o755)
    sock = folder / "est.sock"
    text = proxy_gateway_config(site.instance, "unix", free_port(), ["unix"]).read_text()
    text = re.sub(r'listen = "[^"]*"', f'listen = "unix:{sock}"\nunix_socket_group = "www-data"', text, count=1)
    config = site.instance.folder / "unix.toml"
    config.write_text(text)
    gateway = GatewayProcess(config, 0, site.instance.folder / "unix.log", unix_socket=sock)
    apache = apache_for(tmp_path_factory.mktemp("apache-unix"), site.instance,
                        gateway=f"unix:{sock}|http://localhost")
    work = site.work
    key, csr = openssl.new_csr(work, "unix1", subject="/CN=unix-device")
    try:
        gateway.start()
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660
        assert sock.stat().st_gid == grp.getgrnam("www-data").gr_gid
        apache.start()
        url = apache.url
        res = site.curl("-u", f"{localmode.USERNAME}:{site.instance.password()}", "-H",
                        "Content-Type: application/pkcs10", "--data-binary", f"@{csr}", f"{url}/simpleenroll")
        _issued(res, work / "unix1.pem")
        renewed = site.curl("--cert", str(work / "unix1.pem"), "--key", str(key), "-H",
                            "Content-Type: application/pkcs10", "--data-binary", f"@{csr}", f"{url}/simplereenroll")
        assert renewed.status == 200, renewed.body
    finally:
        apache.stop()
        gateway.stop()
        shutil.rmtree(folder, ignore_errors=True)
    audit = audit_events(gateway.output())
    assert [e["operation"] for e in audit if e["status"] == 200] == ["simpleenroll", "simplereenroll"]
    assert audit[-1]["client_address"] == "127.0.0.1"   # from X-Forwarded-For, believed over the socket
