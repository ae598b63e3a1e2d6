"""``revoke_superseded``: after a renewal the EJBCA adapters revoke the renewed certificate
with reason SUPERSEDED (REST ``PUT .../revoke?reason=SUPERSEDED``, EjbcaWS ``revokeCert``
with reason 4), through the stand-in EJBCA over mutual TLS; off by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from est_gateway.backends.base import EnrollRequest, Issued, ReenrollRequest, Requester
from est_gateway.errors import UpstreamError
from tests.support.ejbca_standin import (
    REVOKE_END_ENTITY,
    TARGET,
    StandinServer,
    UpstreamPKI,
    make_backend,
    upstream_options,
)
from tests.support.pki import CA, make_csr, p256_key

ADAPTERS = ["ejbca-rest", "ejbca-soap"]


def backend_for(type_name: str, server: StandinServer, pki: UpstreamPKI, tmp_path: Path, **options: Any) -> Any:
    url = server.rest_url if type_name == "ejbca-rest" else server.ws_url
    return make_backend(type_name, upstream_options(pki, url, **options), tmp_path)


def enrolled_and_renewed(backend: Any, cn: str) -> tuple[x509.Certificate, x509.Certificate]:
    csr = make_csr(p256_key(), cn=cn)
    first = backend.enroll(EnrollRequest(csr=csr, alias="est", target=TARGET, requester=Requester(),
                                         request_id="r1"))
    assert isinstance(first, Issued)
    renewed = backend.reenroll(ReenrollRequest(csr=make_csr(p256_key(), cn=cn), alias="est", target=TARGET,
                                               requester=Requester(), request_id="r2",
                                               current=first.certificate))
    assert isinstance(renewed, Issued)
    return first.certificate, renewed.certificate


def revocation_calls(server: StandinServer) -> list[dict[str, Any]]:
    return [c for c in server.standin.calls
            if c["method"] == "PUT" or b"revokeCert" in c["body"]]


@pytest.mark.parametrize("type_name", ADAPTERS)
def test_the_renewed_certificate_is_revoked_as_superseded(type_name: str, server: StandinServer,
                                                          pki: UpstreamPKI, tmp_path: Path) -> None:
    backend = backend_for(type_name, server, pki, tmp_path, revoke_superseded=True)
    first, second = enrolled_and_renewed(backend, f"superseded-{type_name}")
    backend.supersede(first, TARGET)
    assert server.standin.lookup(first.issuer.rfc4514_string(), f"{first.serial_number:X}").revoked_reason == 4
    status = backend.revocation_status(first, TARGET)
    assert (status.known, status.revoked, status.reason) == (True, True, "SUPERSEDED")
    assert not backend.revocation_status(second, TARGET).revoked
    # a repeat (e.g. after a lost answer) finds it revoked already: EJBCA's 409 /
    # AlreadyRevokedException means done
    before = len(revocation_calls(server))
    backend.supersede(first, TARGET)
    assert len(revocation_calls(server)) == before + 1
    backend.close()


@pytest.mark.parametrize("type_name", ADAPTERS)
def test_off_by_default_nothing_is_revoked(type_name: str, server: StandinServer,
                                           pki: UpstreamPKI, tmp_path: Path) -> None:
    backend = backend_for(type_name, server, pki, tmp_path)
    first, _ = enrolled_and_renewed(backend, f"kept-{type_name}")
    before = len(revocation_calls(server))
    backend.supersede(first, TARGET)
    assert len(revocation_calls(server)) == before
    assert not backend.revocation_status(first, TARGET).revoked
    backend.close()


@pytest.mark.parametrize("type_name", ADAPTERS)
def test_refusals_are_errors_the_core_logs(type_name: str, server: StandinServer,
                                           pki: UpstreamPKI, tmp_path: Path) -> None:
    """A certificate EJBCA does not know, or a role without the revoke right, is an
    ``UpstreamError`` (the core logs it and still hands out the renewal)."""
    backend = backend_for(type_name, server, pki, tmp_path, revoke_superseded=True)
    stranger = CA.create("Stranger")
    foreign = stranger.issue(p256_key(), cn="x")
    # named like a certificate of EJBCA's CA, with a serial EJBCA never issued
    foreign_like = x509.CertificateBuilder(
        issuer_name=server.standin.ca_cert.subject, subject_name=foreign.subject,
        public_key=foreign.public_key(), serial_number=foreign.serial_number,
        not_valid_before=foreign.not_valid_before_utc, not_valid_after=foreign.not_valid_after_utc,
    ).sign(stranger.key, hashes.SHA256())
    with pytest.raises(UpstreamError, match="does not know the renewed certificate"):
        backend.supersede(foreign_like, TARGET)
    first, _ = enrolled_and_renewed(backend, f"denied-{type_name}")
    server.standin.denied.add(REVOKE_END_ENTITY)
    try:
        with pytest.raises(UpstreamError, match="refused the gateway's credentials"):
            backend.supersede(first, TARGET)
    finally:
        server.standin.denied.discard(REVOKE_END_ENTITY)
    assert not backend.revocation_status(first, TARGET).revoked
    backend.close()

