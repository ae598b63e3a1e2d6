"""zeep's HTTP stack for EjbcaWS: the core's upstream session, the REST adapters' HTTP stack.

zeep's SOAP POSTs (and a WSDL fetched from the server) go through the backend's
:class:`~est_gateway.plugin.http.UpstreamClient` and its session (one per process), so SOAP
has the same rules as REST: the gateway's identity and only the configured ``ca_bundle`` (no
``REQUESTS_CA_BUNDLE``, no proxy), timeouts, no redirect followed (a 3xx is a 502), and the
client's retries of idempotent operations and its breaker.
"""

from __future__ import annotations

from typing import Any

from zeep.transports import Transport

from est_gateway.plugin import UpstreamError
from est_gateway.plugin.http import UpstreamClient, upstream_session


class UpstreamTransport(Transport):
    """Sends SOAP POSTs through the client (retries of idempotent operations, breaker, no
    redirects) and loads a WSDL from the server the same way; no message logging
    (``editUser`` carries a password)."""

    def __init__(self, client: UpstreamClient) -> None:
        # zeep mounts an adapter on the session it is given and sets its User-Agent: it gets
        # one of its own, of the same kind, since every call goes through the client's (shared
        # by the process's threads, whose requests a mount would race)
        super().__init__(session=upstream_session(client.settings.tls, pool_size=1),  # type: ignore[no-untyped-call]
                         timeout=client.settings.read_timeout_s)
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
