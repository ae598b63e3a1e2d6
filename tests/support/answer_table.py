"""The rows of the adapters' answer tables (tests/*/test_responses.py): one upstream answer,
scripted with ``responses``, and what the client gets from the gateway for it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from est_gateway.errors import ESTError
from est_gateway.testing.http import fault

#: statuses of the rows that succeed
OK = 200


@dataclass(frozen=True)
class Row:
    """``answer``: keyword arguments of ``responses.add`` (``fault=`` a key of
    ``est_gateway.testing.http.FAULTS``); then the EST status, a piece of the reason, a piece
    of the operator's log line ("" = nothing at WARNING or above) and the Retry-After."""

    answer: dict[str, Any]
    status: int
    reason: str = ""
    log: str = ""
    retry_after: str | None = None
    #: how many times the upstream is asked (idempotent calls are repeated after 502/503/504)
    calls: int = 1
    id: str = field(default="", compare=False)

    def responses_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.answer)
        if "fault" in kwargs:
            kwargs["body"] = fault(kwargs.pop("fault"))
        return kwargs


def rows(*table: tuple[str, Row]) -> Any:
    """``pytest.mark.parametrize`` over ``(id, row)`` pairs, named by their ids."""
    return pytest.mark.parametrize("row", [pytest.param(row, id=name) for name, row in table])


def check(row: Row, call: Callable[[], Any], caplog: pytest.LogCaptureFixture) -> Any:
    """Run ``call`` and compare what the client would get with the row; the result on success."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        try:
            result = call()
        except ESTError as exc:
            got: tuple[object, ...] = (exc.status, row.reason in exc.detail, exc.headers().get("Retry-After"))
            assert got == (row.status, True, row.retry_after), f"{exc.status} {exc.detail!r} {exc.headers()}"
            assert "Traceback" not in exc.detail and len(exc.detail) < 300
            result = None
        else:
            assert row.status == OK, f"succeeded, the row expects {row.status} {row.reason!r}"
    loud = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    if row.log:
        assert row.log in loud, loud
    else:
        assert loud == "", loud
    return result
