"""Tests for group-versions served in this process that come and go after start (the bundled group, CRDs): the
routing table, the OpenAPI documents and the Local APIService registration follow."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

import grafana_aggregator.web.openapi
from grafana_aggregator.apimachinery.strategy import LocalGroupVersion
from grafana_aggregator.controllers.local_apiservices import LocalAPIService
from grafana_aggregator.example.server import example_group_version
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

    def test_add_group_rebuilds_only_its_documents(self) -> None:
        """Adding a group-version builds its own v3 document only, and the Swagger 2.0 document (which holds every
        kind) on its next request: a CRD created with many installed must not rebuild them all (issue 15 bench)."""
        calls: dict[str, list[list[str]]] = {"v2": [], "v3": []}
        swagger_v2, v3_documents = grafana_aggregator.web.openapi.swagger_v2, grafana_aggregator.web.openapi.v3_documents

        def counting_v2(groups: Any, **kwargs: Any) -> Any:
            calls["v2"].append(sorted(groups))
            return swagger_v2(groups, **kwargs)

        def counting_v3(kinds: Any) -> Any:
            kinds = list(kinds)
            calls["v3"].append(sorted({f"{k.group}/{k.version}" for k in kinds}))
            return v3_documents(kinds)

        self.patch(grafana_aggregator.web.openapi, "swagger_v2", counting_v2)
        self.patch(grafana_aggregator.web.openapi, "v3_documents", counting_v3)
        openapi = OpenAPIResource([example_group_version()], (1, 33))
        openapi._current_v2()
        calls["v2"].clear()
        calls["v3"].clear()
        openapi.add_group(GV)
        self.assertEqual(calls, {"v2": [], "v3": [["cert-manager.io/v1"]]})
        openapi._current_v2()
        self.assertEqual(len(calls["v2"]), 1)

    def test_incremental_documents_equal_a_full_build(self) -> None:
        """Documents after adds, a replacement and a removal are those of a resource built with the final groups."""
        other = LocalGroupVersion("cert-manager.io", "v1alpha1", (CustomResourceStrategy(CERTIFICATES, "v1"),))
        openapi = OpenAPIResource([example_group_version()], (1, 33))
        openapi.add_group(GV)
        openapi.add_group(other)
        openapi.add_group(LocalGroupVersion("cert-manager.io", "v1", ()))
        openapi.add_group(GV)
        openapi.remove_group("cert-manager.io", "v1alpha1")
        full = OpenAPIResource([example_group_version(), GV], (1, 33))
        for built in (openapi, full):
            built._current_v2()
            built._current_v3()
        self.assertEqual(openapi._v2_json.data, full._v2_json.data)
        self.assertEqual(openapi._v3_index.data, full._v3_index.data)
        self.assertEqual({k: d.data for k, d in openapi._v3.items()}, {k: d.data for k, d in full._v3.items()})


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
