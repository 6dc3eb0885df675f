# -*- test-case-name: tests.test_replica_availability -*-
"""With several replicas on one etcd, the leader writes each APIService's `Available` condition from every
live replica's own view, so that replicas that see the network differently never flip it.

kube lets every replica write the condition from its own probe, so a replica cut off from a backend and
one that reaches it overwrite each other (kubernetes/kubernetes#111890).  Here each replica's availability
controller publishes its probe result under a key bound to its lease (`ReplicaViews`), and the leader alone
writes the condition, by this rule:

- only the views of live replicas count (a dead replica's view goes with its lease), and only those probed
  against the APIService's and ExternalName's current specs (the same `probed_digest`);
- `True` (reason `Passed`) when **any** of them reached the backend.  When all did, the message is kube's
  `all checks passed`; when some did not, it names them: `all checks passed on a, b; not reachable from
  c: <c's message>`;
- `False` when none did, with the reason and message of the leader's own view (or, when the leader has
  none, of the first replica by name): exactly what a single aggregator would write;
- no current view at all: nothing is written (the condition stays as it was until one arrives).

Each replica still routes by its own view (`aggregation/reachability.py`), so the replica that cannot
reach a backend answers 503 for it itself.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, Protocol

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..registry.apiservice import APISERVICES, is_local, service_reference
from ..registry.externalname import EXTERNALNAMES
from ..storage import IStore, StorageUnavailableError, WatchEvent
from ..storage.informer import Informer
from .availability import PASSED, PASSED_MESSAGE, ConditionWriter, probed_digest
from .workqueue import Retry, WorkQueue

_log = Logger()

#: Seconds between two passes over every APIService (a view that changed while this replica did not lead).
RESYNC = 30.0


class ViewBoard(Protocol):
    """The replicas' published views (`ReplicaViews`)."""

    def views(self, subject: str) -> dict[str, Any]:
        """Every live replica's document about subject, by replica name."""

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call listener(subject) when a document about subject appears, changes or goes."""


def combined_condition(views: dict[str, dict[str, Any]], leader: str) -> tuple[str, str, str]:
    """The (status, reason, message) of `Available` from the current views of live replicas, by the module's rule."""
    reached = sorted(replica for replica, view in views.items() if view.get("status") == "True")
    missed = sorted(replica for replica in views if replica not in reached)
    if reached and not missed:
        return "True", PASSED, PASSED_MESSAGE
    if reached:
        why = "; ".join(f"{replica}: {views[replica].get('message', '')}" for replica in missed)
        return "True", PASSED, f"{PASSED_MESSAGE} on {', '.join(reached)}; not reachable from {why}"
    chosen = views[leader] if leader in views else views[missed[0]]
    return "False", str(chosen.get("reason", "")), str(chosen.get("message", ""))


@define(eq=False)
class AvailabilityFromViews(Service):
    """The leader's writer of `Available`: every remote APIService's condition from the replicas' current views.

    :param store: where the status is written.
    :param informer: the shared view of APIServices and ExternalNames.
    :param board: the replicas' availability views.
    :param now: the wall-clock time written as `lastTransitionTime`.
    :param clock: time for the work queue and the resync.
    :param replica: this (the leading) replica's name.
    """

    _store: IStore
    _informer: Informer
    _board: ViewBoard
    _now: Callable[[], datetime.datetime]
    _clock: IReactorTime
    _replica: str
    _resync: float = RESYNC
    _writer: ConditionWriter = field(init=False)
    _queue: WorkQueue | None = field(init=False, default=None)
    _loop: LoopingCall | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._writer = ConditionWriter(self._store, self._informer, self._now)
        self._informer.add_listener(self._changed)
        self._board.add_listener(self._add)

    def startService(self) -> None:
        super().startService()
        self._queue = WorkQueue(self._clock, self._sync, "availability-from-views", initial_backoff=0.5,
                                max_backoff=5.0)
        self._informer.ready.addCallback(lambda _: self._resync_all())
        self._loop = LoopingCall(self._resync_all)
        self._loop.clock = self._clock
        self._loop.start(self._resync, now=False).addErrback(
            lambda failure: _log.failure("the resync loop stopped", failure))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._queue is not None:
            self._queue.stop()
        self._queue = None

    def _resync_all(self) -> None:
        if self._queue is not None and self.running and self._informer.synced():
            self._queue.add_all(a["metadata"]["name"] for a in self._informer.list(APISERVICES) if not is_local(a))

    def _add(self, name: str) -> None:
        if self._queue is not None and self.running:
            self._queue.add(name)

    def _changed(self, event: WatchEvent) -> None:
        if self._queue is None or not self.running:
            return
        if event.collection == APISERVICES:
            if event.type == "DELETED":
                self._queue.forget(event.name)
                self._writer.written.pop(event.name, None)
                return
            if event.object.get("status") == self._writer.written.get(event.name) and event.previous is not None \
                    and event.previous.get("spec") == event.object.get("spec"):
                return
            self._queue.add(event.name)
        elif event.collection == EXTERNALNAMES:
            for apiservice in self._informer.list(APISERVICES):
                if not is_local(apiservice) and service_reference(apiservice) == (event.namespace, event.name):
                    self._queue.add(apiservice["metadata"]["name"])

    async def _sync(self, name: str) -> None:
        apiservice = self._informer.get(APISERVICES, "", name)
        if apiservice is None or is_local(apiservice):
            return
        externalname = self._informer.get(EXTERNALNAMES, *service_reference(apiservice))
        digest = probed_digest(apiservice, externalname)
        current = {replica: view for replica, view in self._board.views(name).items()
                   if isinstance(view, dict) and view.get("digest") == digest}
        if not current:
            return
        status, reason, message = combined_condition(current, self._replica)
        try:
            await self._writer.record(name, apiservice.get("spec"), status, reason, message)
        except StorageUnavailableError as error:
            _log.warn("cannot record the availability of APIService {name}: {error}", name=name, error=str(error))
            raise Retry() from None


__all__ = ["AvailabilityFromViews", "combined_condition"]
