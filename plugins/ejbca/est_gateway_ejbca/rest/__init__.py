"""EJBCA REST adapter (``type = "ejbca-rest"``)."""

from est_gateway_ejbca.rest.backend import EjbcaRestBackend

__all__ = ["EjbcaRestBackend"]
