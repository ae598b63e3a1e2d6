"""The gateway's WSGI application for a WSGI server other than its own (Apache's mod_wsgi,
uWSGI, gunicorn behind a proxy): what ``est_gateway.wsgi`` runs when it is imported.

The configuration is the file named by ``$EST_GATEWAY_CONFIG`` in the process environment,
loaded and validated as ``est-gateway serve`` loads it; its backends are started as
``serve`` starts them and closed when the process exits. A configuration that does not
validate is logged problem by problem and the load fails: the WSGI server reports that the
application could not be loaded and serves nothing from it.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from est_gateway.cli import CONFIG_ENV
from est_gateway.config import GatewayConfig, load_config
from est_gateway.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

log = logging.getLogger(__name__)


def load_application(path: str | os.PathLike[str]) -> WSGIApp:
    """The WSGI app for the configuration file at ``path``, its backends started and
    closed at process exit. Raises :class:`ConfigError` after logging every problem."""
    return _build(Path(path))[0]


def _build(path: Path) -> tuple[WSGIApp, GatewayConfig]:
    from est_gateway.server.runner import close_backends
    from est_gateway.web.app import create_app

    try:
        config = load_config(path)
        for backend in config.backends.values():
            backend.start()
        app = create_app(config)     # checks that need the started CAs (client CA names)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s: %s", path, problem)
        raise
    atexit.register(close_backends, config)
    return app, config


def from_environment() -> WSGIApp:
    """Logging as ``serve`` sets it up (unless the host has set up its own), then the app of
    the configuration ``$EST_GATEWAY_CONFIG`` names."""
    root = logging.getLogger()
    own_logging = not root.handlers
    if own_logging:
        logging.basicConfig(format=LOG_FORMAT)
    path = os.environ.get(CONFIG_ENV, "")
    if not path:
        problem = (f"{CONFIG_ENV} is not set in the process environment: set it to the gateway's "
                   "configuration file (under mod_wsgi in the .wsgi file, before the import; "
                   "Apache's SetEnv reaches only each request, not the process)")
        log.error("%s", problem)
        raise ConfigError([problem])
    app, config = _build(Path(path))
    if own_logging:
        root.setLevel(config.server.log_level.upper())
    from est_gateway import audit

    audit.configure()
    log.info("est-gateway loaded %s in process %d", path, os.getpid())
    return app

