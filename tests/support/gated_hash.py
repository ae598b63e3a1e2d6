"""A password hash whose check waits at a gate: a flood of checks stays in flight, countably."""

from __future__ import annotations

import dataclasses
import threading

from est_gateway.passwords import PasswordHash
from tests.support.inproc import InProcessGateway


class Gate:
    """Counts the checks that reached the hash and holds them until :meth:`release`."""

    def __init__(self) -> None:
        self.started = 0
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._changed = threading.Condition(self._lock)

    def enter(self) -> None:
        with self._changed:
            self.started += 1
            self._changed.notify_all()
        self._open.wait(60)

    def wait_started(self, count: int, timeout: float = 30) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.started >= count, timeout)

    def release(self) -> None:
        self._open.set()


@dataclasses.dataclass(frozen=True, repr=False)
class GatedHash(PasswordHash):
    gate: Gate | None = None

    def verify(self, password: str) -> bool:
        assert self.gate is not None
        self.gate.enter()
        return super().verify(password)


def gate_password(gw: InProcessGateway, label: str = "est") -> Gate:
    """Make ``label``'s password check wait at a new gate (its password is unchanged)."""
    alias = gw.config.aliases[label]
    assert alias.password is not None
    gate = Gate()
    stored = alias.password
    gated = GatedHash(stored.log_n, stored.r, stored.p, stored.salt, stored.digest, gate=gate)
    gw.config.aliases[label] = dataclasses.replace(alias, password=gated)  # type: ignore[index]
    return gate
