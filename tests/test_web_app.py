"""The Flask application itself (est_gateway.web): its exact routes, HEAD, the one error
path, and the per-request bookkeeping (audit line, Prometheus children), in process."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from flask import Flask
from prometheus_client import CollectorRegistry, Counter

from est_gateway import audit, metrics
from est_gateway.audit import AuditEvent
from est_gateway.backends.base import EnrollRequest, Issued, Pending
from est_gateway.backends.local import LocalCABackend
from est_gateway.limits import Limits
from est_gateway.metrics import Children
from est_gateway.web import service_of
from tests.conftest import EXTRA_ALIASES
from tests.support.inproc import InProcessGateway, check_response, start, valid_csr_der

EST = "/.well-known/est"
NOT_FOUND = b"not found; EST lives under /.well-known/est/\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    yield start(tmp_path_factory.mktemp("web") / "est-local", EXTRA_ALIASES)


@pytest.mark.parametrize(("method", "path", "status", "reason", "allow"), [
    ("GET", "/", 404, NOT_FOUND, None),
    ("GET", EST, 404, NOT_FOUND, None),
    ("GET", f"{EST}/", 404, NOT_FOUND, None),
    ("GET", f"{EST}//cacerts", 404, NOT_FOUND, None),          # never merged, never redirected
    ("GET", "/.well-known//est/cacerts", 404, NOT_FOUND, None),
    ("GET", "/healthz/x", 404, NOT_FOUND, None),
    ("GET", "/HEALTHZ", 404, NOT_FOUND, None),
    ("TRACE", "/nowhere", 404, NOT_FOUND, None),
    ("GET", f"{EST}/bogus", 404, b'unknown EST operation "bogus"\n', None),
    ("GET", f"{EST}/cacerts/", 404, b'unknown EST operation ""\n', None),
    ("GET", f"{EST}/a/b/cacerts", 404, b'unknown EST operation "cacerts"\n', None),
    ("GET", f"{EST}/nolabel/cacerts", 404, b'unknown EST label "nolabel"\n', None),
    ("GET", f"{EST}/%2e%2e/cacerts", 404, b'unknown EST label ".."\n', None),
    ("GET", f"{EST}/caf%C3%A9", 404, 'unknown EST operation "café"\n'.encode(), None),
    ("GET", f"{EST}/caf%E9", 404, 'unknown EST operation "caf\ufffd"\n'.encode(), None),
    ("POST", f"{EST}/cacerts", 405, b"method not allowed; use GET\n", "GET"),
    ("TRACE", f"{EST}/cacerts", 405, b"method not allowed; use GET\n", "GET"),
    ("GET", f"{EST}/simpleenroll", 405, b"method not allowed; use POST\n", "POST"),
    ("GET", f"{EST}/est/fullcmc", 405, b"method not allowed; use POST\n", "POST"),
    ("POST", f"{EST}/fullcmc", 501, b"fullcmc is not supported for this EST label\n", None),
    ("POST", "/healthz", 405, b"method not allowed; use GET, HEAD\n", "GET, HEAD"),
    ("OPTIONS", "/metrics", 405, b"method not allowed; use GET, HEAD\n", "GET, HEAD"),
])
def test_routes_and_their_refusals(gw: InProcessGateway, method: str, path: str, status: int, reason: bytes,
                                   allow: str | None) -> None:
    response = gw.request(method, path)
    check_response(response, what=path, method=method)
    assert (response.status_code, response.get_data()) == (status, reason)
    assert response.headers.get("Allow") == allow
    assert response.headers["Content-Length"] == str(len(reason))


@pytest.mark.parametrize(("method", "path", "status", "reason", "allow"), [
    ("BREW", f"{EST}/cacerts", 405, b"method not allowed; use GET\n", "GET"),      # any method: the view says
    ("OPTIONS", f"{EST}/simpleenroll", 405, b"method not allowed; use POST\n", "POST"),   # no automatic OPTIONS
    ("BREW", f"{EST}/nolabel/cacerts", 404, b'unknown EST label "nolabel"\n', None),
    ("BREW", "/healthz/", 405, b"method not allowed; use GET, HEAD\n", "GET, HEAD"),
    ("BREW", "/nowhere", 404, NOT_FOUND, None),
])
def test_any_method_gets_the_gateways_answer(gw: InProcessGateway, method: str, path: str, status: int,
                                             reason: bytes, allow: str | None) -> None:
    response = gw.request(method, path)
    assert (response.status_code, response.get_data(), response.headers.get("Allow")) == (status, reason, allow)
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_an_invalid_host_is_a_short_400(gw: InProcessGateway) -> None:
    """werkzeug refuses a Host that is no IDNA name before routing; the gateway words it."""
    response = gw.request("GET", f"{EST}/cacerts", headers=[("Host", "a..b")])
    assert (response.status_code, response.get_data()) == (400, b"bad request: invalid Host header\n")
    assert response.headers["Content-Length"] == str(len(response.get_data()))


def test_the_app_is_flask_with_the_est_and_ops_blueprints(gw: InProcessGateway) -> None:
    assert isinstance(gw.app, Flask)
    assert set(gw.app.blueprints) == {"est", "ops"}
    assert {rule.rule for rule in gw.app.url_map.iter_rules()} == {
        f"{EST}/<operation>", f"{EST}/<label>/<operation>", f"{EST}/<path:rest>", "/healthz", "/metrics"}


@pytest.mark.parametrize("path", [f"{EST}/cacerts", f"{EST}/est/cacerts", f"//{EST[1:]}/cacerts", "/healthz",
                                  "/healthz/", "/metrics", "/metrics/", f"{EST}/attrs/csrattrs"])
def test_get_and_head(gw: InProcessGateway, path: str) -> None:
    got = gw.request("GET", path)
    head = gw.request("HEAD", path)
    assert got.status_code == head.status_code == 200, got.get_data()
    assert got.get_data() and head.get_data() == b""
    assert head.headers["Content-Type"] == got.headers["Content-Type"]
    if not path.startswith("/metrics"):        # the counters move between the two requests
        assert head.headers["Content-Length"] == got.headers["Content-Length"] == str(len(got.get_data()))


def test_head_of_an_error_has_its_headers_and_no_body(gw: InProcessGateway) -> None:
    response = gw.request("HEAD", "/nowhere")
    assert (response.status_code, response.get_data()) == (404, b"")
    assert response.headers["Content-Length"] == str(len(NOT_FOUND))


def test_an_empty_csrattrs_is_a_bare_204(gw: InProcessGateway) -> None:
    response = gw.request("GET", f"{EST}/csrattrs")
    assert (response.status_code, response.get_data()) == (204, b"")
    assert "Content-Type" not in response.headers and "Content-Length" not in response.headers


def test_unexpected_errors_are_a_generic_500_and_logged_with_their_traceback(
        gw: InProcessGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = start(gw.folder, "").app   # its own app: the fault below stays in this test

    def broken(alias: object) -> bytes:
        raise RuntimeError("secret-ish internal detail")

    service_of(app).cacerts = broken  # type: ignore[method-assign]
    client = InProcessGateway(gw.folder, gw.config, app, gw.password, gw.ca_key, gw.ca_cert)
    with caplog.at_level(logging.ERROR, logger="est_gateway"):
        response = client.request("GET", f"{EST}/cacerts")
    assert response.status_code == 500
    assert response.get_data() == b"internal error; the gateway's log has the details\n"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    [record] = [r for r in caplog.records if r.name == "est_gateway"]
    assert record.exc_info and "secret-ish internal detail" in str(record.exc_info[1])


def _audit_lines(gw: InProcessGateway, caplog: pytest.LogCaptureFixture, level: int) -> list[dict[str, object]]:
    with caplog.at_level(level, logger=audit.logger.name):
        assert gw.request("GET", f"{EST}/cacerts").status_code == 200
        assert gw.request("GET", f"{EST}/nolabel/cacerts").status_code == 404
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == audit.logger.name]


def test_one_audit_line_per_request_and_none_when_the_audit_logger_is_off(
        gw: InProcessGateway, caplog: pytest.LogCaptureFixture) -> None:
    lines = _audit_lines(gw, caplog, logging.INFO)
    assert [(line["alias"], line["operation"], line["status"], line["outcome"]) for line in lines] == [
        ("est", "cacerts", 200, "ok"), ("unknown", "cacerts", 404, 'unknown EST label "nolabel"')]
    assert list(lines[0]) == ["time", "request_id", "alias", "operation", "method", "client_address", "username",
                              "client_cert_subject", "client_cert_serial", "csr_subject", "issued_serial",
                              "approval_reference", "outcome", "status", "latency_ms"]
    assert all(len(str(line["request_id"])) == 16 and int(str(line["request_id"]), 16) >= 0 for line in lines)
    caplog.clear()
    assert _audit_lines(gw, caplog, logging.WARNING) == []


def test_an_audit_event_is_not_even_encoded_when_the_logger_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[object] = []

    class Spy:
        def encode(self, record: object) -> str:
            encoded.append(record)
            return "{}"

    monkeypatch.setattr(audit, "_ENCODER", Spy())
    event = AuditEvent(request_id="0" * 16, alias="est", operation="cacerts", method="GET")
    before = audit.logger.level
    try:
        audit.logger.setLevel(logging.WARNING)
        event.emit()
        assert encoded == []
        audit.logger.setLevel(logging.INFO)
        event.emit()
        assert len(encoded) == 1
    finally:
        audit.logger.setLevel(before)


def test_the_backend_gets_the_csr_subject_the_core_made(gw: InProcessGateway,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """csr.subject builds a new Name, attribute by attribute, on every access: the one the
    limits check made is the one the backend's profile check and record use."""
    made: list[x509.Name] = []
    seen: list[EnrollRequest[Any]] = []
    check = Limits.check_csr_names
    enroll = LocalCABackend.enroll

    def checked(self: Limits, csr: x509.CertificateSigningRequest) -> x509.Name:
        made.append(check(self, csr))
        return made[-1]

    def enrolled(self: LocalCABackend, request: EnrollRequest[Any]) -> Issued | Pending:
        seen.append(request)
        return enroll(self, request)

    monkeypatch.setattr(Limits, "check_csr_names", checked)
    monkeypatch.setattr(LocalCABackend, "enroll", enrolled)
    csr = base64.encodebytes(valid_csr_der("made once"))
    response = gw.request("POST", f"{EST}/simpleenroll", body=csr,
                         headers=[("Content-Type", "application/pkcs10"), *gw.auth().items()])
    assert response.status_code == 200
    [request] = seen
    assert vars(request)["subject"] is made[0]
    assert vars(request)["subject_text"] == made[0].rfc4514_string() == "CN=made once"
    # A request made without the core (a plugin's own test) makes them itself, once.
    fresh = EnrollRequest(csr=request.csr, alias="est", target=request.target, requester=request.requester,
                          request_id="r")
    assert "subject" not in vars(fresh)
    assert fresh.subject == made[0] and fresh.subject is fresh.subject
    assert fresh.subject_text == "CN=made once"


@pytest.fixture
def audit_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The audit logger, its handlers, level and propagation restored afterwards; the
    time in its lines fixed."""
    class FixedClock:
        UTC = dt.UTC

        class datetime:  # noqa: N801 - stands for datetime.datetime
            @staticmethod
            def now(tz: dt.tzinfo) -> dt.datetime:
                return dt.datetime(2026, 11, 30, 12, 0, tzinfo=tz)

    monkeypatch.setattr(audit, "dt", FixedClock)
    saved = (list(audit.logger.handlers), audit.logger.level, audit.logger.propagate, list(audit.logger.filters))
    try:
        yield audit.logger
    finally:
        audit.logger.handlers, audit.logger.filters = saved[0], saved[3]
        audit.logger.setLevel(saved[1])
        audit.logger.propagate = saved[2]


def _event() -> AuditEvent:
    return AuditEvent(request_id="0" * 16, alias="est", operation="simpleenroll", method="POST",
                      client_address="192.0.2.7", username="device", csr_subject="CN=dev\u00e9,O=Example",
                      issued_serial="1f", outcome="ok", status=200, latency_ms=1.5)


def test_the_gateways_audit_handler_writes_the_same_line_without_a_log_record(
        audit_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    # What logging writes for the line, through an ordinary handler with the same format.
    through_logging = io.StringIO()
    plain = logging.StreamHandler(through_logging)
    audit.configure(plain)
    _event().emit()
    # The gateway's own handler (est-gateway serve): the line goes to it directly.
    direct = io.StringIO()
    audit.configure(audit.AuditLineHandler(direct))

    def no_record(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("a log record was made")

    monkeypatch.setattr(audit_logger, "makeRecord", no_record)
    _event().emit()
    assert direct.getvalue() == through_logging.getvalue()
    assert direct.getvalue().endswith("\n") and direct.getvalue().count("\n") == 1
    assert json.loads(direct.getvalue())["csr_subject"] == "CN=dev\u00e9,O=Example"


def test_an_operators_filter_or_second_handler_sees_every_audit_line(audit_logger: logging.Logger) -> None:
    ours = io.StringIO()
    audit.configure(audit.AuditLineHandler(ours))
    # A filter on the logger decides, as logging's own path would let it.
    audit_logger.addFilter(lambda record: "simpleenroll" not in record.getMessage())
    _event().emit()
    assert ours.getvalue() == ""
    audit_logger.filters.clear()
    # A second handler gets the line too.
    theirs = io.StringIO()
    extra = logging.StreamHandler(theirs)
    extra.setFormatter(logging.Formatter("audit %(levelname)s %(message)s"))
    audit_logger.addHandler(extra)
    _event().emit()
    assert theirs.getvalue() == "audit INFO " + ours.getvalue()
    audit_logger.removeHandler(extra)
    # The handler's own level still applies.
    audit_logger.handlers[0].setLevel(logging.WARNING)
    _event().emit()
    assert ours.getvalue().count("\n") == 1


def test_metric_children_are_cached_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "CHILDREN_CACHED", 3)
    registry = CollectorRegistry()
    family = Counter("t_requests", "test", ["alias", "status"], registry=registry)
    children = Children(family)
    for status in ("200", "404", "200", "500", "503", "503"):
        children("est", status).inc()
    assert children("est", "200") is children("est", "200") is family.labels("est", "200")
    assert len(children._children) == 3
    counts = {s: registry.get_sample_value("t_requests_total", {"alias": "est", "status": s})
              for s in ("200", "404", "500", "503")}
    assert counts == {"200": 2.0, "404": 1.0, "500": 1.0, "503": 2.0}


@pytest.mark.parametrize(("label", "status"), [("", 200), ("manual", 202)])
def test_every_backend_is_given_the_retry_key(gw: InProcessGateway, monkeypatch: pytest.MonkeyPatch, label: str,
                                             status: int) -> None:
    alias = gw.config.aliases[label or "est"]
    backend = gw.config.backends[alias.backend]
    seen: list[str] = []
    enroll = backend.enroll
    monkeypatch.setattr(backend, "enroll", lambda request: (seen.append(request.retry_key), enroll(request))[1])
    path = f"{EST}/{label}/simpleenroll" if label else f"{EST}/simpleenroll"
    response = gw.request("POST", path, body=base64.encodebytes(valid_csr_der("retry-key")),
                          headers=[("Content-Type", "application/pkcs10"), *gw.auth().items()])
    assert response.status_code == status
    assert len(seen) == 1 and len(seen[0]) == 64
