"""The routing table, pushed from the shared informer: what each group-version is served by, at every moment."""

from __future__ import annotations

import base64
import copy
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent

from grafana_aggregator.aggregation.proxy import Proxy
from grafana_aggregator.aggregation.routing import ProxyMaker, Route
from grafana_aggregator.aggregation.upstream import Backend, UpstreamClients
from grafana_aggregator.apimachinery.discovery import aggregated_resources
from grafana_aggregator.example.server import example_group_version
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage.memory import MemoryStore

from .support import CertificateAuthority, ServedApis, serve_apis

GROUP, VERSION = "remote.grafana.app", "v1"
NAME = f"{VERSION}.{GROUP}"
LOCAL = example_group_version()
RESOURCES = [{"resource": "things", "responseKind": {"group": GROUP, "version": VERSION, "kind": "Thing"},
              "scope": "Namespaced", "singularResource": "thing", "verbs": ["get", "list"]}]


def apiservice(name: str = NAME, group: str = GROUP, version: str = VERSION, available: bool = True,
               service: str | None = "remote", port: int = 7443, **spec: Any) -> dict[str, Any]:
    """An APIService; `service=None` makes it Local."""
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"name": service, "namespace": "grafana", "port": port} if service else None, **spec},
            "status": {"conditions": [{"type": "Available", "status": "True" if available else "False",
                                       "reason": "Passed" if available else "FailedDiscoveryCheck"}]}}


def externalname(host: str = "backend.test", name: str = "remote") -> dict[str, Any]:
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": name, "namespace": "grafana"}, "spec": {"host": host} if host else {}}


class RoutingTableTests(SynchronousTestCase):
    """The table follows every change of the APIServices and ExternalNames at once."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        #: (APIService name, backend) of every proxy made.
        self.made: list[tuple[str, Backend]] = []
        self.maker = ProxyMaker(self.clock, self.agent_for)
        self.served: ServedApis = serve_apis(self.store, self.clock, [LOCAL], proxy_for=self.proxy_for)
        self.routing = self.served.routing

    def agent_for(self, backend: Backend) -> IAgent:
        return object()  # type: ignore[return-value]  # never asked anything here

    def proxy_for(self, name: str, backend: Backend) -> Proxy:
        self.made.append((name, backend))
        return self.maker(name, backend)

    def wait(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def create(self, collection: Any, namespace: str, obj: dict[str, Any]) -> None:
        self.wait(self.store.create(collection, namespace, obj["metadata"]["name"], copy.deepcopy(obj)))

    def update(self, collection: Any, namespace: str, obj: dict[str, Any]) -> None:
        self.wait(self.store.update(collection, namespace, obj["metadata"]["name"], copy.deepcopy(obj)))

    def route(self) -> Route:
        route = self.routing.lookup(GROUP, VERSION)
        assert route is not None
        return route

    def test_new_remote_apiservice_routed_at_once(self) -> None:
        """A remote APIService created with its ExternalName has a route with a proxy to its backend at once."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.assertIsNone(self.routing.lookup(GROUP, VERSION))
        self.create(APISERVICES, "", apiservice())
        route = self.route()
        assert route.proxy is not None
        self.assertEqual((route.name, route.available, route.problem, route.remote, route.local),
                         (NAME, True, None, True, None))
        self.assertEqual((route.proxy.name, route.proxy.backend.url), (NAME, "https://backend.test:7443"))
        self.assertEqual(self.made, [(NAME, route.proxy.backend)])
        self.assertEqual(route.apiservice, self.served.informer.get(APISERVICES, "", NAME))

    def test_proxy_kept_across_status_changes(self) -> None:
        """Status-only changes keep the route's proxy; the route's availability follows the condition."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice())
        proxy = self.route().proxy
        self.update(APISERVICES, "", apiservice(available=False))
        self.assertEqual((self.route().available, self.route().proxy), (False, proxy))
        self.assertIs(self.route().proxy, proxy)
        self.update(APISERVICES, "", apiservice(available=True))
        self.assertTrue(self.route().available)
        self.assertIs(self.route().proxy, proxy)
        self.assertEqual(len(self.made), 1)

    def test_proxy_rebuilt_when_the_spec_changes_the_backend(self) -> None:
        """A new port (or TLS policy) in the spec gets a new proxy to the new backend."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice())
        first = self.route().proxy
        self.update(APISERVICES, "", apiservice(port=8443))
        second = self.route().proxy
        assert first is not None and second is not None
        self.assertIsNot(second, first)
        self.assertEqual(second.backend.url, "https://backend.test:8443")
        self.update(APISERVICES, "", apiservice(port=8443, insecureSkipTLSVerify=True))
        third = self.route().proxy
        assert third is not None
        self.assertIsNot(third, second)
        self.assertTrue(third.backend.insecure)
        self.assertEqual(len(self.made), 3)

    def test_proxy_rebuilt_when_the_externalname_host_changes(self) -> None:
        """A moved ExternalName gets its APIServices new proxies to the new host; an unrelated one changes nothing."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(EXTERNALNAMES, "grafana", externalname("other.test", name="other"))
        self.create(APISERVICES, "", apiservice())
        first = self.route().proxy
        self.update(EXTERNALNAMES, "grafana", externalname("other-moved.test", name="other"))
        self.assertIs(self.route().proxy, first)
        self.update(EXTERNALNAMES, "grafana", externalname("moved.test"))
        moved = self.route().proxy
        assert moved is not None
        self.assertIsNot(moved, first)
        self.assertEqual(moved.backend.url, "https://moved.test:7443")
        self.assertEqual([backend.host for _, backend in self.made], ["backend.test", "moved.test"])

    def test_missing_externalname_is_a_problem(self) -> None:
        """Without its ExternalName a remote APIService has a route with a problem and no proxy, until it arrives."""
        self.create(APISERVICES, "", apiservice())
        route = self.route()
        self.assertEqual((route.proxy, route.available, route.problem),
                         (None, True, 'service/remote in "grafana" is not present'))
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.assertIsNotNone(self.route().proxy)
        self.assertIsNone(self.route().problem)
        self.wait(self.store.delete(EXTERNALNAMES, "grafana", "remote"))
        self.assertEqual((self.route().proxy, self.route().problem), (None, 'service/remote in "grafana" is not present'))

    def test_externalname_without_host_is_a_problem(self) -> None:
        """An ExternalName without a host leaves the route without a proxy and says why."""
        self.create(EXTERNALNAMES, "grafana", externalname(host=""))
        self.create(APISERVICES, "", apiservice())
        self.assertEqual((self.route().proxy, self.route().problem), (None, 'service/remote in "grafana" has no host'))
        self.assertEqual(self.made, [])

    def test_bad_ca_bundle_is_a_problem(self) -> None:
        """A caBundle without a certificate leaves the route without a proxy; a good one gets a proxy."""
        clients = UpstreamClients(self.clock, None, None)
        served = serve_apis(self.store, self.clock, proxy_for=ProxyMaker(self.clock, clients.agent_for))
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice(caBundle=base64.b64encode(b"not a certificate").decode()))
        route = served.routing.lookup(GROUP, VERSION)
        assert route is not None
        self.assertEqual((route.proxy, route.problem), (None, "the APIService's caBundle holds no PEM certificate"))
        pem = CertificateAuthority().issued.cert_pem
        self.update(APISERVICES, "", apiservice(caBundle=base64.b64encode(pem).decode()))
        route = served.routing.lookup(GROUP, VERSION)
        assert route is not None and route.proxy is not None
        self.assertEqual((route.problem, route.proxy.backend.ca_bundle), (None, pem))

    def test_not_proxied(self) -> None:
        """With proxying disabled, a remote APIService's route has no proxy and says so."""
        served = serve_apis(self.store, self.clock, proxy_for=None)
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice())
        route = served.routing.lookup(GROUP, VERSION)
        assert route is not None
        self.assertEqual((route.proxy, route.available, route.problem),
                         (None, True, "remote API groups are not proxied"))

    def test_deletion_drops_the_route(self) -> None:
        """A deleted APIService has no route any more (a 404, not a 503)."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice())
        self.wait(self.store.delete(APISERVICES, "", NAME))
        self.assertIsNone(self.routing.lookup(GROUP, VERSION))
        # The ExternalName no longer names it: changing it makes no route come back.
        self.update(EXTERNALNAMES, "grafana", externalname("moved.test"))
        self.assertIsNone(self.routing.lookup(GROUP, VERSION))
        self.assertEqual(len(self.made), 1)

    def test_turning_local_drops_the_remote_route(self) -> None:
        """A remote APIService turned Local (of a group-version not served here) leaves the group-version unrouted."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice())
        self.update(APISERVICES, "", apiservice(service=None))
        self.assertIsNone(self.routing.lookup(GROUP, VERSION))

    def test_local_group_versions_route_to_their_handler(self) -> None:
        """A local group-version routes to its handler before anything is stored, and whatever its APIService says."""
        route = self.routing.lookup(LOCAL.group, LOCAL.version)
        assert route is not None
        handler = route.local
        self.assertIsNotNone(handler)
        self.assertEqual((route.name, route.remote, route.proxy), (f"{LOCAL.version}.{LOCAL.group}", False, None))
        self.create(EXTERNALNAMES, "grafana", externalname())
        claim = apiservice(f"{LOCAL.version}.{LOCAL.group}", LOCAL.group, LOCAL.version, available=False)
        self.create(APISERVICES, "", claim)
        route = self.routing.lookup(LOCAL.group, LOCAL.version)
        assert route is not None
        self.assertIs(route.local, handler)
        self.assertEqual(self.routing.resources_for(LOCAL.group, LOCAL.version), aggregated_resources(LOCAL.infos))

    def test_misnamed_apiservice_not_routed(self) -> None:
        """An APIService whose name is not `<version>.<group>` routes nothing."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice(name="v2.remote.grafana.app"))
        self.assertIsNone(self.routing.lookup(GROUP, VERSION))
        self.assertIsNone(self.routing.lookup(GROUP, "v2"))

    def test_resources_for(self) -> None:
        """Local resources always; a remote one's cached resources only while Available; None otherwise."""
        self.assertEqual(self.routing.resources_for(LOCAL.group, LOCAL.version), aggregated_resources(LOCAL.infos))
        self.assertIsNone(self.routing.resources_for(GROUP, VERSION))
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.create(APISERVICES, "", apiservice())
        self.assertIsNone(self.routing.resources_for(GROUP, VERSION))
        self.served.discovery.store(NAME, RESOURCES)
        self.assertEqual(self.routing.resources_for(GROUP, VERSION), RESOURCES)
        self.update(APISERVICES, "", apiservice(available=False))
        self.assertIsNone(self.routing.resources_for(GROUP, VERSION))
        self.update(APISERVICES, "", apiservice(available=True))
        self.assertEqual(self.routing.resources_for(GROUP, VERSION), RESOURCES)
        self.served.discovery.forget(NAME)
        self.assertIsNone(self.routing.resources_for(GROUP, VERSION))

    def test_generation_follows_the_informer_and_the_discovery_cache(self) -> None:
        """The generation changes with every stored change and every change of a backend's document, and only then."""
        seen = [self.routing.generation]
        self.create(EXTERNALNAMES, "grafana", externalname())
        seen.append(self.routing.generation)
        self.create(APISERVICES, "", apiservice())
        seen.append(self.routing.generation)
        self.served.discovery.store(NAME, RESOURCES)
        seen.append(self.routing.generation)
        self.assertEqual(len(set(seen)), 4)
        self.served.discovery.store(NAME, copy.deepcopy(RESOURCES))
        self.assertEqual(self.routing.generation, seen[-1])
        self.update(APISERVICES, "", apiservice(available=False))
        self.assertNotIn(self.routing.generation, seen)

    def test_apiservices_and_synced(self) -> None:
        """Until the informer has listed the store the table is not synced; then it lists every APIService by name."""
        self.create(APISERVICES, "", apiservice(name="v1.b.grafana.app", group="b.grafana.app"))
        self.create(APISERVICES, "", apiservice(name="v1.a.grafana.app", group="a.grafana.app"))
        served = serve_apis(self.store, self.clock, start=False)
        self.assertFalse(served.routing.synced())
        self.assertEqual(served.routing.apiservices(), [])
        served.informer.startService()
        self.assertTrue(served.routing.synced())
        self.assertEqual([a["metadata"]["name"] for a in served.routing.apiservices()],
                         ["v1.a.grafana.app", "v1.b.grafana.app"])
        self.assertIsNotNone(served.routing.lookup("a.grafana.app", "v1"))
