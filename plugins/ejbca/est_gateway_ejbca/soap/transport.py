"""zeep's HTTP stack for EjbcaWS: the core's upstream session, the REST adapters' HTTP stack.

zeep needs a ``requests.Session``: it gets the backend client's own
(:meth:`~est_gateway.plugin.http.UpstreamClient.session`, one per process), so SOAP has the
same rules as REST: the gateway's identity and only the configured ``ca_bundle`` (no
``REQUESTS_CA_BUNDLE``, no proxy), timeouts, no redirect followed (a 3xx is a 502), and the
client's retries of idempotent operations and its breaker.
"""

from __future__ import annotations

from typing import Any

import requests
from zeep.transports import Transport

from est_gateway.plugin import UpstreamError
from est_gateway.plugin.http import UpstreamClient


class UpstreamTransport(Transport):
    """Sends SOAP POSTs through the client (retries of idempotent operations, breaker, no
    redirects) and loads a WSDL from the server the same way; no message logging
    (``editUser`` carries a password)."""

    def __init__(self, client: UpstreamClient, session: requests.Session) -> None:
        super().__init__(session=session, timeout=client.settings.read_timeout_s)  # type: ignore[no-untyped-call]
        self.upstream = client
        self.idempotent = False

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> Any:
        client = self.upstream
        return client.call(lambda: client.send("POST", address, data=message, headers=headers),
                           idempotent=self.idempotent, failure=client.failure)

    def _load_remote_data(self, url: str) -> bytes:
        """``wsdl = "server"``: the WSDL (and what it imports) from the configured upstream."""
        client = self.upstream
        response = client.call(lambda: client.send("GET", url), idempotent=True, failure=client.failure)
        if response.status_code != 200:
            raise UpstreamError(f"the upstream CA answered the WSDL request with HTTP {response.status_code}")
        return bytes(response.content)
