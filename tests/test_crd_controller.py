# -*- test-case-name: tests.test_crd_controller -*-
"""Tests for L{grafana_aggregator.controllers.crds}: the CRD controller names, establishes and flags CRDs, and
carries out their deletion (instances first, then the cleanup finalizer).

Each test serves `apiextensions.k8s.io/v1` as the daemon does (`tap.local_groups`) over a memory store, runs the
controller on an informer of CRDs with a Clock, and changes the CRDs through the REST handler as kubectl would.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Coroutine
from typing import Any

from attrs import define
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.controllers.crds import (
    CLEANUP_RECHECK_SECONDS,
    CRDS,
    VALIDATION_RULES_ENFORCED,
    CRDController,
)
from grafana_aggregator.registry.crdstatus import (
    CLEANUP_FINALIZER,
    INITIAL_NAMES_ACCEPTED,
    INSTANCE_DELETION_COMPLETED,
    INSTANCE_DELETION_IN_PROGRESS,
    INSTANCE_DELETION_PENDING,
    NO_CONFLICTS,
    NOT_ACCEPTED,
    find_condition,
)
from grafana_aggregator.storage import (
    Collection,
    ConflictError,
    ListResult,
    NotFoundError,
    StorageUnavailableError,
    WatchEvent,
)
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import local_groups

from .support import serve_apis

EPOCH = 1_750_000_000.0
CREATED = "2025-06-15T15:06:40Z"
URL = "https://agg.test/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WIDGETS = Collection("example.com", "widgets")
#: The first retry of a failed sync (the controller's work queue's initial backoff).
FIRST_BACKOFF = 0.2


def crd(plural: str = "widgets", kind: str = "Widget", short_names: list[str] | None = None,
        list_kind: str | None = None, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body a client POSTs to create a namespaced CRD of group example.com, version v1."""
    names: dict[str, Any] = {"plural": plural, "singular": plural.rstrip("s"), "kind": kind}
    if short_names is not None:
        names["shortNames"] = short_names
    if list_kind is not None:
        names["listKind"] = list_kind
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": names,
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": (
                         schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})}}]}}


def with_rule(rule: str = "self.spec.replicas >= 0") -> dict[str, Any]:
    """A schema with one x-kubernetes-validations rule at its root."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-validations": [{"rule": rule}]}


def widget(namespace: str, name: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    """An instance of the Widget kind as stored."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "creationTimestamp": CREATED}
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta, "spec": {}}


def condition(condition_type: str, status: str, reason_message: tuple[str, str],
              when: str = CREATED) -> dict[str, Any]:
    reason, message = reason_message
    return {"type": condition_type, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": when}


@define
class FlakyStore(MemoryStore):
    """A memory store whose next CRD writes (those with the Terminating reason `conflict_reason`, if set) fail
    with a conflict, and whose next lists of the Widget instances fail as if the storage were away."""

    conflicts: int = 0
    conflict_reason: str | None = None
    list_failures: int = 0
    instance_lists: int = 0

    async def update(self, collection: Collection, namespace: str, name: str, obj: dict[str, Any],
                     expected_resource_version: int | None = None) -> dict[str, Any]:
        terminating = find_condition(obj, "Terminating") or {}
        if collection == CRDS and self.conflicts and self.conflict_reason in (None, terminating.get("reason")):
            self.conflicts -= 1
            raise ConflictError("the object changed meanwhile")
        return await super().update(collection, namespace, name, obj, expected_resource_version)

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        if collection == WIDGETS:
            self.instance_lists += 1
            if self.list_failures:
                self.list_failures -= 1
                raise StorageUnavailableError("etcd is unreachable")
        return await super().list(collection, namespace)


class Harness:
    """apiextensions.k8s.io/v1 served over a memory store, the CRD controller on its own informer, a StubTreq
    client, and every CRD event in the order the store made it."""

    def __init__(self, case: SynchronousTestCase, store: MemoryStore | None = None):
        self.case = case
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.store = store if store is not None else MemoryStore()
        _, groups = local_groups(self.now)
        root = Resource()
        root.putChild(b"apis", serve_apis(self.store, self.clock, groups).apis)
        self.client = StubTreq(root)
        self.informer = Informer(self.store, (CRDS,), self.clock)
        self.events: list[WatchEvent] = []
        # Listening before the controller does: the controller's own writes happen inside its listener.
        self.informer.add_listener(self.events.append)
        self.controller = CRDController(self.store, self.informer, self.clock, self.now)

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)

    def start(self) -> None:
        self.informer.startService()
        self.controller.startService()
        self.case.addCleanup(self.controller.stopService)
        self.case.addCleanup(self.informer.stopService)
        self.clock.advance(0)

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

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        code, reply = self.request("POST", URL, body)
        self.case.assertEqual(code, 201, reply)
        self.clock.advance(0)
        return reply  # type: ignore[no-any-return]

    def get(self, name: str) -> dict[str, Any]:
        code, reply = self.request("GET", f"{URL}/{name}")
        self.case.assertEqual(code, 200, reply)
        return reply  # type: ignore[no-any-return]

    def stored(self, name: str) -> dict[str, Any] | None:
        """The CRD as stored now, or None once it is gone."""
        found = self.informer.get(CRDS, "", name)
        result: list[Any] = []
        Deferred.fromCoroutine(MemoryStore.get(self.store, CRDS, "", name)).addBoth(result.append)
        if isinstance(result[0], Failure):
            result[0].trap(NotFoundError)
            self.case.assertIsNone(found)
            return None
        self.case.assertEqual(found, result[0])
        return result[0]  # type: ignore[no-any-return]

    def instances(self) -> list[str]:
        return sorted(f"{i['metadata']['namespace']}/{i['metadata']['name']}"
                      for i in self.run(MemoryStore.list(self.store, WIDGETS, None)).items)

    def terminating(self, name: str) -> list[str]:
        """The reasons of the Terminating condition of the CRD's events, in order (repeats folded)."""
        reasons: list[str] = []
        for event in self.events:
            found = find_condition(event.object, "Terminating") if event.name == name else None
            if found is not None and (not reasons or reasons[-1] != found["reason"]):
                reasons.append(found["reason"])
        return reasons


class NamingTests(SynchronousTestCase):
    """NamesAccepted, acceptedNames and Established."""

    def test_new_crd_accepted_and_established(self) -> None:
        """A new CRD gets its names accepted (NoConflicts), then Established=True (InitialNamesAccepted)."""
        harness = Harness(self)
        harness.start()
        harness.create(crd(short_names=["wd"]))
        status = harness.get("widgets.example.com")["status"]
        self.assertEqual(status["acceptedNames"], {"plural": "widgets", "singular": "widget", "shortNames": ["wd"],
                                                   "kind": "Widget", "listKind": "WidgetList"})
        self.assertEqual(status["conditions"], [condition("NamesAccepted", "True", NO_CONFLICTS),
                                                condition("Established", "True", INITIAL_NAMES_ACCEPTED)])
        self.assertEqual(status["storedVersions"], ["v1"])

    def test_crd_stored_before_start(self) -> None:
        """A CRD already stored when the controller starts is named and established once the informer is ready."""
        harness = Harness(self)
        code, _ = harness.request("POST", URL, crd())
        self.assertEqual(code, 201)
        harness.clock.advance(5)
        harness.start()
        status = harness.get("widgets.example.com")["status"]
        when = "2025-06-15T15:06:45Z"
        self.assertEqual(status["conditions"], [condition("NamesAccepted", "True", NO_CONFLICTS, when),
                                                condition("Established", "True", INITIAL_NAMES_ACCEPTED, when)])

    def test_short_name_conflict_then_freed(self) -> None:
        """A short name another CRD of the group holds is refused (ShortNamesConflict, not Established); once
        that CRD is deleted, the names are accepted and the CRD established."""
        harness = Harness(self)
        harness.start()
        harness.create(crd(short_names=["wd"]))
        harness.create(crd("gadgets", "Gadget", short_names=["wd", "gd"]))
        status = harness.get("gadgets.example.com")["status"]
        self.assertEqual(status["acceptedNames"], {"plural": "gadgets", "singular": "gadget", "kind": "Gadget",
                                                   "listKind": "GadgetList"})
        self.assertEqual(status["conditions"], [
            condition("NamesAccepted", "False", ("ShortNamesConflict", '"wd" is already in use')),
            condition("Established", "False", NOT_ACCEPTED)])

        harness.clock.advance(10)
        code, _ = harness.request("DELETE", f"{URL}/widgets.example.com")
        self.assertEqual(code, 200)
        harness.clock.advance(0)
        self.assertIsNone(harness.stored("widgets.example.com"))
        status = harness.get("gadgets.example.com")["status"]
        when = "2025-06-15T15:06:50Z"
        self.assertEqual(status["acceptedNames"]["shortNames"], ["wd", "gd"])
        self.assertEqual(status["conditions"], [condition("NamesAccepted", "True", NO_CONFLICTS, when),
                                                condition("Established", "True", INITIAL_NAMES_ACCEPTED, when)])

    def test_kind_conflict(self) -> None:
        """A kind another CRD of the group holds is refused with kube's KindConflict; the other names are
        accepted."""
        harness = Harness(self)
        harness.start()
        harness.create(crd())
        harness.create(crd("gadgets", "Widget", list_kind="GadgetList"))
        status = harness.get("gadgets.example.com")["status"]
        self.assertEqual(status["acceptedNames"], {"plural": "gadgets", "singular": "gadget",
                                                   "listKind": "GadgetList"})
        self.assertEqual(status["conditions"], [
            condition("NamesAccepted", "False", ("KindConflict", '"Widget" is already in use')),
            condition("Established", "False", NOT_ACCEPTED)])

    def test_conflict_on_status_write_retried(self) -> None:
        """A status write refused because the CRD changed meanwhile is tried again after the backoff."""
        store = FlakyStore()
        harness = Harness(self, store)
        harness.start()
        store.conflicts = 1
        harness.create(crd())
        self.assertNotIn("conditions", harness.get("widgets.example.com")["status"])
        harness.clock.advance(FIRST_BACKOFF)
        status = harness.get("widgets.example.com")["status"]
        self.assertEqual([(c["type"], c["status"]) for c in status["conditions"]],
                         [("NamesAccepted", "True"), ("Established", "True")])


class ValidationRulesTests(SynchronousTestCase):
    """The ValidationRulesEnforced condition."""

    def test_rules_flagged_then_cleared(self) -> None:
        """A CRD with x-kubernetes-validations rules is marked ValidationRulesEnforced=False (CELNotSupported,
        naming the rule); a changed rule changes the message, and removing the rules removes the condition."""
        harness = Harness(self)
        harness.start()
        harness.create(crd(schema=with_rule()))
        found = find_condition(harness.get("widgets.example.com"), VALIDATION_RULES_ENFORCED)
        self.assertEqual(found, {
            "type": VALIDATION_RULES_ENFORCED, "status": "False", "reason": "CELNotSupported",
            "message": "1 x-kubernetes-validations rule(s) are accepted but not enforced by this server: "
                       '"self.spec.replicas >= 0" at <root>',
            "lastTransitionTime": CREATED})

        changed = harness.get("widgets.example.com")
        changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = with_rule("has(self.spec)")
        code, reply = harness.request("PUT", f"{URL}/widgets.example.com", changed)
        self.assertEqual(code, 200, reply)
        found = find_condition(harness.get("widgets.example.com"), VALIDATION_RULES_ENFORCED)
        assert found is not None
        self.assertIn('"has(self.spec)" at <root>', found["message"])

        plain = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        code, reply = harness.request("PATCH", f"{URL}/widgets.example.com", {"spec": {"versions": [
            {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": plain}}]}},
            "application/merge-patch+json")
        self.assertEqual(code, 200, reply)
        status = harness.get("widgets.example.com")["status"]
        self.assertEqual([c["type"] for c in status["conditions"]], ["NamesAccepted", "Established"])


class APIApprovalTests(SynchronousTestCase):
    """kube's KubernetesAPIApprovalPolicyConformant condition on CRDs of the protected *.k8s.io groups."""

    def protected(self, annotation: str) -> dict[str, Any]:
        body = crd()
        body["metadata"] = {"name": "widgets.things.k8s.io", "annotations": {"api-approved.kubernetes.io": annotation}}
        body["spec"]["group"] = "things.k8s.io"
        return body

    def test_conditions(self) -> None:
        harness = Harness(self)
        harness.start()
        harness.create(self.protected("unapproved, experimental"))
        self.assertEqual(find_condition(harness.get("widgets.things.k8s.io"), "KubernetesAPIApprovalPolicyConformant"), {
            "type": "KubernetesAPIApprovalPolicyConformant", "status": "False", "reason": "UnapprovedAnnotation",
            "message": 'not approved: "unapproved, experimental"', "lastTransitionTime": CREATED})
        approved = harness.get("widgets.things.k8s.io")
        approved["metadata"]["annotations"]["api-approved.kubernetes.io"] = "https://github.com/kubernetes/enhancements/pull/1111"
        code, reply = harness.request("PUT", f"{URL}/widgets.things.k8s.io", approved)
        self.assertEqual(code, 200, reply)
        found = find_condition(harness.get("widgets.things.k8s.io"), "KubernetesAPIApprovalPolicyConformant")
        assert found is not None
        self.assertEqual((found["status"], found["reason"], found["message"]),
                         ("True", "ApprovedAnnotation", "approved in https://github.com/kubernetes/enhancements/pull/1111"))
        harness.create(crd())
        self.assertIsNone(find_condition(harness.get("widgets.example.com"), "KubernetesAPIApprovalPolicyConformant"))


class DeletionTests(SynchronousTestCase):
    """Deleting a CRD deletes its instances, then the CRD."""

    def setUp(self) -> None:
        self.store = FlakyStore()
        self.harness = Harness(self, self.store)
        self.harness.start()
        self.harness.create(crd())
        self.harness.clock.advance(10)

    def seed(self, *instances: dict[str, Any]) -> None:
        for instance in instances:
            meta = instance["metadata"]
            self.harness.run(self.store.create(WIDGETS, meta["namespace"], meta["name"], instance))

    def delete(self) -> dict[str, Any]:
        code, reply = self.harness.request("DELETE", f"{URL}/widgets.example.com")
        self.assertEqual(code, 200, reply)
        return reply  # type: ignore[no-any-return]

    def test_delete_answers_the_marked_crd(self) -> None:
        """DELETE answers 200 with the CRD marked for deletion: the cleanup finalizer, a deletionTimestamp and
        Terminating=True (InstanceDeletionPending), not a Status."""
        reply = self.delete()
        self.assertEqual(reply["kind"], "CustomResourceDefinition")
        self.assertEqual(reply["metadata"]["finalizers"], [CLEANUP_FINALIZER])
        self.assertEqual(reply["metadata"]["deletionTimestamp"], "2025-06-15T15:06:50Z")
        self.assertEqual(reply["metadata"]["deletionGracePeriodSeconds"], 0)
        status, reason, message = INSTANCE_DELETION_PENDING
        self.assertEqual(find_condition(reply, "Terminating"), {
            "type": "Terminating", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2025-06-15T15:06:50Z"})

    def test_instances_deleted_then_crd(self) -> None:
        """The controller marks the deletion in progress, deletes every instance in every namespace, then drops
        the finalizer, which deletes the CRD."""
        self.seed(widget("default", "a"), widget("team-b", "b"))
        self.delete()
        self.harness.clock.advance(0)
        self.assertEqual(self.harness.instances(), [])
        self.assertIsNone(self.harness.stored("widgets.example.com"))
        self.assertEqual(self.harness.terminating("widgets.example.com"),
                         [INSTANCE_DELETION_PENDING[1], INSTANCE_DELETION_IN_PROGRESS[1],
                          INSTANCE_DELETION_COMPLETED[1]])
        self.assertEqual(self.harness.events[-1].type, "DELETED")
        self.assertEqual(find_condition(self.harness.events[-1].object, "Terminating")["reason"],
                         INSTANCE_DELETION_COMPLETED[1])

    def test_instance_finalizer_holds_the_crd(self) -> None:
        """An instance with a finalizer of its own is marked deleting and keeps the CRD, checked again every
        CLEANUP_RECHECK_SECONDS, until that finalizer is removed."""
        self.seed(widget("default", "held", ["example.com/hold"]), widget("default", "free"))
        self.delete()
        self.harness.clock.advance(0)
        self.assertEqual(self.harness.instances(), ["default/held"])
        held = self.harness.run(self.store.get(WIDGETS, "default", "held"))
        self.assertEqual(held["metadata"]["deletionTimestamp"], "2025-06-15T15:06:50Z")
        self.assertEqual(held["metadata"]["finalizers"], ["example.com/hold"])
        for _ in range(3):
            self.harness.clock.advance(CLEANUP_RECHECK_SECONDS)
            stored = self.harness.stored("widgets.example.com")
            assert stored is not None
            self.assertEqual(find_condition(stored, "Terminating")["reason"],  # type: ignore[index]
                             INSTANCE_DELETION_IN_PROGRESS[1])
        lists = self.store.instance_lists

        del held["metadata"]["finalizers"]
        self.harness.run(self.store.update(WIDGETS, "default", "held", held))
        self.harness.clock.advance(CLEANUP_RECHECK_SECONDS)
        self.assertEqual(self.store.instance_lists, lists + 1)
        self.assertEqual(self.harness.instances(), [])
        self.assertIsNone(self.harness.stored("widgets.example.com"))

    def test_list_failure_retried(self) -> None:
        """A failure to list the instances is recorded on the CRD (InstanceDeletionFailed) and the cleanup tried
        again after a backoff, not at once and not given up."""
        self.seed(widget("default", "a"))
        self.store.list_failures = 2
        self.delete()
        self.harness.clock.advance(0)
        self.assertEqual(self.store.instance_lists, 1)
        stored = self.harness.stored("widgets.example.com")
        assert stored is not None
        self.assertEqual(find_condition(stored, "Terminating"), {
            "type": "Terminating", "status": "True", "reason": "InstanceDeletionFailed",
            "message": "could not list instances: etcd is unreachable", "lastTransitionTime": "2025-06-15T15:06:50Z"})
        self.harness.clock.advance(FIRST_BACKOFF)
        self.assertEqual(self.store.instance_lists, 2)
        self.assertIsNotNone(self.harness.stored("widgets.example.com"))
        self.harness.clock.advance(FIRST_BACKOFF * 2)
        self.assertEqual(self.store.instance_lists, 3)
        self.assertEqual(self.harness.instances(), [])
        self.assertIsNone(self.harness.stored("widgets.example.com"))

    def test_conflict_while_cleaning_up_retried(self) -> None:
        """A conflict on the InstanceDeletionInProgress write is retried; the cleanup still completes."""
        self.seed(widget("default", "a"))
        self.store.conflicts, self.store.conflict_reason = 1, INSTANCE_DELETION_IN_PROGRESS[1]
        self.delete()
        self.harness.clock.advance(0)
        self.assertEqual((self.store.conflicts, self.harness.instances()), (0, ["default/a"]))
        self.harness.clock.advance(FIRST_BACKOFF)
        self.assertEqual(self.harness.instances(), [])
        self.assertIsNone(self.harness.stored("widgets.example.com"))

    def test_deleting_crd_without_controller_keeps_it(self) -> None:
        """Without the controller nothing removes the cleanup finalizer: the CRD stays, marked for deletion."""
        self.harness.controller.stopService()
        reply = self.delete()
        self.harness.clock.advance(CLEANUP_RECHECK_SECONDS)
        stored = self.harness.stored("widgets.example.com")
        assert stored is not None
        self.assertEqual(stored["metadata"]["resourceVersion"], reply["metadata"]["resourceVersion"])
        self.assertEqual(stored["metadata"]["finalizers"], [CLEANUP_FINALIZER])
