"""The gateway's web layer, a Flask application (:func:`create_app`); its EST routes can be
registered in another Flask app too (:func:`est_blueprint`, docs/embedding.md)."""

from est_gateway.web.app import create_app, make_service, service_of
from est_gateway.web.blueprints import est_blueprint

__all__ = ["create_app", "est_blueprint", "make_service", "service_of"]
