# -*- test-case-name: tests.test_finalizers -*-
"""Tests for the finalizer-aware deletes of L{grafana_aggregator.apimachinery.writes}: an object with finalizers is
marked for deletion (kube's graceful deletion with a grace period of 0) and deleted by the update that removes
its last finalizer.

ExternalNames and APIServices are served as the daemon serves them (`tap.local_groups`), over a memory store,
through StubTreq.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from .support import RacingStore
from .test_rest_reads import APISERVICES, SERVICE_GRAFANA, Server, apiservice, external_name

EXTERNALNAMES = f"{SERVICE_GRAFANA}/namespaces/grafana/externalnames"
WEB = f"{EXTERNALNAMES}/web"
#: When the deletes of these tests happen: 30 s after every test starts.
DELETED = "2025-06-15T15:07:10Z"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def held(name: str = "web", finalizers: tuple[str, ...] = ("example.com/keep",)) -> dict[str, Any]:
    """An ExternalName in namespace grafana with finalizers, as stored."""
    obj = external_name("grafana", name, f"{name}.example.com")
    if finalizers:
        obj["metadata"]["finalizers"] = list(finalizers)
    return obj


class FinalizerDeleteTests(SynchronousTestCase):
    """DELETE of one object with finalizers."""

    def setUp(self) -> None:
        self.server = Server(self)
        self.stored = self.server.seed(held())
        self.server.clock.advance(30)

    def delete(self, url: str = WEB, body: Any = None) -> dict[str, Any]:
        reply = self.server.request("DELETE", url, body)
        self.assertEqual(reply.code, 200, reply.body)
        return reply.json()  # type: ignore[no-any-return]

    def current(self) -> dict[str, Any]:
        reply = self.server.get(WEB)
        self.assertEqual(reply.code, 200, reply.body)
        return reply.json()  # type: ignore[no-any-return]

    def test_marked_not_deleted(self) -> None:
        """The object stays, with a deletionTimestamp, deletionGracePeriodSeconds 0 and its generation bumped, and
        the DELETE answers 200 with it (not a Status)."""
        answered = self.delete()
        meta = answered["metadata"]
        self.assertEqual(answered["kind"], "ExternalName")
        self.assertEqual((meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"], meta["generation"]),
                         (DELETED, 0, 2))
        self.assertEqual(meta["finalizers"], ["example.com/keep"])
        self.assertEqual(int(meta["resourceVersion"]), int(self.stored["metadata"]["resourceVersion"]) + 1)
        self.assertEqual(self.current(), answered)

    def test_second_delete_changes_nothing(self) -> None:
        """A second DELETE answers the object as it is: the deletionTimestamp and resourceVersion stay."""
        first = self.delete()
        self.server.clock.advance(30)
        self.assertEqual(self.delete(), first)
        self.assertEqual(self.current(), first)

    def test_dry_run_changes_nothing(self) -> None:
        """A dry-run DELETE answers the object as a delete would leave it, and stores nothing."""
        answered = self.delete(f"{WEB}?dryRun=All")
        self.assertEqual(answered["metadata"]["deletionTimestamp"], DELETED)
        self.assertEqual(answered["metadata"]["deletionGracePeriodSeconds"], 0)
        current = self.current()
        self.assertNotIn("deletionTimestamp", current["metadata"])
        self.assertEqual(current["metadata"]["resourceVersion"], self.stored["metadata"]["resourceVersion"])

    def test_dry_run_in_delete_options_changes_nothing(self) -> None:
        """dryRun given in the DeleteOptions body stores nothing either."""
        self.delete(body={"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]})
        self.assertNotIn("deletionTimestamp", self.current()["metadata"])

    def test_preconditions_honoured(self) -> None:
        """uid and resourceVersion preconditions that do not hold are a 409 Conflict and change nothing; those
        that hold let the delete mark the object."""
        version = self.stored["metadata"]["resourceVersion"]
        for preconditions, detail in (
                ({"uid": "someone-else"}, "Precondition failed: UID in precondition: someone-else, UID in object "
                                          "meta: uid-grafana-web"),
                ({"resourceVersion": "999"}, f"Precondition failed: ResourceVersion in precondition: 999, "
                                             f"ResourceVersion in object meta: {version}")):
            reply = self.server.request("DELETE", WEB, {"kind": "DeleteOptions", "apiVersion": "v1",
                                                        "preconditions": preconditions})
            self.assertEqual(reply.code, 409, reply.body)
            status = reply.json()
            self.assertEqual((status["kind"], status["reason"]), ("Status", "Conflict"))
            self.assertEqual(status["message"], f'Operation cannot be fulfilled on externalnames.service.grafana.app '
                                                f'"web": {detail}')
            self.assertNotIn("deletionTimestamp", self.current()["metadata"])
        answered = self.delete(body={"kind": "DeleteOptions", "apiVersion": "v1",
                                     "preconditions": {"uid": "uid-grafana-web", "resourceVersion": version}})
        self.assertEqual(answered["metadata"]["deletionTimestamp"], DELETED)

    def test_racing_write_retried(self) -> None:
        """A DELETE whose marking races another write marks the object as that write left it (kube's graceful
        deletion runs in GuaranteedUpdate), rather than failing with a 409; the preconditions still hold first."""
        store = RacingStore()
        server = Server(self, store)
        server.seed(held("raced"))
        store.racing = True
        reply = server.request("DELETE", f"{EXTERNALNAMES}/raced")
        self.assertEqual(reply.code, 200, reply.body)
        meta = server.get(f"{EXTERNALNAMES}/raced").json()["metadata"]
        self.assertEqual((meta["labels"], meta["finalizers"]), ({"touched": "yes"}, ["example.com/keep"]))
        self.assertIn("deletionTimestamp", meta)

        stored = server.seed(held("pinned"))
        store.racing = True
        reply = server.request("DELETE", f"{EXTERNALNAMES}/pinned", {
            "kind": "DeleteOptions", "apiVersion": "v1",
            "preconditions": {"resourceVersion": stored["metadata"]["resourceVersion"]}})
        self.assertEqual(reply.code, 409, reply.body)
        self.assertIn("Precondition failed: ResourceVersion in precondition", reply.json()["message"])
        self.assertNotIn("deletionTimestamp", server.get(f"{EXTERNALNAMES}/pinned").json()["metadata"])

    def test_new_finalizer_refused_while_deleting(self) -> None:
        """An update that adds a finalizer to an object being deleted is a 422 naming the new finalizer."""
        self.delete()
        reply = self.server.request("PATCH", WEB, {"metadata": {"finalizers": ["example.com/keep", "example.com/new"]}},
                                    content_type=MERGE_PATCH)
        self.assertEqual(reply.code, 422, reply.body)
        status = reply.json()
        self.assertEqual(status["reason"], "Invalid")
        self.assertEqual(status["message"], 'ExternalName.service.grafana.app "web" is invalid: metadata.finalizers: '
                                            'Forbidden: no new finalizers can be added if the object is being deleted, '
                                            'found new finalizers []string{"example.com/new"}')
        self.assertEqual(self.current()["metadata"]["finalizers"], ["example.com/keep"])

    def test_deletion_timestamp_kept_by_updates(self) -> None:
        """An update of an object being deleted keeps its deletionTimestamp and grace period (server-owned)."""
        marked = self.delete()
        reply = self.server.request("PATCH", WEB, {"metadata": {"labels": {"a": "b"}, "deletionTimestamp": None}},
                                    content_type=MERGE_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        meta = reply.json()["metadata"]
        self.assertEqual((meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"], meta["labels"]),
                         (marked["metadata"]["deletionTimestamp"], 0, {"a": "b"}))


class LastFinalizerTests(SynchronousTestCase):
    """The update that removes the last finalizer of an object being deleted deletes it."""

    def check(self, remove: Any) -> None:
        """Delete, then remove the finalizers with `remove(server, marked)`: a watch sees MODIFIED, then DELETED,
        and the object is gone."""
        server = Server(self)
        stored = server.seed(held(finalizers=("example.com/a", "example.com/b")))
        watch = server.watch(f"{EXTERNALNAMES}?watch=1&resourceVersion={stored['metadata']['resourceVersion']}")
        server.clock.advance(30)
        marked = server.request("DELETE", WEB).json()
        self.assertEqual([e["type"] for e in watch.events()], ["MODIFIED"])
        self.assertEqual(watch.events()[0]["object"], marked)

        reply = server.request("PATCH", WEB, {"metadata": {"finalizers": ["example.com/b"]}},
                               content_type=MERGE_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual([e["type"] for e in watch.events()], ["MODIFIED", "MODIFIED"])
        marked = reply.json()

        reply = remove(server, marked)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["metadata"]["name"], "web")
        events = watch.events()
        self.assertEqual([e["type"] for e in events], ["MODIFIED", "MODIFIED", "DELETED"])
        self.assertEqual(events[-1]["object"]["metadata"]["deletionTimestamp"], DELETED)
        self.assertEqual(server.get(WEB).code, 404)
        self.assertEqual(server.get(EXTERNALNAMES).json()["items"], [])

    def test_put(self) -> None:
        """A PUT without the last finalizer deletes the object."""
        def put(server: Server, marked: dict[str, Any]) -> Any:
            del marked["metadata"]["finalizers"]
            return server.request("PUT", WEB, marked)
        self.check(put)

    def test_merge_patch(self) -> None:
        """A merge patch setting finalizers to null deletes the object."""
        self.check(lambda server, marked: server.request("PATCH", WEB, {"metadata": {"finalizers": None}},
                                                         content_type=MERGE_PATCH))

    def test_json_patch(self) -> None:
        """A JSON patch removing the last finalizer deletes the object."""
        self.check(lambda server, marked: server.request(
            "PATCH", WEB, [{"op": "remove", "path": "/metadata/finalizers/0"}], content_type=JSON_PATCH))

    def test_removing_finalizer_of_live_object_keeps_it(self) -> None:
        """Removing the finalizers of an object that is not being deleted only updates it."""
        server = Server(self)
        server.seed(held())
        reply = server.request("PATCH", WEB, {"metadata": {"finalizers": None}}, content_type=MERGE_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertNotIn("finalizers", server.get(WEB).json()["metadata"])


class DeleteCollectionTests(SynchronousTestCase):
    """deletecollection with objects that have finalizers."""

    def setUp(self) -> None:
        self.server = Server(self)
        self.server.seed(held("a"))
        self.server.seed(held("b", ()))
        self.server.seed(held("c"))
        self.server.seed(held("d", ()))
        self.server.clock.advance(30)

    def remaining(self) -> dict[str, str | None]:
        items = self.server.get(EXTERNALNAMES).json()["items"]
        return {i["metadata"]["name"]: i["metadata"].get("deletionTimestamp") for i in items}

    def test_marks_held_deletes_others(self) -> None:
        """Objects with finalizers are marked for deletion and stay; the others are deleted; all are answered."""
        reply = self.server.request("DELETE", EXTERNALNAMES)
        self.assertEqual(reply.code, 200, reply.body)
        body = reply.json()
        self.assertEqual(body["kind"], "ExternalNameList")
        self.assertEqual([i["metadata"]["name"] for i in body["items"]], ["a", "b", "c", "d"])
        self.assertEqual(self.remaining(), {"a": DELETED, "c": DELETED})
        again = self.server.request("DELETE", EXTERNALNAMES)
        self.assertEqual(again.code, 200, again.body)
        self.assertEqual(self.remaining(), {"a": DELETED, "c": DELETED})

    def test_dry_run(self) -> None:
        """A dry-run deletecollection answers the marked and the deleted objects and stores nothing."""
        reply = self.server.request("DELETE", f"{EXTERNALNAMES}?dryRun=All")
        self.assertEqual(reply.code, 200, reply.body)
        marks = {i["metadata"]["name"]: i["metadata"].get("deletionTimestamp") for i in reply.json()["items"]}
        self.assertEqual(marks, {"a": DELETED, "b": None, "c": DELETED, "d": None})
        self.assertEqual(self.remaining(), {"a": None, "b": None, "c": None, "d": None})


class APIServiceFinalizerTests(SynchronousTestCase):
    """The same rules for a cluster-scoped kind with a status (APIService)."""

    def test_delete_then_finalize(self) -> None:
        """An APIService with a finalizer is marked by DELETE and deleted by the merge patch removing it."""
        server = Server(self)
        obj = apiservice("v1.a.example", "a.example", "v1", service={"namespace": "grafana", "name": "a"})
        obj["metadata"]["finalizers"] = ["example.com/keep"]
        server.seed(obj)
        server.clock.advance(30)
        reply = server.request("DELETE", f"{APISERVICES}/v1.a.example")
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["kind"], "APIService")
        self.assertEqual(reply.json()["metadata"]["deletionTimestamp"], DELETED)
        self.assertEqual(server.get(f"{APISERVICES}/v1.a.example").code, 200)
        reply = server.request("PATCH", f"{APISERVICES}/v1.a.example", {"metadata": {"finalizers": []}},
                               content_type=MERGE_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(server.get(f"{APISERVICES}/v1.a.example").code, 404)
        self.assertEqual(json.loads(server.get(APISERVICES).body)["items"], [])

    def test_status_update_keeps_finalizers(self) -> None:
        """A status update cannot remove finalizers (only status changes there), so it never deletes the object."""
        server = Server(self)
        obj = apiservice("v1.a.example", "a.example", "v1", service={"namespace": "grafana", "name": "a"})
        obj["metadata"]["finalizers"] = ["example.com/keep"]
        server.seed(obj)
        marked = server.request("DELETE", f"{APISERVICES}/v1.a.example").json()
        del marked["metadata"]["finalizers"]
        reply = server.request("PUT", f"{APISERVICES}/v1.a.example/status", marked)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(server.get(f"{APISERVICES}/v1.a.example").json()["metadata"]["finalizers"],
                         ["example.com/keep"])
