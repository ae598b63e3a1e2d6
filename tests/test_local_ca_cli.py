"""``est-gateway local-ca list`` and ``show`` as an operator reads them: JSON for scripts,
label and SAN columns, statuses that fit their column, serials by a unique prefix."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from est_gateway import localmode
from est_gateway.backends.local import LocalCABackend, authority
from est_gateway.backends.local.authority import utcnow
from est_gateway.config import load_config

COMMAND = Path(sys.executable).with_name("est-gateway")
#: two serials that share a prefix, and one that does not
SERIALS = (0xABC1234567, 0xABC9876543, 0xDEF0000001)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EST_GATEWAY_CONFIG"}
    return subprocess.run([str(COMMAND), "local-ca", *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    instance, _ = localmode.prepare(tmp_path_factory.mktemp("ca-cli") / "state", port=8443)
    backend = load_config(instance.config).backends["local"]
    assert isinstance(backend, LocalCABackend)
    backend.start()
    key = authority.new_key("ec-p256")
    now = utcnow()
    ca = backend.ca_certs(load_config(instance.config).aliases["est"].target)[0]
    ca_key = authority.load_key(backend._ca_dir("EST CA") / "signing.key")
    for serial, alias in zip(SERIALS, ("est", "newkey", "est"), strict=True):
        cert = authority.build_leaf(
            subject=authority.name(f"device-{serial:x}"), public_key=key.public_key(),
            sans=[x509.DNSName(f"d{serial:x}.example"), x509.IPAddress(ipaddress.ip_address("192.0.2.7"))],
            issuer=ca, issuer_key=ca_key, not_before=now, not_after=now + dt.timedelta(days=30),
            key_usage=["digitalSignature"], extended_key_usage=["clientAuth"], serial=serial)
        backend.store.add(cert, ca="EST CA", alias=alias, certificate_profile="default",
                          requester="estuser", request_id=f"r{serial:x}", issued_at=now)
    backend.store.supersede(f"{SERIALS[0]:x}")
    backend.close()
    return instance.config


def test_list_has_label_and_san_columns_and_a_status_column_that_fits(config_path: Path) -> None:
    done = run("list", "--config", str(config_path))
    assert done.returncode == 0, done.stderr
    head, *rows, total = done.stdout.splitlines()
    assert head.split() == ["SERIAL", "STATUS", "NOT", "AFTER", "LABEL", "SUBJECT", "SANS"]
    assert total == "(3 shown, 3 on record)"
    status_at, label_at = head.index("STATUS"), head.index("LABEL")
    by_serial = {row.split()[0]: row for row in rows}
    superseded = by_serial[f"{SERIALS[0]:x}"]
    assert superseded[status_at:].split()[0] == "superseded"
    assert superseded[label_at:].split()[0] == "est"          # "superseded" pushed nothing right
    assert by_serial[f"{SERIALS[1]:x}"][label_at:].split()[0] == "newkey"
    assert superseded[head.index("SUBJECT"):].split() == [f"CN=device-{SERIALS[0]:x}",
                                                          f"dns:d{SERIALS[0]:x}.example,ip:192.0.2.7"]


def test_list_json_is_one_object_per_record(config_path: Path) -> None:
    done = run("list", "--json", "--config", str(config_path))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["serial"] for r in records) == sorted(f"{s:x}" for s in SERIALS)
    first = next(r for r in records if r["serial"] == f"{SERIALS[0]:x}")
    assert (first["status"], first["alias"], first["sans"]) == (
        "superseded", "est", [f"dns:d{SERIALS[0]:x}.example", "ip:192.0.2.7"])
    assert "der" not in first and first["requester"] == "estuser"


def test_show_takes_a_unique_serial_prefix(config_path: Path) -> None:
    done = run("show", "DEF", "--config", str(config_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["serial", f"{SERIALS[2]:x}"]


def test_an_ambiguous_prefix_names_the_candidates(config_path: Path) -> None:
    done = run("show", "abc", "--config", str(config_path))
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: serial prefix abc is ambiguous: {SERIALS[0]:x}, {SERIALS[1]:x}; "
                                   "give more digits")


def test_an_unknown_or_malformed_serial_is_one_line(config_path: Path) -> None:
    assert run("show", "123", "--config", str(config_path)).stderr.strip() == \
        "Error: no certificate with serial 123 on record"
    assert run("show", "xyz", "--config", str(config_path)).stderr.strip() == \
        'Error: "xyz" is not a hexadecimal serial number'
