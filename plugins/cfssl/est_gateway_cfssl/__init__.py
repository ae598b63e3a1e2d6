"""CFSSL adapter (``type = "cfssl"``): CloudFlare's ``cfssl serve`` over mutual TLS, ``authsign``."""

from est_gateway_cfssl.backend import CfsslBackend

__all__ = ["CfsslBackend"]
