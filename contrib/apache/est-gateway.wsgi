# est-gateway under Apache's mod_wsgi: est-gateway-wsgi.conf points WSGIScriptAlias here.
# Each mod_wsgi daemon process runs this file once. The configuration comes from the
# process environment; Apache's SetEnv would reach only each request's WSGI environ, so
# the path is set here. Edit it to your gateway.toml.
import os

os.environ["EST_GATEWAY_CONFIG"] = "/etc/est-gateway/gateway.toml"

from est_gateway.wsgi import application  # noqa: E402,F401  (what mod_wsgi calls)
