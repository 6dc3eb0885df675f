"""Tests for per-replica availability: the leader's rule for `Available` from every live replica's view
(`controllers/replica_availability.py`), a replica's controller publishing its view instead of writing, and a
replica routing by its own view (its own 503, counted) whatever the shared condition says."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.aggregation.reachability import Reachability
from grafana_aggregator.aggregation.routing import ProxyMaker
from grafana_aggregator.controllers.availability import PASSED_MESSAGE, probed_digest
from grafana_aggregator.controllers.replica_availability import AvailabilityFromViews, combined_condition
from grafana_aggregator.registry.apiservice import APISERVICES, available_condition
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.web.metrics import Metrics

from .support import serve_apis
from .test_availability import NAME, T0, ControllerTestCase, apiservice, externalname
from .test_proxy import ALICE, Backend_, CallerRoot, behind_site

FAILED = "failing or missing response from https://backend.test:7443/apis/example.grafana.app/v0alpha1: refused"


def view(status: str, digest: str, message: str = "") -> dict[str, Any]:
    if status == "True":
        return {"digest": digest, "status": "True", "reason": "Passed", "message": PASSED_MESSAGE}
    return {"digest": digest, "status": "False", "reason": "FailedDiscoveryCheck", "message": message or FAILED}


class RuleTests(SynchronousTestCase):
    """The documented rule: True when any live replica reaches the backend, naming those that cannot."""

    def test_all_reach(self) -> None:
        self.assertEqual(combined_condition({"a": view("True", "d"), "b": view("True", "d")}, "a"),
                         ("True", "Passed", PASSED_MESSAGE))

    def test_some_reach(self) -> None:
        """One replica cut off does not flip the condition; the message names it and says why."""
        status, reason, message = combined_condition({"a": view("False", "d"), "b": view("True", "d")}, "a")
        self.assertEqual((status, reason), ("True", "Passed"))
        self.assertEqual(message, f"{PASSED_MESSAGE} on b; not reachable from a: {FAILED}")

    def test_none_reach_uses_the_leader_view(self) -> None:
        """When no replica reaches it, the condition is what the leader itself would write alone."""
        views = {"a": view("False", "d", "from a"), "b": view("False", "d", "from b")}
        self.assertEqual(combined_condition(views, "b"), ("False", "FailedDiscoveryCheck", "from b"))
        self.assertEqual(combined_condition(views, "c"), ("False", "FailedDiscoveryCheck", "from a"))


class FakeBoard:
    """A views board held in memory."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.listeners: list[Callable[[str], None]] = []

    def views(self, subject: str) -> dict[str, Any]:
        return dict(self.documents.get(subject, {}))

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self.listeners.append(listener)

    def set(self, subject: str, replica: str, document: dict[str, Any] | None) -> None:
        views = self.documents.setdefault(subject, {})
        if document is None:
            views.pop(replica, None)
        else:
            views[replica] = document
        for listener in self.listeners:
            listener(subject)

    def publish(self, subject: str, document: Any) -> None:
        self.set(subject, "me", document)

    def withdraw(self, subject: str) -> None:
        self.set(subject, "me", None)


class LeaderWriterTests(SynchronousTestCase):
    """AvailabilityFromViews writes the condition from the current views, never from stale or absent ones."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.board = FakeBoard()
        self.informer = Informer(self.store, (APISERVICES, EXTERNALNAMES), self.clock)
        self.wait(self.store.create(EXTERNALNAMES, "grafana", "example-apiserver", externalname()))
        self.wait(self.store.create(APISERVICES, "", NAME, apiservice()))
        self.informer.startService()
        self.writer = AvailabilityFromViews(self.store, self.informer, self.board, lambda: T0, self.clock, "a")
        self.writer.startService()
        self.addCleanup(self.writer.stopService)
        self.addCleanup(self.informer.stopService)
        self.digest = probed_digest(apiservice(), externalname())

    def wait(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def condition(self) -> dict[str, Any] | None:
        return available_condition(self.wait(self.store.get(APISERVICES, "", NAME)))

    def test_nothing_written_without_views(self) -> None:
        self.clock.advance(1)
        self.assertIsNone(self.condition())

    def test_partition_of_one_replica_never_flips(self) -> None:
        """b cut off while a reaches the backend: True throughout, the message naming b; b back: the plain message."""
        self.board.set(NAME, "a", view("True", self.digest))
        self.board.set(NAME, "b", view("True", self.digest))
        self.clock.advance(0)
        first = self.condition()
        assert first is not None
        self.assertEqual((first["status"], first["message"]), ("True", PASSED_MESSAGE))
        self.board.set(NAME, "b", view("False", self.digest))
        self.clock.advance(0)
        cut = self.condition()
        assert cut is not None
        self.assertEqual(cut["status"], "True")
        self.assertIn("not reachable from b", cut["message"])
        self.assertEqual(cut["lastTransitionTime"], first["lastTransitionTime"])
        self.board.set(NAME, "b", view("True", self.digest))
        self.clock.advance(0)
        self.assertEqual(self.condition(), first)

    def test_every_replica_failing_is_false(self) -> None:
        self.board.set(NAME, "a", view("False", self.digest, "a's error"))
        self.board.set(NAME, "b", view("False", self.digest, "b's error"))
        self.clock.advance(0)
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]),
                         ("False", "FailedDiscoveryCheck", "a's error"))

    def test_stale_views_are_ignored(self) -> None:
        """A view probed against another spec (an older ExternalName, say) does not count."""
        self.board.set(NAME, "a", view("True", "an-older-spec"))
        self.clock.advance(0)
        self.assertIsNone(self.condition())

    def test_dead_replica_view_leaves_the_decision(self) -> None:
        """When the only replica that reached the backend dies (its view goes with its lease), the others decide."""
        self.board.set(NAME, "a", view("False", self.digest))
        self.board.set(NAME, "b", view("True", self.digest))
        self.clock.advance(0)
        self.board.set(NAME, "b", None)
        self.clock.advance(0)
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["status"], "False")

    def test_status_edited_by_someone_else_is_put_back(self) -> None:
        """A status written by another hand is rewritten from the views."""
        self.board.set(NAME, "a", view("True", self.digest))
        self.clock.advance(0)
        stored = self.wait(self.store.get(APISERVICES, "", NAME))
        stored["status"]["conditions"][0]["status"] = "False"
        self.wait(self.store.update(APISERVICES, "", NAME, stored))
        self.clock.advance(1)
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["status"], "True")


class PublishingControllerTests(ControllerTestCase):
    """With views, a replica's availability controller publishes its probe results and never writes the status."""

    def test_probe_result_published_not_written(self) -> None:
        board = FakeBoard()
        reachability = Reachability("me")
        self.create(externalname())
        self.create(apiservice())
        self.controller(views=board, reachability=reachability)
        self.clock.advance(0)
        self.assertIsNone(self.condition())
        published = board.views(NAME)["me"]
        self.assertEqual((published["status"], published["reason"], published["digest"]),
                         ("True", "Passed", probed_digest(apiservice(), externalname())))
        reach = reachability.get(NAME)
        assert reach is not None
        self.assertTrue(reach.reachable)

    def test_failed_probe_published_and_unreachable_here(self) -> None:
        board = FakeBoard()
        reachability = Reachability("me")
        self.backend.code = 500
        self.create(externalname())
        self.create(apiservice())
        self.controller(views=board, reachability=reachability)
        self.clock.advance(0)
        self.assertEqual(board.views(NAME)["me"]["status"], "False")
        reach = reachability.get(NAME)
        assert reach is not None
        self.assertFalse(reach.reachable)
        self.assertIn("bad status", reach.message)

    def test_status_change_by_leader_does_not_probe_again(self) -> None:
        """The leader's status write comes back by watch: with views that is no reason to probe."""
        board = FakeBoard()
        self.create(externalname())
        self.create(apiservice())
        self.controller(views=board, reachability=Reachability("me"))
        self.clock.advance(0)
        probes = len(self.backend.requests)
        stored = self.get()
        stored["status"] = {"conditions": [{"type": "Available", "status": "True", "reason": "Passed",
                                            "message": "x", "lastTransitionTime": "2026-01-01T12:00:00Z"}]}
        self.wait(self.store.update(APISERVICES, "", NAME, stored))
        self.clock.advance(0)
        self.assertEqual(len(self.backend.requests), probes)

    def test_deleted_apiservice_view_withdrawn(self) -> None:
        board = FakeBoard()
        self.create(externalname())
        self.create(apiservice())
        self.controller(views=board, reachability=Reachability("me"))
        self.clock.advance(0)
        self.wait(self.store.delete(APISERVICES, "", NAME))
        self.assertEqual(board.views(NAME), {})


AVAILABLE_API = {**apiservice(), "status": {"conditions": [
    {"type": "Available", "status": "True", "reason": "Passed", "message": PASSED_MESSAGE}]}}
UNAVAILABLE_API = {**apiservice(), "status": {"conditions": [
    {"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck", "message": FAILED}]}}


class OwnViewRoutingTests(SynchronousTestCase):
    """A replica proxies by its own view: its own 503 (named and counted) while the condition says True."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.backend = Backend_()
        self.upstream = RequestTraversalAgent(self.backend)
        self.metrics = Metrics()
        self.reachability = Reachability("replica-b")

    def front(self, api: dict[str, Any]) -> StubTreq:
        self.successResultOf(Deferred.fromCoroutine(
            self.store.create(EXTERNALNAMES, "grafana", "example-apiserver", externalname())))
        self.successResultOf(Deferred.fromCoroutine(self.store.create(APISERVICES, "", NAME, copy.deepcopy(api))))
        maker = ProxyMaker(self.clock, lambda backend: self.upstream)  # type: ignore[arg-type,return-value]
        served = serve_apis(self.store, self.clock, proxy_for=maker, reachability=self.reachability,
                            refused_here=lambda name: self.metrics.unreachable_here.labels(apiservice=name).inc())
        self.addCleanup(served.informer.stopService)
        tree = Resource()
        tree.putChild(b"apis", served.apis)
        root = CallerRoot(tree, ALICE)
        client = StubTreq(root)
        behind_site(client._agent, root, self.clock)
        return client

    def get(self, client: StubTreq) -> tuple[int, dict[str, Any]]:
        response = self.successResultOf(client.get("https://agg.test/apis/example.grafana.app/v0alpha1/x"))
        client.flush()
        self.upstream.flush()
        client.flush()
        body = self.successResultOf(client.content(response))
        return response.code, json.loads(body) if body.startswith(b"{") else {}

    def refused(self) -> float:
        return self.metrics.registry.get_sample_value("grafana_aggregator_replica_unreachable_requests_total",
                                                      {"apiservice": NAME}) or 0.0

    def test_own_view_unreachable_answers_503_while_condition_true(self) -> None:
        client = self.front(AVAILABLE_API)
        self.reachability.set(NAME, False, FAILED)
        code, status = self.get(client)
        self.assertEqual((code, status.get("reason")), (503, "ServiceUnavailable"))
        self.assertEqual(status["message"],
                         f"replica replica-b cannot reach the backend of APIService {NAME}: {FAILED}")
        self.assertEqual(self.refused(), 1.0)
        self.assertEqual(self.backend.requests, [])

    def test_own_view_reachable_is_proxied(self) -> None:
        """The replica's own successful probe routes, even before the leader turned the condition True."""
        client = self.front(UNAVAILABLE_API)
        self.assertEqual(self.get(client)[0], 503)
        self.reachability.set(NAME, True, PASSED_MESSAGE)
        self.assertEqual(self.get(client)[0], 200)
        self.assertEqual(self.refused(), 0.0)

    def test_no_own_view_yet_follows_the_condition(self) -> None:
        client = self.front(AVAILABLE_API)
        self.assertEqual(self.get(client)[0], 200)
