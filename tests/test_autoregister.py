"""Tests for L{grafana_aggregator.controllers.autoregister}: the remote services file registered at start."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.controllers.autoregister import (
    APISERVICES,
    AUTOMANAGED_LABEL,
    EXTERNALNAMES,
    RETRY_DELAYS,
    AutoRegistration,
)
from grafana_aggregator.registry.apiservice import APIServiceStrategy
from grafana_aggregator.config.remote_services import RemoteService
from grafana_aggregator.storage import Collection, ListResult, StorageError
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore

from .support import RacingStore

T = TypeVar("T")
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
EXAMPLE = RemoteService("example.grafana.app", "v0alpha1", "localhost", 7443)
QUERY = RemoteService("query.grafana.app", "v0alpha1", "localhost", 7444)
TESTDATA = RemoteService("testdata.datasource.grafana.app", "v0alpha1", "backend.test", 7445)
BUNDLE = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ONSTART = {AUTOMANAGED_LABEL: "onstart"}


class FlakyStore(MemoryStore):
    """A store whose next `failures` calls of the methods in `failing` raise StorageError."""

    failures = 0
    failing: tuple[str, ...] = ("list", "get", "create", "update", "delete")
    calls = 0

    def _maybe_fail(self, method: str) -> None:
        if method in self.failing:
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise StorageError("store unavailable")

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        self._maybe_fail("list")
        return await super().list(collection, namespace)

    async def get(self, collection: Collection, namespace: str, name: str) -> dict[str, Any]:
        self._maybe_fail("get")
        return await super().get(collection, namespace, name)

    async def create(self, collection: Collection, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail("create")
        return await super().create(collection, namespace, name, obj)

    async def delete(self, collection: Collection, namespace: str, name: str,
                     expected_resource_version: int | None = None, expected_uid: str | None = None) -> dict[str, Any]:
        self._maybe_fail("delete")
        return await super().delete(collection, namespace, name, expected_resource_version, expected_uid)


def remote_apiservice(name: str, labels: dict[str, str] | None, port: int = 9000,
                      namespace: str = "default") -> dict[str, Any]:
    """A remote APIService as a user or an earlier start left it."""
    version, _, group = name.partition(".")
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "generation": 1}
    if labels is not None:
        meta["labels"] = dict(labels)
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": meta,
            "spec": {"service": {"namespace": namespace, "name": name, "port": port}, "group": group,
                     "version": version, "groupPriorityMinimum": 1000, "versionPriority": 15},
            "status": {}}


def externalname(name: str, host: str, labels: dict[str, str] | None) -> dict[str, Any]:
    """An ExternalName in namespace default."""
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-en-{name}", "generation": 1}
    if labels is not None:
        meta["labels"] = dict(labels)
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName", "metadata": meta,
            "spec": {"host": host}}


class AutoRegistrationTestCase(SynchronousTestCase):
    """A MemoryStore and a Clock shared by the starts of one test."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store: MemoryStore = MemoryStore()
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def run_coroutine(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The result of a coroutine that completes at once."""
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def registration(self, services: Sequence[RemoteService], ca_bundle: bytes | None = BUNDLE) -> AutoRegistration:
        """An AutoRegistration of services on the test's store and clock, not started (its informer is)."""
        informer = Informer(self.store, (APISERVICES, EXTERNALNAMES), self.clock)
        informer.startService()
        self.addCleanup(informer.stopService)
        return AutoRegistration(self.store, informer, APIServiceStrategy(clock=lambda: T0), list(services), ca_bundle,
                                lambda: T0, self.clock)

    def start(self, services: Sequence[RemoteService], ca_bundle: bytes | None = BUNDLE) -> AutoRegistration:
        """Start an AutoRegistration (one daemon start) and stop it at the end of the test."""
        registration = self.registration(services, ca_bundle)
        registration.startService()
        self.addCleanup(registration.stopService)
        return registration

    def restart(self, services: Sequence[RemoteService], previous: AutoRegistration) -> AutoRegistration:
        """Stop a registration and start a new one with another file, as a daemon restart does."""
        previous.stopService()
        return self.start(services)

    def get(self, collection: Collection, name: str, namespace: str = "") -> dict[str, Any]:
        return self.run_coroutine(self.store.get(collection, namespace, name))

    def put(self, collection: Collection, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.run_coroutine(self.store.create(collection, meta.get("namespace", ""), meta["name"], obj))

    def names(self, collection: Collection) -> list[str]:
        return [item["metadata"]["name"] for item in self.run_coroutine(self.store.list(collection, None)).items]

    def messages(self, level: str) -> list[str]:
        """The formats of the events logged at a level (warn, info, error)."""
        return [event["log_format"] for event in self.log if event["log_level"].name == level]


class RegistrationTests(AutoRegistrationTestCase):
    """Each entry becomes a labelled APIService and ExternalName."""

    def test_apiservice_created(self) -> None:
        """The APIService of an entry has the file's spec, the caBundle, the onstart label and fresh metadata."""
        self.start([EXAMPLE])
        stored = self.get(APISERVICES, "v0alpha1.example.grafana.app")
        uid = stored["metadata"].pop("uid")
        self.assertEqual(len(uid), 36)
        self.assertEqual(stored, {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v0alpha1.example.grafana.app", "labels": ONSTART, "generation": 1,
                         "creationTimestamp": "2026-01-01T12:00:00Z", "resourceVersion": "1"},
            "spec": {"service": {"namespace": "default", "name": "v0alpha1.example.grafana.app", "port": 7443},
                     "group": "example.grafana.app", "version": "v0alpha1",
                     "caBundle": base64.b64encode(BUNDLE).decode(), "groupPriorityMinimum": 16000,
                     "versionPriority": 1},
            "status": {},
        })

    def test_externalname_created(self) -> None:
        """The ExternalName default/<version>.<group> carries the entry's host and the onstart label."""
        self.start([EXAMPLE])
        stored = self.get(EXTERNALNAMES, "v0alpha1.example.grafana.app", "default")
        uid = stored["metadata"].pop("uid")
        self.assertEqual(len(uid), 36)
        self.assertEqual(stored, {
            "apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": "v0alpha1.example.grafana.app", "namespace": "default", "labels": ONSTART,
                         "generation": 1, "creationTimestamp": "2026-01-01T12:00:00Z", "resourceVersion": "2"},
            "spec": {"host": "localhost"},
        })

    def test_priorities(self) -> None:
        """groupPriorityMinimum is 16000 and versionPriority is 1 + the entry's index."""
        self.start([EXAMPLE, QUERY, TESTDATA])
        specs = [self.get(APISERVICES, s.name)["spec"] for s in (EXAMPLE, QUERY, TESTDATA)]
        self.assertEqual([(s["groupPriorityMinimum"], s["versionPriority"]) for s in specs],
                         [(16000, 1), (16000, 2), (16000, 3)])
        self.assertEqual([s["service"]["port"] for s in specs], [7443, 7444, 7445])
        self.assertEqual(self.get(EXTERNALNAMES, TESTDATA.name, "default")["spec"], {"host": "backend.test"})

    def test_without_bundle(self) -> None:
        """Without a bundle there is no caBundle and insecureSkipTLSVerify stays unset (false)."""
        self.start([EXAMPLE], ca_bundle=None)
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name)["spec"], {
            "service": {"namespace": "default", "name": "v0alpha1.example.grafana.app", "port": 7443},
            "group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 16000,
            "versionPriority": 1})

    def test_second_start_writes_nothing(self) -> None:
        """A start with the same file leaves the stored objects as they are."""
        first = self.start([EXAMPLE, QUERY])
        version = self.store.current_resource_version()
        self.restart([EXAMPLE, QUERY], first)
        self.assertEqual(self.store.current_resource_version(), version)

    def test_logs_registration(self) -> None:
        """Every object written is logged with its name."""
        self.start([EXAMPLE])
        infos = [(e["log_format"], e.get("name")) for e in self.log if e["log_level"].name == "info"]
        self.assertEqual(infos, [
            ("registered remote APIService {name}", EXAMPLE.name),
            ("registered ExternalName {namespace}/{name} for host {host}", EXAMPLE.name),
            ("auto-registration done: {count} remote APIServices registered", None),
        ])


class BringBackTests(AutoRegistrationTestCase):
    """Labelled objects are brought back to the file's spec at every start."""

    def test_apiservice_spec_brought_back(self) -> None:
        """A spec a user changed returns to the file's; the status, labels and uid stay, the generation grows."""
        first = self.start([EXAMPLE])
        stored = self.get(APISERVICES, EXAMPLE.name)
        desired = stored["spec"]
        changed = dict(stored, spec=dict(desired, versionPriority=50, service=dict(desired["service"], port=9999)),
                       status={"conditions": [{"type": "Available", "status": "True"}]})
        self.run_coroutine(self.store.update(APISERVICES, "", EXAMPLE.name, changed))
        self.restart([EXAMPLE], first)
        after = self.get(APISERVICES, EXAMPLE.name)
        self.assertEqual(after["spec"], desired)
        self.assertEqual(after["status"], {"conditions": [{"type": "Available", "status": "True"}]})
        self.assertEqual((after["metadata"]["uid"], after["metadata"]["labels"], after["metadata"]["generation"]),
                         (stored["metadata"]["uid"], ONSTART, 2))

    def test_port_change_in_file(self) -> None:
        """A new port in the file reaches the existing APIService at the next start."""
        first = self.start([EXAMPLE])
        self.restart([RemoteService("example.grafana.app", "v0alpha1", "localhost", 8443)], first)
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name)["spec"]["service"]["port"], 8443)

    def test_insecure_removed(self) -> None:
        """insecureSkipTLSVerify set by a user is dropped in favour of the caBundle."""
        first = self.start([EXAMPLE])
        stored = self.get(APISERVICES, EXAMPLE.name)
        spec = {k: v for k, v in stored["spec"].items() if k != "caBundle"}
        self.run_coroutine(self.store.update(APISERVICES, "", EXAMPLE.name,
                                             dict(stored, spec=dict(spec, insecureSkipTLSVerify=True))))
        self.restart([EXAMPLE], first)
        spec = self.get(APISERVICES, EXAMPLE.name)["spec"]
        self.assertEqual((spec.get("insecureSkipTLSVerify"), spec["caBundle"]),
                         (None, base64.b64encode(BUNDLE).decode()))

    def test_true_label_brought_back(self) -> None:
        """An APIService labelled `true` is managed too."""
        self.put(APISERVICES, remote_apiservice(EXAMPLE.name, {AUTOMANAGED_LABEL: "true"}))
        self.start([EXAMPLE])
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name)["spec"]["service"]["port"], 7443)

    def test_externalname_host_brought_back(self) -> None:
        """A labelled ExternalName whose host a user changed returns to the file's host."""
        first = self.start([EXAMPLE])
        stored = self.get(EXTERNALNAMES, EXAMPLE.name, "default")
        self.run_coroutine(self.store.update(EXTERNALNAMES, "default", EXAMPLE.name,
                                             dict(stored, spec={"host": "elsewhere.test"})))
        self.restart([EXAMPLE], first)
        after = self.get(EXTERNALNAMES, EXAMPLE.name, "default")
        self.assertEqual((after["spec"], after["metadata"]["generation"]), ({"host": "localhost"}, 2))

    def test_externalname_host_change_in_file(self) -> None:
        """A new host in the file reaches the existing ExternalName at the next start."""
        first = self.start([EXAMPLE])
        self.restart([RemoteService("example.grafana.app", "v0alpha1", "10.0.0.9", 7443)], first)
        self.assertEqual(self.get(EXTERNALNAMES, EXAMPLE.name, "default")["spec"], {"host": "10.0.0.9"})


class LeaveAloneTests(AutoRegistrationTestCase):
    """Objects without the label, or created by users after the start, are never touched."""

    def test_unlabelled_apiservice(self) -> None:
        """A user's APIService with an entry's name is left as it is, with a warning, and no ExternalName is made."""
        self.put(APISERVICES, remote_apiservice(EXAMPLE.name, None))
        before = self.get(APISERVICES, EXAMPLE.name)
        registration = self.start([EXAMPLE])
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name), before)
        self.assertEqual(self.names(EXTERNALNAMES), [])
        self.assertEqual(self.messages("warn"),
                         ["leaving APIService {name} alone: it is not labelled {label}, so a user made it"])
        self.assertEqual((registration.done, registration.missing), (True, []))

    def test_other_label_value(self) -> None:
        """An APIService whose automanaged label has another value is not managed."""
        self.put(APISERVICES, remote_apiservice(EXAMPLE.name, {AUTOMANAGED_LABEL: "no"}))
        before = self.get(APISERVICES, EXAMPLE.name)
        self.start([EXAMPLE])
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name), before)

    def test_unlabelled_externalname(self) -> None:
        """A user's ExternalName with an entry's name keeps its host, with a warning."""
        self.put(EXTERNALNAMES, externalname(EXAMPLE.name, "mine.test", None))
        self.start([EXAMPLE])
        self.assertEqual(self.get(EXTERNALNAMES, EXAMPLE.name, "default")["spec"], {"host": "mine.test"})
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name)["spec"]["service"]["port"], 7443)
        self.assertEqual(self.messages("warn"), ["leaving ExternalName {namespace}/{name} alone: it is not labelled "
                                                 "{label}, so a user made it"])

    def test_onstart_object_created_after_start(self) -> None:
        """An APIService labelled onstart that a user created after the start is left alone."""
        store = self.store = FlakyStore()
        store.failing = ("create",)
        store.failures = 1
        registration = self.start([EXAMPLE])
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.put(APISERVICES, remote_apiservice(EXAMPLE.name, ONSTART))
        before = self.get(APISERVICES, EXAMPLE.name)
        self.clock.advance(RETRY_DELAYS[0])
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name), before)
        self.assertEqual(self.messages("warn")[-1],
                         "leaving APIService {name} alone: it was created after the start, so a user made it")
        self.assertTrue(registration.done)


class RemovalTests(AutoRegistrationTestCase):
    """Labelled onstart APIServices that left the file are removed once, at start."""

    def test_entry_left_file(self) -> None:
        """At the next start the APIService and ExternalName of an entry no longer in the file are deleted."""
        first = self.start([EXAMPLE, QUERY])
        second = self.restart([EXAMPLE], first)
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name])
        self.assertEqual(self.names(EXTERNALNAMES), [EXAMPLE.name])
        self.assertEqual(self.get(APISERVICES, EXAMPLE.name)["spec"]["versionPriority"], 1)
        self.assertTrue(second.done)

    def test_priorities_follow_new_order(self) -> None:
        """When an earlier entry leaves, the later ones' versionPriority follows their new index."""
        first = self.start([EXAMPLE, QUERY])
        self.restart([QUERY], first)
        self.assertEqual(self.get(APISERVICES, QUERY.name)["spec"]["versionPriority"], 1)

    def test_empty_file_removes_all(self) -> None:
        """An empty file removes every earlier auto-registered remote APIService."""
        first = self.start([EXAMPLE, QUERY])
        self.restart([], first)
        self.assertEqual((self.names(APISERVICES), self.names(EXTERNALNAMES)), ([], []))

    def test_unlabelled_not_removed(self) -> None:
        """A user's remote APIService not in the file stays."""
        self.put(APISERVICES, remote_apiservice(QUERY.name, None))
        self.start([EXAMPLE])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name, QUERY.name])

    def test_true_label_not_removed(self) -> None:
        """Only onstart objects are removed; one labelled `true` belongs to another sync."""
        self.put(APISERVICES, remote_apiservice(QUERY.name, {AUTOMANAGED_LABEL: "true"}))
        self.start([EXAMPLE])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name, QUERY.name])

    def test_local_not_removed(self) -> None:
        """Local APIServices (no spec.service), registered onstart by their own registration, stay."""
        local = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                 "metadata": {"name": "v0alpha1.service.grafana.app", "labels": ONSTART},
                 "spec": {"group": "service.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 15000,
                          "versionPriority": 1}}
        self.put(APISERVICES, local)
        self.start([EXAMPLE])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name, "v0alpha1.service.grafana.app"])

    def test_unlabelled_externalname_not_removed(self) -> None:
        """The ExternalName of a removed APIService stays when a user made it."""
        self.put(APISERVICES, remote_apiservice(QUERY.name, ONSTART))
        self.put(EXTERNALNAMES, externalname(QUERY.name, "mine.test", None))
        self.start([EXAMPLE])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name])
        self.assertEqual(self.names(EXTERNALNAMES), [EXAMPLE.name, QUERY.name])

    def test_other_namespace_externalname_not_removed(self) -> None:
        """Only ExternalNames in default are removed with their APIService."""
        self.put(APISERVICES, remote_apiservice(QUERY.name, ONSTART, namespace="grafana"))
        other = externalname(QUERY.name, "h.test", ONSTART)
        other["metadata"]["namespace"] = "grafana"
        self.put(EXTERNALNAMES, other)
        self.start([EXAMPLE])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name])
        self.assertEqual(self.get(EXTERNALNAMES, QUERY.name, "grafana")["spec"], {"host": "h.test"})

    def test_missing_externalname(self) -> None:
        """A removed APIService whose ExternalName is already gone is removed all the same."""
        self.put(APISERVICES, remote_apiservice(QUERY.name, ONSTART))
        registration = self.start([EXAMPLE])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name])
        self.assertTrue(registration.done)

    def test_removal_logged(self) -> None:
        """A removal is logged with the APIService's name."""
        self.put(APISERVICES, remote_apiservice(QUERY.name, ONSTART))
        self.put(EXTERNALNAMES, externalname(QUERY.name, "h.test", ONSTART))
        self.start([])
        removed = [(e["log_format"], e["name"]) for e in self.log if e["log_format"].startswith("removed")]
        self.assertEqual(removed, [
            ("removed APIService {name}: it is no longer in the remote services file", QUERY.name),
            ("removed ExternalName {namespace}/{name} of APIService {apiservice}", QUERY.name),
        ])


class ReadinessTests(AutoRegistrationTestCase):
    """done, completed, missing and check() tell the autoregister-completion health check what is left."""

    def test_before_start(self) -> None:
        """Before the start every entry is missing."""
        registration = self.registration([EXAMPLE, QUERY])
        self.assertEqual((registration.done, registration.missing), (False, [EXAMPLE.name, QUERY.name]))
        self.assertNoResult(registration.completed)
        self.assertEqual(registration.check(), "missing APIService: [v0alpha1.example.grafana.app "
                                               "v0alpha1.query.grafana.app]")

    def test_after_start(self) -> None:
        """After a successful start nothing is missing and completed has fired."""
        registration = self.start([EXAMPLE, QUERY])
        self.assertEqual((registration.done, registration.missing, registration.check()), (True, [], None))
        self.assertIsNone(self.successResultOf(registration.completed))

    def test_empty_file(self) -> None:
        """With no entries the registration is done at once."""
        registration = self.start([])
        self.assertEqual((registration.done, registration.check()), (True, None))


class RetryTests(AutoRegistrationTestCase):
    """Store errors are logged and retried with a backoff on the clock, then given up."""

    def test_create_error_retried(self) -> None:
        """A failed create leaves the entry missing until the retry one second later registers it."""
        store = self.store = FlakyStore()
        store.failing = ("create",)
        store.failures = 1
        registration = self.start([EXAMPLE, QUERY])
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.assertEqual((registration.done, registration.missing), (False, [EXAMPLE.name]))
        self.assertEqual(registration.check(), "missing APIService: [v0alpha1.example.grafana.app]")
        self.assertNoResult(registration.completed)
        self.clock.advance(RETRY_DELAYS[0] - 0.001)
        self.assertFalse(registration.done)
        self.clock.advance(0.001)
        self.assertEqual((registration.done, registration.missing), (True, []))
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name, QUERY.name])
        self.assertIsNone(self.successResultOf(registration.completed))

    def test_list_error_retried(self) -> None:
        """A failed list at start is retried; nothing is registered or removed before it succeeds."""
        store = self.store = FlakyStore()
        self.put(APISERVICES, remote_apiservice(QUERY.name, ONSTART))
        store.failing = ("list",)
        store.failures = 1
        registration = self.start([EXAMPLE])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(len([e for e in self.log if e.get("log_format", "").startswith("could not list and watch")]), 1)
        self.assertEqual(self.names(APISERVICES), [QUERY.name])
        self.assertEqual(registration.check(), "missing APIService: [v0alpha1.example.grafana.app]")
        self.clock.advance(RETRY_DELAYS[0])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name])
        self.assertTrue(registration.done)

    def test_externalname_error_retried(self) -> None:
        """When only the ExternalName failed, the retry creates it without touching the APIService again."""
        store = self.store = FlakyStore()
        store.failing = ("create",)
        registration = self.registration([EXAMPLE])
        original = store.create
        calls: list[Collection] = []

        async def create(collection: Collection, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
            calls.append(collection)
            if collection == EXTERNALNAMES and len(calls) == 2:
                raise StorageError("store unavailable")
            return await original(collection, namespace, name, obj)

        store.create = create  # type: ignore[method-assign]
        registration.startService()
        self.addCleanup(registration.stopService)
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.assertEqual(registration.missing, [EXAMPLE.name])
        self.clock.advance(RETRY_DELAYS[0])
        self.assertEqual(calls, [APISERVICES, EXTERNALNAMES, EXTERNALNAMES])
        self.assertEqual(self.get(EXTERNALNAMES, EXAMPLE.name, "default")["spec"], {"host": "localhost"})
        self.assertTrue(registration.done)

    def test_delete_error_retried(self) -> None:
        """An APIService that could not be removed is reported, then removed by the retry."""
        store = self.store = FlakyStore()
        self.put(APISERVICES, remote_apiservice(QUERY.name, ONSTART))
        store.failing = ("delete",)
        store.failures = 1
        registration = self.start([EXAMPLE])
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 1)
        self.assertEqual((registration.done, registration.missing), (False, []))
        self.assertEqual(registration.check(), "APIService not yet removed: [v0alpha1.query.grafana.app]")
        self.clock.advance(RETRY_DELAYS[0])
        self.assertEqual(self.names(APISERVICES), [EXAMPLE.name])
        self.assertEqual((registration.done, registration.check()), (True, None))

    def test_conflict_retried_at_once(self) -> None:
        """An update that loses a race with another writer is redone at once, keeping the other writer's change."""
        store = self.store = RacingStore()
        store.touched_field = "annotations"
        first = self.start([EXAMPLE])
        stored = self.get(APISERVICES, EXAMPLE.name)
        self.run_coroutine(store.update(APISERVICES, "", EXAMPLE.name, dict(stored, spec=dict(stored["spec"],
                                                                                              versionPriority=9))))
        store.racing = True
        second = self.restart([EXAMPLE], first)
        after = self.get(APISERVICES, EXAMPLE.name)
        self.assertEqual((after["spec"]["versionPriority"], after["metadata"]["annotations"]), (1, {"touched": "yes"}))
        self.assertEqual((second.done, self.clock.getDelayedCalls()), (True, []))

    def test_backoff_then_give_up(self) -> None:
        """Passes run at 0, 1, 3, 7, 15 and 31 seconds; then an error is logged and nothing more is tried."""
        store = self.store = FlakyStore()
        store.failing = ("create",)
        store.failures = 1000
        registration = self.start([EXAMPLE])
        attempts = [store.calls]
        for delay in RETRY_DELAYS:
            self.clock.advance(delay)
            attempts.append(store.calls)
        self.clock.advance(3600)
        self.assertEqual(attempts, [1, 2, 3, 4, 5, 6])
        self.assertEqual(store.calls, 6)
        self.assertEqual(len(self.flushLoggedErrors(StorageError)), 6)
        self.assertEqual(self.messages("error"), ["auto-registration gave up: missing APIServices {missing}, "
                                                  "not removed {stale}"])
        self.assertEqual((registration.done, registration.missing), (False, [EXAMPLE.name]))
        self.assertNoResult(registration.completed)

    def test_retry_logged(self) -> None:
        """Each retry is announced with its delay and the missing names."""
        store = self.store = FlakyStore()
        store.failing = ("create",)
        store.failures = 1
        self.start([EXAMPLE])
        self.flushLoggedErrors(StorageError)
        warnings = [(e["delay"], e["missing"]) for e in self.log if e["log_level"].name == "warn"]
        self.assertEqual(warnings, [(1.0, [EXAMPLE.name])])

    def test_stop_cancels_retry(self) -> None:
        """Stopping the service during the backoff cancels the retry."""
        store = self.store = FlakyStore()
        store.failing = ("create",)
        store.failures = 1
        registration = self.registration([EXAMPLE])
        registration.startService()
        self.flushLoggedErrors(StorageError)
        registration.stopService()
        self.clock.advance(60)
        self.assertEqual(store.calls, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(registration.done)
        self.assertEqual(self.names(APISERVICES), [])
