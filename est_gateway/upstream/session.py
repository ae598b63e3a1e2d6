"""Mutual-TLS HTTP calls to an upstream CA through urllib3's pools, with timeouts and retries
of idempotent calls.

Every connection uses the ``SSLContext`` that :func:`~est_gateway.upstream.settings.parse_upstream`
prepared: the client identity and trust in exactly the ``ca_bundle`` the operator configured
(or none, with ``insecure = true``). urllib3 reads no environment variable: neither a
``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` nor an ``HTTPS_PROXY`` changes where the gateway
connects or what it trusts. A process keeps one thread-safe pool manager; the gateway's
workers are forked, threaded processes, and a pooled connection must never be shared across
a fork, so the pools are keyed by process id.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from est_gateway.errors import ESTError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from est_gateway.upstream.breaker import CircuitBreaker
from est_gateway.upstream.settings import UpstreamSettings

log = logging.getLogger(__name__)

#: statuses worth a retry of an idempotent call (the CA or a proxy in front is restarting)
RETRY_STATUSES = frozenset({502, 503, 504})
#: pooled keep-alive connections per upstream host and process (one per busy worker thread)
POOL_SIZE = 32
USER_AGENT = "est-gateway"


class InvalidJSON(ValueError):
    """The upstream's body is not JSON (or nests deeper than the parser goes)."""


@dataclass(frozen=True)
class UpstreamResponse:
    """One complete upstream answer, read before it is returned (the connection is back in the pool).

    ``headers`` look names up case-insensitively. A 3xx never reaches a caller: the client
    does not follow redirects and refuses them as an :class:`~est_gateway.errors.UpstreamError`.
    """

    status_code: int
    headers: Mapping[str, str] = field(repr=False)
    content: bytes = field(repr=False)
    url: str = ""

    @property
    def text(self) -> str:
        """The body decoded with the charset the answer names (UTF-8 if none), never failing."""
        charset = "utf-8"
        for param in self.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:   # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; :class:`InvalidJSON` (a ``ValueError``) if it is not."""
        try:
            return jsonlib.loads(self.content)
        except (ValueError, RecursionError) as exc:
            raise InvalidJSON(f"the body is not JSON: {type(exc).__name__}") from None


class Failure(NamedTuple):
    """How a failed exchange counts: the error to raise, and whether repeating an idempotent
    call may help (a refused or dropped connection; never TLS or a timeout)."""

    error: ESTError
    retriable: bool


class _Answer(Protocol):
    @property
    def status_code(self) -> int: ...


Answer = TypeVar("Answer", bound=_Answer)


def transport_error(exc: Exception, settings: UpstreamSettings) -> Failure | None:
    """A failure to talk to the upstream (not a CA answer) as the error tree's type;
    ``None`` for an exception that is not urllib3's. Logs name the URL and the failure's
    type only (never a header, which may carry credentials)."""
    url = settings.url
    if isinstance(exc, SSLError):
        log.error("TLS with the upstream CA %s failed: %s (check ca_bundle, client_cert and the "
                  "upstream's TLS certificate)", url, exc.__class__.__name__)
        return Failure(UpstreamUnavailable("the TLS handshake with the upstream CA failed"), False)
    if isinstance(exc, ReadTimeoutError):
        return Failure(UpstreamTimeout(f"the upstream CA did not answer within {settings.read_timeout_s:g} s"),
                       False)
    if isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError):
        log.warning("cannot connect to the upstream CA %s within %g s", url, settings.connect_timeout_s)
        return Failure(UpstreamTimeout(f"the upstream CA did not accept a connection within "
                                       f"{settings.connect_timeout_s:g} s"), False)
    if isinstance(exc, (NewConnectionError, ProtocolError)):
        log.warning("cannot connect to the upstream CA %s: %s", url, _cause(exc))
        return Failure(UpstreamUnavailable("cannot connect to the upstream CA"), True)
    if isinstance(exc, LocationParseError):
        return Failure(UpstreamError("the upstream CA's URL is not usable"), False)
    if isinstance(exc, HTTPError):
        log.warning("request to the upstream CA %s failed: %s", url, _cause(exc))
        return Failure(UpstreamError("request to the upstream CA failed"), False)
    return None


def body_error(exc: Exception, settings: UpstreamSettings) -> Failure | None:
    """A failure while reading an answer whose status line and headers arrived."""
    if isinstance(exc, ReadTimeoutError):
        return transport_error(exc, settings)
    if isinstance(exc, (ProtocolError, DecodeError, OSError)):
        log.warning("the upstream CA %s broke off or garbled its answer: %s", settings.url, _cause(exc))
        return Failure(UpstreamError("the upstream CA sent a truncated or garbled answer"), False)
    return transport_error(exc, settings)


def _cause(exc: BaseException) -> str:
    """The failure's type and that of what it wraps (urllib3 wraps socket errors)."""
    inner = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], BaseException) else exc.__context__
    return exc.__class__.__name__ + (f" ({inner.__class__.__name__})" if inner is not None else "")


def encode_body(*, json: Any = None, data: bytes | None = None, headers: Mapping[str, str] | None = None,
                auth: tuple[str, str] | None = None) -> tuple[bytes | None, dict[str, str]]:
    """The body and headers of a call: ``json`` as UTF-8 JSON (``application/json`` unless
    ``headers`` name another type), ``data`` as is, ``auth`` as HTTP Basic."""
    sent = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    sent.update(headers or {})
    body = data
    if json is not None:
        body = jsonlib.dumps(json, allow_nan=False).encode()
        if not any(name.lower() == "content-type" for name in sent):
            sent["Content-Type"] = "application/json"
    if auth is not None:
        sent.update(urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
    return body, sent


class UpstreamClient:
    """Issues HTTP calls to one upstream; retries only what is safe to repeat."""

    def __init__(self, settings: UpstreamSettings,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pools: dict[int, urllib3.HTTPSConnectionPool] = {}
        parts = urlsplit(settings.url)
        #: every call goes to this scheme://host:port (credentials never go elsewhere)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host, self._port = parts.hostname or "", parts.port or 443
        self._timeout = urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)

    def pool(self) -> urllib3.HTTPSConnectionPool:
        """This process's pool of connections to the upstream (a fresh one after a fork)."""
        pid = os.getpid()
        pool = self._pools.get(pid)
        if pool is None:
            with self._lock:
                pool = self._pools.get(pid)
                if pool is None:
                    pool = urllib3.HTTPSConnectionPool(self._host, self._port, maxsize=POOL_SIZE,
                                                       ssl_context=self.settings.tls, retries=False,
                                                       timeout=self._timeout)
                    self._pools[pid] = pool
        return pool

    def close(self) -> None:
        """Close this process's pooled connections (at shutdown); a later call opens new ones.
        Pools inherited over a fork are the parent's: left alone."""
        with self._lock:
            pool = self._pools.pop(os.getpid(), None)
        if pool is not None:
            pool.close()

    def request(self, method: str, url: str, *, idempotent: bool, json: Any = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                auth: tuple[str, str] | None = None) -> UpstreamResponse:
        """One call (``json`` or ``data`` as body, ``auth`` as HTTP Basic) with the configured
        trust and timeouts; transport failures and redirects become ``ESTError``. ``url`` must
        be on the configured upstream's scheme://host:port (``ValueError`` otherwise)."""
        target = self._target(url)
        body, sent = encode_body(json=json, data=data, headers=headers, auth=auth)
        return self.call(lambda: self._exchange(method, url, target, body, sent), idempotent=idempotent,
                         failure=self._failure)

    def call(self, send: Callable[[], Answer], *, idempotent: bool,
             failure: Callable[[Exception], Failure | None]) -> Answer:
        """Run ``send`` under the breaker, again after 502/503/504 or a refused connection
        when ``idempotent``; ``failure`` tells which exceptions are transport failures (others
        propagate). For plugins whose upstream library brings its own HTTP stack (zeep)."""
        self.breaker.before_call()
        attempts = 1 + (self.settings.retries if idempotent else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = send()
            except Exception as exc:
                known = failure(exc)
                if known is None:
                    raise
                if last or not known.retriable:
                    if isinstance(known.error, (UpstreamUnavailable, UpstreamTimeout)):
                        self.breaker.unreachable()
                    else:
                        self.breaker.reached()   # it answered, if garbled
                    raise known.error from None
            else:
                self.breaker.reached()
                if last or response.status_code not in RETRY_STATUSES:
                    return response
            self._sleep(self.settings.retry_backoff_s * (2 ** attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, exc: Exception) -> Failure | None:
        if isinstance(exc, _BodyFailure):
            return body_error(exc.cause, self.settings)
        return transport_error(exc, self.settings)

    def _target(self, url: str) -> str:
        """The path and query of ``url``, which must be on the configured upstream."""
        rest = url[len(self._origin):] if url.startswith(self._origin) else None
        if rest is None or (rest and rest[0] not in "/?"):
            raise ValueError(f"{url} is not on the configured upstream {self._origin}")
        return rest or "/"

    def _exchange(self, method: str, url: str, target: str, body: bytes | None,
                  headers: dict[str, str]) -> UpstreamResponse:
        raw = self.pool().urlopen(method, target, body=body, headers=headers, redirect=False,
                                  assert_same_host=False, preload_content=False)
        try:
            content = raw.read()
        except Exception as exc:
            raise _BodyFailure(exc) from exc
        finally:
            raw.release_conn()
        if 300 <= raw.status < 400:
            raise redirect_refused(self.settings, raw.status, raw.headers.get("Location"))
        return UpstreamResponse(raw.status, raw.headers, content, url)


def redirect_refused(settings: UpstreamSettings, status: int, location: str | None) -> UpstreamError:
    """A 3xx from the upstream, logged for the operator (where it pointed) and returned as
    the client's 502: a CA API that redirects is misconfigured, or not the CA, and following
    it would send the request, credentials included, somewhere the operator did not name."""
    log.error("the upstream CA %s answered HTTP %s (a redirect to %s): the gateway does not "
              "follow redirects; set url to where the CA's API is", settings.url, status, location or "nowhere")
    return UpstreamError(f"unexpected HTTP {status} from the upstream CA (a redirect: not followed)")


class _BodyFailure(Exception):
    """The status line and headers arrived, the body did not (the call may have had its effect)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause
