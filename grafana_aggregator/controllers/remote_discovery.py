"""The discovery documents of remote backends, fetched and cached so `/apis` can list their resources.

As kube-aggregator's discovery manager does: every remote APIService's backend is asked for its
aggregated `/apis` (v2, with the cached ETag), falling back to the legacy `/apis/<group>/<version>`;
a group-version whose backend fails is listed Stale with no resources; fetches run concurrently
with a 5 s timeout, at start (gating readiness), whenever an APIService or ExternalName changes,
every 60 s, and after a failure with a backoff from 0.5 s up to 60 s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..apimachinery.discovery import AGGREGATED_KIND, DISCOVERY_GROUP
from ..registry.apiservice import is_local
from ..storage import WatchEvent
from ..aggregation.upstream import Backend, BackendUnresolvable, resolve_backend
from .batches import in_batches
from .apiservice_index import APISERVICES, APIServiceIndex

_log = Logger()

REFRESH_INTERVAL = 60.0
FETCH_TIMEOUT = 5.0
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 60.0
#: Fetches started in one reactor turn by a refresh; the rest follow in later turns.
BATCH = 100
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
AGGREGATED_ACCEPT = f"application/json;g={DISCOVERY_GROUP};v=v2;as={AGGREGATED_KIND}"


def aggregated_from_resource_list(group: str, version: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """Convert a legacy APIResourceList into aggregated-discovery resources (subresources under their parent)."""
    resources: dict[str, dict[str, Any]] = {}
    subresources: list[tuple[str, dict[str, Any]]] = []
    for entry in document.get("resources") or []:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("kind"):
            continue
        kind = {"group": entry.get("group") or group, "version": entry.get("version") or version,
                "kind": entry["kind"]}
        name = str(entry["name"])
        if "/" in name:
            parent, _, subresource = name.partition("/")
            subresources.append((parent, {"subresource": subresource, "responseKind": kind,
                                          "verbs": list(entry.get("verbs") or [])}))
            continue
        item: dict[str, Any] = {"resource": name, "responseKind": kind,
                                "scope": "Namespaced" if entry.get("namespaced") else "Cluster",
                                "singularResource": entry.get("singularName") or "",
                                "verbs": list(entry.get("verbs") or [])}
        if entry.get("shortNames"):
            item["shortNames"] = list(entry["shortNames"])
        if entry.get("categories"):
            item["categories"] = list(entry["categories"])
        resources[name] = item
    for parent, described in subresources:
        if parent in resources:
            resources[parent].setdefault("subresources", []).append(described)
    return list(resources.values())


def resources_from_aggregated(group: str, version: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of one group-version in a backend's APIGroupDiscoveryList ([] when it does not list it)."""
    for item in document.get("items") or []:
        if (item.get("metadata") or {}).get("name") != group:
            continue
        for entry in item.get("versions") or []:
            if entry.get("version") == version:
                resources = list(entry.get("resources") or [])
                for resource in resources:
                    resource.setdefault("responseKind", {})
                    for sub in resource.get("subresources") or []:
                        sub.setdefault("responseKind", {})
                return resources
    return []


def _is_aggregated(content_type: str) -> bool:
    params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip()
              for p in content_type.split(";")[1:] if "=" in p}
    return params.get("g") == DISCOVERY_GROUP and params.get("v") == "v2" and params.get("as") == AGGREGATED_KIND


@define
class _Cached:
    """A backend's last aggregated document and its ETag."""

    etag: str
    document: dict[str, Any]


@define
class _Tracked:
    """Per-APIService state: the last result, the retry backoff and the pending retry."""

    resources: list[dict[str, Any]] | None = None
    backoff: float = INITIAL_BACKOFF
    retry: IDelayedCall | None = None
    fetching: Deferred[None] | None = None
    again: bool = False
    errors: int = field(default=0)


class RemoteDiscovery(TimerService):
    """Keeps the resources of every remote group-version, for aggregated `/apis`."""

    def __init__(self, index: APIServiceIndex, client_for: Callable[[Backend], Any], clock: IReactorTime,
                 interval: float = REFRESH_INTERVAL):
        super().__init__(interval, self.refresh)
        self.clock = clock
        self._index = index
        self._client_for = client_for
        self._clock = clock
        self._tracked: dict[str, _Tracked] = {}
        self._cache: dict[str, _Cached] = {}
        #: True once every remote APIService known at start was fetched once (successfully or not).
        self.synced = False
        #: Grows whenever the resources known for some group-version change, so discovery can be cached.
        self.generation = 0
        index.listeners.append(self._changed)

    def startService(self) -> None:
        super().startService()

    def stopService(self) -> Any:
        for tracked in self._tracked.values():
            if tracked.retry is not None and tracked.retry.active():
                tracked.retry.cancel()
            if tracked.fetching is not None:
                tracked.fetching.cancel()
        return super().stopService()

    def resources_for(self, group: str, version: str) -> list[dict[str, Any]] | None:
        """The resources of a remote group-version; None when unknown or failing (listed Stale)."""
        tracked = self._tracked.get(f"{version}.{group}")
        return tracked.resources if tracked is not None else None

    def refresh(self) -> Deferred[Any]:
        """Fetch every remote group-version's discovery concurrently; fires when all are done (never fails)."""
        names = {a["metadata"]["name"] for a in self._index.apiservices() if not is_local(a)}
        for name in list(self._tracked):
            if name not in names:
                self._forget(name)
        return Deferred.fromCoroutine(self._fetch_all(sorted(names)))

    async def _fetch_all(self, names: list[str]) -> None:
        fetches = await in_batches(self._clock, names, BATCH, self._fetch_soon)
        await DeferredList(fetches, consumeErrors=True)
        self.synced = True

    def _changed(self, event: WatchEvent) -> None:
        if not self.running:
            return
        if event.collection == APISERVICES:
            if event.type == "DELETED":
                self._forget(event.name)
                return
            previous = event.previous or {}
            if not is_local(event.object) and previous.get("spec") != event.object.get("spec"):
                self._fetch_soon(event.name)
            return
        # An ExternalName changed: re-fetch the APIServices that point at it.
        for apiservice in self._index.apiservices():
            service = apiservice.get("spec", {}).get("service") or {}
            if (service.get("namespace"), service.get("name")) == (event.namespace, event.name):
                self._fetch_soon(apiservice["metadata"]["name"])

    def _forget(self, name: str) -> None:
        tracked = self._tracked.pop(name, None)
        self.generation += 1
        if tracked is not None and tracked.retry is not None and tracked.retry.active():
            tracked.retry.cancel()

    def _fetch_soon(self, name: str) -> Deferred[None]:
        tracked = self._tracked.setdefault(name, _Tracked())
        if tracked.fetching is not None:
            tracked.again = True
            return tracked.fetching
        if tracked.retry is not None and tracked.retry.active():
            tracked.retry.cancel()
        fetching = Deferred.fromCoroutine(self._fetch(name, tracked))
        # A fetch that completed synchronously has already cleared its state; only a pending one is recorded.
        tracked.fetching = None if fetching.called else fetching
        return fetching

    async def _fetch(self, name: str, tracked: _Tracked) -> None:
        try:
            while True:
                tracked.again = False
                ok = await self._fetch_once(name, tracked)
                if not tracked.again:
                    break
        finally:
            tracked.fetching = None
        if self._tracked.get(name) is not tracked or not self.running:
            return
        if ok:
            tracked.backoff = INITIAL_BACKOFF
        else:
            tracked.retry = self._clock.callLater(tracked.backoff, self._fetch_soon, name)
            tracked.backoff = min(tracked.backoff * 2, MAX_BACKOFF)

    async def _fetch_once(self, name: str, tracked: _Tracked) -> bool:
        apiservice = self._index.apiservice_named(name)
        if apiservice is None or is_local(apiservice):
            return True
        spec = apiservice.get("spec", {})
        group, version = spec.get("group", ""), spec.get("version", "")
        unresolvable = True
        try:
            backend = resolve_backend(apiservice, self._index.externalname_for(apiservice))
            client = self._client_for(backend)
            unresolvable = False
            resources = await self._discover(client, backend, group, version)
            if resources != tracked.resources:
                self.generation += 1
            tracked.resources = resources
            tracked.errors = 0
            return True
        except Exception as error:
            if tracked.resources is not None:
                self.generation += 1
            tracked.resources = None
            tracked.errors += 1
            if tracked.errors == 1:
                _log.info("discovery of {group}/{version} failed: {error}", group=group, version=version,
                          error=_describe(error))
            # Without a usable ExternalName there is nothing to retry: its arrival (or a change of the
            # APIService) starts a fetch.  Retrying anyway would wake every such APIService at once.
            return unresolvable

    async def _discover(self, client: Any, backend: Backend, group: str, version: str) -> list[dict[str, Any]]:
        key = backend.url
        cached = self._cache.get(key)
        headers = {"X-Remote-User": ["system:kube-aggregator"], "X-Remote-Group": ["system:masters"],
                   "Accept": [AGGREGATED_ACCEPT]}
        if cached is not None:
            headers["If-None-Match"] = [cached.etag]
        response = await client.get(f"{backend.url}/apis", headers=headers, allow_redirects=False,
                                    timeout=FETCH_TIMEOUT)
        body = await response.content()
        content_type = (response.headers.getRawHeaders("content-type") or [""])[0]
        if response.code == 304 and cached is not None:
            return resources_from_aggregated(group, version, cached.document)
        if response.code == 503:
            raise BackendUnresolvable(f"service {backend.host}:{backend.port} returned non-success response code: 503")
        if response.code == 200 and _is_aggregated(content_type) and len(body) <= MAX_DOCUMENT_BYTES:
            document = json.loads(body)
            etag = (response.headers.getRawHeaders("etag") or [""])[0]
            if etag:
                self._cache[key] = _Cached(etag, document)
            return resources_from_aggregated(group, version, document)
        path = f"/apis/{group}/{version}"
        response = await client.get(backend.url + path, headers={"X-Remote-User": ["system:kube-aggregator"],
                                                                 "Accept": ["application/json"]},
                                    allow_redirects=False, timeout=FETCH_TIMEOUT)
        body = await response.content()
        if response.code != 200 or len(body) > MAX_DOCUMENT_BYTES:
            raise BackendUnresolvable(f"failed to download legacy discovery for {path}: {body[:200]!r}")
        return aggregated_from_resource_list(group, version, json.loads(body))


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
