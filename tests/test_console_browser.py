"""The operator console in a real headless browser (Debian's chromium, driven by selenium
through chromium-driver) beside a real gateway: curl enrolls a certificate, the admin
signs in, finds it, revokes it behind the confirmation and sees its status change, and
curl's simplereenroll with it is then answered 403.

The console is served by gunicorn over TLS with the gateway's own certificate, in a
process of its own: both processes share the local CA's record (its SQLite file) and the
audit file, as the console listener of the gateway's workers does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from est_gateway import localmode
from tests.support.console import ADMIN, ADMIN_PASSWORD, prepare_console_folder
from tests.support.gateway import GatewayProcess, curl, free_port, leaf
from tests.support.pki import csr_b64, make_csr, p256_key

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                                                   "(scripts/test.sh installs them)")
#: set to a path to keep the certificates page's screenshot (docs/console.png was taken so)
SCREENSHOT_ENV = "EST_CONSOLE_SCREENSHOT"

WSGI = '''
import os
from est_gateway import audit
from est_gateway.config import load_config
from est_gateway.console import create_console_app
from est_gateway.web import make_service

config = load_config(os.environ["EST_GATEWAY_CONFIG"])
for backend in config.backends.values():
    backend.start()
audit.configure(file=audit.AuditFile(config.console.audit_file, config.console.audit_file_max_bytes))
app = create_console_app(config, make_service(config))
'''


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[localmode.LocalInstance, GatewayProcess, str]]:
    """A running gateway and its console (gunicorn, TLS): the instance, the gateway, the console's URL."""
    port, console_port = free_port(), free_port()
    folder = tmp_path / "est-local"
    prepare_console_folder(folder, port=port, console_port=console_port)
    instance, _ = localmode.prepare(folder)
    gateway = GatewayProcess(instance.config, port, tmp_path / "gateway.log").start()
    (tmp_path / "console_wsgi.py").write_text(WSGI)
    log = open(tmp_path / "console.log", "wb")
    console = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{console_port}",
         "--certfile", str(folder / "tls" / "server.pem"), "--keyfile", str(folder / "tls" / "server.key"),
         "--chdir", str(tmp_path), "console_wsgi:app"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "EST_GATEWAY_CONFIG": str(instance.config)})
    log.close()
    try:
        url = f"https://127.0.0.1:{console_port}"
        for _ in range(200):
            if console.poll() is not None:
                raise RuntimeError((tmp_path / "console.log").read_text())
            answer = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--cacert", str(instance.trust_anchor),
                                     f"{url}/login"], capture_output=True, timeout=10)
            if answer.returncode == 0:
                break
            time.sleep(0.1)
        yield instance, gateway, url
    finally:
        console.terminate()
        console.wait(20)
        gateway.stop()


def test_an_admin_revokes_in_the_browser_what_curl_enrolled(
        served: tuple[localmode.LocalInstance, GatewayProcess, str], tmp_path: Path) -> None:
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

    instance, gateway, url = served
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
