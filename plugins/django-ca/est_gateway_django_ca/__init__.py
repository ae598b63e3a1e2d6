"""django-ca adapter (``type = "django-ca"``): django-ca's REST API over HTTPS with HTTP Basic."""

from est_gateway_django_ca.backend import DjangoCaBackend

__all__ = ["DjangoCaBackend"]
