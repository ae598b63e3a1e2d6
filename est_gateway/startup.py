"""What ``serve`` checks before it says it is serving, shared by ``check-config``.

``check-config`` and ``serve`` run the same :func:`startup_problems`, so a configuration
that check-config calls OK starts, and one that serve refuses, check-config refuses too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from OpenSSL import SSL

from est_gateway.config.model import GatewayConfig, ServerSettings
from est_gateway.operations import check_client_ca_names
from est_gateway.server.tls import server_context


def startup_problems(config: GatewayConfig) -> list[str]:
    """Every start-up check beyond the configuration's own validation, one line each: the
    TLS certificate and key as the workers load them, and each label's trusted client CAs
    against the label's own CA (backends started, or the check is skipped with a warning)."""
    return [*tls_problems(config.server), *check_client_ca_names(config)]


def tls_problems(server: ServerSettings) -> list[str]:
    """Build the TLS server context the workers build after forking, and report why not."""
    if not server.tls or server.tls_cert is None or server.tls_key is None:
        return []
    try:
        server_context(server.tls_cert, server.tls_key, min_version=server.tls_min_version)
    except SSL.Error as exc:
        reasons = [str(part[2]) for part in exc.args[0] if len(part) > 2] if exc.args else []
        if any("key values mismatch" in reason for reason in reasons):
            return [f"server.tls_key: {server.tls_key} is not the key of server.tls_cert {server.tls_cert}"]
        reason = "; ".join(reasons) or "not usable"
        return [f"server.tls_cert, server.tls_key: TLS cannot use {server.tls_cert} with "
                f"{server.tls_key}: {reason}"]
    return []


@contextmanager
def started(config: GatewayConfig) -> Iterator[list[str]]:
    """For ``check-config``: start the backends whose start changes nothing on disk or
    upstream, yield the names of those not started (their checks wait for ``serve``),
    close them afterwards."""
    skipped = []
    try:
        for name, backend in config.backends.items():
            if backend.start_changes_state():
                skipped.append(name)
            else:
                backend.start()
        yield skipped
    finally:
        for backend in config.backends.values():
            backend.close()
