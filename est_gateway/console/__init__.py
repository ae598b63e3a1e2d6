"""The operator console (``[console]``): the built-in CA and the gateway in a browser."""

from est_gateway.console.app import create_console_app

__all__ = ["create_console_app"]
