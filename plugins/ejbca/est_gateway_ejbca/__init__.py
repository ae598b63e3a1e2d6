"""EJBCA adapters for est-gateway, registered as ``type = "ejbca-rest"``
(:mod:`est_gateway_ejbca.rest`, EJBCA's REST API) and ``type = "ejbca-soap"``
(:mod:`est_gateway_ejbca.soap`, its web service); see docs/ejbca.md."""
