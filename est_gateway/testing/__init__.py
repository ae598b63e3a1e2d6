"""The public backend contract suite: every backend's tests subclass :class:`BackendContract`.

See docs/plugins.md; a plugin's own tests import it like this::

    from est_gateway.testing import BackendContract, build_backend, parse_target
"""

from est_gateway.testing.contract import (
    UNKNOWN_KEY,
    BackendContract,
    build_backend,
    new_csr,
    parse_target,
    target_problems,
)

__all__ = ["UNKNOWN_KEY", "BackendContract", "build_backend", "new_csr", "parse_target", "target_problems"]
