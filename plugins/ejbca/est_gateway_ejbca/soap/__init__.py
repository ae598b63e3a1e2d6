"""EJBCA SOAP adapter (``type = "ejbca-soap"``)."""

from est_gateway_ejbca.soap.backend import EjbcaSoapBackend

__all__ = ["EjbcaSoapBackend"]
