"""The operator console served by ``est-gateway serve`` on its own listener, beside EST in
the same workers: a real headless browser (Debian's chromium, driven by selenium through
chromium-driver) and curl over real TLS.

In the browser, curl enrolls a certificate, the admin signs in, finds it, revokes it behind
the confirmation and sees its status change, and curl's simplereenroll with it is then
answered 403. With curl, an admin signs in with a client certificate of the admin CA.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from est_gateway import localmode
from tests.support.console import ADMIN, ADMIN_PASSWORD, prepare_console_folder
from tests.support.gateway import GatewayProcess, curl, free_port, leaf
from tests.support.pki import CA, csr_b64, make_csr, p256_key

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
#: set to a path to keep the certificates page's screenshot (docs/console.png was taken so)
SCREENSHOT_ENV = "EST_CONSOLE_SCREENSHOT"


@dataclass
class Served:
    instance: localmode.LocalInstance
    gateway: GatewayProcess
    url: str
    admin_ca: CA


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A running gateway with its console enabled."""
    folder = tmp_path_factory.mktemp("console-e2e")
    port, console_port = free_port(), free_port()
    admin_ca = prepare_console_folder(folder / "est-local", port=port, console_port=console_port)
    instance, _ = localmode.prepare(folder / "est-local")
    gateway = GatewayProcess(instance.config, port, folder / "gateway.log").start()
    try:
        url = f"https://127.0.0.1:{console_port}"
        # gunicorn binds every listener before its workers start: the console is there too
        assert f"serving the operator console on {url}/" in gateway.output()
        yield Served(instance, gateway, url, admin_ca)
    finally:
        gateway.stop()


def test_an_admin_revokes_in_the_browser_what_curl_enrolled(served: Served, tmp_path: Path) -> None:
    if not (CHROMIUM and DRIVER):   # scripts/test.sh installs them: never a silent skip
        pytest.fail("needs Debian's chromium and chromium-driver (scripts/test.sh installs them)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def follow(element: WebElement) -> None:
        """Click what loads a new page, and wait until it replaced the old one."""
        page = browser.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(browser, 30).until(expected_conditions.staleness_of(page))

    instance, gateway, url = served.instance, served.gateway, served.url
    key = p256_key()
    (tmp_path / "device.csr").write_bytes(csr_b64(make_csr(key, cn="browser-device")))
    (tmp_path / "device.key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    est = ["-u", f"{localmode.USERNAME}:{instance.password()}", "-H", "Content-Type: application/pkcs10",
           "--data-binary", f"@{tmp_path / 'device.csr'}"]
    enrolled = curl(*est, f"{gateway.url}/simpleenroll", cacert=instance.trust_anchor)
    assert enrolled.status == 200
    cert = leaf(enrolled.body)
    serial = format(cert.serial_number, "x")
    (tmp_path / "device.pem").write_bytes(cert.public_bytes(Encoding.PEM))

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                     f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    # The gateway's TLS certificate comes from the local instance's own management CA,
    # which this throw-away browser profile does not know: the connection is TLS all the same.
    options.accept_insecure_certs = True
    browser = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    try:
        browser.set_page_load_timeout(30)
        browser.get(f"{url}/certificates")
        assert browser.current_url.startswith(f"{url}/login")
        browser.find_element(By.ID, "username").send_keys(ADMIN)
        browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
        follow(browser.find_element(By.ID, "sign-in"))
        assert browser.current_url == f"{url}/certificates"
        browser.find_element(By.ID, "q").send_keys("browser-device")
        follow(browser.find_element(By.ID, "search"))
        links = browser.find_elements(By.CSS_SELECTOR, "a.serial")
        assert [link.text for link in links] == [serial]
        follow(links[0])
        assert browser.find_element(By.ID, "status").text == "valid"
        follow(browser.find_element(By.ID, "revoke"))
        Select(browser.find_element(By.ID, "reason")).select_by_visible_text("keyCompromise")
        follow(browser.find_element(By.ID, "confirm-revoke"))
        assert browser.find_element(By.ID, "status").text == "revoked"
        browser.get(f"{url}/certificates?q=browser-device")
        assert browser.find_element(By.CSS_SELECTOR, "td.status").text == "revoked"
        shot = tmp_path / "certificates.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
        if os.environ.get(SCREENSHOT_ENV):
            shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
        browser.get(f"{url}/audit?outcome=console")
        assert f"console revoke {serial} (keyCompromise)" in browser.find_element(By.TAG_NAME, "tbody").text
        browser.get(f"{url}/")
        bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")
        assert len(bars) == 48 and "1 answered (issued or pending)" in browser.find_element(By.TAG_NAME, "main").text
        browser.save_screenshot(str(tmp_path / "overview.png"))
    finally:
        browser.quit()

    renewal = curl("--cert", str(tmp_path / "device.pem"), "--key", str(tmp_path / "device.key"),
                   "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{tmp_path / 'device.csr'}",
                   f"{gateway.url}/simplereenroll", cacert=instance.trust_anchor)
    assert renewal.status == 403 and b"revoked" in renewal.body


def test_an_admin_signs_in_with_a_client_certificate_over_real_tls(served: Served, tmp_path: Path) -> None:
    key = p256_key()
    cert = served.admin_ca.issue(key, cn="alice")
    (tmp_path / "admin.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    (tmp_path / "admin.key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    jar = str(tmp_path / "cookies")
    with_cert = ["--cert", str(tmp_path / "admin.pem"), "--key", str(tmp_path / "admin.key"), "-b", jar, "-c", jar]

    def console(*args: str, certificate: bool = True) -> Any:
        return curl(*(with_cert if certificate else ["-b", jar, "-c", jar]), *args, cacert=served.instance.trust_anchor)

    login = console(f"{served.url}/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', login.body)
    assert login.status == 200 and token
    signed = console("--data-urlencode", f"csrf_token={token.group(1).decode()}", "--data", "method=certificate",
                     f"{served.url}/login")
    assert signed.status == 303 and signed.headers["location"] == "/"
    overview = console(f"{served.url}/")
    assert overview.status == 200 and b"cert:CN=alice" in overview.body
    assert console(f"{served.url}/", certificate=False).status == 303   # the session needs that certificate


def test_the_console_and_est_never_answer_on_each_others_address(served: Served) -> None:
    est = curl(f"https://127.0.0.1:{served.gateway.port}/login", cacert=served.instance.trust_anchor)
    assert est.status == 404 and est.body.startswith(b"not found; EST lives under")
    console = curl(f"{served.url}/.well-known/est/cacerts", cacert=served.instance.trust_anchor)
    assert console.status == 303 and console.headers["location"].startswith("/login")
