"""CFSSL adapter (``type = "cfssl"``): CloudFlare's ``cfssl serve`` over mutual TLS, ``authsign``."""

from plugins.cfssl.backend import CfsslBackend

__all__ = ["CfsslBackend"]
