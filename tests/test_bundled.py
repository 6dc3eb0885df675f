"""Tests for the bundled example group (`controllers/bundled.py`, `example/bundled.py`): installed when nothing
of its name is remote; a remote APIService of its name (stored, or in remote_services_file) wins, never
overwritten, with one warning, a condition and a count; with the toggle off, leftovers go."""

from __future__ import annotations

import datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from grafana_aggregator.controllers.bundled import CONFLICT_CONDITION, CONFLICT_REASON, TOGGLE, BundledGroup
from grafana_aggregator.example.bundled import NAME, bundled_example
from grafana_aggregator.registry.apiservice import APISERVICES, AUTOMANAGED_LABEL, conditions
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore

T0 = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.timezone.utc)
GROUP_VERSION = "example.grafana.app/v0alpha1"


def remote(name: str = NAME) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
            "spec": {"group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 1000,
                     "versionPriority": 15, "insecureSkipTLSVerify": True,
                     "service": {"namespace": "grafana", "name": "example-apiserver", "port": 7443}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck",
                                       "message": "no backend", "lastTransitionTime": "2026-12-03T11:00:00Z"}]}}


def local(labelled: bool = True) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": NAME, "labels": {AUTOMANAGED_LABEL: "onstart"} if labelled else {}},
            "spec": {"group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 15000,
                     "versionPriority": 1}}


class BundledGroupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.installed: list[str] = []
        self.conflicts: list[str] = []
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def wait(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def start(self, enabled: bool = True, in_file: frozenset[str] = frozenset()) -> BundledGroup:
        informer = Informer(self.store, (APISERVICES,), self.clock)
        bundled = BundledGroup(self.store, informer, NAME, GROUP_VERSION, enabled, lambda: self.installed.append(NAME),
                               in_file, self.conflicts.append, lambda: T0)
        informer.startService()
        bundled.startService()
        self.addCleanup(bundled.stopService)
        self.addCleanup(informer.stopService)
        return bundled

    def stored(self) -> dict[str, Any] | None:
        try:
            return self.wait(self.store.get(APISERVICES, "", NAME))  # type: ignore[no-any-return]
        except Exception:
            return None

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("log_level") == LogLevel.warn and e.get("toggle") == TOGGLE]

    def test_installed_when_nothing_of_its_name_exists(self) -> None:
        bundled = self.start()
        self.assertEqual((bundled.decision, self.installed, self.conflicts), ("installed", [NAME], []))
        self.assertEqual(self.warnings(), [])

    def test_installed_over_its_own_local_apiservice(self) -> None:
        self.wait(self.store.create(APISERVICES, "", NAME, local()))
        self.assertEqual(self.start().decision, "installed")

    def test_stored_remote_apiservice_wins(self) -> None:
        """The remote one is kept (spec, labels, its Available condition), marked, warned about once, counted."""
        before = self.wait(self.store.create(APISERVICES, "", NAME, remote()))
        bundled = self.start()
        self.assertEqual((bundled.decision, self.installed, self.conflicts), ("conflict", [], [NAME]))
        after = self.stored()
        assert after is not None
        self.assertEqual(after["spec"], before["spec"])
        self.assertEqual(after["metadata"].get("labels"), before["metadata"].get("labels"))
        kept = [c for c in conditions(after) if c["type"] == "Available"]
        self.assertEqual(kept, before["status"]["conditions"])
        marked = [c for c in conditions(after) if c["type"] == CONFLICT_CONDITION]
        self.assertEqual(len(marked), 1)
        self.assertEqual((marked[0]["status"], marked[0]["reason"]), ("True", CONFLICT_REASON))
        for words in (TOGGLE, NAME, GROUP_VERSION, "kept unchanged", "delete APIService", "turn"):
            self.assertIn(words, marked[0]["message"])
        self.assertEqual(len(self.warnings()), 1)
        self.assertIn(NAME, self.warnings()[0]["detail"])

    def test_remote_in_file_wins_and_is_marked_once_stored(self) -> None:
        """remote_services_file lists it: not installed; the condition lands when auto-registration stores it."""
        bundled = self.start(in_file=frozenset({NAME}))
        self.assertEqual((bundled.decision, self.installed, self.conflicts), ("conflict", [], [NAME]))
        self.wait(self.store.create(APISERVICES, "", NAME, remote()))
        after = self.stored()
        assert after is not None
        self.assertEqual([c["type"] for c in conditions(after)], ["Available", CONFLICT_CONDITION])

    def test_condition_kept_when_others_write_status(self) -> None:
        """The availability controller rewriting Available does not lose the conflict condition (and it is not
        written twice)."""
        self.wait(self.store.create(APISERVICES, "", NAME, remote()))
        self.start()
        current = self.stored()
        assert current is not None
        current["status"]["conditions"][0]["status"] = "True"
        self.wait(self.store.update(APISERVICES, "", NAME, current))
        after = self.stored()
        assert after is not None
        self.assertEqual([c["type"] for c in conditions(after)], ["Available", CONFLICT_CONDITION])

    def test_toggle_off_serves_nothing_and_cleans_up(self) -> None:
        """Off: not installed, the labelled Local APIService of an earlier start deleted."""
        self.wait(self.store.create(APISERVICES, "", NAME, local()))
        bundled = self.start(enabled=False)
        self.assertEqual((bundled.decision, self.installed), ("off", []))
        self.assertIsNone(self.stored())

    def test_toggle_off_leaves_a_users_local_apiservice(self) -> None:
        self.wait(self.store.create(APISERVICES, "", NAME, local(labelled=False)))
        self.start(enabled=False)
        self.assertIsNotNone(self.stored())

    def test_toggle_off_removes_a_stale_conflict_condition(self) -> None:
        self.wait(self.store.create(APISERVICES, "", NAME, remote()))
        first = self.start()
        first.stopService()
        self.start(enabled=False)
        after = self.stored()
        assert after is not None
        self.assertEqual([c["type"] for c in conditions(after)], ["Available"])
        self.assertEqual(self.conflicts, [NAME])


class BundledResourceTests(SynchronousTestCase):
    """The bundled handler serves the example server's resources below the group-version the routing matched."""

    def test_dummy_list_below_the_group_version(self) -> None:
        clock = Clock()
        clock.advance(1_800_000_000)
        gv, handler = bundled_example(clock, T0)
        self.assertEqual((gv.group, gv.version), ("example.grafana.app", "v0alpha1"))
        request = DummyRequest([b"namespaces", b"default", b"dummy"])
        request.requestHeaders.setRawHeaders(b"accept", [b"application/json"])
        handler.render(request)
        body = b"".join(request.written)
        self.assertIn(b'"name":"test1"', body.replace(b" ", b""))
