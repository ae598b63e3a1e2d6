"""zeep's HTTP stack for EjbcaWS: ``requests`` sessions presenting the gateway's identity.

zeep needs a ``requests.Session``. ``requests`` lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``
replace a session's own ``verify`` unless ``verify=`` is passed per request
(psf/requests#3829), so sessions are built with ``trust_env = False`` *and* every POST
passes ``verify=`` explicitly. Sessions are per thread and per process: the gateway's
workers are forked, threaded processes, and a pooled connection must never be shared
across a fork. Retries and the circuit breaker are the core's (:meth:`UpstreamClient.call`).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from zeep.transports import Transport

from est_gateway.plugin import UpstreamError, UpstreamSettings, UpstreamTimeout, UpstreamUnavailable
from est_gateway.plugin.http import Failure, UpstreamClient, redirect_refused

log = logging.getLogger(__name__)


class _IdentityAdapter(HTTPAdapter):
    """Uses the prepared ``SSLContext`` (client identity, trust) for every pooled connection."""

    def __init__(self, context: Any) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


def new_session(settings: UpstreamSettings) -> requests.Session:
    """A session that ignores proxy/CA environment variables and presents the client identity."""
    session = requests.Session()
    session.trust_env = False
    session.verify = settings.verify
    session.mount("https://", _IdentityAdapter(settings.tls))
    return session


def requests_failure(exc: Exception, settings: UpstreamSettings) -> Failure | None:
    """A ``requests`` failure to talk to the upstream (not a CA answer) as the error tree's
    type, and whether an idempotent call may be repeated; ``None`` for other exceptions."""
    if not isinstance(exc, requests.RequestException):
        return None
    url = settings.url
    if isinstance(exc, requests.exceptions.SSLError):
        log.error("TLS with the upstream CA %s failed: %s (check ca_bundle, client_cert and the "
                  "upstream's TLS certificate)", url, exc.__class__.__name__)
        return Failure(UpstreamUnavailable("the TLS handshake with the upstream CA failed"), False)
    timed_out = isinstance(exc, requests.Timeout) or (
        exc.args and isinstance(getattr(exc.args[0], "reason", exc.args[0]), ReadTimeoutError))
    if timed_out:
        return Failure(UpstreamTimeout(f"the upstream CA did not answer within {settings.read_timeout_s:g} s"),
                       False)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return Failure(UpstreamError("the upstream CA sent a truncated or garbled answer"), False)
    if isinstance(exc, requests.ConnectionError):
        log.warning("cannot connect to the upstream CA %s: %s", url, exc.__class__.__name__)
        return Failure(UpstreamUnavailable("cannot connect to the upstream CA"), True)
    return Failure(UpstreamError("request to the upstream CA failed"), False)


class Sessions:
    """This thread's session in this process; :meth:`close` ends this process's sessions."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._lock = threading.Lock()
        #: every thread's session with its process id, so that close() reaches them all
        self._opened: list[tuple[int, requests.Session]] = []

    def get(self) -> requests.Session:
        """This thread's session (a fresh one after a fork)."""
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            self._local.session = new_session(self.settings)
            self._local.pid = pid
            with self._lock:
                self._opened.append((pid, self._local.session))
        session: requests.Session = self._local.session
        return session

    def close(self) -> None:
        """Close this process's sessions (at shutdown); those inherited over a fork are the parent's."""
        with self._lock:
            opened, self._opened = self._opened, []
        self._local = threading.local()
        for pid, session in opened:
            if pid == os.getpid():
                session.close()
            else:
                self._opened.append((pid, session))


class UpstreamTransport(Transport):
    """Sends SOAP POSTs on this thread's session with explicit verify/timeouts, through the
    client's retries of idempotent operations and its breaker; no message logging
    (``editUser`` carries a password)."""

    def __init__(self, client: UpstreamClient, session: requests.Session) -> None:
        super().__init__(session=session, timeout=client.settings.read_timeout_s)  # type: ignore[no-untyped-call]
        self.upstream = client
        self.idempotent = False

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> Any:
        settings = self.upstream.settings

        def send() -> requests.Response:
            # A redirect is refused, not followed (requests would turn a 302'd POST into a
            # GET elsewhere, or repeat editUser, password included, to wherever it points).
            response = self.session.post(address, data=message, headers=headers, verify=settings.verify,
                                         timeout=settings.timeout, allow_redirects=False)
            if 300 <= response.status_code < 400:
                raise redirect_refused(settings, response.status_code, response.headers.get("Location"))
            return response

        return self.upstream.call(send, idempotent=self.idempotent,
                                  failure=lambda exc: requests_failure(exc, settings))
