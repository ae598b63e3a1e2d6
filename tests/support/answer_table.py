"""The rows of the adapters' answer tables (tests/*/test_responses.py): one upstream answer,
scripted with ``responses``, and what the client gets from the gateway for it."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses
from cryptography import x509

from est_gateway.backends.base import EnrollRequest, Requester
from est_gateway.backends.local import authority
from est_gateway.errors import ESTError
from est_gateway.testing.http import fault
from tests.support.pki import CA, make_csr, p256_key

#: statuses of the rows that succeed
OK = 200


@dataclass(frozen=True)
class Row:
    """``answer``: keyword arguments of ``responses.add`` (``fault=`` a key of
    ``est_gateway.testing.http.FAULTS``); then the EST status, a piece of the reason, a piece
    of the operator's log line ("" = nothing at WARNING or above) and the Retry-After."""

    answer: dict[str, Any]
    status: int
    reason: str = ""
    log: str = ""
    retry_after: str | None = None
    #: how many times the upstream is asked (idempotent calls are repeated after 502/503/504)
    calls: int = 1
    id: str = field(default="", compare=False)

    def responses_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.answer)
        if "fault" in kwargs:
            kwargs["body"] = fault(kwargs.pop("fault"))
        return kwargs


def rows(*table: tuple[str, Row]) -> Any:
    """``pytest.mark.parametrize`` over ``(id, row)`` pairs, named by their ids."""
    return pytest.mark.parametrize("row", [pytest.param(row, id=name) for name, row in table])


def check(row: Row, call: Callable[[], Any], caplog: pytest.LogCaptureFixture) -> Any:
    """Run ``call`` and compare what the client would get with the row; the result on success."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        try:
            result = call()
        except ESTError as exc:
            got: tuple[object, ...] = (exc.status, row.reason in exc.detail, exc.headers().get("Retry-After"))
            assert got == (row.status, True, row.retry_after), f"{exc.status} {exc.detail!r} {exc.headers()}"
            assert "Traceback" not in exc.detail and len(exc.detail) < 300
            result = None
        else:
            assert row.status == OK, f"succeeded, the row expects {row.status} {row.reason!r}"
    loud = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    if row.log:
        assert row.log in loud, loud
    else:
        assert loud == "", loud
    return result


def transport_rows(location: str) -> tuple[tuple[str, Row], ...]:
    """The rows every HTTP adapter shares: a redirect to ``location`` and the network's
    faults, but a refused connection (which is repeated or not, by call)."""
    return (
        ("redirect", Row({"status": 302, "headers": {"Location": location}}, 502, "redirect: not followed",
                         location)),
        ("connect-timeout", Row({"fault": "connect-timeout"}, 504, "did not accept a connection within 5 s",
                                "cannot connect")),
        ("read-timeout", Row({"fault": "read-timeout"}, 504, "did not answer within 30 s", "did not answer")),
        ("tls", Row({"fault": "tls"}, 503, "TLS handshake with the upstream CA failed", "check ca_bundle",
                    retry_after="30")),
        ("truncated", Row({"fault": "truncated"}, 502, "truncated or garbled", "broke off")),
    )


def script(upstream: responses.RequestsMock, method: str, url: Any, row: Row,
           issue: Callable[[Any], tuple[int, dict[str, str], str]] | None = None) -> None:
    """The row's answer to ``method url``; ``issue`` (a ``responses`` callback) answers a row that succeeds."""
    if row.status == OK and issue is not None:
        upstream.add_callback(method, url, callback=issue)
    else:
        upstream.add(method, url, **row.responses_kwargs())


def certify(ca: CA, csr: x509.CertificateSigningRequest) -> x509.Certificate:
    """What a CA issues for ``csr``: its subject and key, clientAuth, valid for a day."""
    now = dt.datetime.now(dt.UTC)
    return authority.build_leaf(subject=csr.subject, public_key=csr.public_key(), sans=[], issuer=ca.cert,
                                issuer_key=ca.key, not_before=now, not_after=now + dt.timedelta(days=1),
                                key_usage=["digitalSignature"], extended_key_usage=["clientAuth"],
                                serial=authority.random_serial())


def enroll(backend: Any, target: Any, *, retry_key: str = "k1") -> Any:
    """``simpleenroll`` of a fresh P-256 CSR for CN=device-1, as the core hands it over."""
    csr = make_csr(p256_key(), cn="device-1")
    return backend.enroll(EnrollRequest(csr=csr, alias="est", target=target, requester=Requester(username="u"),
                                        request_id="r1", retry_key=retry_key))
