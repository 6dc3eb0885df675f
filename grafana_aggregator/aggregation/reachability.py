# -*- test-case-name: tests.test_replica_availability -*-
"""What this replica itself concluded about each remote APIService's backend: reachable or not, and why.

With several replicas on one etcd, the stored `Available` condition is the leader's summary of every
replica's view; each replica still routes by its own (a backend it cannot reach gets its own 503, even
while another replica reaches it and the condition is True).  The availability controller sets it after
every probe; the routing table reads it.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field, frozen


@frozen
class Reach:
    """One APIService's backend as this replica's last probe found it."""

    reachable: bool
    #: The condition message of that probe (why not, when not reachable).
    message: str


@define(eq=False)
class Reachability:
    """This replica's own view of every probed backend, by APIService name, with listeners for changes.

    :param replica: this replica's name (it goes into the 503 a replica answers for a backend it cannot reach).
    """

    replica: str
    _reach: dict[str, Reach] = field(init=False, factory=dict)
    _listeners: list[Callable[[str], None]] = field(init=False, factory=list)

    def get(self, name: str) -> Reach | None:
        """This replica's view of the APIService's backend; None before its first probe."""
        return self._reach.get(name)

    def set(self, name: str, reachable: bool, message: str) -> None:
        """Record a probe's conclusion; listeners hear of it when reachability changed."""
        reach = Reach(reachable, message)
        previous = self._reach.get(name)
        self._reach[name] = reach
        if previous is None or previous.reachable != reachable:
            self._announce(name)

    def forget(self, name: str) -> None:
        """Drop a deleted APIService's view."""
        if self._reach.pop(name, None) is not None:
            self._announce(name)

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call listener(name) whenever the reachability of an APIService's backend changes."""
        self._listeners.append(listener)

    def _announce(self, name: str) -> None:
        for listener in list(self._listeners):
            listener(name)
