"""Mutual-TLS HTTP calls to an upstream CA on a ``requests.Session``, with timeouts, no
redirects, retries of idempotent calls and the circuit breaker.

Every connection uses the ``SSLContext`` that :func:`~est_gateway.upstream.settings.parse_upstream`
prepared: the client identity and trust in exactly the ``ca_bundle`` the operator configured
(or none, with ``insecure = true``). The session reads no environment (``trust_env = False``:
no ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, no ``HTTPS_PROXY``, no ``.netrc``), and its
adapter ignores a call's ``verify=``/``cert=``, which ``requests`` would otherwise load into
that context (``verify=True`` means certifi's roots). It keeps no cookie, so nothing an
upstream sets for one client's request is replayed with another's. A process keeps one
session; the gateway's workers are forked, threaded processes, and a pooled connection must
never be shared across a fork, so sessions are keyed by process id.
"""

from __future__ import annotations

import http.cookiejar
import json as jsonlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

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
        """The body decoded with the charset the answer names (UTF-8 if none), never failing
        (``requests`` would guess a charset from the bytes instead)."""
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


class ContextAdapter(HTTPAdapter):
    """Connects with one prepared ``SSLContext`` (identity and trust) and nothing else:
    a call's ``verify=`` and ``cert=`` are ignored, since urllib3 would load the files they
    name into the shared context."""

    def __init__(self, context: ssl.SSLContext, pool_size: int = POOL_SIZE) -> None:
        self.context = context
        super().__init__(pool_connections=4, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["ssl_context"] = self.context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Set on the pool before each request: the context's own verification, no files."""
        if url.lower().startswith("https"):
            conn.cert_reqs = self.context.verify_mode
            conn.ca_certs = conn.ca_cert_dir = conn.cert_file = conn.key_file = None


def upstream_session(context: ssl.SSLContext, *, pool_size: int = POOL_SIZE) -> requests.Session:
    """A session that trusts and presents only what ``context`` holds, reads no environment,
    keeps no cookie and sends the gateway's User-Agent; callers pass ``allow_redirects=False``
    and a timeout on every call."""
    session = requests.Session()
    session.trust_env = False
    session.headers = requests.structures.CaseInsensitiveDict({"User-Agent": USER_AGENT, "Accept": "*/*"})
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = ContextAdapter(context, pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests wraps urllib3's errors, which wrap socket errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        yield current
        inner = getattr(current, "reason", None)
        if not isinstance(inner, BaseException) and current.args and isinstance(current.args[0], BaseException):
            inner = current.args[0]
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)


def timed_out(exc: BaseException) -> bool:
    """Whether a ``requests`` failure is a timeout (requests reports one while reading the
    body as a ``ConnectionError``)."""
    return isinstance(exc, requests.Timeout) or any(isinstance(e, TimeoutError) for e in _chain(exc))


def _cause(exc: BaseException) -> str:
    """The failure's type and that of the socket or protocol error underneath (for logs)."""
    root = list(_chain(exc))[-1]
    return exc.__class__.__name__ + (f" ({root.__class__.__name__})" if root is not exc else "")


def transport_error(exc: Exception, settings: UpstreamSettings) -> Failure | None:
    """A ``requests`` failure to talk to the upstream (not a CA answer) as the error tree's
    type; ``None`` for any other exception. Logs name the URL and the failure's type only
    (never a header, which may carry credentials)."""
    if not isinstance(exc, requests.RequestException):
        return None
    url = settings.url
    if isinstance(exc, requests.exceptions.SSLError):
        log.error("TLS with the upstream CA %s failed: %s (check ca_bundle, client_cert and the "
                  "upstream's TLS certificate)", url, exc.__class__.__name__)
        return Failure(UpstreamUnavailable("the TLS handshake with the upstream CA failed"), False)
    if isinstance(exc, requests.ConnectTimeout):
        log.warning("cannot connect to the upstream CA %s within %g s", url, settings.connect_timeout_s)
        return Failure(UpstreamTimeout(f"the upstream CA did not accept a connection within "
                                       f"{settings.connect_timeout_s:g} s"), False)
    if timed_out(exc):
        log.warning("the upstream CA %s did not answer within %g s", url, settings.read_timeout_s)
        return Failure(UpstreamTimeout(f"the upstream CA did not answer within {settings.read_timeout_s:g} s"),
                       False)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        log.warning("the upstream CA %s broke off or garbled its answer: %s", url, _cause(exc))
        return Failure(UpstreamError("the upstream CA sent a truncated or garbled answer"), False)
    if isinstance(exc, requests.ConnectionError):
        log.warning("cannot connect to the upstream CA %s: %s", url, _cause(exc))
        return Failure(UpstreamUnavailable("cannot connect to the upstream CA"), True)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return Failure(UpstreamError("the upstream CA's URL is not usable"), False)
    log.warning("request to the upstream CA %s failed: %s", url, _cause(exc))
    return Failure(UpstreamError("request to the upstream CA failed"), False)


class UpstreamClient:
    """Issues HTTP calls to one upstream; retries only what is safe to repeat."""

    def __init__(self, settings: UpstreamSettings,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sessions: dict[int, requests.Session] = {}
        #: every call goes to this scheme://host:port (credentials never go elsewhere)
        parts = urlsplit(settings.url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)

    def session(self) -> requests.Session:
        """This process's session (a fresh one after a fork): see :func:`upstream_session`."""
        pid = os.getpid()
        session = self._sessions.get(pid)
        if session is None:
            with self._lock:
                session = self._sessions.get(pid)
                if session is None:
                    session = self._sessions[pid] = upstream_session(self.settings.tls)
        return session

    def close(self) -> None:
        """Close this process's pooled connections (at shutdown); a later call opens new ones.
        Sessions inherited over a fork are the parent's: left alone."""
        with self._lock:
            session = self._sessions.pop(os.getpid(), None)
        if session is not None:
            session.close()

    def request(self, method: str, url: str, *, idempotent: bool, json: Any = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                auth: tuple[str, str] | None = None) -> UpstreamResponse:
        """One call (``json`` or ``data`` as body, ``auth`` as HTTP Basic) with the configured
        trust and timeouts; transport failures and redirects become ``ESTError``. ``url`` must
        be on the configured upstream's scheme://host:port (``ValueError`` otherwise)."""
        self.check_url(url)
        answer = self.call(lambda: self.send(method, url, json=json, data=data, headers=headers, auth=auth),
                           idempotent=idempotent, failure=self.failure)
        return UpstreamResponse(answer.status_code, answer.headers, answer.content, url)

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One exchange on this process's session, the body read, without retries or breaker
        (run it through :meth:`call`); a 3xx raises :func:`redirect_refused`. ``kwargs`` are
        those of ``requests.PreparedRequest.prepare`` (``data``, ``json``, ``headers``, ``auth``)."""
        self.check_url(url)
        session = self.session()
        # Prepared alone and sent on the session: Session.request would merge cookies, hooks,
        # settings and the environment on every call, none of which apply here
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers={**session.headers, **(kwargs.pop("headers", None) or {})},
                         **kwargs)
        response = session.send(prepared, timeout=self.settings.timeout, allow_redirects=False)
        if 300 <= response.status_code < 400:
            raise redirect_refused(self.settings, response.status_code, response.headers.get("Location"))
        return response

    def call(self, send: Callable[[], Answer], *, idempotent: bool,
             failure: Callable[[Exception], Failure | None]) -> Answer:
        """Run ``send`` under the breaker, again after 502/503/504 or a refused connection
        when ``idempotent``; ``failure`` tells which exceptions are transport failures (others
        propagate). For plugins whose upstream library drives the exchange itself (zeep)."""
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

    def failure(self, exc: Exception) -> Failure | None:
        """:func:`transport_error` for this upstream (the ``failure`` of :meth:`call`)."""
        return transport_error(exc, self.settings)

    def check_url(self, url: str) -> None:
        """``ValueError`` unless ``url`` is on the configured upstream's scheme://host:port."""
        rest = url[len(self._origin):] if url.startswith(self._origin) else None
        if rest is None or (rest and rest[0] not in "/?"):
            raise ValueError(f"{url} is not on the configured upstream {self._origin}")


def redirect_refused(settings: UpstreamSettings, status: int, location: str | None) -> UpstreamError:
    """A 3xx from the upstream, logged for the operator (where it pointed) and returned as
    the client's 502: a CA API that redirects is misconfigured, or not the CA, and following
    it would send the request, credentials included, somewhere the operator did not name."""
    log.error("the upstream CA %s answered HTTP %s (a redirect to %s): the gateway does not "
              "follow redirects; set url to where the CA's API is", settings.url, status, location or "nowhere")
    return UpstreamError(f"unexpected HTTP {status} from the upstream CA (a redirect: not followed)")
