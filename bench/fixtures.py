"""Gateways, CSRs and client identities for the benchmark, all made before any clock starts."""

from __future__ import annotations

import base64
import datetime as dt
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from bench.load import Target, http_request, one_shot
from est_gateway.backends.local import authority
from tests.support.gateway import GatewayProcess, local_instance
from tests.support.pki import csr_b64, make_csr, write_pem

#: Appended to the local-mode configuration: a P-256 CA next to the default RSA-2048 one.
P256_CONFIG = """
[backends.local.cas."P256 CA"]
key_type = "ec-p256"
hierarchy = "root+issuing"
common_name = "est-gateway bench P-256 CA"

[aliases.p256]
backend = "local"
ca = "P256 CA"
certificate_profile = "default"
end_entity_profile = "default"
username = "estuser"
password_file = "secrets/est.password"
allow_same_key_renewal = true
"""

#: scenario -> (label, operation, device key type, authentication)
SCENARIOS = {
    "enroll-rsa": ("est", "simpleenroll", "rsa-2048", "basic"),
    "enroll-p256": ("p256", "simpleenroll", "ec-p256", "basic"),
    "reenroll-mtls": ("est", "simplereenroll", "rsa-2048", "mtls"),
    "cacerts": ("est", "cacerts", None, None),
    # through the EJBCA REST adapter to the stand-in upstream (bench/upstream.py)
    "enroll-upstream": ("upstream", "simpleenroll", "rsa-2048", "basic"),
}


@dataclass
class Gateway:
    folder: Path
    process: GatewayProcess
    password: str
    trust_anchor: Path

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def client_context(self, cert: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.trust_anchor))
        if cert is not None:
            ctx.load_cert_chain(str(cert))
        return ctx

    def stop(self) -> None:
        self.process.stop()


def start_gateway(folder: Path, *, fill: object = None, extra_config: str = "",
                  tls_key_type: str = "rsa-2048", publication: bool = True) -> Gateway:
    """A local-mode gateway with an RSA-2048 CA (label est) and a P-256 CA (label p256),
    plus ``extra_config`` (the upstream alias), serving TLS with a ``tls_key_type`` key.

    ``fill(state_dir)`` runs before the first start, e.g. to pre-load the certificate store.
    ``publication=False``: without local mode's CRL/OCSP listener and URLs (a configuration
    that checkouts from before they existed read too)."""
    instance, process = local_instance(folder, extra_config=P256_CONFIG + extra_config)
    if tls_key_type != "rsa-2048":
        reissue_tls_certificate(folder, tls_key_type)
    # reenroll-mtls renews each certificate many times: the label must not supersede them.
    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(text.replace("allow_same_key_renewal = true\n",
                                            "allow_same_key_renewal = true\nsupersede_on_renewal = false\n", 1),
                               encoding="utf-8")
    if not publication:
        text = instance.config.read_text(encoding="utf-8")
        text = re.sub(r'^\[publication\]\nlisten = .*\n|^(crl|ocsp)_url = .*\n', "", text, flags=re.MULTILINE)
        instance.config.write_text(text, encoding="utf-8")
    if callable(fill):
        fill(folder / "local-ca")
    process.start(timeout=60)
    return Gateway(folder, process, instance.password(), instance.trust_anchor)


def reissue_tls_certificate(folder: Path, key_type: str) -> None:
    """Replace the local instance's RSA-2048 TLS key and certificate by a ``key_type`` pair
    from the same management CA (the clients' trust anchor)."""
    mgmt_key = authority.load_key(folder / "management-ca" / "ca.key")
    anchor = x509.load_pem_x509_certificates((folder / "trust-anchor.pem").read_bytes())[0]
    old = x509.load_pem_x509_certificates((folder / "tls" / "server.pem").read_bytes())[0]
    key = authority.new_key(key_type)
    now = dt.datetime.now(dt.UTC)
    cert = authority.build_leaf(subject=old.subject, public_key=key.public_key(),
                                sans=list(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value),
                                issuer=anchor, issuer_key=mgmt_key, not_before=now - authority.BACKDATE,
                                not_after=now + dt.timedelta(days=30), key_usage=["digitalSignature"],
                                extended_key_usage=["serverAuth"], serial=authority.random_serial())
    authority.write_private(folder / "tls" / "server.key", authority.key_pem(key))
    authority.write_public(folder / "tls" / "server.pem", authority.cert_pem(cert))


def csr_pool(key_type: str, size: int, prefix: str) -> list[bytes]:
    """Base64 CSR bodies (64-column lines, as libest sends them) with distinct keys."""
    return [csr_b64(make_csr(authority.new_key(key_type), cn=f"{prefix}-{i}")) for i in range(size)]


@dataclass
class Identity:
    pem: Path            # certificate + key, for the client's TLS context
    renewal_csr: bytes   # same subject, same key: the label allows same-key renewal


def enroll_identities(gw: Gateway, count: int, folder: Path) -> list[Identity]:
    """Client certificates issued by the gateway itself, for simplereenroll over mutual TLS."""
    folder.mkdir(parents=True, exist_ok=True)
    ctx = gw.client_context()
    out = []
    for i in range(count):
        key = authority.new_key("rsa-2048")
        body = csr_b64(make_csr(key, cn=f"bench-renew-{i}", hash_alg=hashes.SHA256()))
        req = http_request(gw.process.port, "POST", "/.well-known/est/simpleenroll", body,
                           user=("estuser", gw.password))
        status, payload = one_shot(("127.0.0.1", gw.process.port), ctx, req)
        if status != 200:
            raise RuntimeError(f"setup enrollment failed with {status}: {payload[:200]!r}")
        cert = first_certificate(payload)
        pem = write_pem(folder / f"id{i}.pem", cert, key)
        out.append(Identity(pem, body))
    return out


def first_certificate(body: bytes) -> x509.Certificate:
    from cryptography.hazmat.primitives.serialization import pkcs7

    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(body.split())))[0]


def scenario_target(gw: Gateway, name: str, *, pools: dict[str, list[bytes]],
                    identities: list[Identity], keep_alive: bool) -> Target:
    """Prebuilt request bytes and TLS contexts for one scenario, one entry per client slot."""
    label, operation, key_type, auth = SCENARIOS[name]
    path = f"/.well-known/est/{label}/{operation}"
    port = gw.process.port
    if operation == "cacerts":
        return Target(port, [http_request(port, "GET", path, keep_alive=keep_alive)], [gw.client_context()])
    if auth == "mtls":
        requests = [http_request(port, "POST", path, ident.renewal_csr, keep_alive=keep_alive)
                    for ident in identities]
        contexts = [gw.client_context(ident.pem) for ident in identities]
        return Target(port, requests, contexts, paired=True)
    assert key_type is not None
    # Upstream: one CSR (one EJBCA end entity) per client, so that no two clients edit the
    # same end entity at once (the stand-in, like EJBCA, refuses the loser of that race).
    pool = pools["upstream"] if label == "upstream" else pools[key_type]
    requests = [http_request(port, "POST", path, body, user=("estuser", gw.password), keep_alive=keep_alive)
                for body in pool]
    return Target(port, requests, [gw.client_context()], paired=label == "upstream")
