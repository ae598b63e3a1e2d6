"""Reading what a running gateway wrote to stderr, in either log format."""

from __future__ import annotations

import json
from typing import Any

#: how a text-format line carries an audit object (est_gateway.logformat.TextFormatter)
TEXT_AUDIT = " INFO est_gateway.audit: "


def audit_events(output: str) -> list[dict[str, Any]]:
    """The audit objects among a gateway's stderr lines, in order (text or json format)."""
    events = []
    for line in output.splitlines():
        if TEXT_AUDIT in line:
            events.append(json.loads(line.split(TEXT_AUDIT, 1)[1]))
        elif line.startswith("{") and '"audit":' in line:
            events.append(json.loads(line)["audit"])
    return events
