# -*- test-case-name: tests.test_local_apiservices -*-
"""Tests for L{grafana_aggregator.controllers.local_apiservices}: the Local APIServices are kept in place.

Each test wires the served `/apis` tree over a memory store (as the daemon does), starts the registration
controller on the shared informer, and changes the Local APIServices through the REST API as kubectl would.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Coroutine
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.config.settings import load_settings
from grafana_aggregator.controllers.local_apiservices import FIELD_MANAGER, LocalAPIServiceRegistration
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.storage import Collection, StorageFullError
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import LOCAL_APISERVICES, load_runtime, local_groups, make_service

from .support import serve_apis

EPOCH = 1_750_000_000.0
CREATED = "2025-06-15T15:06:40Z"
URL = "https://agg.test/apis/apiregistration.k8s.io/v1/apiservices"
LABEL = "kube-aggregator.kubernetes.io/automanaged"
SERVICE = "v0alpha1.service.grafana.app"
REGISTRATION = "v1.apiregistration.k8s.io"
SPECS = {
    SERVICE: {"group": "service.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 15000,
              "versionPriority": 1},
    REGISTRATION: {"group": "apiregistration.k8s.io", "version": "v1", "groupPriorityMinimum": 18000,
                   "versionPriority": 15},
    "v1.apiextensions.k8s.io": {"group": "apiextensions.k8s.io", "version": "v1", "groupPriorityMinimum": 16700,
                                "versionPriority": 15},
}
MESSAGE = "Local APIServices are always available"


def local_condition(when: str = CREATED) -> dict[str, Any]:
    return {"type": "Available", "status": "True", "lastTransitionTime": when, "reason": "Local", "message": MESSAGE}


def rfc3339(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The fields of spec a Local APIService's creator owns.  kube's entry has no "." under f:spec (spec is a Go
#: struct); the schema-less field tracking of apimachinery/apply.py records spec itself too, as for every
#: object created here.
SPEC_FIELDS = {".": {}, "f:group": {}, "f:groupPriorityMinimum": {}, "f:version": {}, "f:versionPriority": {}}


def kube_apiserver_entry(when: str = CREATED) -> dict[str, Any]:
    """The managedFields entry kube-apiserver's autoregister controller leaves on a Local APIService it created."""
    return {"manager": "kube-apiserver", "operation": "Update", "apiVersion": "apiregistration.k8s.io/v1",
            "time": when, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, f"f:{LABEL}": {}}}, "f:spec": SPEC_FIELDS}}


class FlakyStore(MemoryStore):
    """A memory store whose creates fail like a full disk while `full` is set."""

    full = False

    async def create(self, collection: Collection, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        if self.full:
            raise StorageFullError("the storage folder's file system is full (No space left on device)", 28)
        return await super().create(collection, namespace, name, obj)


class Harness:
    """The served tree, a registration controller on its informer, and a StubTreq client."""

    def __init__(self, case: SynchronousTestCase, store: MemoryStore | None = None, start_informer: bool = True):
        self.case = case
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.store = store if store is not None else MemoryStore()
        strategy, groups = local_groups(self.now)
        self.served = serve_apis(self.store, self.clock, groups, start=start_informer)
        root = Resource()
        root.putChild(b"apis", self.served.apis)
        self.client = StubTreq(root)
        self.registration = LocalAPIServiceRegistration(self.store, self.served.informer, strategy,
                                                        LOCAL_APISERVICES, self.now, self.clock)

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)

    def start(self) -> None:
        self.registration.startService()
        self.case.addCleanup(self.stop)

    def stop(self) -> None:
        if self.registration.running:
            self.registration.stopService()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.case.successResultOf(Deferred.fromCoroutine(coroutine))

    def request(self, method: str, url: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        deferred = self.client.request(method, url, data=data, headers={"Content-Type": content_type})
        self.client.flush()
        response = self.case.successResultOf(deferred)
        content = self.client.content(response)
        self.client.flush()
        return response.code, json.loads(self.case.successResultOf(content))

    def get(self, name: str) -> dict[str, Any]:
        code, body = self.request("GET", f"{URL}/{name}")
        self.case.assertEqual(code, 200, body)
        return body  # type: ignore[no-any-return]

    def patch(self, name: str, body: Any, subresource: str = "") -> dict[str, Any]:
        url = f"{URL}/{name}" + (f"/{subresource}" if subresource else "")
        code, reply = self.request("PATCH", url + "?fieldManager=kubectl-patch", body,
                                   "application/merge-patch+json")
        self.case.assertEqual(code, 200, reply)
        return reply  # type: ignore[no-any-return]

    def delete(self, name: str) -> dict[str, Any]:
        code, reply = self.request("DELETE", f"{URL}/{name}")
        self.case.assertEqual(code, 200, reply)
        return reply  # type: ignore[no-any-return]


class RegistrationTests(SynchronousTestCase):
    """At start the Local APIServices are created as kube-apiserver's autoregister controller creates them."""

    def test_created_with_managed_fields(self) -> None:
        """Each Local APIService is created labelled onstart, Local, with kube-apiserver's managedFields entry."""
        harness = Harness(self)
        harness.start()
        self.assertIsNone(self.successResultOf(harness.registration.registered))  # type: ignore[arg-type]
        for name, spec in SPECS.items():
            obj = harness.get(name)
            self.assertEqual(obj["metadata"]["labels"], {LABEL: "onstart"})
            self.assertEqual(obj["metadata"]["managedFields"], [kube_apiserver_entry()])
            self.assertEqual((obj["spec"], obj["status"]), (spec, {"conditions": [local_condition()]}))
        self.assertEqual(FIELD_MANAGER, "kube-apiserver")

    def test_waits_for_the_informer(self) -> None:
        """Before the informer has listed the store nothing is written and the readiness check fails."""
        harness = Harness(self, start_informer=False)
        harness.start()
        self.assertEqual(harness.store.current_resource_version(), 0)
        self.assertEqual(harness.registration.check(), "the Local APIServices are not registered yet")
        harness.served.informer.startService()
        self.assertIsNone(harness.registration.check())
        self.assertEqual(harness.store.current_resource_version(), len(SPECS))


class KeptInPlaceTests(SynchronousTestCase):
    """After the start the Local APIServices are brought back at once whenever someone deletes or changes them."""

    def setUp(self) -> None:
        self.harness = Harness(self)
        self.harness.start()
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_deleted_comes_back_at_once(self) -> None:
        """A deleted Local APIService is there again as soon as the delete has answered: a new object, as at start."""
        before = self.harness.get(SERVICE)
        self.harness.clock.advance(60)
        self.harness.delete(SERVICE)
        after = self.harness.get(SERVICE)
        self.assertNotEqual(after["metadata"]["uid"], before["metadata"]["uid"])
        later = rfc3339(EPOCH + 60)
        self.assertEqual(after["metadata"]["creationTimestamp"], later)
        self.assertEqual(after["metadata"]["labels"], {LABEL: "onstart"})
        self.assertEqual(after["metadata"]["managedFields"], [kube_apiserver_entry(later)])
        self.assertEqual((after["spec"], after["status"]), (SPECS[SERVICE], {"conditions": [local_condition(later)]}))

    def test_delete_all(self) -> None:
        """`kubectl delete apiservice --all` (a delete of each) and a deletecollection both leave both Local
        APIServices in place, and the groups keep being served."""
        code, listed = self.harness.request("GET", URL)
        for item in listed["items"]:
            self.harness.delete(item["metadata"]["name"])
        code, listed = self.harness.request("GET", URL)
        self.assertEqual(sorted(i["metadata"]["name"] for i in listed["items"]), sorted(SPECS))
        code, deleted = self.harness.request("DELETE", URL)
        self.assertEqual((code, len(deleted["items"])), (200, len(SPECS)))
        code, listed = self.harness.request("GET", URL)
        self.assertEqual(sorted(i["metadata"]["name"] for i in listed["items"]), sorted(SPECS))
        code, body = self.harness.request("GET", "https://agg.test/apis/service.grafana.app/v0alpha1")
        self.assertEqual(code, 200, body)

    def test_spec_repaired_at_once(self) -> None:
        """A changed spec is put back in the same breath; kube-apiserver owns the spec fields again, alone."""
        self.harness.clock.advance(30)
        changed = self.harness.patch(SERVICE, {"spec": {"groupPriorityMinimum": 5, "versionPriority": 7}})
        self.assertEqual(changed["spec"]["groupPriorityMinimum"], 5)
        repaired = self.harness.get(SERVICE)
        self.assertEqual(repaired["spec"], SPECS[SERVICE])
        self.assertEqual(repaired["metadata"]["generation"], 3)
        managers = {(e["manager"], e.get("subresource", "")): e for e in repaired["metadata"]["managedFields"]}
        self.assertEqual(managers[("kube-apiserver", "")]["fieldsV1"]["f:spec"], SPEC_FIELDS)
        self.assertEqual(managers[("kube-apiserver", "")]["time"], rfc3339(EPOCH + 30))
        # kubectl-patch owned only the two priorities: taken back, it owns nothing and its entry goes.
        self.assertEqual(list(managers), [("kube-apiserver", "")])

    def test_service_removed(self) -> None:
        """A Local APIService pointed at a service becomes Local again."""
        self.harness.patch(SERVICE, {"spec": {"service": {"namespace": "default", "name": "x", "port": 443}}})
        repaired = self.harness.get(SERVICE)
        self.assertEqual(repaired["spec"], SPECS[SERVICE])
        self.assertEqual(repaired["status"], {"conditions": [local_condition()]})

    def test_local_condition_repaired(self) -> None:
        """A status that no longer says Local is set back, with the status write owned by kube-apiserver."""
        self.harness.clock.advance(90)
        self.harness.patch(SERVICE, {"status": {"conditions": [
            {"type": "Available", "status": "False", "lastTransitionTime": CREATED, "reason": "Broken",
             "message": "someone said so"}]}}, subresource="status")
        repaired = self.harness.get(SERVICE)
        self.assertEqual(repaired["status"], {"conditions": [local_condition(rfc3339(EPOCH + 90))]})
        status_entries = [e for e in repaired["metadata"]["managedFields"]
                          if e["manager"] == "kube-apiserver" and e.get("subresource") == "status"]
        self.assertEqual(len(status_entries), 1)
        self.assertIn("f:status", status_entries[0]["fieldsV1"])

    def test_label_value_repaired(self) -> None:
        """The automanaged label set to its other managed value (`true`) goes back to `onstart`."""
        self.harness.patch(SERVICE, {"metadata": {"labels": {LABEL: "true", "team": "a"}}})
        self.assertEqual(self.harness.get(SERVICE)["metadata"]["labels"], {LABEL: "onstart", "team": "a"})

    def test_unlabelled_is_left_alone(self) -> None:
        """Removing the automanaged label takes the object out of the controller's hands, as in kube, and says so once."""
        self.harness.patch(SERVICE, {"metadata": {"labels": {LABEL: None}}})
        self.harness.patch(SERVICE, {"spec": {"versionPriority": 9}})
        self.harness.patch(SERVICE, {"spec": {"versionPriority": 8}})
        self.assertEqual(self.harness.get(SERVICE)["spec"]["versionPriority"], 8)
        notes = [e for e in self.log if "leaving APIService" in e.get("log_format", "")]
        self.assertEqual(len(notes), 1)
        self.harness.delete(SERVICE)
        self.assertEqual(self.harness.get(SERVICE)["metadata"]["labels"], {LABEL: "onstart"})

    def test_steady_state_writes_nothing(self) -> None:
        """Changes to other APIServices, and writes that leave a Local APIService right, cause no writes."""
        before = self.harness.store.current_resource_version()
        self.harness.patch(SERVICE, {"metadata": {"annotations": {"note": "hello"}}})
        code, _ = self.harness.request("POST", URL, {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1.other.example"},
            "spec": {"group": "other.example", "version": "v1", "groupPriorityMinimum": 100, "versionPriority": 1}})
        self.assertEqual(code, 201)
        self.harness.delete("v1.other.example")
        self.assertEqual(self.harness.store.current_resource_version(), before + 3)

    def test_stopped_controller_does_nothing(self) -> None:
        """Once stopped, the controller no longer brings anything back."""
        self.harness.stop()
        self.harness.delete(SERVICE)
        code, _ = self.harness.request("GET", f"{URL}/{SERVICE}")
        self.assertEqual(code, 404)

    def test_readiness_keeps_its_meaning(self) -> None:
        """The readiness check says whether every Local APIService was registered once: a later delete does not
        make it fail."""
        self.assertIsNone(self.harness.registration.check())
        self.harness.stop()
        self.harness.delete(SERVICE)
        self.assertIsNone(self.harness.registration.check())


class FullStorageTests(SynchronousTestCase):
    """A Local APIService that cannot be re-created for lack of room comes back once there is room."""

    def test_retried_after_a_full_disk(self) -> None:
        """The re-create that meets a full disk is retried with a backoff, without a traceback, until it works."""
        store = FlakyStore()
        harness = Harness(self, store)
        harness.start()
        log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        store.full = True
        harness.delete(SERVICE)
        self.assertEqual(harness.request("GET", f"{URL}/{SERVICE}")[0], 404)
        harness.clock.pump([0.5, 1.0, 2.0])
        self.assertEqual(harness.request("GET", f"{URL}/{SERVICE}")[0], 404)
        store.full = False
        harness.clock.pump([4.0])
        self.assertEqual(harness.get(SERVICE)["spec"], SPECS[SERVICE])
        self.assertEqual([e for e in log if "log_failure" in e or e["log_level"] >= LogLevel.error], [])
        self.assertEqual(self.flushLoggedErrors(), [])


class DaemonTests(SynchronousTestCase):
    """The daemon built by make_service keeps its Local APIServices."""

    def test_deleted_local_apiservice_comes_back(self) -> None:
        """Deleting a Local APIService from the daemon's store brings it straight back."""
        folder = os.path.abspath(self.mktemp())
        settings = load_settings(None, {"data-dir": os.path.join(folder, "data"), "bind-address": "127.0.0.1",
                                        "secure-port": "16443"})
        runtime = load_runtime(settings)
        reactor = MemoryReactorClock()
        top = make_service(settings, runtime, reactor)
        top.startService()
        self.addCleanup(lambda: (top.stopService(), reactor.pump([1.0] * 30)))
        store = runtime.store
        first = self.successResultOf(Deferred.fromCoroutine(store.get(APISERVICES, "", SERVICE)))
        self.successResultOf(Deferred.fromCoroutine(store.delete(APISERVICES, "", SERVICE)))
        again = self.successResultOf(Deferred.fromCoroutine(store.get(APISERVICES, "", SERVICE)))
        self.assertNotEqual(again["metadata"]["uid"], first["metadata"]["uid"])
        self.assertEqual(again["spec"], SPECS[SERVICE])
