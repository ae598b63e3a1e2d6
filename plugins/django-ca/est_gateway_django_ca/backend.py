"""django-ca adapter (``type = "django-ca"``): django-ca 3.2's REST API (``CA_ENABLE_REST_API``).

Calls (``django_ca/api/endpoints.py``), each authenticated with HTTP Basic as one Django
user that holds exactly the permissions named here:

- ``GET /ca/`` (``view_certificateauthority``): the CAs, to resolve an alias's CA by name
  or serial and to build its chain (issuing CA first, root last) for ``cacerts``;
- ``GET /profiles/{name}/`` (``sign_certificate``): the profile's extensions and lifetime;
- ``POST /ca/{serial}/sign/`` (``sign_certificate``): answers an *order* (``pending``);
  ``GET /ca/{serial}/orders/{slug}/`` is polled for a bounded time (``order_wait_s``);
  an order still pending becomes 202 + Retry-After, and the client's repeat of the same
  request (same ``retry_key``) polls the same order instead of signing again;
- ``GET /ca/{serial}/certs/{serial}/`` (``view_certificate``): the certificate and its
  revocation status, unless ``[backends.<name>.revocation]`` is configured: then django-ca's
  OCSP responder (or CRL) is asked through the generic checker (``est_gateway.plugin.http``);
- ``POST /ca/{serial}/certs/{serial}/revoke/`` (``revoke_certificate``), only with
  ``revoke_superseded``: the renewed certificate, with reason ``superseded``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.plugin import (
    BadRequest,
    CABackend,
    EnrollRequest,
    ESTError,
    ExpiringCache,
    Issued,
    Pending,
    ReenrollRequest,
    RevocationStatus,
    Section,
    UpstreamError,
    UpstreamSettings,
    clip,
    issued_by,
    parse_upstream,
    requested_sans,
)
from est_gateway.plugin.http import RevocationChecker, RevocationSettings, UpstreamClient, to_status
from est_gateway_django_ca.extensions import Profile, check_issued, request_extensions, subject_json
from est_gateway_django_ca.faults import Call, interpret
from est_gateway_django_ca.target import DjangoCaTarget, parse_target

log = logging.getLogger(__name__)

#: how long an order is remembered for the client's repeat after a 202
ORDER_MEMORY_S = 3600.0


@dataclass(frozen=True)
class DjangoCaOptions:
    """``[backends.<name>]`` of a django-ca backend."""

    upstream: UpstreamSettings | None
    username: str
    password: str = field(repr=False)
    #: how long one EST request polls a pending order before answering 202
    order_wait_s: float = 10.0
    pending_retry_after_s: int = 30
    cacerts_cache_s: float = 300.0
    #: ``[backends.<name>.revocation]``: OCSP/CRL instead of the REST API for revocation
    revocation: RevocationSettings | None = None
    #: after a renewal, revoke the renewed certificate with reason superseded
    revoke_superseded: bool = False


@dataclass(frozen=True)
class CertificateAuthority:
    """One CA as django-ca lists it, with the chain above it (itself first)."""

    serial: str
    name: str
    chain: tuple[x509.Certificate, ...]


def _missing_ca(ca: str) -> Callable[[str], ESTError]:
    return lambda reason: UpstreamError(f'django-ca does not offer CA "{ca}" through its API: {reason}')


class DjangoCaBackend(CABackend[DjangoCaTarget]):
    """Issues through django-ca's REST sign endpoint and reads revocation from its API."""

    def __init__(self, name: str, options: DjangoCaOptions, base_dir: Path, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name)
        self.options = options
        #: the targets of the aliases that use this backend (what health checks)
        self.targets: set[DjangoCaTarget] = set()
        self.client = UpstreamClient(options.upstream) if options.upstream is not None else None
        self.checker = RevocationChecker(options.revocation) if options.revocation is not None else None
        self._sleep = sleep
        self._clock = clock
        self._cas: ExpiringCache[dict[str, CertificateAuthority]] = ExpiringCache(options.cacerts_cache_s, clock)
        self._profiles: ExpiringCache[Profile] = ExpiringCache(options.cacerts_cache_s, clock)
        self._orders_lock = threading.Lock()
        self._orders: dict[str, tuple[float, str]] = {}

    @classmethod
    def from_options(cls, name: str, options: Section) -> DjangoCaBackend:
        upstream = parse_upstream(options, client_cert_required=False)
        username = options.str("username")
        password = options.secret("password", required=True)
        parsed = DjangoCaOptions(
            upstream=upstream, username=username if isinstance(username, str) else "",
            password=password or "",
            order_wait_s=options.number("order_wait_s", 10.0, allow_zero=True),
            pending_retry_after_s=options.int("pending_retry_after_s", 30, minimum=1, maximum=86400),
            cacerts_cache_s=options.number("cacerts_cache_s", 300.0),
            revocation=(RevocationSettings.from_section(options.table("revocation"))
                        if options.has("revocation") else None),
            revoke_superseded=options.bool("revoke_superseded", False),
        )
        return cls(name, parsed, options.base_dir)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def upstream(self) -> UpstreamSettings:
        if self.options.upstream is None or self.client is None:  # only for a failed configuration
            raise UpstreamError(f"backend {self.name} has no valid upstream settings")
        return self.options.upstream

    def _call(self, method: str, path: str, call: Call, *, idempotent: bool,
              json: dict[str, Any] | None = None) -> Any:
        url = self.upstream.url
        assert self.client is not None
        response = self.client.request(method, url + path, idempotent=idempotent, json=json,
                                       auth=(self.options.username, self.options.password),
                                       headers={"Accept": "application/json"})
        return interpret(response, call, self.name, url)

    def parse_target(self, alias: Section) -> DjangoCaTarget:
        before = len(alias.problems.items)
        target = parse_target(alias)
        if len(alias.problems.items) == before:
            self.targets.add(target)
        return target

    def issues_alike(self, a: DjangoCaTarget, b: DjangoCaTarget) -> bool:
        """Aliases on the same CA (or where that is unknown before asking django-ca: one
        names it, the other gives its serial): the gateway looks certificates up by CA and
        serial, and an OCSP or CRL answer names no profile."""
        if a.ca_serial is not None and b.ca_serial is not None:
            return a.ca_serial == b.ca_serial
        if a.ca_serial is None and b.ca_serial is None:
            return a.ca == b.ca
        return True

    def describe_state(self) -> dict[str, str]:
        if self.options.upstream is None:
            return {}
        revocation = self.options.revocation
        source = "the REST API" if revocation is None else \
            " then ".join(revocation.methods) + f" (answers cached up to {revocation.max_cache_s:g} s)"
        return {**self.options.upstream.describe(), "django-ca user": self.options.username,
                "revocation": source}

    # -- what the CA offers (cached) ------------------------------------------------------

    def _authorities(self) -> dict[str, CertificateAuthority]:
        return self._cas.get("cas", self._fetch_authorities)

    def _fetch_authorities(self) -> dict[str, CertificateAuthority]:
        """``GET /ca/``: every enabled, current, API-enabled CA, keyed by serial and by name."""
        data = self._call("GET", "/ca/", Call("the CA list", "view_certificateauthority",
                                              _missing_ca("*")), idempotent=True)
        if not isinstance(data, list):
            raise UpstreamError("django-ca answered the CA list with unexpected JSON")
        by_id: dict[Any, tuple[dict[str, Any], x509.Certificate]] = {}
        for entry in data:
            try:
                pem = entry["certificate"]["pem"]
                by_id[entry["id"]] = (entry, x509.load_pem_x509_certificate(pem.encode("ascii")))
            except (KeyError, TypeError, AttributeError, ValueError):
                raise UpstreamError("django-ca answered the CA list with an unreadable CA") from None
        found: dict[str, CertificateAuthority] = {}
        for entry, cert in by_id.values():
            chain, parent = [cert], entry.get("parent")
            while parent in by_id and len(chain) < 10:
                chain.append(by_id[parent][1])
                parent = by_id[parent][0].get("parent")
            ca = CertificateAuthority(serial=f"{cert.serial_number:X}", name=str(entry.get("name", "")),
                                      chain=tuple(chain))
            found[ca.serial] = ca
            found.setdefault(f"name:{ca.name}", ca)
        return found

    def _authority(self, target: DjangoCaTarget) -> CertificateAuthority:
        cas = self._authorities()
        serial = target.ca_serial
        ca = cas.get(serial.lstrip("0")) if serial else None
        ca = ca or cas.get(f"name:{target.ca}")
        if ca is None:
            names = sorted(c.name for k, c in cas.items() if not k.startswith("name:"))
            log.error('backend %s: django-ca lists no usable CA "%s" (it lists: %s); check the alias\'s '
                      "ca, and that the CA is enabled, current and API-enabled (init_ca --api-enable)",
                      self.name, target.ca, ", ".join(names) or "none")
            raise UpstreamError(f'the upstream CA does not offer CA "{target.ca}"')
        return ca

    def _profile(self, name: str) -> Profile:
        return self._profiles.get(name, lambda: self._fetch_profile(name))

    def _fetch_profile(self, name: str) -> Profile:
        """``GET /profiles/{name}/`` (django-ca checks ``sign_certificate`` for it)."""
        def missing(reason: str) -> ESTError:
            log.error('backend %s: django-ca has no profile "%s" (%s); check the alias\'s '
                      "certificate_profile", self.name, name, reason)
            return UpstreamError(f'the upstream CA has no profile "{name}"')
        data = self._call("GET", f"/profiles/{quote(name, safe='')}/",
                          Call(f'profile "{name}"', "sign_certificate", missing), idempotent=True)
        return Profile.from_api(name, data)

    # -- EST operations -------------------------------------------------------------------

    def ca_certs(self, target: DjangoCaTarget) -> list[x509.Certificate]:
        return list(self._authority(target).chain)

    def enroll(self, request: EnrollRequest[DjangoCaTarget]) -> Issued | Pending:
        target = request.target
        ca = self._authority(target)
        profile = self._profile(target.profile)
        sans = requested_sans(request.csr)
        slug, fresh = self._order_for(request, lambda: self._submit(request, target, ca, profile, sans))
        serial = self._await(ca, slug, look_once=not fresh)
        if serial is None:
            log.info("backend %s: django-ca order %s is still pending; answering 202", self.name, slug)
            return Pending(retry_after=self.options.pending_retry_after_s, reference=f"order {slug}")
        self._forget_order(slug)   # handed out: a later identical request is a new one
        cert = self._certificate(ca, serial)[0]
        problems = check_issued(cert, request.csr, sans, profile)
        if not issued_by(cert, ca.chain[0]):
            problems.append("an issuer other than the configured CA")
        if problems:
            log.error("backend %s: django-ca issued certificate %s with %s (profile %s asked otherwise); "
                      "refusing to hand it out", self.name, serial, "; ".join(problems), profile.name)
            raise UpstreamError("the upstream CA issued a certificate other than requested: "
                                + clip("; ".join(problems), 200))
        return Issued(cert, ca.chain)

    def reenroll(self, request: ReenrollRequest[DjangoCaTarget]) -> Issued | Pending:
        """A renewal is a new sign request (the core checked Subject/SAN and revocation)."""
        return self.enroll(request)

    def _submit(self, request: EnrollRequest[DjangoCaTarget], target: DjangoCaTarget, ca: CertificateAuthority,
                profile: Profile, sans: list[x509.GeneralName]) -> str:
        """``POST /ca/{serial}/sign/``; the order's slug."""
        body: dict[str, Any] = {
            "csr": request.csr.public_bytes(Encoding.PEM).decode("ascii"),
            "subject": subject_json(request.csr.subject),
            "profile": profile.name,
            "extensions": request_extensions(profile, sans),
        }
        lifetime = profile.lifetime if target.validity_days is None else dt.timedelta(days=target.validity_days)
        if lifetime is not None:
            # django-ca 3.2 signs past its CA's own expiry if asked to: never ask
            not_after = min(dt.datetime.now(dt.UTC) + lifetime, ca.chain[0].not_valid_after_utc)
            body["not_after"] = not_after.isoformat()
        order = self._call("POST", f"/ca/{ca.serial}/sign/",
                           Call("the sign request", "sign_certificate", _missing_ca(target.ca)),
                           idempotent=False, json=body)
        slug = order.get("slug") if isinstance(order, dict) else None
        if not isinstance(slug, str) or not slug.isalnum():
            raise UpstreamError("django-ca answered the sign request without an order")
        return slug

    def _order_for(self, request: EnrollRequest[DjangoCaTarget], submit: Callable[[], str]) -> tuple[str, bool]:
        """The order already opened for this request (a client's repeat after 202), or a new one."""
        key = request.retry_key
        now = self._clock()
        if key:
            with self._orders_lock:
                self._orders = {k: v for k, v in self._orders.items() if v[0] > now}
                known = self._orders.get(key)
            if known is not None:
                return known[1], False
        slug = submit()
        if key:
            with self._orders_lock:
                self._orders[key] = (now + ORDER_MEMORY_S, slug)
        return slug, True

    def _forget_order(self, slug: str) -> None:
        with self._orders_lock:
            self._orders = {k: v for k, v in self._orders.items() if v[1] != slug}

    def _await(self, ca: CertificateAuthority, slug: str, *, look_once: bool) -> str | None:
        """Poll ``GET /ca/{serial}/orders/{slug}/`` for up to ``order_wait_s``: the serial
        once issued, ``None`` while pending; a failed order is a 502."""
        deadline = self._clock() + self.options.order_wait_s
        delay = 0.05
        call = Call(f"order {slug}", "sign_certificate", _missing_ca(ca.name))
        while look_once or self._clock() < deadline:
            look_once = False
            order = self._call("GET", f"/ca/{ca.serial}/orders/{slug}/", call, idempotent=True)
            status = order.get("status") if isinstance(order, dict) else None
            if status == "issued" and isinstance(order.get("serial"), str):
                return str(order["serial"])
            if status == "failed":
                # django-ca 3.2's order schema carries no error text: the reason is in its log
                self._forget_order(slug)
                log.error("backend %s: django-ca order %s failed (django-ca's own log says why, e.g. the "
                          "CA's private key cannot be loaded)", self.name, slug)
                raise UpstreamError(f"the upstream CA failed to sign (order {slug})")
            if status != "pending":
                raise UpstreamError(f"django-ca answered order {slug} with status {clip(status, 40)!r}")
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
        return None

    def _certificate(self, ca: CertificateAuthority, serial: str) -> tuple[x509.Certificate, dict[str, Any]]:
        """``GET /ca/{serial}/certs/{serial}/``: the certificate and django-ca's record of it."""
        data = self._call("GET", f"/ca/{ca.serial}/certs/{serial}/",
                          Call(f"certificate {serial}", "view_certificate", _missing_ca(ca.name)),
                          idempotent=True)
        try:
            cert = x509.load_pem_x509_certificate(data["certificate"]["pem"].encode("ascii"))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise UpstreamError("django-ca answered with an unreadable certificate") from None
        return cert, data

    def revocation_status(self, certificate: x509.Certificate, target: DjangoCaTarget) -> RevocationStatus:
        """django-ca's record of the certificate (or its OCSP/CRL answer, if configured); one
        the CA did not sign is unknown without asking (django-ca 3.2 answers an unknown serial
        with HTTP 500, not 404)."""
        ca = self._authority(target)
        if not issued_by(certificate, ca.chain[0]):
            return RevocationStatus(known=False, revoked=False)
        if self.checker is not None and self.options.revocation is not None:
            return to_status(self.checker.check(certificate, ca.chain[0]), self.options.revocation)
        _, record = self._certificate(ca, f"{certificate.serial_number:X}")
        revoked = record.get("revoked")
        if not isinstance(revoked, bool):
            raise UpstreamError('django-ca answered a certificate without "revoked"')
        if not revoked:
            return RevocationStatus(known=True, revoked=False)
        return RevocationStatus(known=True, revoked=True, reason=clip(record.get("revoked_reason"), 40) or None,
                                revoked_at=_date(record.get("revoked_date")))

    def supersede(self, certificate: x509.Certificate, target: DjangoCaTarget) -> None:
        """With ``revoke_superseded`` (off by default): revoke the renewed certificate with
        reason ``superseded``. django-ca answers one revoked already with 400 "The
        certificate is already revoked." (``revoke_certificate``): done."""
        if not self.options.revoke_superseded:
            return
        ca = self._authority(target)
        if not issued_by(certificate, ca.chain[0]):
            raise UpstreamError("the renewed certificate was not signed by this alias's CA")
        serial = f"{certificate.serial_number:X}"
        call = Call(f"revoking certificate {serial}", "revoke_certificate", _missing_ca(ca.name))
        try:
            self._call("POST", f"/ca/{ca.serial}/certs/{serial}/revoke/", call, idempotent=True,
                       json={"reason": "superseded"})
        except BadRequest as exc:
            if "already revoked" not in exc.detail:
                raise
        log.info("backend %s: revoked serial %s with reason superseded after its renewal", self.name, serial)

    def health(self) -> None:
        """Proves, for every alias's CA and profile, uncached: django-ca answers over TLS
        verified with ``ca_bundle``; the user and password are accepted; the user may list
        CAs (``view_certificateauthority``) and read profiles (``sign_certificate``); the
        CA is enabled, current and API-enabled; the profile exists."""
        self._cas.put("cas", self._fetch_authorities())
        for target in sorted(self.targets, key=repr):
            self._authority(target)
            self._profiles.put(target.profile, self._fetch_profile(target.profile))



def _date(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
