"""The discovery documents of remote backends, fetched and cached so `/apis` can list their resources.

For each remote APIService that is Available, the backend's `/apis/<group>/<version>` (an
APIResourceList) is fetched over the proxy's mutual-TLS transport as `system:kube-aggregator`,
periodically and whenever the set of APIServices changes; a backend that fails keeps its
group-version listed as Stale, and one slow backend never delays the others or `/apis` itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..registry.apiservice import is_available, is_local
from ..upstream import Backend, BackendUnresolvable, resolve_backend
from .apiservice_index import APIServiceIndex

_log = Logger()

REFRESH_INTERVAL = 10.0
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024


def aggregated_from_resource_list(group: str, version: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """Convert a legacy APIResourceList into aggregated-discovery resources (subresources under their parent)."""
    resources: dict[str, dict[str, Any]] = {}
    subresources: list[tuple[str, str, dict[str, Any]]] = []
    for entry in document.get("resources") or []:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("kind"):
            continue
        kind = {"group": entry.get("group") or group, "version": entry.get("version") or version,
                "kind": entry["kind"]}
        name = str(entry["name"])
        if "/" in name:
            parent, _, subresource = name.partition("/")
            subresources.append((parent, subresource, {"subresource": subresource, "responseKind": kind,
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
    for parent, _, described in subresources:
        if parent in resources:
            resources[parent].setdefault("subresources", []).append(described)
    return list(resources.values())


class RemoteDiscovery(TimerService):
    """Keeps the resources of every available remote group-version, refreshed on a timer."""

    def __init__(self, index: APIServiceIndex, client_for: Callable[[Backend], Any], clock: IReactorTime,
                 interval: float = REFRESH_INTERVAL):
        super().__init__(interval, self.refresh)
        self.clock = clock
        self._index = index
        self._client_for = client_for
        self._resources: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._clock = clock
        self._pending: Any = None
        index.listeners.append(self._changed)

    def _changed(self, event: Any) -> None:
        """Refresh soon after any APIService or ExternalName change (coalescing bursts of changes)."""
        if self.running and (self._pending is None or not self._pending.active()):
            self._pending = self._clock.callLater(0, self.refresh)

    def stopService(self) -> Any:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        return super().stopService()

    def resources_for(self, group: str, version: str) -> list[dict[str, Any]] | None:
        """The last fetched resources of a remote group-version, or None when unknown or failing (Stale)."""
        return self._resources.get((group, version))

    def refresh(self) -> Deferred[Any]:
        """Fetch every available remote group-version's discovery document, concurrently; never raises."""
        wanted = [a for a in self._index.apiservices() if not is_local(a)]
        keys = {(a["spec"].get("group", ""), a["spec"].get("version", "")) for a in wanted}
        for key in list(self._resources):
            if key not in keys:
                del self._resources[key]
        fetches = [Deferred.fromCoroutine(self._fetch(a)) for a in wanted]
        return DeferredList(fetches, consumeErrors=True)

    async def _fetch(self, apiservice: dict[str, Any]) -> None:
        spec = apiservice.get("spec", {})
        key = (spec.get("group", ""), spec.get("version", ""))
        if not is_available(apiservice):
            self._resources.pop(key, None)
            return
        try:
            backend = resolve_backend(apiservice, self._index.externalname_for(apiservice))
            client = self._client_for(backend)
            url = f"{backend.url}/apis/{key[0]}/{key[1]}"
            response = await client.get(url, headers={"X-Remote-User": ["system:kube-aggregator"],
                                                      "X-Remote-Group": ["system:masters"],
                                                      "Accept": ["application/json"]},
                                        allow_redirects=False, timeout=FETCH_TIMEOUT)
            body = await response.content()
            if response.code != 200 or len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"bad status from {url}: {response.code}")
            document = json.loads(body)
            self._resources[key] = aggregated_from_resource_list(key[0], key[1], document)
        except (BackendUnresolvable, ValueError) as error:
            self._resources.pop(key, None)
            _log.info("discovery of {group}/{version} failed: {error}", group=key[0], version=key[1], error=str(error))
        except Exception as error:
            self._resources.pop(key, None)
            _log.info("discovery of {group}/{version} failed: {error}", group=key[0], version=key[1],
                      error=str(error) or type(error).__name__)
