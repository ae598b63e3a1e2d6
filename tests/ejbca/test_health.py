"""``health()`` of both adapters (what /healthz will call) and the "unknown certificate"
rule: ``known=False`` only when EJBCA itself says it does not know the certificate."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from est_gateway.backends.base import EnrollRequest, Issued, Requester
from est_gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway_ejbca.alias import EjbcaTarget
from tests.support import ejbca_standin
from tests.support.ejbca_standin import (
    TARGET,
    StandinEjbca,
    StandinServer,
    UpstreamPKI,
    bc_dn,
    check_target,
    ejbca_target,
    make_backend,
    upstream_options,
)
from tests.support.gateway import free_port
from tests.support.pki import make_csr, p256_key
from tests.support.scripted_upstream import ScriptedUpstream

#: the REST API's path on the scripted upstream
REST = ejbca_standin.REST


@pytest.fixture(params=["ejbca-rest", "ejbca-soap"])
def type_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def url_of(server: StandinServer, type_name: str) -> str:
    return server.rest_url if type_name == "ejbca-rest" else server.ws_url


def fast(pki: UpstreamPKI, url: str, tmp_path: Path, type_name: str) -> Any:
    return make_backend(type_name, upstream_options(pki, url, read_timeout_s=0.5, connect_timeout_s=0.5,
                                                    retries=0), tmp_path)


def test_health_ok_over_mutual_tls(type_name: str, pki: UpstreamPKI, server: StandinServer,
                                   tmp_path: Path) -> None:
    before = len(server.standin.calls)
    assert fast(pki, url_of(server, type_name), tmp_path, type_name).health() is None
    call = server.standin.calls[before]
    assert call["peer"], "health() must authenticate with the client certificate"
    if type_name == "ejbca-rest":
        assert call["method"] == "GET" and call["path"].endswith("/v1/certificate/status")
    else:
        assert b"getEjbcaVersion" in call["body"]


@pytest.mark.parametrize(("fault", "error"), [
    ("500", UpstreamUnavailable), ("garbage", UpstreamError), ("hang", UpstreamTimeout),
    ("truncated", UpstreamError),   # Content-Length 4000, far fewer bytes, then the connection closes
])
def test_health_failures_map_into_the_error_tree(type_name: str, pki: UpstreamPKI, server: StandinServer,
                                                 tmp_path: Path, fault: str, error: type[Exception]) -> None:
    backend = fast(pki, url_of(server, type_name), tmp_path, type_name)
    server.standin.fault, server.standin.hang_s = fault, 1.0
    try:
        with pytest.raises(error):
            backend.health()
    finally:
        server.standin.fault = None
    backend.health()  # and it recovers


def test_health_when_nothing_listens(type_name: str, pki: UpstreamPKI, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}/ejbca/whatever"
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        fast(pki, url, tmp_path, type_name).health()


def test_health_with_an_untrusted_upstream(type_name: str, pki: UpstreamPKI, tmp_path: Path) -> None:
    with StandinServer(StandinEjbca(), pki.server_context(untrusted=True)) as other:
        with pytest.raises(UpstreamUnavailable, match="TLS handshake"):
            fast(pki, url_of(other, type_name), tmp_path, type_name).health()


@pytest.mark.parametrize(("status", "body", "error", "match"), [
    (403, {"error_code": 403, "error_message": "Not authorized"}, UpstreamError, "credentials"),
    (404, {"error_code": 404, "error_message": "RESTEASY003210: Could not find resource for full path"},
     UpstreamError, "does not offer"),
    (200, {"status": "DOWN", "version": "1.0"}, UpstreamUnavailable, "DOWN"),
    (503, {"error_code": 503, "error_message": "CA offline"}, UpstreamUnavailable, "HTTP 503"),
])
def test_rest_health_rows(pki: UpstreamPKI, upstream: ScriptedUpstream, tmp_path: Path,
                          caplog: pytest.LogCaptureFixture, status: int,
                          body: dict[str, Any], error: type[Exception], match: str) -> None:
    upstream.get(f"{REST}/v1/certificate/status", status=status, json=body)
    backend = make_backend("ejbca-rest", upstream_options(pki, upstream.base + REST, retries=0), tmp_path)
    with caplog.at_level(logging.INFO), pytest.raises(error, match=match):
        backend.health()
    if status in (403, 404):
        assert "backend ejbca" in caplog.text  # an operator-facing line


# -- unknown certificate: only EJBCA's own "not found" ------------------------------------------

def _status_url(cert: Any) -> str:
    return (f"{REST}/v1/certificate/{quote(bc_dn(cert.issuer.rfc4514_string()), safe='')}/"
            f"{cert.serial_number:X}/revocationstatus")


@pytest.mark.parametrize(("status", "body", "ctype"), [
    (404, b'{"error_code":404,"error_message":"RESTEASY003210: Could not find resource for full path"}',
     "application/json"),
    (404, b"<html><body>404 Not Found</body></html>", "text/html"),
])
def test_rest_404_that_is_not_ejbca_saying_unknown_is_an_error(pki: UpstreamPKI, upstream: ScriptedUpstream,
                                                                tmp_path: Path, status: int,
                                                                body: bytes, ctype: str) -> None:
    ca = StandinEjbca()
    cert = ca.chain[0]
    upstream.get(_status_url(cert), status=status, body=body, content_type=ctype)
    backend = make_backend("ejbca-rest", upstream_options(pki, upstream.base + REST, retries=0), tmp_path)
    with pytest.raises(UpstreamError, match="does not offer"):
        backend.revocation_status(cert, TARGET)


def test_known_and_unknown_against_the_stand_in(type_name: str, pki: UpstreamPKI, server: StandinServer,
                                                tmp_path: Path) -> None:
    from est_gateway.backends.base import EnrollRequest, Issued, Requester

    backend = fast(pki, url_of(server, type_name), tmp_path, type_name)
    csr = make_csr(p256_key(), cn=f"known-{type_name}")
    issued = backend.enroll(EnrollRequest(csr=csr, alias="est", target=TARGET, requester=Requester(),
                                          request_id="r"))
    assert isinstance(issued, Issued)
    status = backend.revocation_status(issued.certificate, TARGET)
    assert (status.known, status.revoked) == (True, False)
    # same issuer, a serial EJBCA has no record of: REST 404 / SOAP empty <return/>
    issued_elsewhere = backend.enroll(EnrollRequest(csr=make_csr(p256_key(), cn=f"gone-{type_name}"),
                                                    alias="est", target=TARGET, requester=Requester(),
                                                    request_id="r"))
    assert isinstance(issued_elsewhere, Issued)
    cert = issued_elsewhere.certificate
    del server.standin.issued[(server.standin.ca_dn, f"{cert.serial_number:X}")]
    assert backend.revocation_status(cert, TARGET).known is False
    # another CA entirely: REST 404 / SOAP CADoesntExistsException
    assert backend.revocation_status(StandinEjbca().ca_cert, TARGET).known is False
    server.standin.fault = "500"
    try:
        with pytest.raises(UpstreamUnavailable):  # a failure is never "unknown"
            backend.revocation_status(issued.certificate, TARGET)
    finally:
        server.standin.fault = None


# -- health proves authorization (neither /v1/certificate/status nor getEjbcaVersion does) -------

CA_RULE = f"/ca/{StandinEjbca().ca_id}"


@pytest.fixture
def standin(pki: UpstreamPKI) -> Any:
    with StandinServer(StandinEjbca(), pki.server_context()) as running:
        yield running


def _checked(type_name: str, pki: UpstreamPKI, server: StandinServer, tmp_path: Path,
             target: EjbcaTarget = TARGET) -> Any:
    backend = fast(pki, url_of(server, type_name), tmp_path, type_name)
    assert check_target(backend, target) == []
    return backend


@pytest.mark.parametrize(("rule", "shown"), [
    ("/administrator", "/administrator"),
    ("/ra_functionality/create_end_entity", "/ra_functionality/create_end_entity"),
    ("/ra_functionality/edit_end_entity", "/ra_functionality/edit_end_entity"),
    ("/ca_functionality/create_certificate", "/ca_functionality/create_certificate"),
    (CA_RULE, "/ca/<id of EST Sub CA>"),
    ("/endentityprofilesrules/1/create_end_entity", "/endentityprofilesrules/<id of EMPTY>/create_end_entity"),
    ("/endentityprofilesrules/1/edit_end_entity", "/endentityprofilesrules/1/edit_end_entity"),
])
def test_soap_health_names_each_missing_access_rule(pki: UpstreamPKI, standin: StandinServer, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture, rule: str,
                                                    shown: str) -> None:
    backend = _checked("ejbca-soap", pki, standin, tmp_path)
    backend.health()
    standin.standin.denied.add(rule)
    error = "refused the gateway's credentials" if rule == "/administrator" else f"lacks .*{re.escape(shown)}"
    with caplog.at_level(logging.ERROR), pytest.raises(UpstreamError, match=error):
        backend.health()
    assert "backend ejbca" in caplog.text  # the operator learns which right is missing


def test_soap_health_of_a_client_mode_alias_needs_no_end_entity_rights(pki: UpstreamPKI, standin: StandinServer,
                                                                      tmp_path: Path) -> None:
    client = ejbca_target(TARGET.ca, "ENDUSER", "EMPTY", mode="client")
    backend = _checked("ejbca-soap", pki, standin, tmp_path, client)
    standin.standin.denied |= {"/ra_functionality/create_end_entity", "/ra_functionality/edit_end_entity"}
    backend.health()
    standin.standin.denied.add("/ca_functionality/create_certificate")
    with pytest.raises(UpstreamError, match="create_certificate"):
        backend.health()


def test_rest_health_needs_an_administrator_role(pki: UpstreamPKI, standin: StandinServer, tmp_path: Path) -> None:
    backend = _checked("ejbca-rest", pki, standin, tmp_path)
    backend.health()
    standin.standin.denied.add("/administrator")
    with pytest.raises(UpstreamError, match="refused the gateway's credentials"):
        backend.health()


def test_rest_health_checks_the_ca_once_its_dn_is_known(pki: UpstreamPKI, standin: StandinServer,
                                                        tmp_path: Path) -> None:
    """CE 8.0 REST: the CA's DN comes from the learnt chain (or ca_subject_dn); before either,
    health can only prove the administrator role."""
    backend = _checked("ejbca-rest", pki, standin, tmp_path)
    standin.standin.denied.add(CA_RULE)
    backend.health()  # no DN known yet: the CA right cannot be asked about
    standin.standin.denied.clear()
    assert isinstance(backend.enroll(EnrollRequest(csr=make_csr(p256_key(), cn="health-ca"), alias="est",
                                                   target=TARGET, requester=Requester(), request_id="r")),
                      Issued)
    standin.standin.denied.add(CA_RULE)
    with pytest.raises(UpstreamError, match="refused the gateway's credentials"):
        backend.health()
    probes = [c["path"] for c in standin.standin.calls if c["path"].endswith("/0/revocationstatus")]
    assert quote(standin.standin.ca_dn, safe="") in probes[-1]  # EJBCA's notation and order


def test_soap_health_needs_the_revoke_right_only_with_revoke_superseded(pki: UpstreamPKI, standin: StandinServer,
                                                                      tmp_path: Path) -> None:
    standin.standin.denied.add("/ra_functionality/revoke_end_entity")
    plain = _checked("ejbca-soap", pki, standin, tmp_path)
    plain.health()
    revoking = make_backend("ejbca-soap", upstream_options(pki, url_of(standin, "ejbca-soap"), retries=0,
                                                           revoke_superseded=True), tmp_path)
    assert check_target(revoking, TARGET) == []
    with pytest.raises(UpstreamError, match="lacks /ra_functionality/revoke_end_entity"):
        revoking.health()
