"""``est_gateway.wsgi:application``: the gateway in a WSGI server of the operator's choice
(Apache's mod_wsgi, uWSGI, gunicorn behind a proxy) instead of ``est-gateway serve``.

Importing this module builds the application from ``$EST_GATEWAY_CONFIG`` and starts its
backends (:mod:`est_gateway.hosting`), once per process that imports it. A server that
imports it before it forks (uWSGI by default, gunicorn ``--preload``) starts the backends
in its parent, as ``serve``'s arbiter does; one that imports it in each process (mod_wsgi's
daemon processes, gunicorn without ``--preload``) starts them in each. A backend's
``start`` opens nothing a fork would share, and the local CA creates its keys once, under
a file lock. ``application`` is a plain module attribute: uWSGI looks it up in the
module's namespace, not with ``getattr``.
"""

from est_gateway.hosting import from_environment

application = from_environment()
