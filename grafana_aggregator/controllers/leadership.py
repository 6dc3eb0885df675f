# -*- test-case-name: tests.test_replica_availability -*-
"""Controllers that write run on one replica: `LeaderOnly` starts its children while this replica leads and
stops them the moment it does not (with etcd's lease, that is within the lease's TTL of losing etcd)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

_log = Logger()

Check = Callable[[], "str | None"]


class Leadership(Protocol):
    """Whether this replica leads, and who hears when that changes (`LeaderElection`)."""

    is_leader: bool

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call listener(is_leader) whenever leadership changes."""


class LeaderOnly(MultiService):
    """A MultiService whose children run only while `leadership` says this replica leads."""

    def __init__(self, leadership: Leadership):
        super().__init__()
        self._leadership = leadership
        self._children_running = False
        self._stopping: Deferred[Any] | None = None
        leadership.add_listener(self._changed)

    def startService(self) -> None:
        Service.startService(self)
        if self._leadership.is_leader:
            self._start_children()

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        return self._stop_children()

    def _changed(self, leading: bool) -> None:
        if not self.running:
            return
        if leading:
            self._start_children()
        else:
            self._stop_children()

    def _start_children(self) -> None:
        if self._children_running:
            return
        self._children_running = True
        for child in self:
            child.startService()

    def _stop_children(self) -> Deferred[Any]:
        if not self._children_running:
            return self._stopping if self._stopping is not None else Deferred.fromCoroutine(_done())
        self._children_running = False
        stopped = DeferredList([maybeDeferred(child.stopService) for child in reversed(list(self))],
                               consumeErrors=True)
        self._stopping = stopped
        return stopped


async def _done() -> None:
    return None


def any_ready(*checks: Check) -> Check:
    """A readiness check that passes when any of checks passes (else it says what the first one says)."""

    def check() -> str | None:
        problems = [c() for c in checks]
        return None if any(problem is None for problem in problems) else problems[0]

    return check
