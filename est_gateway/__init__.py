"""est-gateway: an EST (RFC 7030, RFC 8951) server in front of CAs that do not speak EST."""

__version__ = "0.1.0"
