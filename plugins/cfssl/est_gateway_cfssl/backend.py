"""CFSSL adapter (``type = "cfssl"``): issues through ``cfssl serve``'s ``authsign`` endpoint.

The gateway reaches CFSSL over mutual TLS (``cfssl serve -mutual-tls-ca ... -mutual-tls-cn``)
and authenticates each signing request with the profile's HMAC auth key. CFSSL keeps no
end entities: enrollment and re-enrollment are the same signing request. Revocation
status comes from the CA's OCSP responder (``cfssl ocspserve``) or a CRL through the
generic checker (``est_gateway.plugin.http.RevocationChecker``); the gateway never revokes.
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from est_gateway.plugin import (
    CABackend,
    EnrollRequest,
    ExpiringCache,
    Issued,
    Pending,
    ReenrollRequest,
    RevocationStatus,
    Section,
    UpstreamError,
    issued_by,
)
from est_gateway.plugin.http import RevocationChecker, UpstreamClient, to_status
from est_gateway_cfssl.api import CfsslApi
from est_gateway_cfssl.issued import check_issued
from est_gateway_cfssl.options import CFSSL_USAGE_NAMES, CfsslOptions, CfsslTarget

log = logging.getLogger(__name__)

class CfsslBackend(CABackend[CfsslTarget]):
    """One ``cfssl serve``; aliases choose its signer label and signing profile."""

    def __init__(self, name: str, options: CfsslOptions) -> None:
        super().__init__(name)
        self.options = options
        self.checker = RevocationChecker(options.revocation)
        self._api = (CfsslApi(name, UpstreamClient(options.upstream), options.auth_key)
                     if options.upstream is not None else None)
        self._signers: ExpiringCache[x509.Certificate] = ExpiringCache(options.cacerts_cache_s)
        #: the targets of the aliases that use this backend (what health checks)
        self._targets: set[CfsslTarget] = set()

    @classmethod
    def from_options(cls, name: str, options: Section) -> CfsslBackend:
        return cls(name, CfsslOptions.parse(options))

    @property
    def api(self) -> CfsslApi:
        if self._api is None:  # only reachable for a configuration that failed
            raise UpstreamError(f"backend {self.name} has no valid upstream settings")
        return self._api

    def parse_target(self, alias: Section) -> CfsslTarget:
        before = len(alias.problems.items)
        target = CfsslTarget.parse(alias)
        if len(alias.problems.items) == before:
            self._targets.add(target)
        return target

    def issues_alike(self, a: CfsslTarget, b: CfsslTarget) -> bool:
        """Any two aliases: CFSSL records no profile the gateway can read, a revocation
        answer (OCSP, CRL) names only the serial, and with one signer ``cfssl serve``
        ignores the label, so two labels may well sign with the same CA."""
        return True

    def close(self) -> None:
        if self._api is not None:
            self._api.client.close()

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

    def ca_certs(self, target: CfsslTarget) -> list[x509.Certificate]:
        return [self.signer(target)]

    def enroll(self, request: EnrollRequest[CfsslTarget]) -> Issued | Pending:
        target = request.target
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

    def reenroll(self, request: ReenrollRequest[CfsslTarget]) -> Issued | Pending:
        """CFSSL keeps no end entities: a renewal is another signing request."""
        return self.enroll(request)

    def revocation_status(self, certificate: x509.Certificate, target: CfsslTarget) -> RevocationStatus:
        """Known = signed by this alias's CA; revoked = as its OCSP responder or CRL says."""
        signer = self.signer(target)
        if not issued_by(certificate, signer):
            return RevocationStatus(known=False, revoked=False)
        return to_status(self.checker.check(certificate, signer), self.options.revocation)

    def health(self) -> None:
        """For every alias's profile: ``info`` over mutual TLS (reachable, TLS trusted both
        ways, CN allowed, signer loaded, the profile gives the required usages) and an
        ``authsign`` without a CSR (the auth key is accepted; nothing is issued)."""
        if not self._targets:
            self.api.info("", "")
        for target in sorted(self._targets, key=repr):
            info = self.api.info(target.label, target.profile)
            usages = info.get("usages")
            offered = set(usages) if isinstance(usages, list) else set()
            missing = [u for u in target.usages if CFSSL_USAGE_NAMES[u] not in offered]
            if missing:
                raise UpstreamError(f"CFSSL profile {target.profile!r} does not give {', '.join(missing)} "
                                    "(CFSSL answers an unknown profile with its default one)")
            self.api.check_auth_key(target.profile, target.label)

