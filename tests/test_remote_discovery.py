"""The routing index over storage watches, and the cache of remote backends' discovery documents."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from grafana_aggregator.controllers.apiservice_index import APISERVICES, EXTERNALNAMES, APIServiceIndex
from grafana_aggregator.controllers import remote_discovery
from grafana_aggregator.controllers.remote_discovery import RemoteDiscovery, aggregated_from_resource_list
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.aggregation.upstream import Backend

RESOURCE_LIST = {
    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "example.grafana.app/v0alpha1",
    "resources": [
        {"name": "dummy", "singularName": "dummy", "namespaced": True, "kind": "DummyResource", "verbs": ["get", "list"]},
        {"name": "dummy/sub", "singularName": "", "namespaced": True, "kind": "DummySubresource", "verbs": ["get"]},
        {"name": "runtime", "singularName": "runtime", "namespaced": False, "kind": "RuntimeInfo", "verbs": ["list"]},
    ],
}


def apiservice(available: bool = True) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v0alpha1.example.grafana.app"},
            "spec": {"group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 1000,
                     "versionPriority": 15, "service": {"name": "example", "namespace": "grafana", "port": 7443}},
            "status": {"conditions": [{"type": "Available", "status": "True" if available else "False",
                                       "reason": "Passed" if available else "FailedDiscoveryCheck"}]}}


EXTERNALNAME = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                "metadata": {"name": "example", "namespace": "grafana"}, "spec": {"host": "backend.test"}}


AGGREGATED = {
    "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
    "items": [{"metadata": {"name": "example.grafana.app"}, "versions": [{"version": "v0alpha1", "resources": [
        {"resource": "dummy", "responseKind": {"group": "example.grafana.app", "version": "v0alpha1",
                                               "kind": "DummyResource"},
         "scope": "Namespaced", "singularResource": "dummy", "verbs": ["get", "list"]}]}]}],
}
AGGREGATED_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


class FakeBackend(Resource):
    """Serves legacy discovery, or aggregated /apis with an ETag when `aggregated` is set."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.code = 200
        self.aggregated = False
        self.seen: list[tuple[bytes, list[str]]] = []

    def render(self, request: IRequest) -> bytes:
        self.seen.append((request.uri, request.requestHeaders.getRawHeaders("x-remote-user", [])))
        request.setResponseCode(self.code)
        if self.aggregated and request.uri == b"/apis":
            if request.getHeader(b"if-none-match") == b'"v1"':
                request.setResponseCode(304)
                return b""
            request.setHeader(b"Content-Type", AGGREGATED_TYPE.encode())
            request.setHeader(b"ETag", b'"v1"')
            return json.dumps(AGGREGATED).encode()
        if request.uri == b"/apis":
            request.setResponseCode(404)
            return b"{}"
        return json.dumps(RESOURCE_LIST).encode()


class RemoteDiscoveryTests(SynchronousTestCase):
    """Fetching, converting and forgetting remote discovery documents."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.clock = Clock()
        self.index = APIServiceIndex(self.store)
        self.index.startService()
        self.backend = FakeBackend()
        self.backends: list[Backend] = []

        def client_for(backend: Backend) -> StubTreq:
            self.backends.append(backend)
            return StubTreq(self.backend)

        self.discovery = RemoteDiscovery(self.index, client_for, self.clock)

    def create(self, collection: Any, namespace: str, obj: dict[str, Any]) -> None:
        self.successResultOf(Deferred.fromCoroutine(
            self.store.create(collection, namespace, obj["metadata"]["name"], obj)))

    def test_conversion(self) -> None:
        """A legacy APIResourceList becomes aggregated resources with subresources under their parent."""
        self.assertEqual(aggregated_from_resource_list("example.grafana.app", "v0alpha1", RESOURCE_LIST), [
            {"resource": "dummy",
             "responseKind": {"group": "example.grafana.app", "version": "v0alpha1", "kind": "DummyResource"},
             "scope": "Namespaced", "singularResource": "dummy", "verbs": ["get", "list"],
             "subresources": [{"subresource": "sub", "responseKind": {"group": "example.grafana.app",
                                                                      "version": "v0alpha1",
                                                                      "kind": "DummySubresource"},
                               "verbs": ["get"]}]},
            {"resource": "runtime",
             "responseKind": {"group": "example.grafana.app", "version": "v0alpha1", "kind": "RuntimeInfo"},
             "scope": "Cluster", "singularResource": "runtime", "verbs": ["list"]},
        ])

    def test_fetched_when_available(self) -> None:
        """An available remote APIService's resources are fetched as system:kube-aggregator at the ExternalName host."""
        self.create(EXTERNALNAMES, "grafana", EXTERNALNAME)
        self.create(APISERVICES, "", apiservice())
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        resources = self.discovery.resources_for("example.grafana.app", "v0alpha1")
        assert resources is not None
        self.assertEqual([r["resource"] for r in resources], ["dummy", "runtime"])
        self.assertEqual(self.backend.seen, [(b"/apis", ["system:kube-aggregator"]),
                                             (b"/apis/example.grafana.app/v0alpha1", ["system:kube-aggregator"])])
        self.assertEqual(self.backends[0].url, "https://backend.test:7443")
        self.assertTrue(self.discovery.synced)

    def test_refresh_spreads_over_reactor_turns(self) -> None:
        """A refresh starts BATCH fetches per reactor turn, so a thousand APIServices never stall requests."""
        self.patch(remote_discovery, "BATCH", 2)
        self.create(EXTERNALNAMES, "grafana", EXTERNALNAME)
        for index in range(5):
            api = apiservice()
            api["metadata"]["name"] = f"v0alpha1.g{index}.example.com"
            api["spec"]["group"] = f"g{index}.example.com"
            self.create(APISERVICES, "", api)
        # Not started: creating the APIServices fetches nothing, so what is seen is the refresh's own doing.
        before = len(self.backend.seen)
        refreshed = self.discovery.refresh()
        groups = {uri.split(b"/")[2] for uri, _ in self.backend.seen[before:] if uri.count(b"/") >= 3}
        self.assertEqual(len(groups), 2)
        self.assertNoResult(refreshed)
        self.clock.advance(0)
        groups = {uri.split(b"/")[2] for uri, _ in self.backend.seen[before:] if uri.count(b"/") >= 3}
        self.assertEqual(len(groups), 5)
        self.successResultOf(refreshed)
        self.assertTrue(self.discovery.synced)

    def test_aggregated_with_etag(self) -> None:
        """A backend serving aggregated discovery is asked with its ETag afterwards; a 304 keeps the resources."""
        self.backend.aggregated = True
        self.create(EXTERNALNAMES, "grafana", EXTERNALNAME)
        self.create(APISERVICES, "", apiservice())
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        self.clock.advance(60)
        resources = self.discovery.resources_for("example.grafana.app", "v0alpha1")
        assert resources is not None
        self.assertEqual([r["resource"] for r in resources], ["dummy"])
        self.assertEqual([uri for uri, _ in self.backend.seen], [b"/apis", b"/apis"])

    def test_failure_retried_with_backoff(self) -> None:
        """A failing backend is listed Stale and retried after 0.5 s, 1 s, 2 s … until it answers."""
        self.backend.code = 500
        self.create(EXTERNALNAMES, "grafana", EXTERNALNAME)
        self.create(APISERVICES, "", apiservice())
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        self.assertIsNone(self.discovery.resources_for("example.grafana.app", "v0alpha1"))
        first = len(self.backend.seen)
        self.clock.advance(0.5)
        self.assertEqual(len(self.backend.seen), 2 * first)
        self.backend.code = 200
        self.clock.advance(1)
        self.assertIsNotNone(self.discovery.resources_for("example.grafana.app", "v0alpha1"))

    def test_missing_externalname_waits_for_it(self) -> None:
        """Without its ExternalName nothing is retried on a timer; the ExternalName's arrival starts the fetch."""
        self.create(APISERVICES, "", apiservice())
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        self.clock.pump([0.5] * 20)
        retries = [call for call in self.clock.getDelayedCalls() if call.func == self.discovery._fetch_soon]
        self.assertEqual((self.backend.seen, retries), ([], []))
        self.create(EXTERNALNAMES, "grafana", EXTERNALNAME)
        self.assertIsNotNone(self.discovery.resources_for("example.grafana.app", "v0alpha1"))

    def test_fetched_even_while_unavailable(self) -> None:
        """As kube does, discovery is attempted even while the APIService is not Available."""
        self.create(EXTERNALNAMES, "grafana", EXTERNALNAME)
        self.create(APISERVICES, "", apiservice(available=False))
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        self.assertIsNotNone(self.discovery.resources_for("example.grafana.app", "v0alpha1"))

    def test_spec_change_triggers_refresh_and_delete_forgets(self) -> None:
        """A changed APIService spec is fetched again at once; once deleted, its resources are forgotten."""
        self.create(EXTERNALNAMES, "grafana", EXTERNALNAME)
        self.create(APISERVICES, "", apiservice())
        self.discovery.startService()
        self.addCleanup(self.discovery.stopService)
        before = len(self.backend.seen)
        updated = apiservice()
        updated["spec"]["versionPriority"] = 16
        self.successResultOf(Deferred.fromCoroutine(self.store.update(APISERVICES, "", updated["metadata"]["name"],
                                                                      updated)))
        self.assertGreater(len(self.backend.seen), before)
        self.assertIsNotNone(self.discovery.resources_for("example.grafana.app", "v0alpha1"))
        self.successResultOf(Deferred.fromCoroutine(self.store.delete(APISERVICES, "", updated["metadata"]["name"])))
        self.clock.advance(0)
        self.assertIsNone(self.discovery.resources_for("example.grafana.app", "v0alpha1"))


class APIServiceIndexTests(SynchronousTestCase):
    """The routing table follows storage without a restart."""

    def test_follows_changes(self) -> None:
        """Created, changed and deleted APIServices and ExternalNames show up in lookups at once."""
        store = MemoryStore()
        index = APIServiceIndex(store)
        index.startService()
        self.assertIsNone(index.apiservice_for("example.grafana.app", "v0alpha1"))
        self.successResultOf(Deferred.fromCoroutine(store.create(APISERVICES, "", "v0alpha1.example.grafana.app",
                                                                 apiservice())))
        found = index.apiservice_for("example.grafana.app", "v0alpha1")
        assert found is not None
        self.assertIsNone(index.externalname_for(found))
        self.successResultOf(Deferred.fromCoroutine(store.create(EXTERNALNAMES, "grafana", "example", EXTERNALNAME)))
        self.assertEqual(index.externalname_for(found)["spec"]["host"], "backend.test")  # type: ignore[index]
        self.successResultOf(Deferred.fromCoroutine(store.delete(APISERVICES, "", "v0alpha1.example.grafana.app")))
        self.assertIsNone(index.apiservice_for("example.grafana.app", "v0alpha1"))
        index.stopService()
