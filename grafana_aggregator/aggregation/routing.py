# -*- test-case-name: tests.test_routing -*-
"""The routing table: group/version → how it is served, pushed from the shared informer on every change.

Modelled on kube-aggregator's per-APIService `proxyHandlingInfo`: whenever an APIService or the
ExternalName it names changes, its entry is rebuilt (or dropped) at once, so a request does one
lookup and finds everything it needs:

- a group-version served in this process: its local handler (whatever the APIService says);
- a remote APIService: its `Proxy` (backend, TLS policy and pooled agent, limiter, metrics), kept
  across status-only changes, and whether it is Available now;
- a remote APIService whose backend cannot be worked out (no ExternalName, a bad caBundle): why.

The table also answers what discovery needs: the APIServices, the resources of each group-version
(a remote one's only while it is Available and its backend's document is cached), and a token that
changes whenever either does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IAgent
from twisted.web.resource import IResource

from ..apimachinery.discovery import aggregated_resources
from ..apimachinery.strategy import LocalGroupVersion, Object
from ..registry.apiservice import APISERVICES, is_available, is_local, service_reference
from ..registry.externalname import EXTERNALNAMES
from ..storage import WatchEvent
from ..storage.informer import Informer
from .proxy import Proxy, UpstreamMeter
from .reachability import Reachability
from .remote_discovery import DiscoveryCache
from .upstream import MAX_CONNECTIONS_PER_BACKEND, Backend, BackendUnresolvable, resolve_backend

_log = Logger()


@frozen
class Route:
    """How one group-version is served right now."""

    #: The APIService's name (`<version>.<group>`).
    name: str
    #: The APIService as the informer holds it (None for a local group-version not registered yet).
    apiservice: Object | None = None
    #: The in-process handler, for a group-version served here.
    local: IResource | None = None
    #: The proxy to the backend of a remote APIService (kept while it is not Available, for reuse).
    proxy: Proxy | None = None
    #: Whether a remote APIService's Available condition is True.
    available: bool = False
    #: Why a remote APIService has no proxy (no ExternalName, no host, a bad caBundle, proxying disabled).
    problem: str | None = None
    #: With replicas: why this replica's own probe cannot reach the backend (it answers 503 itself).
    unreachable_here: str | None = None

    @property
    def remote(self) -> bool:
        return self.local is None


ProxyFactory = Callable[[str, Backend], Proxy]


class RoutingTable:
    """Every served group-version's Route, kept current by the informer's events.

    :param informer: the shared informer of APIServices and ExternalNames.
    :param local: the group-versions served in this process, each with its handler.
    :param discovery: the remote backends' discovery documents.
    :param proxy_for: makes the Proxy of an APIService for its backend (`None`: remote groups are not proxied).
    :param reachability: with replicas, this replica's own view of the backends: it decides, once known,
        whether a remote group-version is proxied here, whatever the shared condition says.
    :param refused_here: called with the APIService's name for each request refused because of that view.
    """

    def __init__(self, informer: Informer, local: Sequence[tuple[LocalGroupVersion, IResource]],
                 discovery: DiscoveryCache, proxy_for: ProxyFactory | None,
                 reachability: Reachability | None = None, refused_here: Callable[[str], None] | None = None):
        self._informer = informer
        self._reachability = reachability
        self.refused_here = refused_here or (lambda name: None)
        #: This replica's name, for the 503 it answers when its own view says a backend is not reachable.
        self.replica = reachability.replica if reachability is not None else ""
        self._discovery = discovery
        self._proxy_for = proxy_for
        self._local: dict[tuple[str, str], Route] = {}
        self._local_resources: dict[tuple[str, str], list[dict[str, Any]]] = {}
        #: Counts the local group-versions added after start (discovery is rebuilt when it changes).
        self._local_generation = 0
        for gv, handler in local:
            self._put_local(gv, handler)
        self._remote: dict[tuple[str, str], Route] = {}
        #: The group-version each APIService's route is under, by APIService name.
        self._keys: dict[str, tuple[str, str]] = {}
        #: The APIServices naming each ExternalName (namespace, name), so its change reaches them.
        self._naming: dict[tuple[str, str], set[str]] = {}
        informer.add_listener(self._changed)
        if reachability is not None:
            reachability.add_listener(self._rebuild_if_routed)

    def _put_local(self, gv: LocalGroupVersion, handler: IResource) -> None:
        key = (gv.group, gv.version)
        self._local[key] = Route(f"{gv.version}.{gv.group}", local=handler)
        self._local_resources[key] = aggregated_resources(gv.infos)

    def add_local(self, gv: LocalGroupVersion, handler: IResource) -> None:
        """Serve a group-version in this process from now on (one installed after start); a remote route of the
        same group-version is dropped."""
        self._put_local(gv, handler)
        self._local_generation += 1
        for name, key in list(self._keys.items()):
            if key == (gv.group, gv.version):
                self._rebuild(name)

    def remove_local(self, group: str, version: str) -> None:
        """Stop serving a group-version in this process (one installed after start); a remote APIService of it,
        if any, is routed again."""
        key = (group, version)
        if self._local.pop(key, None) is None:
            return
        self._local_resources.pop(key, None)
        self._local_generation += 1
        for apiservice in self._informer.list(APISERVICES):
            spec = apiservice.get("spec") or {}
            if (spec.get("group"), spec.get("version")) == key:
                self._rebuild(apiservice["metadata"]["name"])

    # What requests and discovery read.

    def lookup(self, group: str, version: str) -> Route | None:
        """The route of a group-version, if anything serves it."""
        key = (group, version)
        return self._local.get(key) or self._remote.get(key)

    def synced(self) -> bool:
        """Whether every stored APIService is in the table (until then an unknown path is 503, not 404)."""
        return self._informer.synced()

    def apiservices(self) -> list[Object]:
        """Every APIService, by name (the informer's own objects: not to be changed)."""
        return self._informer.list(APISERVICES)

    def resources_for(self, group: str, version: str) -> list[dict[str, Any]] | None:
        """The aggregated-discovery resources of a group-version; None when not known now (listed Stale)."""
        key = (group, version)
        local = self._local_resources.get(key)
        if local is not None:
            return local
        route = self._remote.get(key)
        if route is None or not route.available:
            return None
        return self._discovery.resources(route.name)

    @property
    def generation(self) -> Hashable:
        """Changes whenever what discovery is built from (APIServices, backends' documents) changes."""
        return self._informer.generation, self._discovery.generation, self._local_generation

    # Keeping the table current.

    def _changed(self, event: WatchEvent) -> None:
        if event.collection == APISERVICES:
            self._rebuild(event.name)
        elif event.collection == EXTERNALNAMES:
            for name in sorted(self._naming.get((event.namespace, event.name), ())):
                self._rebuild(name)

    def _rebuild_if_routed(self, name: str) -> None:
        if name in self._keys:
            self._rebuild(name)

    def _drop(self, name: str) -> None:
        key = self._keys.pop(name, None)
        if key is not None:
            self._remote.pop(key, None)
        for names in self._naming.values():
            names.discard(name)

    def _rebuild(self, name: str) -> None:
        apiservice = self._informer.get(APISERVICES, "", name)
        previous_key = self._keys.get(name)
        previous = self._remote.get(previous_key) if previous_key is not None else None
        self._drop(name)
        if apiservice is None:
            return
        spec = apiservice.get("spec") or {}
        group, version = str(spec.get("group") or ""), str(spec.get("version") or "")
        if name != f"{version}.{group}" or is_local(apiservice) or (group, version) in self._local:
            # Group-versions served here are routed to their handlers whatever the APIService says; a Local
            # APIService of a group-version not served here leaves it unserved (404), as in kube.
            return
        reference = service_reference(apiservice)
        self._naming.setdefault(reference, set()).add(name)
        self._keys[name] = (group, version)
        self._remote[(group, version)] = self._route(name, apiservice, reference, previous)

    def _route(self, name: str, apiservice: Object, reference: tuple[str, str], previous: Route | None) -> Route:
        available = is_available(apiservice)
        unreachable_here = None
        reach = self._reachability.get(name) if self._reachability is not None else None
        if reach is not None:
            # Each replica routes by its own probe: the shared condition may be True because another reaches it.
            available = reach.reachable
            unreachable_here = None if reach.reachable else reach.message
        if self._proxy_for is None:
            return Route(name, apiservice, available=available, problem="remote API groups are not proxied")
        externalname = self._informer.get(EXTERNALNAMES, *reference)
        try:
            backend = resolve_backend(apiservice, externalname)
        except BackendUnresolvable as error:
            return Route(name, apiservice, available=available, problem=str(error))
        if previous is not None and previous.proxy is not None and previous.proxy.backend == backend:
            return Route(name, apiservice, proxy=previous.proxy, available=available,
                         unreachable_here=unreachable_here)
        try:
            proxy = self._proxy_for(name, backend)
        except BackendUnresolvable as error:
            _log.info("no backend for {apiservice}: {error}", apiservice=name, error=str(error))
            return Route(name, apiservice, available=available, problem=str(error))
        return Route(name, apiservice, proxy=proxy, available=available, unreachable_here=unreachable_here)


class ProxyMaker:
    """Makes the Proxy of a remote APIService: its backend's pooled agent, and a limiter and metrics kept per name.

    :param agent_for: the pooled agent of a backend (BackendUnresolvable for a bad caBundle).
    :param meter_for: the metrics of an APIService's backend, if kept.
    :param on_unreachable: told the name of an APIService whose backend a request could not reach.
    :param extra_stripped: configured identity header names never forwarded from a client.
    """

    def __init__(self, clock: IReactorTime, agent_for: Callable[[Backend], IAgent], *,
                 meter_for: Callable[[str], UpstreamMeter] | None = None,
                 on_unreachable: Callable[[str], None] = lambda name: None,
                 extra_stripped: frozenset[str] = frozenset(),
                 max_in_flight: int = MAX_CONNECTIONS_PER_BACKEND):
        self._clock = clock
        self._agent_for = agent_for
        self._meter_for = meter_for
        self._on_unreachable = on_unreachable
        self._extra_stripped = extra_stripped
        self._max_in_flight = max_in_flight
        self._limiters: dict[str, DeferredSemaphore] = {}

    def __call__(self, name: str, backend: Backend) -> Proxy:
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = self._limiters[name] = DeferredSemaphore(self._max_in_flight)
        return Proxy(name, backend, self._agent_for(backend), self._clock, limiter=limiter,
                     meter=self._meter_for(name) if self._meter_for is not None else None,
                     on_unreachable=self._on_unreachable, extra_stripped=self._extra_stripped)
