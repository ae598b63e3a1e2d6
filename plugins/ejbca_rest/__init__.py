"""EJBCA REST adapter (``type = "ejbca-rest"``)."""

from plugins.ejbca_rest.backend import EjbcaRestBackend

__all__ = ["EjbcaRestBackend"]
