"""Mutual-TLS HTTP sessions to an upstream CA, with timeouts and retries of idempotent calls.

``requests`` lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's own
``verify`` unless ``verify=`` is passed per request (psf/requests#3829), so sessions are
built with ``trust_env = False`` *and* every request passes ``verify=`` explicitly.
Sessions are per thread and per process: the gateway's workers are forked, threaded
processes, and a pooled connection must never be shared across a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from est_gateway.errors import ESTError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway.upstream.breaker import CircuitBreaker
from est_gateway.upstream.settings import UpstreamSettings

log = logging.getLogger(__name__)

#: statuses worth a retry of an idempotent call (the CA or a proxy in front is restarting)
RETRY_STATUSES = frozenset({502, 503, 504})


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


def transport_error(exc: requests.RequestException, settings: UpstreamSettings) -> ESTError:
    """Translate a failure to talk to the upstream (not a CA answer) into the error tree."""
    url = settings.url
    if isinstance(exc, requests.exceptions.SSLError):
        log.error("TLS with the upstream CA %s failed: %s (check ca_bundle, client_cert and the "
                  "upstream's TLS certificate)", url, exc.__class__.__name__)
        return UpstreamUnavailable("the TLS handshake with the upstream CA failed")
    timed_out = isinstance(exc, requests.Timeout) or (
        exc.args and isinstance(getattr(exc.args[0], "reason", exc.args[0]), ReadTimeoutError))
    if timed_out:
        return UpstreamTimeout(f"the upstream CA did not answer within "
                               f"{settings.read_timeout_s:g} s")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return UpstreamError("the upstream CA sent a truncated or garbled answer")
    if isinstance(exc, requests.ConnectionError):
        log.warning("cannot connect to the upstream CA %s: %s", url, exc.__class__.__name__)
        return UpstreamUnavailable("cannot connect to the upstream CA")
    return UpstreamError("request to the upstream CA failed")


class UpstreamClient:
    """Issues HTTP calls to one upstream; retries only what is safe to repeat."""

    def __init__(self, settings: UpstreamSettings,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._local = threading.local()
        self._lock = threading.Lock()
        #: every thread's session with its process id, so that close() reaches them all
        self._opened: list[tuple[int, requests.Session]] = []
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)

    def session(self) -> requests.Session:
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
        """Close this process's sessions and their pooled connections (at shutdown); a
        later call opens a new session. Those inherited over a fork are the parent's."""
        with self._lock:
            opened, self._opened = self._opened, []
        self._local = threading.local()
        for pid, session in opened:
            if pid == os.getpid():
                session.close()
            else:
                self._opened.append((pid, session))

    def request(self, method: str, url: str, *, idempotent: bool, **kwargs: Any) -> requests.Response:
        """One call with explicit ``verify``/``timeout``; transport failures become ``ESTError``."""
        self.breaker.before_call()
        attempts = 1 + (self.settings.retries if idempotent else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.session().request(method, url, verify=self.settings.verify,
                                                  timeout=self.settings.timeout, **kwargs)
            except requests.RequestException as exc:
                retriable = (isinstance(exc, requests.ConnectionError)
                             and not isinstance(exc, (requests.exceptions.SSLError, requests.Timeout)))
                error = transport_error(exc, self.settings)
                if last or not retriable or isinstance(error, UpstreamTimeout):
                    if isinstance(error, (UpstreamUnavailable, UpstreamTimeout)):
                        self.breaker.unreachable()
                    else:
                        self.breaker.reached()   # it answered, if garbled
                    raise error from None
            else:
                self.breaker.reached()
                if last or response.status_code not in RETRY_STATUSES:
                    return response
            self._sleep(self.settings.retry_backoff_s * (2 ** attempt))
        raise AssertionError("unreachable")  # pragma: no cover
