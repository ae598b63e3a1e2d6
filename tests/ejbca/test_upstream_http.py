"""The core's upstream HTTP client (est_gateway.plugin.http.UpstreamClient, a requests session)
against a scripted upstream over mutual TLS: what it sends, what it refuses (redirects,
truncated answers), timeouts, refused connections, keep-alive, the environment, cookies,
and forks."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography import x509

from est_gateway.backends.base import EnrollRequest, Requester
from est_gateway.config.reader import Problems, Section
from est_gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway.plugin import UpstreamSettings, parse_upstream
from est_gateway.plugin.http import InvalidJSON, UpstreamClient, UpstreamResponse
from tests.support.ejbca_standin import TARGET, StandinEjbca, UpstreamPKI, make_backend, upstream_options
from tests.support.gateway import free_port
from tests.support.pki import CA, make_csr, p256_key, write_pem
from tests.support.scripted_upstream import ScriptedUpstream


def settings(pki: UpstreamPKI, url: str, tmp_path: Path, **more: Any) -> UpstreamSettings:
    problems = Problems()
    parsed = parse_upstream(Section(upstream_options(pki, url, **more), "backends.ca", problems, tmp_path))
    problems.raise_if_any()
    assert parsed is not None
    return parsed


@pytest.fixture
def client(pki: UpstreamPKI, upstream: ScriptedUpstream, tmp_path: Path) -> Any:
    made = UpstreamClient(settings(pki, upstream.base, tmp_path, read_timeout_s=0.5))
    yield made
    made.close()


def test_a_call_sends_json_auth_and_headers_and_reads_the_whole_answer(client: UpstreamClient,
                                                                        upstream: ScriptedUpstream) -> None:
    upstream.post("/api", status=201, body=b'{"ok": true, "n": "\\u00e9"}', content_type="application/json",
                  headers={"X-Vendor": "v1"})
    answer = client.request("POST", upstream.base + "/api", idempotent=False, json={"a": [1, "é"]},
                            auth=("ra", "s3cret"), headers={"Accept": "application/json"})
    assert (answer.status_code, answer.json(), answer.url) == (201, {"ok": True, "n": "é"}, upstream.base + "/api")
    assert answer.headers["x-vendor"] == answer.headers["X-VENDOR"] == "v1"   # case-insensitive
    assert answer.text == '{"ok": true, "n": "\\u00e9"}'
    sent = upstream.calls[0]
    assert json.loads(sent.body) == {"a": [1, "é"]}
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["Authorization"] == "Basic cmE6czNjcmV0"          # base64("ra:s3cret")
    assert sent.headers["User-Agent"] == "est-gateway"
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.status_code = 200  # type: ignore[misc]


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"\xff\xfe", b"[" * 100_000])
def test_json_of_a_body_that_is_not_json_is_a_value_error(body: bytes) -> None:
    answer = UpstreamResponse(200, {"Content-Type": "application/json"}, body)
    with pytest.raises(InvalidJSON):
        answer.json()
    assert isinstance(InvalidJSON("x"), ValueError)


def test_text_follows_the_declared_charset() -> None:
    assert UpstreamResponse(200, {"Content-Type": "text/plain; charset=ISO-8859-1"}, b"caf\xe9").text == "café"
    assert UpstreamResponse(200, {"Content-Type": "text/plain; charset=nonsense"}, b"caf\xc3\xa9").text == "café"
    assert UpstreamResponse(200, {}, b"\xff").text == "\ufffd"


def test_kept_alive_connections_are_reused(client: UpstreamClient, upstream: ScriptedUpstream) -> None:
    upstream.get("/a", json={})
    for _ in range(3):
        assert client.request("GET", upstream.base + "/a", idempotent=True).status_code == 200
    assert len({call.client_port for call in upstream.calls}) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_not_followed(client: UpstreamClient, upstream: ScriptedUpstream,
                                            caplog: pytest.LogCaptureFixture, status: int) -> None:
    """A CA API that redirects is misconfigured (or not the CA): following it would send the
    request, credentials included, somewhere the operator did not name."""
    upstream.post("/api", status=status, headers={"Location": upstream.base + "/elsewhere"})
    upstream.post("/elsewhere", json={})
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError, match=f"unexpected HTTP {status}"):
        client.request("POST", upstream.base + "/api", idempotent=True, json={})
    assert [call.path for call in upstream.calls] == ["/api"]
    assert "/elsewhere" in caplog.text   # the operator learns where it pointed


def test_a_truncated_answer_is_an_upstream_error_and_not_repeated(client: UpstreamClient,
                                                                  upstream: ScriptedUpstream) -> None:
    upstream.get("/api", body=b'{"certificate": "MIIB', missing=4000)
    with pytest.raises(UpstreamError, match="truncated or garbled"):
        client.request("GET", upstream.base + "/api", idempotent=True)
    assert len(upstream.calls) == 1
    upstream.reset()
    upstream.get("/api", json={"after": 1})            # and the pool recovers
    assert client.request("GET", upstream.base + "/api", idempotent=True).json() == {"after": 1}


def test_a_read_timeout_ends_the_wait(client: UpstreamClient, upstream: ScriptedUpstream) -> None:
    upstream.get("/slow", json={}, delay_s=3.0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="within 0.5 s"):
        client.request("GET", upstream.base + "/slow", idempotent=True)
    assert time.monotonic() - started < 2.5   # not the 3 s the answer takes (timeouts are not retried)
    assert len(upstream.calls) == 1


def test_a_refused_connection_is_unavailable_retried_when_idempotent_and_logs_no_secret(
        pki: UpstreamPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    client = UpstreamClient(settings(pki, f"https://127.0.0.1:{free_port()}", tmp_path, retries=2),
                            sleep=slept.append)
    with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamUnavailable, match="cannot connect"):
        client.request("GET", client.settings.url + "/x", idempotent=True, auth=("ra", "pa55word"))
    assert len(slept) == 2                       # two retries, with backoff
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        client.request("POST", client.settings.url + "/x", idempotent=False, auth=("ra", "pa55word"))
    assert len(slept) == 2                       # never for a call that is not idempotent
    assert "pa55word" not in caplog.text and "cGE1NXdvcmQ" not in caplog.text
    assert "cannot connect to the upstream CA" in caplog.text
    client.close()


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_environment_changes_nothing(pki: UpstreamPKI, upstream: ScriptedUpstream, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """requests' trap (psf/requests#3829): ``REQUESTS_CA_BUNDLE`` replaces a session's trust,
    ``HTTPS_PROXY`` its route, ``.netrc`` its credentials. Here the variables name the
    upstream's real CA, a dead proxy and a password: the configured bundle alone decides."""
    elsewhere = write_pem(tmp_path / "elsewhere.pem", CA.create("Unrelated CA").cert)
    monkeypatch.setenv(variable, str(pki.ca_bundle))          # what would make "wrong" work
    monkeypatch.setenv("SSL_CERT_DIR", str(pki.ca_bundle.parent))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")   # nothing listens there
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    upstream.get("/api", json={"ok": True})
    good = UpstreamClient(settings(pki, upstream.base, tmp_path))
    assert good.request("GET", upstream.base + "/api", idempotent=True).json() == {"ok": True}
    # what a CA library handed the session (zeep) does with it: Session.request, which reads
    # the environment unless trust_env is off
    assert good.session().get(upstream.base + "/api", timeout=5).json() == {"ok": True}
    assert ["Authorization" in call.headers for call in upstream.calls] == [False, False]
    wrong = UpstreamClient(settings(pki, upstream.base, tmp_path, ca_bundle=str(elsewhere)))
    with pytest.raises(UpstreamUnavailable, match="TLS handshake"):
        wrong.request("GET", upstream.base + "/api", idempotent=True)
    assert len(upstream.calls) == 2
    good.close()
    wrong.close()


@pytest.mark.parametrize("verify", [True, "bundle"])
def test_a_calls_verify_and_cert_never_widen_the_trust(client: UpstreamClient, upstream: ScriptedUpstream,
                                                       pki: UpstreamPKI, tmp_path: Path, verify: object) -> None:
    """urllib3 loads what ``verify=`` names into the connection's SSLContext (certifi's
    roots for ``verify=True``): the adapter passes neither it nor ``cert=`` on, whoever
    calls the session (a CA library such as zeep)."""
    upstream.get("/api", json={})
    trusted = client.settings.tls.get_ca_certs()
    stray = str(write_pem(tmp_path / "stray.pem", CA.create("Stray CA").cert))
    client.session().get(upstream.base + "/api", verify=stray if verify == "bundle" else verify,
                         cert=(str(pki.client_cert_file), str(pki.client_key_file)), timeout=5)
    assert client.settings.tls.get_ca_certs() == trusted
    assert len(trusted) == len(x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes()))


def test_no_cookie_is_kept(client: UpstreamClient, upstream: ScriptedUpstream) -> None:
    """A cookie an upstream sets while answering one client's request is never sent with
    the next (an HTTP client of its own would not have kept it either)."""
    upstream.get("/api", json={}, headers={"Set-Cookie": "JSESSIONID=abc123; Path=/"})
    for _ in range(2):
        client.request("GET", upstream.base + "/api", idempotent=True)
    assert [call.headers.get("Cookie") for call in upstream.calls] == [None, None]
    assert not client.session().cookies


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_alone(
        client: UpstreamClient, upstream: ScriptedUpstream) -> None:
    upstream.get("/api", json={})
    client.request("GET", upstream.base + "/api", idempotent=True)
    parent_session = client.session()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: report, never return into pytest
        code = 1
        try:
            fresh = client.session() is not parent_session
            client.request("GET", upstream.base + "/api", idempotent=True)
            client.close()              # closes the child's session only
            code = 0 if fresh else 2
        finally:
            os.write(write_end, bytes([code]))
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as child:
        assert child.read() == b"\x00"
    os.waitpid(pid, 0)
    client.request("GET", upstream.base + "/api", idempotent=True)
    ports = [call.client_port for call in upstream.calls]
    assert len(ports) == 3
    assert ports[1] != ports[0]          # the child did not use the parent's connection
    assert ports[2] == ports[0]          # and the parent's connection is still pooled, still open
    assert client.session() is parent_session


@pytest.mark.parametrize("elsewhere", ["https://127.0.0.2:{port}/api", "https://127.0.0.1:{port}0/api",
                                       "http://127.0.0.1:{port}/api"])
def test_a_url_off_the_configured_upstream_is_refused_before_sending(client: UpstreamClient,
                                                                       upstream: ScriptedUpstream,
                                                                       elsewhere: str) -> None:
    with pytest.raises(ValueError, match="not on the configured upstream"):
        client.request("GET", elsewhere.format(port=upstream.server.port), idempotent=True,
                       auth=("ra", "pa55word"))
    assert upstream.calls == []


@responses.activate
def test_zeep_leaves_the_process_session_as_the_core_made_it(pki: UpstreamPKI, tmp_path: Path) -> None:
    """zeep mounts an adapter on the session it is handed and sets its User-Agent; on the
    session every thread of the process sends on, a mount races their requests."""
    standin, url = StandinEjbca(), "https://ejbca.test:8443/ejbca/ejbcaws/ejbcaws"

    def soap(request: Any) -> tuple[int, dict[str, str], bytes]:
        status, content_type, body = standin.soap(request.body)
        return status, {"Content-Type": content_type}, body

    responses.add_callback(responses.POST, url, callback=soap)
    backend = make_backend("ejbca-soap", upstream_options(pki, url), tmp_path)
    session = backend.http.session()
    made = (list(session.adapters), dict(session.headers))
    csr = make_csr(p256_key(), cn="device-1")
    backend.enroll(EnrollRequest(csr=csr, alias="est", target=TARGET, requester=Requester(), request_id="r"))
    assert (list(session.adapters), dict(session.headers)) == made
    assert {call.request.headers["User-Agent"] for call in responses.calls} == {"est-gateway"}
    backend.close()
