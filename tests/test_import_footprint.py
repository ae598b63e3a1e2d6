"""Every worker process holds what the gateway imports before it forks them (issue 14's
peak RSS per worker): modules needed only by rare operations load when first used."""

from __future__ import annotations

import json
import subprocess
import sys

#: the server, the application and every operation's module a worker has from the start
SERVING = ["est_gateway.cli", "est_gateway.web.app", "est_gateway.server.worker", "est_gateway.server.runner",
           "est_gateway.operations", "est_gateway.keywrap", "est_gateway.upstream.revocation"]
#: asn1crypto's CMS, X.509 and key modules (about 1.5 MiB): encrypted serverkeygen delivery
#: and OCSP key hashes import them when they run
RARE = ["asn1crypto.cms", "asn1crypto.x509", "asn1crypto.keys"]


def test_modules_of_rare_operations_are_not_loaded_by_the_server() -> None:
    code = (f"import importlib, json, sys\nfor m in {SERVING!r}: importlib.import_module(m)\n"
            f"print(json.dumps([m for m in {RARE!r} if m in sys.modules]))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                       text=True).stdout)
    assert loaded == []

