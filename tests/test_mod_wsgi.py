"""The gateway inside a real, private Apache httpd: contrib/apache/est-gateway-wsgi.conf with
Debian's mod_wsgi (libapache2-mod-wsgi-py3), and contrib/apache/est-gateway.wsgi.

Apache terminates TLS (mod_ssl, optional client certificate, ``SSLOptions
+ExportCertData``) and runs the application in two mod_wsgi daemon processes; the gateway's
configuration has ``client_cert_source = "mod_ssl"``. Debian's mod_wsgi embeds Debian's
Python (/usr/bin/python3): its ``python-home`` is a virtual environment made with that
Python here, and ``python-path`` the site-packages of this checkout's .venv (the same
Python minor version, so the same extension ABI), as docs/apache.md describes.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import shutil
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from est_gateway import localmode, wire
from tests.support import openssl, pki
from tests.support.apache import WSGI_SCRIPT, ApacheProcess, missing_mod_wsgi, proxy_gateway_config
from tests.support.gateway import CurlResult, curl, free_port, local_instance
from tests.test_apache import PARTNER_ALIAS, partner  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

DEBIAN_PYTHON = Path("/usr/bin/python3")
CONFIG_PLACEHOLDER = '"/etc/est-gateway/gateway.toml"'
RENEW_REFUSED = b"simplereenroll needs the certificate being renewed as TLS client certificate\n"


@dataclass
class WsgiSite:
    apache: ApacheProcess
    instance: localmode.LocalInstance
    work: Path

    @property
    def url(self) -> str:
        return self.apache.url

    def curl(self, *args: str) -> CurlResult:
        return curl(*args, cacert=self.instance.trust_anchor)

    def post(self, operation: str, csr: Path, *args: str) -> CurlResult:
        return self.curl(*args, "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{csr}",
                         f"{self.url}/{operation}")

    def basic(self) -> tuple[str, str]:
        return "-u", f"{localmode.USERNAME}:{self.instance.password()}"


def _python_home(folder: Path) -> Path:
    """A virtual environment of the Python mod_wsgi embeds: its standard library, no
    system site-packages (Debian's own, older cryptography must not be found)."""
    home = folder / "python"
    subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    return home


def _wsgi_script(folder: Path, config: Path) -> Path:
    """contrib's .wsgi file, its configuration path set as an operator sets it."""
    text = WSGI_SCRIPT.read_text(encoding="utf-8")
    assert text.count(CONFIG_PLACEHOLDER) == 1
    script = folder / "est-gateway.wsgi"
    script.write_text(text.replace(CONFIG_PLACEHOLDER, repr(str(config))), encoding="utf-8")
    return script


def _give_to_apache_user(folder: Path) -> None:
    """The daemon processes run as Apache's User: as root that is www-data, which must read
    the configuration and secrets and write the local CA's state."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("www-data")
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _apache(folder: Path, instance: localmode.LocalInstance, config: Path) -> ApacheProcess:
    """The mod_wsgi site on a free loopback port, for ``config``, with the instance's TLS files."""
    port = free_port()
    defines = {"EST_VHOST": f"127.0.0.1:{port}", "EST_SERVER_NAME": "localhost",
               "EST_TLS_CERT": str(instance.folder / "tls" / "server.pem"),
               "EST_TLS_KEY": str(instance.folder / "tls" / "server.key"),
               "EST_WSGI_SCRIPT": str(_wsgi_script(folder, config)),
               "EST_PYTHON_HOME": str(_python_home(folder)),
               "EST_PYTHON_PATH": sysconfig.get_paths()["purelib"]}
    return ApacheProcess(folder / "apache", port, defines, wsgi=True)


@pytest.fixture(scope="module")
def site(partner: tuple[pki.CA, pki.CA]) -> Iterator[WsgiSite]:  # noqa: F811
    why = missing_mod_wsgi()
    if why:
        pytest.fail(why, pytrace=False)      # scripts/test.sh installs it: never a silent skip
    if not DEBIAN_PYTHON.exists():
        pytest.fail(f"{DEBIAN_PYTHON} (the Python Debian's mod_wsgi embeds) is missing", pytrace=False)
    # Every folder the daemon processes (www-data) read must be reachable by them.
    folder = Path(tempfile.mkdtemp(prefix="est-mod-wsgi-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        instance, _ = local_instance(folder / "est-local", extra_config=PARTNER_ALIAS)
        pki.write_pem(instance.folder / "partner-root.pem", partner[0].cert)
        config = proxy_gateway_config(instance, "mod-wsgi", free_port(), [],
                                      server_extra='client_cert_source = "mod_ssl"\nlog_level = "debug"\n')
        _give_to_apache_user(instance.folder)
        apache = _apache(folder, instance, config)
        work = folder / "client"
        work.mkdir()
        try:
            apache.start()
            yield WsgiSite(apache, instance, work)
        finally:
            apache.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serial(res: CurlResult, out: Path) -> str:
    assert res.status == 200, res.body
    assert res.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    openssl.certs_from_pkcs7_b64(res.body, out)
    return openssl.serial_of(out)


def test_cacerts_enroll_and_reenroll_through_mod_wsgi(site: WsgiSite) -> None:
    res = site.curl(f"{site.url}/cacerts")
    assert res.status == 200, res.body
    assert res.headers["content-type"] == "application/pkcs7-mime"
    certs = wire.read_certs_only(base64.b64decode(res.body))
    assert {c.subject.rfc4514_string() for c in certs} == {
        "CN=est-gateway Local EST CA", "CN=est-gateway Local EST CA Root"}

    key, csr = openssl.new_csr(site.work, "dev1", subject="/CN=wsgi-router", san="DNS:router.example")
    first = _serial(site.post("simpleenroll", csr, *site.basic()), site.work / "dev1.pem")
    _, csr2 = openssl.new_csr(site.work, "dev2", subject="/CN=wsgi-router", san="DNS:router.example")
    renewed = _serial(site.post("simplereenroll", csr2, "--cert", str(site.work / "dev1.pem"), "--key", str(key)),
                      site.work / "dev2.pem")
    assert renewed != first
    log = site.apache.error_log.read_text(errors="replace")
    assert "est-gateway loaded" in log                       # by a daemon process, from the .wsgi file
    audit = [line for line in log.splitlines() if '"operation":"simplereenroll"' in line]
    assert audit and '"status":200' in audit[-1] and '"client_address":"127.0.0.1"' in audit[-1]


def test_a_certificate_sent_as_a_header_authenticates_nobody(site: WsgiSite) -> None:
    key, csr = openssl.new_csr(site.work, "victim", subject="/CN=wsgi-victim")
    _serial(site.post("simpleenroll", csr, *site.basic()), site.work / "victim.pem")
    pem = (site.work / "victim.pem").read_text()
    one_line = pem.replace("\n", " ")
    for name in ("SSL_CLIENT_CERT", "SSL-Client-Cert", "X-SSL-Client-Cert", "X_SSL_Client_Cert"):
        res = site.post("simplereenroll", csr, "-H", f"{name}: {one_line}")
        assert (res.status, res.body) == (403, RENEW_REFUSED), name
    # control: the same certificate as the TLS client certificate renews
    assert site.post("simplereenroll", csr, "--cert", str(site.work / "victim.pem"), "--key", str(key)).status == 200


def test_the_chain_the_client_sends_reaches_the_gateway(site: WsgiSite, partner: tuple[pki.CA, pki.CA]  # noqa: F811
                                                        ) -> None:
    """SSL_CLIENT_CERT_CHAIN_0: the partner's issuing CA, which only the client has."""
    _, issuing = partner
    key = pki.p256_key()
    leaf = issuing.issue(key, cn="partner-wsgi")
    pki.write_pem(site.work / "partner.key", key)
    pki.write_pem(site.work / "partner-leaf.pem", leaf)
    pki.write_pem(site.work / "partner-chain.pem", leaf, issuing.cert)
    _, csr = openssl.new_csr(site.work, "partner-csr", subject="/CN=partner-wsgi")
    res = site.post("partner/simpleenroll", csr)
    assert res.status == 401 and b"requires a TLS client certificate" in res.body
    tls_key = ("--key", str(site.work / "partner.key"))
    res = site.post("partner/simpleenroll", csr, "--cert", str(site.work / "partner-leaf.pem"), *tls_key)
    assert res.status == 401 and b"does not chain" in res.body
    _serial(site.post("partner/simpleenroll", csr, "--cert", str(site.work / "partner-chain.pem"), *tls_key),
            site.work / "partner-issued.pem")


def test_only_est_reaches_the_application(site: WsgiSite) -> None:
    base = f"https://127.0.0.1:{site.apache.port}"
    for path in ("/", "/healthz", "/metrics", "/.well-known/estx"):
        res = site.curl(f"{base}{path}")
        assert res.status == 404, path
        assert res.headers["content-type"].startswith("text/html"), path   # Apache's page, not the app's
    res = site.curl(f"{site.url}/nope")
    assert (res.status, res.headers["content-type"]) == (404, "text/plain; charset=utf-8")   # the app's


def test_serverkeygen_without_key_encryption(site: WsgiSite) -> None:
    """A server-generated key is returned as PKCS#8 (RFC 7030 §4.4.2), not encrypted: that
    needs the gateway's own TLS key, which Apache holds here."""
    _, csr = openssl.new_csr(site.work, "keygen", subject="/CN=wsgi-keygen")
    res = site.post("serverkeygen", csr, *site.basic())
    assert res.status == 200, res.body
    assert res.headers["content-type"].startswith("multipart/mixed")
    assert re.search(rb"application/pkcs8", res.body)


def test_a_configuration_that_does_not_validate_is_logged_and_nothing_served(site: WsgiSite) -> None:
    folder = Path(tempfile.mkdtemp(prefix="est-mod-wsgi-broken-", dir="/tmp"))
    folder.chmod(0o755)
    config = folder / "broken.toml"
    config.write_text('[server]\ntls = false\nclient_cert_source = "apache"\n')
    config.chmod(0o644)
    apache = _apache(folder, site.instance, config)
    try:
        apache.start()
        res = site.curl(f"{apache.url}/cacerts")
    finally:
        apache.stop()
        log = apache.error_log.read_text(errors="replace")
        shutil.rmtree(folder, ignore_errors=True)
    assert res.status == 500
    problem = 'server.client_cert_source: "apache" is not one of: header, mod_ssl'
    assert f"ERROR est_gateway.hosting: {config}: {problem}" in log
    assert f"ERROR est_gateway.hosting: {config}: backends: is required (a table)" in log


def test_the_daemon_processes_close_their_backends_when_apache_stops(site: WsgiSite) -> None:
    """Last in this module: stops the site's Apache."""
    site.apache.stop()
    log = site.apache.error_log.read_text(errors="replace")
    assert re.search(r"backend local: closed in process \d+", log), log[-3000:]

