"""Tests for group-versions served in this process that come and go after start (the bundled group, CRDs): the
routing table, the OpenAPI documents and the Local APIService registration follow."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.apimachinery.strategy import LocalGroupVersion
from grafana_aggregator.controllers.local_apiservices import LocalAPIService
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.customresource import CustomResourceStrategy
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.web.openapi import OpenAPIResource

from .support import serve_apis
from .test_customresource import CERTIFICATES
from .test_local_apiservices import Harness
from .test_routing import apiservice, externalname

GV = LocalGroupVersion("cert-manager.io", "v1", (CustomResourceStrategy(CERTIFICATES, "v1"),))


class RoutingTests(SynchronousTestCase):
    def test_add_then_remove_local(self) -> None:
        """A group-version added after start is served and listed; removed, a remote APIService of it routes again."""
        store = MemoryStore()
        served = serve_apis(store, Clock(), proxy_for=lambda name, backend: object())  # type: ignore[arg-type,return-value]
        self.successResultOf(Deferred.fromCoroutine(store.create(
            APISERVICES, "", "v1.cert-manager.io", apiservice("v1.cert-manager.io", "cert-manager.io", "v1"))))
        from grafana_aggregator.registry.externalname import EXTERNALNAMES

        self.successResultOf(Deferred.fromCoroutine(store.create(EXTERNALNAMES, "grafana", "remote", externalname())))
        routing = served.routing
        before = routing.generation
        route = routing.lookup("cert-manager.io", "v1")
        assert route is not None
        self.assertTrue(route.remote)
        handler = Resource()
        routing.add_local(GV, handler)
        route = routing.lookup("cert-manager.io", "v1")
        assert route is not None
        self.assertIs(route.local, handler)
        self.assertEqual([r["resource"] for r in routing.resources_for("cert-manager.io", "v1") or []], ["certificates"])
        self.assertNotEqual(routing.generation, before)
        routing.remove_local("cert-manager.io", "v1")
        route = routing.lookup("cert-manager.io", "v1")
        assert route is not None
        self.assertTrue(route.remote)


class OpenAPITests(SynchronousTestCase):
    def test_group_replaced_and_removed(self) -> None:
        openapi = OpenAPIResource([], (1, 33))
        openapi.add_group(GV)
        openapi._current_v3()
        self.assertIn("apis/cert-manager.io/v1", openapi._v3)
        openapi.add_group(LocalGroupVersion("cert-manager.io", "v1", ()))
        openapi._current_v3()
        self.assertNotIn("apis/cert-manager.io/v1", openapi._v3)
        openapi.add_group(GV)
        openapi.remove_group("cert-manager.io", "v1")
        openapi._current_v3()
        self.assertNotIn("apis/cert-manager.io/v1", openapi._v3)


class RegistrationTests(SynchronousTestCase):
    def test_added_then_removed_local_apiservice(self) -> None:
        """A Local APIService added after start is registered; removed, it is deleted (it is still automanaged)."""
        harness = Harness(self)
        harness.start()
        harness.clock.advance(0)
        local = LocalAPIService("cert-manager.io", "v1", 1000, 100)
        harness.registration.add(local)
        harness.clock.advance(0)
        stored: Any = harness.run(harness.store.get(APISERVICES, "", local.name))
        self.assertEqual(stored["spec"]["groupPriorityMinimum"], 1000)
        harness.registration.remove(local.name)
        harness.clock.advance(0)
        self.assertIsNone(harness.served.informer.get(APISERVICES, "", local.name))
