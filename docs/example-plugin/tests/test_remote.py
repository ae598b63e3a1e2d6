"""The remote example backend, its CA answered by ``responses`` (est_gateway.testing.http):
the public contract suite against a CA held in memory, and a table of the CA's other answers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.errors import ESTError
from est_gateway.testing import BackendContract, new_csr
from est_gateway.testing.http import URL, ThrowawayCA, fault, mocked_backend, upstream_credentials
from est_gateway_example.remote import RemoteCATarget


class MemoryCA:
    """The example's CA API (est_gateway_example.remote), answered from memory."""

    def __init__(self, upstream: responses.RequestsMock) -> None:
        self.ca = ThrowawayCA.create("Example Remote CA")
        self.issued: set[int] = set()
        self.revoked: set[int] = set()
        upstream.add_callback(responses.POST, URL + "/sign", callback=self.sign)
        upstream.get(URL + "/chain", json={"chain": [self.ca.pem()]})
        upstream.add_callback(responses.GET, re.compile(re.escape(URL) + "/certificates/[0-9a-f]+"),
                              callback=self.status)

    def sign(self, request: Any) -> tuple[int, dict[str, str], str]:
        csr = x509.load_pem_x509_csr(json.loads(request.body)["csr"].encode())
        cert = self.ca.issue(csr.public_key(), csr.subject)
        self.issued.add(cert.serial_number)
        return 200, {}, json.dumps({"certificate": cert.public_bytes(Encoding.PEM).decode()})

    def status(self, request: Any) -> tuple[int, dict[str, str], str]:
        serial = int(request.url.rsplit("/", 1)[1], 16)
        if serial not in self.issued:
            return 404, {}, json.dumps({"error": "unknown serial"})
        return 200, {}, json.dumps({"revoked": serial in self.revoked})


class TestRemoteCAContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Any) -> Any:
        with mocked_backend("example-remote-ca", upstream_credentials(tmp_path), base_dir=tmp_path) as made:
            backend, upstream = made
            self.memory = MemoryCA(upstream)
            yield backend

    @pytest.fixture
    def alias_settings(self) -> dict[str, object]:
        return {"profile": "client"}

    def revoke(self, backend: Any, certificate: x509.Certificate) -> None:
        self.memory.revoked.add(certificate.serial_number)


@pytest.mark.parametrize("answer, status, reason", [
    ({"status": 400, "json": {"error": "subject not allowed"}}, 400, "the CA refused the request: subject not allowed"),
    ({"status": 403, "json": {"error": "unknown client"}}, 502, "refused the gateway's credentials"),
    ({"status": 200, "body": "<html>maintenance</html>"}, 502, "not its JSON"),
    ({"status": 503, "body": ""}, 503, "unavailable (HTTP 503)"),
    ({"status": 302, "headers": {"Location": "https://elsewhere.test/"}}, 502, "redirect: not followed"),
    ({"body": fault("refused")}, 503, "cannot connect"),
    ({"body": fault("read-timeout")}, 504, "did not answer"),
], ids=["refused", "credentials", "garbage", "unavailable", "redirect", "down", "slow"])
def test_what_the_client_gets_for_each_sign_answer(tmp_path: Any, answer: dict[str, Any], status: int,
                                                   reason: str) -> None:
    with mocked_backend("example-remote-ca", upstream_credentials(tmp_path), base_dir=tmp_path) as made:
        backend, upstream = made
        upstream.post(URL + "/sign", **answer)
        with pytest.raises(ESTError) as caught:
            BackendContract.enroll(backend, RemoteCATarget(), new_csr("device-1"))
        assert len(upstream.calls) == 1      # a sign request is never repeated
    assert caught.value.status == status and reason in caught.value.detail
