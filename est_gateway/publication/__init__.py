"""Revocation published by the built-in CA: a CRL and an OCSP responder per local CA, over
plain HTTP on ``[publication] listen`` (:func:`est_gateway.publication.app.create_publication_app`)."""
