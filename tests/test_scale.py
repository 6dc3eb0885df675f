# -*- test-case-name: tests.test_scale -*-
"""Tests for L{grafana_aggregator.apimachinery.scale}: the `scale` subresource of a custom resource whose CRD has
`subresources.scale`, read and written as an autoscaling/v1 Scale (what `kubectl scale` and autoscalers use).

The kinds are served by the REST handler over a memory store, as an established CRD's are, through StubTreq.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.apimachinery.discovery import aggregated_resources, api_resource_list
from grafana_aggregator.apimachinery.strategy import LocalGroupVersion
from grafana_aggregator.registry.customresource import CustomResourceStrategy
from grafana_aggregator.storage import Collection
from grafana_aggregator.storage.memory import MemoryStore

from .support import RacingStore, serve_apis
from .test_rest_reads import Reply

EPOCH = 1_750_000_000.0
CREATED = "2025-06-15T15:06:40Z"
HOST = "https://agg.test/apis/example.com/v1"
WIDGETS = f"{HOST}/namespaces/default/widgets"
WEB = f"{WIDGETS}/web"
SCALE = f"{WEB}/scale"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
COLLECTION = Collection("example.com", "widgets")

SCALE_SUBRESOURCE = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                     "labelSelectorPath": ".status.selector"}


def crd(plural: str, kind: str, subresources: dict[str, Any]) -> dict[str, Any]:
    """A namespaced CRD of group example.com with one version, v1, and the given subresources."""
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}, "size": {"type": "string"}}},
        "status": {"type": "object", "properties": {"replicas": {"type": "integer"},
                                                    "selector": {"type": "string"}}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": plural, "singular": plural[:-1], "kind": kind, "listKind": f"{kind}List"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "subresources": subresources,
                                   "schema": {"openAPIV3Schema": schema}}]}}


WIDGET_CRD = crd("widgets", "Widget", {"status": {}, "scale": SCALE_SUBRESOURCE})
GADGET_CRD = crd("gadgets", "Gadget", {"status": {}})


class Server:
    """Widgets (with scale) and Gadgets (without) served over a memory store, with a StubTreq client."""

    def __init__(self, case: SynchronousTestCase, store: MemoryStore | None = None):
        self.case = case
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.store = store if store is not None else MemoryStore()
        self.widgets = CustomResourceStrategy(WIDGET_CRD, "v1")
        self.gadgets = CustomResourceStrategy(GADGET_CRD, "v1")
        group = LocalGroupVersion("example.com", "v1", (self.widgets, self.gadgets))
        root = Resource()
        root.putChild(b"apis", serve_apis(self.store, self.clock, [group]).apis)
        self.client = StubTreq(root)

    def request(self, method: str, url: str, body: Any = None, content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent["Content-Type"] = content_type
        deferred = self.client.request(method, url, data=data, headers=sent)
        self.client.flush()
        response = self.case.successResultOf(deferred)
        content = self.client.content(response)
        self.client.flush()
        return Reply(response.code, response.headers, self.case.successResultOf(content))

    def create(self, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the Widget `web` (and set its status), and return it as stored."""
        body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "web"}, "spec": spec}
        reply = self.request("POST", WIDGETS, body)
        self.case.assertEqual(reply.code, 201, reply.body)
        created: dict[str, Any] = reply.json()
        if status is not None:
            created["status"] = status
            reply = self.request("PUT", f"{WEB}/status", created)
            self.case.assertEqual(reply.code, 200, reply.body)
            created = reply.json()
        return created

    def widget(self) -> dict[str, Any]:
        reply = self.request("GET", WEB)
        self.case.assertEqual(reply.code, 200, reply.body)
        return reply.json()  # type: ignore[no-any-return]


def status_of(reply: Reply) -> tuple[int, str, str]:
    """(code, reason, message) of a Status answer."""
    body = reply.json()
    assert body["kind"] == "Status", body
    return reply.code, body["reason"], body["message"]


class GetScaleTests(SynchronousTestCase):
    """GET of /scale."""

    def test_scale_of_object(self) -> None:
        """The Scale names the object (name, namespace, uid, resourceVersion, creationTimestamp) and carries its
        replicas and label selector."""
        server = Server(self)
        created = server.create({"replicas": 2}, {"replicas": 1, "selector": "app=web"})
        reply = server.request("GET", SCALE)
        self.assertEqual(reply.code, 200, reply.body)
        meta = created["metadata"]
        self.assertEqual(reply.json(), {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "default", "uid": meta["uid"],
                         "resourceVersion": meta["resourceVersion"], "creationTimestamp": CREATED},
            "spec": {"replicas": 2}, "status": {"replicas": 1, "selector": "app=web"}})

    def test_zero_and_missing_replicas(self) -> None:
        """spec.replicas 0 is omitted (omitempty), a missing status.replicas is 0, and no selector is shown when
        the object has none."""
        server = Server(self)
        server.create({"replicas": 0})
        scale = server.request("GET", SCALE).json()
        self.assertEqual((scale["spec"], scale["status"]), ({}, {"replicas": 0}))

    def test_missing_object(self) -> None:
        """The Scale of an object that does not exist is a 404 naming the object."""
        reply = Server(self).request("GET", SCALE)
        self.assertEqual(status_of(reply), (404, "NotFound", 'widgets.example.com "web" not found'))

    def test_kind_without_scale(self) -> None:
        """A kind whose CRD has no scale subresource has no /scale: 404."""
        server = Server(self)
        reply = server.request("GET", f"{HOST}/namespaces/default/gadgets/g/scale")
        self.assertEqual(status_of(reply)[:2], (404, "NotFound"))
        reply = server.request("PUT", f"{HOST}/namespaces/default/gadgets/g/scale",
                               {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 1}})
        self.assertEqual(status_of(reply)[:2], (404, "NotFound"))

    def test_no_watch(self) -> None:
        """/scale cannot be watched: 404, for ?watch=1 and for the /watch/ prefix."""
        server = Server(self)
        server.create({"replicas": 1})
        for url in (f"{SCALE}?watch=1", f"{HOST}/watch/namespaces/default/widgets/web/scale"):
            self.assertEqual(status_of(server.request("GET", url))[:2], (404, "NotFound"), url)

    def test_delete_not_allowed(self) -> None:
        """DELETE and POST of /scale are 405s, and leave the object."""
        server = Server(self)
        server.create({"replicas": 1})
        for method in ("DELETE", "POST"):
            self.assertEqual(status_of(server.request(method, SCALE))[:2], (405, "MethodNotAllowed"))
        server.widget()


class PutScaleTests(SynchronousTestCase):
    """PUT of /scale."""

    def scale(self, replicas: Any, resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": "web", "namespace": "default"}
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta, "spec": {"replicas": replicas}}

    def test_sets_spec_replicas(self) -> None:
        """A PUT sets .spec.replicas, bumps the generation, records a managedFields entry for the scale
        subresource, and answers the new Scale."""
        server = Server(self)
        created = server.create({"replicas": 1, "size": "big"}, {"replicas": 1})
        server.clock.advance(60)
        reply = server.request("PUT", f"{SCALE}?fieldManager=autoscaler",
                               self.scale(5, created["metadata"]["resourceVersion"]))
        self.assertEqual(reply.code, 200, reply.body)
        widget = server.widget()
        self.assertEqual(reply.json()["spec"], {"replicas": 5})
        self.assertEqual(reply.json()["metadata"]["resourceVersion"], widget["metadata"]["resourceVersion"])
        self.assertEqual(widget["spec"], {"replicas": 5, "size": "big"})
        self.assertEqual(widget["metadata"]["generation"], created["metadata"]["generation"] + 1)
        entry = widget["metadata"]["managedFields"][-1]
        self.assertEqual({key: entry.get(key) for key in ("manager", "operation", "subresource", "time")},
                         {"manager": "autoscaler", "operation": "Update", "subresource": "scale",
                          "time": "2025-06-15T15:07:40Z"})
        self.assertEqual(entry["fieldsV1"], {"f:spec": {"f:replicas": {}}})

    def test_without_resource_version(self) -> None:
        """A Scale without a resourceVersion is written unconditionally."""
        server = Server(self)
        server.create({"replicas": 1})
        reply = server.request("PUT", SCALE, self.scale(3))
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(server.widget()["spec"]["replicas"], 3)

    def test_concurrent_write_retried(self) -> None:
        """A PUT without a resourceVersion that races another write is made again on the new object."""
        store = RacingStore()
        server = Server(self, store)
        server.create({"replicas": 1})
        store.racing = True
        reply = server.request("PUT", SCALE, self.scale(6))
        self.assertEqual(reply.code, 200, reply.body)
        widget = server.widget()
        self.assertEqual((widget["spec"]["replicas"], widget["metadata"]["labels"]), (6, {"touched": "yes"}))

    def test_stale_resource_version(self) -> None:
        """A Scale naming a resourceVersion that is no longer the object's is a 409 Conflict."""
        server = Server(self)
        created = server.create({"replicas": 1})
        server.request("PUT", SCALE, self.scale(2))
        reply = server.request("PUT", SCALE, self.scale(3, created["metadata"]["resourceVersion"]))
        self.assertEqual(status_of(reply), (409, "Conflict", 'Operation cannot be fulfilled on widgets.example.com '
                                                             '"web": the object has been modified; please apply your '
                                                             'changes to the latest version and try again'))
        self.assertEqual(server.widget()["spec"]["replicas"], 2)

    def test_negative_replicas(self) -> None:
        """Negative replicas are kube's 422 for the Scale."""
        server = Server(self)
        server.create({"replicas": 1})
        reply = server.request("PUT", SCALE, self.scale(-1))
        self.assertEqual(status_of(reply), (422, "Invalid", 'Scale.autoscaling "web" is invalid: spec.replicas: '
                                                            'Invalid value: -1: must be greater than or equal to 0'))
        self.assertEqual(reply.json()["details"], {
            "name": "web", "group": "autoscaling", "kind": "Scale",
            "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal "
                                                                  "to 0", "field": "spec.replicas"}]})
        self.assertEqual(server.widget()["spec"]["replicas"], 1)

    def test_replicas_not_an_int32(self) -> None:
        """Replicas that do not decode into the Scale's int32 are a 400 with Go's decoding message."""
        server = Server(self)
        server.create({"replicas": 1})
        prefix = 'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal '
        for replicas, what in (("3", "string"), (1.5, "number 1.5"), (True, "bool"), (2 ** 31, "number 2147483648"),
                               ([1], "array")):
            reply = server.request("PUT", SCALE, self.scale(replicas))
            self.assertEqual(status_of(reply), (400, "BadRequest", f"{prefix}{what} into Go struct field "
                                                                   f"ScaleSpec.spec.replicas of type int32"), replicas)
        body = self.scale(1)
        body["spec"] = 3
        reply = server.request("PUT", SCALE, body)
        self.assertEqual(status_of(reply), (400, "BadRequest", f"{prefix}number into Go struct field Scale.spec of "
                                                               f"type v1.ScaleSpec"))
        self.assertEqual(server.widget()["spec"]["replicas"], 1)

    def test_wrong_kind(self) -> None:
        """A body that is not an autoscaling/v1 Scale is a 400."""
        server = Server(self)
        server.create({"replicas": 1})
        body = self.scale(2)
        body["kind"] = "Widget"
        self.assertEqual(status_of(server.request("PUT", SCALE, body))[:2], (400, "BadRequest"))

    def test_other_name(self) -> None:
        """A Scale naming another object is a 400."""
        server = Server(self)
        server.create({"replicas": 1})
        body = self.scale(2)
        body["metadata"]["name"] = "other"
        self.assertEqual(status_of(server.request("PUT", SCALE, body)), (
            400, "BadRequest", "the name of the object (other) does not match the name on the URL (web)"))

    def test_dry_run(self) -> None:
        """dryRun=All answers the Scale the write would make and stores nothing."""
        server = Server(self)
        created = server.create({"replicas": 1})
        reply = server.request("PUT", f"{SCALE}?dryRun=All", self.scale(4))
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["spec"], {"replicas": 4})
        self.assertEqual(server.widget(), created)

    def test_missing_object(self) -> None:
        """A PUT of the Scale of an object that does not exist is a 404."""
        reply = Server(self).request("PUT", SCALE, self.scale(1))
        self.assertEqual(status_of(reply), (404, "NotFound", 'widgets.example.com "web" not found'))


class PatchScaleTests(SynchronousTestCase):
    """PATCH of /scale."""

    def test_merge_patch(self) -> None:
        """The merge patch `kubectl scale` sends sets the replicas."""
        server = Server(self)
        server.create({"replicas": 1})
        reply = server.request("PATCH", SCALE, {"spec": {"replicas": 3}}, MERGE_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual((reply.json()["kind"], reply.json()["spec"]), ("Scale", {"replicas": 3}))
        self.assertEqual(server.widget()["spec"]["replicas"], 3)

    def test_json_patch(self) -> None:
        """A JSON patch of the Scale sets the replicas, and its test operation is honoured."""
        server = Server(self)
        server.create({"replicas": 1})
        reply = server.request("PATCH", SCALE, [{"op": "test", "path": "/spec/replicas", "value": 1},
                                                {"op": "replace", "path": "/spec/replicas", "value": 4}], JSON_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(server.widget()["spec"]["replicas"], 4)
        reply = server.request("PATCH", SCALE, [{"op": "test", "path": "/spec/replicas", "value": 1},
                                                {"op": "replace", "path": "/spec/replicas", "value": 5}], JSON_PATCH)
        self.assertEqual(reply.code, 422, reply.body)
        self.assertEqual(server.widget()["spec"]["replicas"], 4)

    def test_strategic_merge_patch_refused(self) -> None:
        """A strategic merge patch of a custom resource's Scale is a 415."""
        server = Server(self)
        server.create({"replicas": 1})
        reply = server.request("PATCH", SCALE, {"spec": {"replicas": 3}}, STRATEGIC_MERGE_PATCH)
        self.assertEqual(status_of(reply)[:2], (415, "UnsupportedMediaType"))
        self.assertEqual(server.widget()["spec"]["replicas"], 1)

    def test_negative_replicas(self) -> None:
        """A patch to negative replicas is the Scale's 422."""
        server = Server(self)
        server.create({"replicas": 1})
        reply = server.request("PATCH", SCALE, {"spec": {"replicas": -1}}, MERGE_PATCH)
        self.assertEqual(status_of(reply)[:2], (422, "Invalid"))

    def test_stale_resource_version(self) -> None:
        """A patch naming a stale resourceVersion is a 409."""
        server = Server(self)
        created = server.create({"replicas": 1})
        self.assertEqual(server.request("PATCH", SCALE, {"spec": {"replicas": 2}}, MERGE_PATCH).code, 200)
        reply = server.request("PATCH", SCALE, {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                                                "spec": {"replicas": 3}}, MERGE_PATCH)
        self.assertEqual(status_of(reply)[:2], (409, "Conflict"))
        self.assertEqual(server.widget()["spec"]["replicas"], 2)

    def test_dry_run(self) -> None:
        """dryRun=All on a patch stores nothing."""
        server = Server(self)
        created = server.create({"replicas": 1})
        reply = server.request("PATCH", f"{SCALE}?dryRun=All", {"spec": {"replicas": 3}}, MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()["spec"]), (200, {"replicas": 3}))
        self.assertEqual(server.widget(), created)

    def test_concurrent_write_retried(self) -> None:
        """A patch without a resourceVersion that races another write is applied again to the new object, as
        kube's GuaranteedUpdate does, rather than failing with a 409."""
        store = RacingStore()
        server = Server(self, store)
        server.create({"replicas": 1})
        store.racing = True
        reply = server.request("PATCH", SCALE, {"spec": {"replicas": 3}}, MERGE_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        widget = server.widget()
        self.assertEqual((widget["spec"]["replicas"], widget["metadata"]["labels"]), (3, {"touched": "yes"}))

    def test_concurrent_write_with_precondition(self) -> None:
        """A patch naming the resourceVersion it read, racing another write, is a 409 (the precondition holds
        for the object it read, not for the one the race left)."""
        store = RacingStore()
        server = Server(self, store)
        created = server.create({"replicas": 1})
        store.racing = True
        reply = server.request("PATCH", SCALE, {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                                                "spec": {"replicas": 3}}, MERGE_PATCH)
        self.assertEqual(status_of(reply)[:2], (409, "Conflict"))
        self.assertEqual(server.widget()["spec"]["replicas"], 1)

    def test_missing_object(self) -> None:
        """A patch of the Scale of an object that does not exist is a 404."""
        reply = Server(self).request("PATCH", SCALE, {"spec": {"replicas": 3}}, MERGE_PATCH)
        self.assertEqual(status_of(reply)[:2], (404, "NotFound"))


class ScaleDiscoveryTests(SynchronousTestCase):
    """Discovery lists the scale subresource."""

    def test_resource_list(self) -> None:
        """The APIResourceList has `<plural>/scale` as an autoscaling/v1 Scale; a kind without scale has none."""
        server = Server(self)
        body = server.request("GET", HOST).json()
        self.assertEqual(body, api_resource_list("example.com", "v1", [server.widgets.info, server.gadgets.info]))
        scale = [r for r in body["resources"] if r["name"].endswith("/scale")]
        self.assertEqual(scale, [{"name": "widgets/scale", "singularName": "", "namespaced": True,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale",
                                  "verbs": ["get", "patch", "update"]}])

    def test_aggregated(self) -> None:
        """Aggregated discovery lists the scale subresource with an autoscaling/v1 Scale response kind."""
        server = Server(self)
        widgets, gadgets = aggregated_resources([server.widgets.info, server.gadgets.info])
        self.assertEqual(widgets["subresources"], [
            {"subresource": "status", "responseKind": {"group": "example.com", "version": "v1", "kind": "Widget"},
             "verbs": ["get", "patch", "update"]},
            {"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
             "verbs": ["get", "patch", "update"]}])
        self.assertEqual([s["subresource"] for s in gadgets["subresources"]], ["status"])


class ApplyScaleTests(SynchronousTestCase):
    """Server-side apply of a Scale, as kube accepts it for a custom resource: the manager owns the replicas
    field of the object through the scale subresource, and a field another manager owns is a conflict."""

    APPLY = "application/apply-patch+yaml"

    def scale(self, replicas: int) -> bytes:
        return json.dumps({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"},
                           "spec": {"replicas": replicas}}).encode()

    def test_apply_sets_and_owns_replicas(self) -> None:
        server = Server(self)
        server.create({"size": "small"})
        reply = server.request("PATCH", f"{SCALE}?fieldManager=hpa", self.scale(4), self.APPLY)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual((reply.json()["kind"], reply.json()["spec"]), ("Scale", {"replicas": 4}))
        widget = server.widget()
        self.assertEqual(widget["spec"], {"size": "small", "replicas": 4})
        entries = {(e["manager"], e["operation"], e.get("subresource", "")): e["fieldsV1"]
                   for e in widget["metadata"]["managedFields"]}
        self.assertEqual(entries[("hpa", "Apply", "scale")], {"f:spec": {"f:replicas": {}}})

    def test_conflict_unless_forced(self) -> None:
        server = Server(self)
        server.create({"size": "small"})
        self.assertEqual(server.request("PATCH", f"{SCALE}?fieldManager=hpa", self.scale(4), self.APPLY).code, 200)
        reply = server.request("PATCH", f"{SCALE}?fieldManager=other", self.scale(2), self.APPLY)
        self.assertEqual(status_of(reply)[:2], (409, "Conflict"))
        reply = server.request("PATCH", f"{SCALE}?fieldManager=other&force=true", self.scale(2), self.APPLY)
        self.assertEqual((reply.code, server.widget()["spec"]["replicas"]), (200, 2))

    def test_field_manager_required(self) -> None:
        server = Server(self)
        server.create({"size": "small"})
        reply = server.request("PATCH", SCALE, self.scale(4), self.APPLY)
        self.assertEqual(status_of(reply)[0], 422)
