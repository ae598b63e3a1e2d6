"""The public backend contract suite: every backend's tests subclass :class:`BackendContract`.

See docs/plugins.md; a plugin's own tests import it like this::

    from est_gateway.testing import BackendContract, build_backend, parse_target

:mod:`est_gateway.testing.http` (it needs ``responses``) scripts an HTTP backend's upstream
answers, for tables of what the client gets for each.
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
