"""An in-memory index of APIServices and ExternalNames kept current by storage watches: the routing table.

The proxy asks it, synchronously, which APIService serves a group-version and where its
ExternalName points; it follows every change without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..storage import Collection, ExpiredError, IStore, IWatch, WatchEvent

_log = Logger()

APISERVICES = Collection("apiregistration.k8s.io", "apiservices")
EXTERNALNAMES = Collection("service.grafana.app", "externalnames")


class APIServiceIndex(Service):
    """APIServices by group-version and ExternalNames by namespace/name, as currently stored."""

    def __init__(self, store: IStore):
        self._store = store
        self._apiservices: dict[str, dict[str, Any]] = {}
        self._externalnames: dict[tuple[str, str], dict[str, Any]] = {}
        self._watches: list[IWatch] = []
        self.ready: Deferred[None] | None = None
        #: Called with every WatchEvent after the index has applied it.
        self.listeners: list[Callable[[WatchEvent], None]] = []
        #: Grows with every change the index applies, so that what is built from it can be cached.
        self.generation = 0

    def startService(self) -> None:
        super().startService()
        self.ready = Deferred.fromCoroutine(self._sync())

    def stopService(self) -> None:
        super().stopService()
        for watch in self._watches:
            watch.cancel()
        self._watches = []

    async def _sync(self) -> None:
        for watch in self._watches:
            watch.cancel()
        self._watches = []
        for collection in (APISERVICES, EXTERNALNAMES):
            while True:
                result = await self._store.list(collection, None)
                self._replace(collection, result.items)
                for item in result.items:
                    meta = item["metadata"]
                    self._notify(WatchEvent("ADDED", item, result.resource_version, collection,
                                            meta.get("namespace", ""), meta["name"]))
                try:
                    self._watches.append(self._store.watch(collection, None, result.resource_version, self._event))
                    break
                except ExpiredError:
                    continue

    def _replace(self, collection: Collection, items: list[dict[str, Any]]) -> None:
        self.generation += 1
        if collection == APISERVICES:
            self._apiservices = {i["metadata"]["name"]: i for i in items}
        else:
            self._externalnames = {(i["metadata"].get("namespace", ""), i["metadata"]["name"]): i for i in items}

    def _event(self, event: WatchEvent) -> None:
        self.generation += 1
        if event.collection == APISERVICES:
            if event.type == "DELETED":
                self._apiservices.pop(event.name, None)
            else:
                self._apiservices[event.name] = event.object
        elif event.collection == EXTERNALNAMES:
            key = (event.namespace, event.name)
            if event.type == "DELETED":
                self._externalnames.pop(key, None)
            else:
                self._externalnames[key] = event.object
        self._notify(event)

    def _notify(self, event: WatchEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                _log.failure("APIService index listener failed")

    def apiservice_for(self, group: str, version: str) -> dict[str, Any] | None:
        """The APIService serving a group-version (named `<version>.<group>`), if any."""
        apiservice = self._apiservices.get(f"{version}.{group}")
        if apiservice is None:
            return None
        spec = apiservice.get("spec", {})
        if spec.get("group") != group or spec.get("version") != version:
            return None
        return apiservice

    def externalname_for(self, apiservice: dict[str, Any]) -> dict[str, Any] | None:
        """The ExternalName an APIService's spec.service names, if it exists."""
        service = apiservice.get("spec", {}).get("service") or {}
        return self._externalnames.get((service.get("namespace", ""), service.get("name", "")))

    def apiservice_named(self, name: str) -> dict[str, Any] | None:
        """The APIService of that name, if any."""
        return self._apiservices.get(name)

    def synced(self) -> bool:
        """Whether the index holds everything stored (its first list is done and it is watching)."""
        return self.ready is not None and self.ready.called

    def apiservices(self) -> list[dict[str, Any]]:
        """Every APIService, in name order (the index's own objects: callers must not change them)."""
        return [self._apiservices[name] for name in sorted(self._apiservices)]
