"""CFSSL adapter (``type = "cfssl"``): issues through ``cfssl serve``'s ``authsign`` endpoint.

The gateway reaches CFSSL over mutual TLS (``cfssl serve -mutual-tls-ca ... -mutual-tls-cn``)
and authenticates each signing request with the profile's HMAC auth key. CFSSL keeps no
end entities: enrollment and re-enrollment are the same signing request. Revocation
status comes from the CA's OCSP responder (``cfssl ocspserve``) or a CRL through the
generic checker (``est_gateway.revocation``); the gateway never revokes.
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.backends.base import CABackend, EnrollRequest, Issued, Pending, ReenrollRequest, RevocationStatus
from est_gateway.config.model import CATarget
from est_gateway.config.reader import Section
from est_gateway.errors import UpstreamError
from est_gateway.revocation import RevocationChecker, to_status
from plugins.cfssl.api import CfsslApi
from plugins.cfssl.issued import check_issued
from plugins.cfssl.options import CFSSL_USAGE_NAMES, CfsslOptions, CfsslTarget
from plugins.upstream.cache import ExpiringCache
from plugins.upstream.session import UpstreamClient

log = logging.getLogger(__name__)

class CfsslBackend(CABackend):
    """One ``cfssl serve``; aliases choose its signer label and signing profile."""

    def __init__(self, name: str, options: CfsslOptions) -> None:
        super().__init__(name)
        self.options = options
        self.checker = RevocationChecker(options.revocation)
        self._api = (CfsslApi(name, UpstreamClient(options.upstream), options.auth_key)
                     if options.upstream is not None else None)
        self._signers: ExpiringCache[x509.Certificate] = ExpiringCache(options.cacerts_cache_s)
        self._targets: dict[str, CfsslTarget] = {}

    @classmethod
    def from_options(cls, name: str, options: Section) -> CfsslBackend:
        return cls(name, CfsslOptions.parse(options))

    @property
    def api(self) -> CfsslApi:
        if self._api is None:  # only reachable for a configuration that failed
            raise UpstreamError(f"backend {self.name} has no valid upstream settings")
        return self._api

    def check_target(self, target: CATarget, path: str) -> list[str]:
        parsed, problems = CfsslTarget.parse(target, path, self.options.base_dir)
        if not problems:
            self._targets[_key(target)] = parsed
        return problems

    def target(self, target: CATarget) -> CfsslTarget:
        """The parsed settings of an alias (parsed at start-up by :meth:`check_target`)."""
        parsed = self._targets.get(_key(target))
        if parsed is None:
            parsed, problems = CfsslTarget.parse(target, "aliases.?", self.options.base_dir)
            if problems:
                raise UpstreamError("; ".join(problems))
            self._targets[_key(target)] = parsed
        return parsed

    def describe_state(self) -> dict[str, str]:
        facts = self.options.upstream.describe() if self.options.upstream is not None else {}
        revocation = self.options.revocation
        facts["revocation"] = " then ".join(revocation.methods) + \
            f" (answers cached up to {revocation.max_cache_s:g} s)"
        return facts

    # -- EST operations -------------------------------------------------------------------

    def signer(self, target: CfsslTarget) -> x509.Certificate:
        """The CA certificate of the alias's signer, from ``info`` (cached)."""
        return self._signers.get((target.label, target.profile), lambda: self._fetch_signer(target))

    def _fetch_signer(self, target: CfsslTarget) -> x509.Certificate:
        result = self.api.info(target.label, target.profile)
        try:
            return x509.load_pem_x509_certificate(str(result.get("certificate", "")).encode())
        except ValueError:
            raise UpstreamError("the upstream CA answered info without a readable CA certificate") from None

    def ca_certs(self, target: CATarget) -> list[x509.Certificate]:
        return [self.signer(self.target(target))]

    def enroll(self, request: EnrollRequest) -> Issued | Pending:
        target = self.target(request.target)
        signer = self.signer(target)
        # No "hosts" and no "subject": CFSSL then takes both from the CSR (signer.ParseCertificateRequest).
        result = self.api.authsign({
            "certificate_request": request.csr.public_bytes(Encoding.PEM).decode("ascii"),
            "profile": target.profile,
            "label": target.label,
        })
        try:
            certificate = x509.load_pem_x509_certificate(str(result.get("certificate", "")).encode())
        except ValueError:
            raise UpstreamError("the upstream CA returned an unreadable certificate") from None
        check_issued(certificate, request.csr, signer, target, self.name)
        log.info("backend %s: CFSSL issued serial %d (profile %s) for request %s", self.name,
                 certificate.serial_number, target.profile, request.request_id)
        return Issued(certificate, (signer,))

    def reenroll(self, request: ReenrollRequest) -> Issued | Pending:
        """CFSSL keeps no end entities: a renewal is another signing request."""
        return self.enroll(request)

    def revocation_status(self, certificate: x509.Certificate, target: CATarget) -> RevocationStatus:
        """Known = signed by this alias's CA; revoked = as its OCSP responder or CRL says."""
        signer = self.signer(self.target(target))
        if certificate.issuer != signer.subject:
            return RevocationStatus(known=False, revoked=False)
        try:
            certificate.verify_directly_issued_by(signer)
        except (ValueError, TypeError, InvalidSignature):
            return RevocationStatus(known=False, revoked=False)
        return to_status(self.checker.check(certificate, signer), self.options.revocation)

    def health(self) -> None:
        """For every alias's profile: ``info`` over mutual TLS (reachable, TLS trusted both
        ways, CN allowed, signer loaded, the profile gives the required usages) and an
        ``authsign`` without a CSR (the auth key is accepted; nothing is issued)."""
        if not self._targets:
            self.api.info("", "")
        for target in set(self._targets.values()):
            info = self.api.info(target.label, target.profile)
            usages = info.get("usages")
            offered = set(usages) if isinstance(usages, list) else set()
            missing = [u for u in target.usages if CFSSL_USAGE_NAMES[u] not in offered]
            if missing:
                raise UpstreamError(f"CFSSL profile {target.profile!r} does not give {', '.join(missing)} "
                                    "(CFSSL answers an unknown profile with its default one)")
            self.api.check_auth_key(target.profile, target.label)


def _key(target: CATarget) -> str:
    """CATarget's ``extra`` is a dict: key the parsed settings by its content."""
    return repr((target.ca, target.certificate_profile, target.end_entity_profile, sorted(target.extra.items())))
