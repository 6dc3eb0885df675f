# -*- test-case-name: tests.test_informer -*-
"""A shared informer: one list-and-watch of some collections, a local index of their objects, and listeners.

Like client-go's shared informer, it is the one view of the APIServices and ExternalNames that the
routing table and every controller read, so nothing else keeps a watch or a copy of them.  The
store delivers watch events synchronously as it writes, so the index (and every listener) has
seen a change before the write returns to its caller.

Listeners get each event after the index has applied it; at start, after every collection is
listed, each stored object is announced as ADDED (so a listener added before `startService` sees
everything once).  A listener that raises is logged and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .interface import EXPIRED, Collection, ExpiredError, IStore, IWatch, Object, StorageError, WatchEvent

_log = Logger()

#: Seconds between attempts when the initial list (or the watch that follows it) fails.
RETRY_DELAY = 1.0
#: Immediate re-lists when the watch that follows a list finds its resourceVersion already expired.
EXPIRED_RETRIES = 5

Key = tuple[str, str]


class Informer(Service):
    """Lists and watches `collections` of `store` and keeps their objects by (namespace, name).

    The objects are the store's own (shared with every watcher): readers must not change them.
    """

    def __init__(self, store: IStore, collections: Sequence[Collection], clock: IReactorTime,
                 retry_delay: float = RETRY_DELAY):
        self._store = store
        self._collections = tuple(collections)
        self._clock = clock
        self._retry_delay = retry_delay
        self._objects: dict[Collection, dict[Key, Object]] = {c: {} for c in self._collections}
        self._watches: list[IWatch] = []
        self._listeners: list[Callable[[WatchEvent], None]] = []
        self._syncing: Deferred[None] | None = None
        self._retry: IDelayedCall | None = None
        #: Fires once every collection has been listed and is being watched.
        self.ready: Deferred[None] = Deferred()
        #: Grows with every change applied, so that what is built from the index can be cached.
        self.generation = 0
        #: True while the objects listed at start are being announced to listeners as ADDED.
        self.announcing = False

    # Reading.

    def get(self, collection: Collection, namespace: str, name: str) -> Object | None:
        """The object of that namespace ("" for cluster-scoped) and name, if it exists."""
        return self._objects[collection].get((namespace, name))

    def list(self, collection: Collection) -> list[Object]:
        """Every object of the collection, by namespace and then name."""
        objects = self._objects[collection]
        return [objects[key] for key in sorted(objects)]

    def synced(self) -> bool:
        """Whether the index holds everything stored (every collection is listed and watched)."""
        return self.ready.called

    def add_listener(self, listener: Callable[[WatchEvent], None]) -> None:
        """Call `listener` with every event, after the index has applied it."""
        self._listeners.append(listener)

    def relist(self) -> None:
        """List and watch again soon: the store reported that a watch stopped (a remote store's stream ended)."""
        listing = self._syncing is not None and not self._syncing.called
        if not self.running or listing or (self._retry is not None and self._retry.active()):
            return
        self._cancel_watches()
        self._retry = self._clock.callLater(0, self._sync)

    # Service life cycle.

    def startService(self) -> None:
        super().startService()
        self._sync()

    def stopService(self) -> None:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._syncing is not None:
            self._syncing.cancel()
        self._cancel_watches()

    def _sync(self) -> None:
        self._retry = None
        self._syncing = Deferred.fromCoroutine(self._list_and_watch())
        self._syncing.addErrback(self._sync_failed)

    def _sync_failed(self, failure: Failure) -> None:
        self._syncing = None
        self._cancel_watches()
        if failure.check(CancelledError) or not self.running:
            return
        collections = ", ".join(c.resource for c in self._collections)
        if failure.check(StorageError):
            # The store is away or refuses (etcd down, a rejected client certificate): one line, no traceback;
            # the storage and etcd readiness checks say so too.
            _log.warn("could not list and watch {collections}: {error}; retrying in {delay} s",
                      collections=collections, error=str(failure.value), delay=self._retry_delay)
        else:
            _log.failure("could not list and watch {collections}; retrying in {delay} s", failure,
                         collections=collections, delay=self._retry_delay)
        self._retry = self._clock.callLater(self._retry_delay, self._sync)

    async def _list_and_watch(self) -> None:
        self._cancel_watches()
        for collection in self._collections:
            for attempt in range(EXPIRED_RETRIES):
                result = await self._store.list(collection, None)
                # The list goes in first: the watch may replay the changes made since it, synchronously.
                self._replace(collection, result.items, result.resource_version)
                try:
                    self._watches.append(self._store.watch(collection, None, result.resource_version, self._apply))
                except ExpiredError:
                    if attempt == EXPIRED_RETRIES - 1:
                        raise
                    continue
                break
        self._syncing = None
        if not self.ready.called:
            self.ready.callback(None)
            self.announcing = True
            try:
                for collection in self._collections:
                    for item in self.list(collection):
                        self._notify(_event("ADDED", item, collection))
            finally:
                self.announcing = False

    def _cancel_watches(self) -> None:
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.cancel()

    # Applying changes.

    def _replace(self, collection: Collection, items: Sequence[Object], resource_version: int) -> None:
        """Take a fresh list; once synced (a list after a failed watch), announce what changed meanwhile."""
        self.generation += 1
        previous = self._objects[collection]
        current = self._objects[collection] = {_key(item): item for item in items}
        if not self.synced():
            return
        for key, item in previous.items():
            if key not in current:
                self._notify(_event("DELETED", item, collection))
        for key, item in current.items():
            before = previous.get(key)
            if before is None:
                self._notify(_event("ADDED", item, collection))
            elif before.get("metadata", {}).get("resourceVersion") != item["metadata"].get("resourceVersion"):
                changed = _event("MODIFIED", item, collection)
                self._notify(WatchEvent("MODIFIED", item, changed.resource_version, collection, changed.namespace,
                                        changed.name, previous=before))

    def _apply(self, event: WatchEvent) -> None:
        if event.type == EXPIRED:
            # The store lost track of what changed: list everything again (listeners see the differences).
            self.relist()
            return
        self.generation += 1
        objects = self._objects[event.collection]
        key = event.namespace, event.name
        if event.type == "DELETED":
            objects.pop(key, None)
        else:
            objects[key] = event.object
        if self.synced():
            self._notify(event)

    def _notify(self, event: WatchEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                _log.failure("a listener of {resource} failed on the {type} event of {name}",
                             resource=event.collection.resource, type=event.type, name=event.name)


def _key(item: Object) -> Key:
    meta = item["metadata"]
    return meta.get("namespace", ""), meta["name"]


def _event(kind: str, item: Object, collection: Collection) -> WatchEvent:
    """An event announcing an object as the index holds it (its own resourceVersion)."""
    namespace, name = _key(item)
    return WatchEvent(kind, item, int(item["metadata"].get("resourceVersion") or 0), collection, namespace, name)
