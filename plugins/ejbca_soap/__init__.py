"""EJBCA SOAP adapter (``type = "ejbca-soap"``)."""

from plugins.ejbca_soap.backend import EjbcaSoapBackend

__all__ = ["EjbcaSoapBackend"]
