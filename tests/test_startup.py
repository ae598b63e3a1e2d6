"""Start-up that tells the truth: check-config runs serve's checks, a busy port is one line
before anything is created, a served local folder is locked, messages name the problem."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from est_gateway import localmode
from est_gateway.backends.local import authority
from est_gateway.backends.local.authority import utcnow
from est_gateway.config import load_config
from tests.support.cfssl import CfsslCA
from tests.support.gateway import GatewayProcess, curl, free_port

COMMAND = Path(sys.executable).with_name("est-gateway")
REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EST_GATEWAY_CONFIG"}
    return subprocess.run([str(COMMAND), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def instance(tmp_path: Path) -> localmode.LocalInstance:
    created, _ = localmode.prepare(tmp_path / "state", port=free_port())
    return created


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def _refused_alike(instance: localmode.LocalInstance, expected: str) -> None:
    """check-config and serve refuse with the same single line, serve before its banner."""
    checked = run("check-config", "--config", str(instance.config))
    assert checked.returncode == 2 and "OK" not in checked.stdout
    assert checked.stderr.splitlines() == [f"{instance.config}: {expected}"]
    served = run("serve", "--config", str(instance.config))
    assert served.returncode == 2 and "serving EST" not in served.stdout
    assert [line for line in served.stderr.splitlines() if str(instance.config) in line] == \
        [f"{instance.config}: {expected}"]
    assert "Traceback" not in served.stderr and "Worker failed to boot" not in served.stderr


def test_a_tls_key_of_another_certificate_is_refused_by_check_config_as_by_serve(
        instance: localmode.LocalInstance) -> None:
    key = instance.folder / "tls" / "server.key"
    key.unlink()
    authority.write_private(key, authority.key_pem(authority.new_key("rsa-2048")))
    _refused_alike(instance, f"server.tls_key: {key} is not the key of server.tls_cert "
                             f"{instance.folder / 'tls' / 'server.pem'}")


def test_a_tls_certificate_tls_cannot_use_is_refused(instance: localmode.LocalInstance) -> None:
    (instance.folder / "tls" / "server.pem").write_text("not a certificate\n")
    checked = run("check-config", "--config", str(instance.config))
    assert checked.returncode == 2
    assert checked.stderr.startswith(f"{instance.config}: server.tls_cert, server.tls_key: TLS cannot use ")


def _trust_a_client_ca_named_like_the_label_ca(instance: localmode.LocalInstance) -> None:
    now = utcnow()
    key = authority.new_key("rsa-2048")
    lookalike = authority.build_ca(authority.name("est-gateway Local EST CA"), key, issuer=None,
                                   issuer_key=None, days=30, now=now)
    (instance.folder / "lookalike.pem").write_bytes(authority.cert_pem(lookalike))
    text = instance.config.read_text()
    marker = "allow_same_key_renewal = true\n"
    instance.config.write_text(text.replace(marker, marker + 'trusted_client_cas_file = "lookalike.pem"\n', 1))


def test_a_client_ca_named_like_the_label_ca_is_refused_by_check_config_as_by_serve(
        instance: localmode.LocalInstance) -> None:
    _trust_a_client_ca_named_like_the_label_ca(instance)
    assert run("local-ca", "list", "--config", str(instance.config)).returncode == 0   # creates the CA
    _refused_alike(instance, 'aliases.est.trusted_client_cas_file: the CA "CN=est-gateway Local EST CA" '
                             "has the name of this label's own CA; a client CA must have a name of its own")


def test_check_config_creates_no_local_ca_and_says_what_it_left_to_serve(
        instance: localmode.LocalInstance) -> None:
    _trust_a_client_ca_named_like_the_label_ca(instance)
    checked = run("check-config", "--config", str(instance.config))
    assert checked.returncode == 0, checked.stderr
    assert "backend local: not started (its first start creates its state)" in checked.stdout
    assert not (instance.folder / "local-ca").exists()


def test_a_busy_port_is_one_line_before_the_banner_and_local_creates_nothing(
        tmp_path: Path, busy_port: int) -> None:
    folder = tmp_path / "new"
    done = run("local", "--state-dir", str(folder), "--port", str(busy_port))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{busy_port}: another program is listening there; "
        "stop it or choose another port (--port)"]
    assert not folder.exists()


def test_serve_on_a_busy_port_names_the_listen_setting(instance: localmode.LocalInstance, busy_port: int) -> None:
    localmode.set_port(instance, busy_port)
    done = run("serve", "--config", str(instance.config))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{busy_port}: another program is listening there; "
        f"stop it or choose another port ([server] listen in {instance.config})"]
    assert not (instance.folder / "local-ca").exists()      # bound before the CA is created


def test_a_second_local_on_a_served_folder_says_so_and_rewrites_nothing(tmp_path: Path) -> None:
    port = free_port()
    first = GatewayProcess(tmp_path / "state" / "gateway.toml", port, tmp_path / "first.log")
    first.start("local", "--state-dir", str(tmp_path / "state"), "--port", str(port))
    try:
        before = first.config.read_bytes()
        second = run("local", "--state-dir", str(tmp_path / "state"), "--port", str(free_port()))
        assert second.returncode == 1 and second.stdout == ""
        assert f"{(tmp_path / 'state').resolve()} is already being served by est-gateway " \
               f"(pid {first.proc.pid})" in second.stderr                     # type: ignore[union-attr]
        assert first.config.read_bytes() == before
    finally:
        assert first.stop() == 0
    os.close(localmode.hold(localmode.LocalInstance((tmp_path / "state").resolve())))   # released


def test_the_lock_names_its_holder_until_it_is_closed(instance: localmode.LocalInstance) -> None:
    fd = localmode.hold(instance)
    with pytest.raises(localmode.InstanceBusy, match=f"pid {os.getpid()}"):
        localmode.hold(localmode.LocalInstance(instance.folder))
    os.close(fd)
    os.close(localmode.hold(instance))


def test_a_listen_port_out_of_range_says_so(instance: localmode.LocalInstance) -> None:
    localmode.set_port(instance, 8443)
    instance.config.write_text(instance.config.read_text().replace(":8443", ":70000", 1))
    done = run("check-config", "--config", str(instance.config))
    assert done.returncode == 2
    assert 'server.listen: port 70000 in "127.0.0.1:70000" is out of range (1-65535)' in done.stderr


def test_a_port_option_out_of_range_says_so(tmp_path: Path) -> None:
    done = run("local", "--state-dir", str(tmp_path / "x"), "--port", "70000")
    assert done.returncode == 2 and "70000 is not in the range 1<=x<=65535" in done.stderr
    assert not (tmp_path / "x").exists()


def test_local_ca_names_a_file_without_a_local_backend(tmp_path: Path) -> None:
    localmode.prepare(tmp_path, port=8443)          # tls/ and secrets/est.password
    ca = CfsslCA(tmp_path / "cfssl")                # made by the cfssl tools, not started
    (tmp_path / "upstream").mkdir()
    for made, named in (("client.pem", "est-gateway-client.pem"), ("client-key.pem", "est-gateway-client.key"),
                        ("ca.pem", "cfssl-tls-ca.pem")):
        shutil.copy(ca.folder / made, tmp_path / "upstream" / named)
    shutil.copy(ca.auth_key_file, tmp_path / "secrets" / "cfssl-auth.key")
    shutil.copy(REPO / "config" / "cfssl.toml", tmp_path / "cfssl.toml")
    done = run("local-ca", "list", "--config", str(tmp_path / "cfssl.toml"))
    assert done.returncode == 2
    assert f'Error: {tmp_path / "cfssl.toml"} has no local backend (type = "local"), only: cfssl;' in done.stderr


def test_an_unknown_backend_option_lists_the_known_ones(instance: localmode.LocalInstance) -> None:
    done = run("local-ca", "list", "--config", str(instance.config), "--backend", "nope")
    assert done.returncode == 2
    assert f'Error: unknown local backend "nope" in {instance.config}; known: local' in done.stderr


def test_the_banner_lists_the_labels_configured(instance: localmode.LocalInstance) -> None:
    text = instance.config.read_text()
    text = text[:text.index("# A stricter label")] + (
        '[aliases.devices]\nbackend = "local"\nca = "EST CA"\nrequire_client_cert = true\n'
        'accept_renewals_from = ["est"]\n')
    instance.config.write_text(text.replace("allow_same_key_renewal = true\n",
                                            'allow_same_key_renewal = true\naccept_renewals_from = ["devices"]\n'))
    config = load_config(instance.config)
    banner = localmode.instructions(instance, port=8443, created=False, aliases=config.aliases)
    assert "(labels: est = default, devices = client certificate required)" in banner


def test_binding_first_imports_nothing_of_the_metrics() -> None:
    """prometheus_client reads PROMETHEUS_MULTIPROC_DIR when first imported: what `local`
    and `serve` run before setting it (binding, locking) must not import it."""
    code = ("import sys\nimport est_gateway.cli, est_gateway.listener, est_gateway.localmode\n"
            "print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_a_folder_that_cannot_be_locked_is_one_line(instance: localmode.LocalInstance) -> None:
    (instance.folder / localmode.LOCK_NAME).mkdir()          # not a file: open() fails, even for root
    done = run("local", "--state-dir", str(instance.folder))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"Error: cannot lock {instance.folder}: Is a directory"]


def test_with_the_est_socket_bound_first_the_other_listeners_serve_too(tmp_path: Path) -> None:
    """gunicorn binds no address once one bind entry is a descriptor: the runner binds the
    other listeners first too, and each reaches its own application."""
    from tests.test_listeners import SCRIPT

    est, secure, plain = free_port(), free_port(), free_port()
    instance, _ = localmode.prepare(tmp_path / "est-local", port=est)
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT.replace(
        "GatewayServer(config, create_app(config), more=more).run()",
        "from est_gateway.listener import bind\n"
        "GatewayServer(config, create_app(config), more=more,\n"
        "              listener=bind(config.server, change_port='--port')).run()"))
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(instance.config), str(secure), str(plain)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for _ in range(150):
            try:
                assert curl(f"http://127.0.0.1:{plain}/y").body == b"plain http /y"
                break
            except RuntimeError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        assert curl(f"http://127.0.0.1:{plain}/y").body == b"plain http /y", log.read_text()
        assert curl(f"https://127.0.0.1:{secure}/x", cacert=instance.trust_anchor).body == b"secure https /x"
        assert curl(f"https://127.0.0.1:{est}/.well-known/est/cacerts", cacert=instance.trust_anchor).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
