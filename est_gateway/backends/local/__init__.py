"""The built-in local CA backend (``type = "local"``)."""

from est_gateway.backends.local.backend import LocalCABackend

__all__ = ["LocalCABackend"]
