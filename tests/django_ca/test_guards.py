"""Guards of the django-ca backend that django-ca itself would hide: what the gateway asks
for (a lifetime within the CA's), what it accepts (a certificate its CA signed), and what
its options show (never the password). Against the real django-ca; the backend's one
call to it is wrapped to record or alter an answer."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.base import EnrollRequest, Issued, Requester
from est_gateway.errors import UpstreamError
from est_gateway_django_ca.backend import DjangoCaBackend, DjangoCaOptions
from est_gateway_django_ca.target import DjangoCaTarget
from tests.django_ca.helpers import make_backend
from tests.support.django_ca import DjangoCa
from tests.support.pki import make_csr, p256_key


class Recording(DjangoCaBackend):
    """Records the JSON of every sign request; re-signs issued certificates with another key
    of the CA's name when ``look_alike`` is set."""

    sent: list[Any]
    look_alike = False

    def _call(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith("/sign/"):
            self.sent.append(kwargs.get("json"))
        answer = super()._call(method, path, *args, **kwargs)
        if self.look_alike and method == "GET" and "/certs/" in path and isinstance(answer, dict):
            genuine = x509.load_pem_x509_certificate(answer["certificate"]["pem"].encode())
            answer["certificate"]["pem"] = _resigned(genuine).public_bytes(Encoding.PEM).decode()
        return answer


def _resigned(cert: x509.Certificate) -> x509.Certificate:
    """The same certificate, field for field, signed by a key that is not the CA's."""
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(cert.serial_number)  # type: ignore[arg-type]
               .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(p256_key(), hashes.SHA256())


def _recording(django_ca: DjangoCa, folder: Path, target: DjangoCaTarget) -> Recording:
    backend = make_backend(django_ca, folder, target=target)
    backend.__class__ = Recording
    assert isinstance(backend, Recording)
    backend.sent = []
    return backend


def _request(target: DjangoCaTarget, cn: str) -> EnrollRequest[DjangoCaTarget]:
    return EnrollRequest(csr=make_csr(p256_key(), cn=cn), alias="est", target=target,
                         requester=Requester(username="estuser"), request_id=uuid.uuid4().hex)


def test_the_gateway_never_asks_for_a_lifetime_past_the_issuing_ca(django_ca: DjangoCa, tmp_path: Path) -> None:
    """django-ca's answer hides a missing clamp here (its certificate ends with the CA
    anyway): the sign request itself must ask for no more than the CA's own validity."""
    target = DjangoCaTarget(ca="Test Issuing", profile="client", validity_days=3650)
    backend = _recording(django_ca, tmp_path, target)
    answer = backend.enroll(_request(target, "dev-guard-long"))
    assert isinstance(answer, Issued)
    issuing = answer.chain[0]
    [body] = backend.sent
    assert dt.datetime.fromisoformat(body["not_after"]) == issuing.not_valid_after_utc


def test_a_certificate_signed_by_another_key_of_the_ca_name_is_refused(django_ca: DjangoCa,
                                                                        tmp_path: Path) -> None:
    target = DjangoCaTarget(ca="Test Issuing", profile="client")
    backend = _recording(django_ca, tmp_path, target)
    backend.look_alike = True
    with pytest.raises(UpstreamError, match="an issuer other than the configured CA"):
        backend.enroll(_request(target, "dev-guard-lookalike"))


def test_the_options_never_show_the_password() -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    options = DjangoCaOptions(upstream=None, username="est-gateway", password=secret)
    assert secret not in repr(options) and secret not in str(options)
    assert "est-gateway" in repr(options)
