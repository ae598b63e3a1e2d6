"""TLS policy of the gateway's own endpoint: TLS 1.2 minimum, no NULL, anonymous, export,
RC4 or 3DES suites.

Each refusal is shown to come from the server: with ``openssl s_client -msg`` the
ClientHello left and the server's alert came back, and the identical client command
does complete a handshake with ``openssl s_server`` configured to allow it (positive
control). Debian's OpenSSL 3 has no export, RC4 or 3DES suites to offer at all, so
those are offered by a hand-built ClientHello (tests/support/tlsprobe.hello), whose own
soundness is shown by the same hello with a good suite getting a ServerHello.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Gateway
from tests.support import tlsprobe

pytestmark = pytest.mark.e2e

LEGACY = "DEFAULT:@SECLEVEL=0"


def _server_files(gateway: Gateway) -> tuple[Path, Path]:
    folder = gateway.instance.folder / "tls"
    return folder / "server.pem", folder / "server.key"


# -- protocol versions --------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused_by_the_server(gateway: Gateway, flag: str) -> None:
    args = (flag, "-cipher", LEGACY)
    with tlsprobe.s_server(*_server_files(gateway), flag, "-cipher", LEGACY) as control:
        ok = tlsprobe.s_client(control.port, *args)
        assert ok.handshake_done, f"positive control failed, the client cannot speak {flag}:\n{ok.output}"
    refused = tlsprobe.s_client(gateway.process.port, *args)
    assert not refused.handshake_done, refused.output
    assert refused.sent_client_hello, refused.output
    alert = refused.server_alert()
    assert alert and "protocol_version" in alert, refused.output


@pytest.mark.parametrize("version", [0x0301, 0x0302])
def test_a_tls_1_0_or_1_1_hello_gets_a_protocol_version_alert(gateway: Gateway, version: int) -> None:
    answer = tlsprobe.hello(gateway.process.port, [0xC013, 0xC014, 0x002F], version=version)
    assert answer.kind == "alert" and answer.alert_name == "protocol_version", answer


@pytest.mark.parametrize("flag, version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls_1_2_and_1_3_succeed_with_verification(gateway: Gateway, flag: str, version: str) -> None:
    run = tlsprobe.s_client(gateway.process.port, flag, "-verify_return_error",
                            cafile=gateway.instance.trust_anchor)
    assert run.handshake_done, run.output
    assert f"Protocol version: {version}" in run.output, run.output
    assert "Verification: OK" in run.output, run.output


def test_tls_1_2_negotiates_only_forward_secret_aead(gateway: Gateway) -> None:
    run = tlsprobe.s_client(gateway.process.port, "-tls1_2", "-cipher", "ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    assert run.handshake_done, run.output
    suite = next(line for line in run.output.splitlines() if line.startswith("Ciphersuite:"))
    assert suite.split()[-1].startswith(("ECDHE-", "DHE-")) and ("GCM" in suite or "CHACHA20" in suite), suite


# -- cipher suites openssl can still offer ------------------------------------------------

@pytest.mark.parametrize("name, ciphers", [
    ("NULL (no encryption)", "eNULL:@SECLEVEL=0"),
    ("anonymous (no authentication)", "aNULL:@SECLEVEL=0"),
])
def test_null_and_anonymous_suites_are_refused_by_the_server(gateway: Gateway, name: str, ciphers: str) -> None:
    args = ("-tls1_2", "-cipher", ciphers)
    with tlsprobe.s_server(*_server_files(gateway), "-tls1_2", "-cipher", ciphers) as control:
        ok = tlsprobe.s_client(control.port, *args)
        assert ok.handshake_done, f"positive control failed for {name}:\n{ok.output}"
    refused = tlsprobe.s_client(gateway.process.port, *args)
    assert refused.sent_client_hello and not refused.handshake_done, refused.output
    alert = refused.server_alert()
    assert alert and "handshake_failure" in alert, refused.output


# -- every weak family as raw code points -------------------------------------------------

WEAK = {
    "NULL": [0x0001, 0x0002, 0x003B, 0xC006, 0xC010],
    "anonymous": [0x0018, 0x0034, 0x006C, 0x00A6, 0x00A7, 0xC018, 0xC019],
    "EXPORT": [0x0003, 0x0006, 0x0008, 0x0011, 0x0014, 0x0017, 0x0019, 0x0062, 0x0064],
    "RC4": [0x0004, 0x0005, 0xC007, 0xC011, 0xC016],
    "3DES": [0x000A, 0x0013, 0x0016, 0xC008, 0xC012, 0xC017],
}


def test_the_hand_built_hello_is_sound(gateway: Gateway) -> None:
    answer = tlsprobe.hello(gateway.process.port, [0xC02F])   # ECDHE-RSA-AES128-GCM-SHA256
    assert answer.kind == "server_hello" and answer.suite == 0xC02F, answer


@pytest.mark.parametrize("family", sorted(WEAK))
def test_weak_suites_get_a_handshake_failure(gateway: Gateway, family: str) -> None:
    answer = tlsprobe.hello(gateway.process.port, WEAK[family])
    assert answer.kind == "alert" and answer.alert_name in ("handshake_failure", "insufficient_security"), answer


@pytest.mark.parametrize("family", sorted(WEAK))
def test_a_weak_suite_is_never_preferred_over_a_good_one(gateway: Gateway, family: str) -> None:
    answer = tlsprobe.hello(gateway.process.port, [*WEAK[family], 0xC02F])
    assert answer.kind == "server_hello" and answer.suite == 0xC02F, answer


def test_the_gateway_serves_after_the_probes(gateway: Gateway) -> None:
    assert gateway.curl(f"{gateway.url}/cacerts").status == 200
