"""A local-mode gateway with the operator console enabled, for the console's tests."""

from __future__ import annotations

import io
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from est_gateway import audit, localmode
from est_gateway.audit import AuditFile, AuditLineHandler
from est_gateway.passwords import PasswordHash
from tests.support.pki import CA, write_pem

ADMIN = "admin"
ADMIN_PASSWORD = "console-admin-password"
#: console logins fail from here in the throttle test only
THROTTLED_ADDRESS = "192.0.2.77"


def console_section(folder: Path, *, port: int = 8444, extra: str = "") -> str:
    """The ``[console]`` table of a test gateway in ``folder``; writes its secret and admin CA."""
    secret = folder / "secrets" / "console.secret"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    cheap = PasswordHash.create(ADMIN_PASSWORD, log_n=10).render()
    return f"""
[console]
enabled = true
listen = "127.0.0.1:{port}"
admin_username = "{ADMIN}"
admin_password_hash = "{cheap}"
admin_ca = "admin-ca.pem"
secret_file = "secrets/console.secret"
audit_file = "audit.jsonl"
session_idle_timeout_s = 600
{extra}"""


def prepare_console_folder(folder: Path, *, port: int = 8443, console_port: int = 8444,
                           limits: str = "") -> CA:
    """A local-mode folder whose gateway.toml enables the console; returns the admin CA."""
    instance, _ = localmode.prepare(folder, port=port)
    admin_ca = CA.create("Test Admin CA")
    write_pem(instance.folder / "admin-ca.pem", admin_ca.cert)
    text = instance.config.read_text(encoding="utf-8")
    text += console_section(instance.folder, port=console_port) + limits
    instance.config.write_text(text, encoding="utf-8")
    return admin_ca


@contextmanager
def audit_to_file(path: Path) -> Iterator[AuditFile]:
    """Audit lines into ``path`` (as ``est-gateway serve`` sets it up) for a block."""
    saved = (list(audit.logger.handlers), audit.logger.propagate, audit.logger.level)
    file = AuditFile(path, 1024 * 1024)
    audit.configure(AuditLineHandler(io.StringIO(), file=file))
    try:
        yield file
    finally:
        audit.logger.handlers, audit.logger.propagate = saved[0], saved[1]
        audit.logger.setLevel(saved[2] or logging.NOTSET)


def csrf_of(html: str) -> str:
    """The CSRF token of a page's first form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)
