"""Tests for L{grafana_aggregator.storage}: one conformance suite run against every backend, the watch hub on
its own, and what only the file store promises (durability, layout, locking, recovery)."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.storage.files import write_atomic
from grafana_aggregator.storage import (
    AlreadyExistsError,
    Collection,
    ConflictError,
    ExpiredError,
    InvalidKeyError,
    IStore,
    NotFoundError,
    StorageError,
    StoreLockedError,
    WatchEvent,
)
from grafana_aggregator.storage.file import FileStore
from grafana_aggregator.storage.memory import MODIFIED_MESSAGE, MemoryStore
from grafana_aggregator.storage.watch import DEFAULT_HISTORY_SIZE, WatchHub

T = TypeVar("T")

THINGS = Collection("example.grafana.app", "things")
OTHERS = Collection("example.grafana.app", "others")
APISERVICES = Collection("apiregistration.k8s.io", "apiservices")
BAD_KEYS = ("..", "a/b", "", "x%2F")

if TYPE_CHECKING:
    _Base = SynchronousTestCase
else:
    _Base = object


def thing(name: str, namespace: str = "", **spec: Any) -> dict[str, Any]:
    """An object as a caller would hand it to the store."""
    metadata: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "example.grafana.app/v1", "kind": "Thing", "metadata": metadata, "spec": spec}


def rv(obj: dict[str, Any]) -> int:
    """The object's metadata.resourceVersion as a number."""
    return int(obj["metadata"]["resourceVersion"])


class _Recorder:
    """A watch callback that keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []

    def __call__(self, event: WatchEvent) -> None:
        self.events.append(event)

    def seen(self) -> list[tuple[str, str, str, int]]:
        """(type, namespace, name, resourceVersion) of each event, in order."""
        return [(e.type, e.namespace, e.name, e.resource_version) for e in self.events]


class StoreConformanceMixin(_Base):
    """Behaviour every IStore backend must have; subclasses say how to make a store."""

    def make_store(self, history_size: int = DEFAULT_HISTORY_SIZE) -> IStore:
        """A new, empty store, closed when the test ends."""
        raise NotImplementedError

    #: The store's resourceVersion when make_store returned it (etcd's revision is shared by everything in it).
    start_rv = 0

    def v(self, n: int) -> int:
        """The resourceVersion of the n-th write to the store made by make_store (0: the store's own at start)."""
        return self.start_rv + n

    def result_of(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The result of a store coroutine that must succeed."""
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def fails(self, coroutine: Coroutine[Any, Any, Any], error: type[Exception]) -> Failure:
        """The failure of a store coroutine that must fail with error."""
        return self.failureResultOf(Deferred.fromCoroutine(coroutine), error)

    def test_new_store_is_empty(self) -> None:
        """A new store lists nothing and is at resourceVersion 0."""
        store = self.make_store()
        self.assertEqual(store.current_resource_version(), self.v(0))
        result = self.result_of(store.list(THINGS, None))
        self.assertEqual((result.items, result.resource_version), ([], self.v(0)))

    def test_create_and_get(self) -> None:
        """The first write gets resourceVersion "1", and get returns the object as create returned it."""
        store = self.make_store()
        created = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        self.assertEqual(created["metadata"]["resourceVersion"], str(self.v(1)))
        self.assertEqual(created["spec"], {"size": 1})
        self.assertEqual(self.result_of(store.get(THINGS, "ns", "a")), created)
        self.assertEqual(store.current_resource_version(), self.v(1))

    def test_create_stamps_key(self) -> None:
        """The stored metadata carries the key it was stored under."""
        store = self.make_store()
        created = self.result_of(store.create(THINGS, "ns", "a", {"metadata": {"name": "other"}}))
        self.assertEqual(created["metadata"], {"name": "a", "namespace": "ns", "resourceVersion": str(self.v(1))})

    def test_create_existing_fails(self) -> None:
        """Creating a taken name raises AlreadyExistsError and changes nothing."""
        store = self.make_store()
        first = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        self.fails(store.create(THINGS, "ns", "a", thing("a", "ns", size=2)), AlreadyExistsError)
        self.assertEqual(self.result_of(store.get(THINGS, "ns", "a")), first)
        self.assertEqual(store.current_resource_version(), self.v(1))

    def test_same_name_elsewhere_is_another_object(self) -> None:
        """One name may exist in several namespaces and collections at once."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.result_of(store.create(THINGS, "other", "a", thing("a", "other")))
        self.result_of(store.create(OTHERS, "ns", "a", thing("a", "ns")))
        self.assertEqual(store.current_resource_version(), self.v(3))

    def test_get_missing_fails(self) -> None:
        """get raises NotFoundError for a missing name, namespace or collection."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.fails(store.get(THINGS, "ns", "b"), NotFoundError)
        self.fails(store.get(THINGS, "other", "a"), NotFoundError)
        self.fails(store.get(OTHERS, "ns", "a"), NotFoundError)

    def test_update_replaces(self) -> None:
        """update stores the new content with a new resourceVersion."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        updated = self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        self.assertEqual((updated["spec"], rv(updated)), ({"size": 2}, self.v(2)))
        self.assertEqual(self.result_of(store.get(THINGS, "ns", "a")), updated)

    def test_update_missing_fails(self) -> None:
        """update of a missing object raises NotFoundError and does not create it."""
        store = self.make_store()
        self.fails(store.update(THINGS, "ns", "a", thing("a", "ns")), NotFoundError)
        self.fails(store.get(THINGS, "ns", "a"), NotFoundError)
        self.assertEqual(store.current_resource_version(), self.v(0))

    def test_update_with_current_resource_version(self) -> None:
        """update with the stored resourceVersion as the expected one succeeds."""
        store = self.make_store()
        created = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        updated = self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2), expected_resource_version=rv(created)))
        self.assertEqual(updated["spec"], {"size": 2})

    def test_update_with_old_resource_version_conflicts(self) -> None:
        """update against an older resourceVersion raises ConflictError with kube's text and changes nothing."""
        store = self.make_store()
        created = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        second = self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2), expected_resource_version=rv(created)))
        failure = self.fails(store.update(THINGS, "ns", "a", thing("a", "ns", size=3), expected_resource_version=rv(created)),
                             ConflictError)
        self.assertEqual(str(failure.value), "the object has been modified; please apply your changes to the latest "
                                             "version and try again")
        self.assertEqual(str(failure.value), MODIFIED_MESSAGE)
        self.assertEqual(self.result_of(store.get(THINGS, "ns", "a")), second)
        self.assertEqual(store.current_resource_version(), self.v(2))

    def test_delete_returns_last_state(self) -> None:
        """delete removes the object and returns it as last stored, with that write's resourceVersion."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        last = self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        deleted = self.result_of(store.delete(THINGS, "ns", "a"))
        self.assertEqual(deleted, last)
        self.fails(store.get(THINGS, "ns", "a"), NotFoundError)
        self.assertEqual(self.result_of(store.list(THINGS, None)).items, [])
        self.assertEqual(store.current_resource_version(), self.v(3))

    def test_delete_missing_fails(self) -> None:
        """delete of a missing object raises NotFoundError."""
        store = self.make_store()
        self.fails(store.delete(THINGS, "ns", "a"), NotFoundError)
        self.assertEqual(store.current_resource_version(), self.v(0))

    def test_delete_with_old_resource_version_conflicts(self) -> None:
        """delete with a stale resourceVersion precondition raises kube's ConflictError and keeps the object."""
        store = self.make_store()
        created = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        failure = self.fails(store.delete(THINGS, "ns", "a", expected_resource_version=rv(created)), ConflictError)
        self.assertEqual(str(failure.value),
                         f"Precondition failed: ResourceVersion in precondition: {self.v(1)}, ResourceVersion in object meta: {self.v(2)}")
        self.result_of(store.get(THINGS, "ns", "a"))
        self.result_of(store.delete(THINGS, "ns", "a", expected_resource_version=self.v(2)))
        self.fails(store.get(THINGS, "ns", "a"), NotFoundError)

    def test_delete_with_other_uid_conflicts(self) -> None:
        """delete with another uid as precondition raises kube's ConflictError; the right uid deletes."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        failure = self.fails(store.delete(THINGS, "ns", "a", expected_uid="uid-b"), ConflictError)
        self.assertEqual(str(failure.value), "Precondition failed: UID in precondition: uid-b, UID in object meta: uid-a")
        self.result_of(store.get(THINGS, "ns", "a"))
        self.result_of(store.delete(THINGS, "ns", "a", expected_uid="uid-a"))
        self.fails(store.get(THINGS, "ns", "a"), NotFoundError)

    def test_resource_versions_grow(self) -> None:
        """Every write, in any collection, gets a resourceVersion above all earlier ones."""
        store = self.make_store()
        versions = [
            rv(self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))),
            rv(self.result_of(store.create(OTHERS, "", "b", thing("b")))),
            rv(self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))),
        ]
        self.result_of(store.delete(OTHERS, "", "b"))
        versions.append(store.current_resource_version())
        versions.append(rv(self.result_of(store.create(OTHERS, "", "b", thing("b")))))
        self.assertEqual(versions, sorted(set(versions)))
        self.assertEqual(store.current_resource_version(), versions[-1])

    def test_list_snapshot_resource_version(self) -> None:
        """A list carries the store's resourceVersion, which counts writes to other collections too."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.result_of(store.create(OTHERS, "ns", "b", thing("b", "ns")))
        self.result_of(store.delete(OTHERS, "ns", "b"))
        result = self.result_of(store.list(THINGS, "ns"))
        self.assertEqual(result.resource_version, self.v(3))
        self.assertEqual(result.resource_version, store.current_resource_version())

    def test_list_namespaces(self) -> None:
        """A namespace lists only its objects; None lists all, sorted by namespace then name."""
        store = self.make_store()
        for namespace, name in [("b", "y"), ("a", "z"), ("b", "x"), ("a", "w")]:
            self.result_of(store.create(THINGS, namespace, name, thing(name, namespace)))
        self.result_of(store.create(OTHERS, "a", "v", thing("v", "a")))

        def keys(namespace: str | None) -> list[tuple[str, str]]:
            items = self.result_of(store.list(THINGS, namespace)).items
            return [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items]

        self.assertEqual(keys("b"), [("b", "x"), ("b", "y")])
        self.assertEqual(keys(None), [("a", "w"), ("a", "z"), ("b", "x"), ("b", "y")])
        self.assertEqual(keys("c"), [])

    def test_cluster_scoped(self) -> None:
        """Namespace "" holds cluster-scoped objects, stored without metadata.namespace and listed by ""."""
        store = self.make_store()
        created = self.result_of(store.create(APISERVICES, "", "v1.example.grafana.app", thing("v1.example.grafana.app")))
        self.assertNotIn("namespace", created["metadata"])
        self.assertEqual(self.result_of(store.get(APISERVICES, "", "v1.example.grafana.app")), created)
        self.assertEqual(self.result_of(store.list(APISERVICES, "")).items, [created])
        self.assertEqual(self.result_of(store.list(APISERVICES, None)).items, [created])
        self.fails(store.get(APISERVICES, "default", "v1.example.grafana.app"), NotFoundError)

    def test_returned_objects_are_copies(self) -> None:
        """Changing what was passed in, or anything returned, leaves the stored object as it was."""
        store = self.make_store()
        given = thing("a", "ns", items=[1])
        created = self.result_of(store.create(THINGS, "ns", "a", given))
        given["spec"]["items"].append(2)
        created["spec"]["items"].append(3)
        self.result_of(store.get(THINGS, "ns", "a"))["spec"]["items"].append(4)
        self.result_of(store.list(THINGS, None)).items[0]["spec"]["items"].append(5)
        updated = self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", items=[6])))
        updated["spec"]["items"].append(7)
        self.assertEqual(self.result_of(store.get(THINGS, "ns", "a"))["spec"]["items"], [6])
        self.assertEqual(given["metadata"], {"name": "a", "namespace": "ns", "uid": "uid-a"})

    def test_watch_replays_from_resource_version(self) -> None:
        """A watch from a resourceVersion first gets every later change of its collection."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.result_of(store.create(THINGS, "ns", "b", thing("b", "ns")))
        self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        recorder = _Recorder()
        store.watch(THINGS, None, self.v(1), recorder)
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "b", self.v(2)), ("MODIFIED", "ns", "a", self.v(3))])
        self.assertEqual(recorder.events[1].object["spec"], {"size": 2})
        self.assertEqual(recorder.events[1].collection, THINGS)

    def test_watch_live_events_in_order(self) -> None:
        """Changes after the watch starts are delivered at once, in order, with their objects."""
        store = self.make_store()
        recorder = _Recorder()
        store.watch(THINGS, None, self.v(0), recorder)
        created = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.assertEqual(recorder.events[0].object, created)
        updated = self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        self.result_of(store.create(THINGS, "", "c", thing("c")))
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "a", self.v(1)), ("MODIFIED", "ns", "a", self.v(2)), ("ADDED", "", "c", self.v(3))])
        self.assertEqual(recorder.events[1].object, updated)

    def test_watch_namespace_filter(self) -> None:
        """A watch of one namespace gets that namespace's changes only, in replay and live."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.result_of(store.create(THINGS, "other", "b", thing("b", "other")))
        recorder = _Recorder()
        store.watch(THINGS, "ns", self.v(0), recorder)
        self.result_of(store.create(THINGS, "other", "c", thing("c", "other")))
        self.result_of(store.create(THINGS, "ns", "d", thing("d", "ns")))
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "a", self.v(1)), ("ADDED", "ns", "d", self.v(4))])

    def test_watch_collection_filter(self) -> None:
        """A watch gets the changes of its own collection only, in replay and live."""
        store = self.make_store()
        self.result_of(store.create(OTHERS, "ns", "a", thing("a", "ns")))
        recorder = _Recorder()
        store.watch(THINGS, None, self.v(0), recorder)
        self.result_of(store.create(OTHERS, "ns", "b", thing("b", "ns")))
        self.result_of(store.create(THINGS, "ns", "c", thing("c", "ns")))
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "c", self.v(3))])

    def test_watch_deleted_carries_deletion_resource_version(self) -> None:
        """A DELETED event's object is the last state, stamped with the deletion's resourceVersion."""
        store = self.make_store()
        recorder = _Recorder()
        store.watch(THINGS, None, self.v(0), recorder)
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        deleted = self.result_of(store.delete(THINGS, "ns", "a"))
        event = recorder.events[-1]
        self.assertEqual((event.type, event.resource_version, rv(event.object)), ("DELETED", self.v(2), self.v(2)))
        self.assertEqual(event.object["spec"], {"size": 1})
        self.assertEqual(rv(deleted), self.v(1))

    def test_watch_cancel(self) -> None:
        """A cancelled watch gets no further events, and cancelling again does nothing."""
        store = self.make_store()
        recorder = _Recorder()
        watch = store.watch(THINGS, None, self.v(0), recorder)
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        watch.cancel()
        watch.cancel()
        self.result_of(store.create(THINGS, "ns", "b", thing("b", "ns")))
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "a", self.v(1))])

    def test_watch_too_old_resource_version_expired(self) -> None:
        """A watch from before the history kept raises ExpiredError in kube's words; one inside it works."""
        store = self.make_store(history_size=2)
        for name in "abcd":
            self.result_of(store.create(THINGS, "ns", name, thing(name, "ns")))
        failure_value = self.assertRaises(ExpiredError, store.watch, THINGS, None, self.v(1), _Recorder())
        self.assertEqual(str(failure_value), f"too old resource version: {self.v(1)} ({self.v(2)})")
        recorder = _Recorder()
        store.watch(THINGS, None, self.v(2), recorder)
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "c", self.v(3)), ("ADDED", "ns", "d", self.v(4))])

    def test_watch_from_current_resource_version(self) -> None:
        """A watch from the current resourceVersion works however much history was dropped."""
        store = self.make_store(history_size=1)
        for name in "abc":
            self.result_of(store.create(THINGS, "ns", name, thing(name, "ns")))
        recorder = _Recorder()
        store.watch(THINGS, None, store.current_resource_version(), recorder)
        self.result_of(store.create(THINGS, "ns", "d", thing("d", "ns")))
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "d", self.v(4))])

    def test_raising_watcher_is_cancelled(self) -> None:
        """A watcher whose callback raises is logged and cancelled; the others still get every event."""
        store = self.make_store()
        before, after, calls = _Recorder(), _Recorder(), []

        def broken(event: WatchEvent) -> None:
            calls.append(event.resource_version)
            raise ZeroDivisionError("broken watcher")

        store.watch(THINGS, None, self.v(0), before)
        store.watch(THINGS, None, self.v(0), broken)
        store.watch(THINGS, None, self.v(0), after)
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.result_of(store.create(THINGS, "ns", "b", thing("b", "ns")))
        self.assertEqual(calls, [self.v(1)])
        self.assertEqual([e.name for e in before.events], ["a", "b"])
        self.assertEqual([e.name for e in after.events], ["a", "b"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_watch_event_objects_are_copies(self) -> None:
        """Changing what a write returned does not change the event watchers got."""
        store = self.make_store()
        recorder = _Recorder()
        store.watch(THINGS, None, self.v(0), recorder)
        created = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        created["spec"]["size"] = 2
        self.assertEqual(recorder.events[0].object["spec"], {"size": 1})

    def test_invalid_names_rejected(self) -> None:
        """Names that are not usable path segments raise InvalidKeyError in every operation."""
        store = self.make_store()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        for bad in BAD_KEYS:
            self.fails(store.create(THINGS, "ns", bad, thing(bad, "ns")), InvalidKeyError)
            self.fails(store.get(THINGS, "ns", bad), InvalidKeyError)
            self.fails(store.update(THINGS, "ns", bad, thing(bad, "ns")), InvalidKeyError)
            self.fails(store.delete(THINGS, "ns", bad), InvalidKeyError)
        self.assertEqual(store.current_resource_version(), self.v(1))

    def test_list_at_snapshot(self) -> None:
        """list_at gives the collection as it was at an earlier resourceVersion: later creates, updates and deletes
        undone, other collections and namespaces left out."""
        store = self.make_store()
        a = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        b = self.result_of(store.create(THINGS, "ns", "b", thing("b", "ns")))
        self.result_of(store.create(THINGS, "other", "x", thing("x", "other")))
        at = store.current_resource_version()
        self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        self.result_of(store.delete(THINGS, "ns", "b"))
        self.result_of(store.create(THINGS, "ns", "c", thing("c", "ns")))
        self.result_of(store.create(OTHERS, "ns", "d", thing("d", "ns")))
        snapshot = self.result_of(store.list_at(THINGS, "ns", at))
        self.assertEqual((snapshot.items, snapshot.resource_version), ([a, b], self.v(3)))
        self.assertEqual([i["metadata"]["name"] for i in self.result_of(store.list_at(THINGS, None, at)).items],
                         ["a", "b", "x"])

    def test_invalid_namespaces_rejected(self) -> None:
        """Non-empty namespaces that are not usable path segments raise InvalidKeyError in every operation."""
        store = self.make_store()
        for bad in BAD_KEYS:
            if not bad:
                continue  # "" is the cluster scope
            self.fails(store.create(THINGS, bad, "a", thing("a", bad)), InvalidKeyError)
            self.fails(store.get(THINGS, bad, "a"), InvalidKeyError)
            self.fails(store.update(THINGS, bad, "a", thing("a", bad)), InvalidKeyError)
            self.fails(store.delete(THINGS, bad, "a"), InvalidKeyError)
            self.fails(store.list(THINGS, bad), InvalidKeyError)
            self.assertRaises(InvalidKeyError, store.watch, THINGS, bad, self.v(0), _Recorder())
        self.assertEqual(store.current_resource_version(), self.v(0))


class MemoryStoreTests(StoreConformanceMixin, SynchronousTestCase):
    """MemoryStore keeps the IStore contract."""

    def make_store(self, history_size: int = DEFAULT_HISTORY_SIZE) -> IStore:
        """A new MemoryStore."""
        return MemoryStore(history_size)


    def test_list_at_beyond_history_expired(self) -> None:
        """A snapshot older than the history kept, or needing a deleted object's state the history lost, is Expired."""
        store = self.make_store(history_size=2)
        for name in "abc":
            self.result_of(store.create(THINGS, "", name, thing(name)))
        self.fails(store.list_at(THINGS, None, 0), ExpiredError)
        self.result_of(store.delete(THINGS, "", "a"))
        self.fails(store.list_at(THINGS, None, 3), ExpiredError)
        self.assertEqual([i["metadata"]["name"] for i in self.result_of(store.list_at(THINGS, None, 4)).items],
                         ["b", "c"])


class FileStoreConformanceTests(StoreConformanceMixin, SynchronousTestCase):
    """FileStore keeps the IStore contract."""

    def make_store(self, history_size: int = DEFAULT_HISTORY_SIZE) -> IStore:
        """A FileStore on a new folder, closed when the test ends."""
        store = FileStore.open(self.mktemp(), history_size=history_size)
        self.addCleanup(lambda: self.successResultOf(Deferred.fromCoroutine(store.close())))
        return store


class WatchHubTests(SynchronousTestCase):
    """WatchHub's history bounds, and its ordering when watchers write or watch from inside a callback."""

    def event(self, resource_version: int, name: str = "a", collection: Collection = THINGS,
              namespace: str = "ns") -> WatchEvent:
        """An ADDED event."""
        return WatchEvent("ADDED", thing(name, namespace), resource_version, collection, namespace, name)

    def test_expired_names_the_oldest_resource_version_kept(self) -> None:
        """The ExpiredError says the requested resourceVersion and the one just before the oldest event kept."""
        hub = WatchHub(history_size=3)
        for version in range(1, 6):
            hub.publish(self.event(version))
        error = self.assertRaises(ExpiredError, hub.watch, THINGS, None, 1, _Recorder())
        self.assertEqual(str(error), "too old resource version: 1 (2)")
        recorder = _Recorder()
        hub.watch(THINGS, None, 2, recorder)
        self.assertEqual([e.resource_version for e in recorder.events], [3, 4, 5])

    def test_history_starts_at_the_given_resource_version(self) -> None:
        """A hub made for a store at resourceVersion 42 serves watches from 42 or later only."""
        hub = WatchHub(resource_version=42)
        error = self.assertRaises(ExpiredError, hub.watch, THINGS, None, 41, _Recorder())
        self.assertEqual(str(error), "too old resource version: 41 (42)")
        current, future = _Recorder(), _Recorder()
        hub.watch(THINGS, None, 42, current)
        hub.watch(THINGS, None, 50, future)
        hub.publish(self.event(43))
        self.assertEqual([e.resource_version for e in current.events], [43])
        self.assertEqual(future.events, [])

    def test_resource_version_must_grow(self) -> None:
        """Publishing a resourceVersion that is not above the last one is a bug, refused with ValueError."""
        hub = WatchHub()
        hub.publish(self.event(1))
        self.assertRaises(ValueError, hub.publish, self.event(1))

    def test_history_size_must_be_positive(self) -> None:
        """A hub without room for one event is refused."""
        self.assertRaises(ValueError, WatchHub, 0)

    def test_publish_from_a_callback_keeps_order(self) -> None:
        """An event published by a watcher reaches every watcher after the event being delivered."""
        hub = WatchHub()
        first, last = _Recorder(), _Recorder()

        def writer(event: WatchEvent) -> None:
            first(event)
            if event.resource_version == 1:
                hub.publish(self.event(2, "b"))

        hub.watch(THINGS, None, 0, writer)
        hub.watch(THINGS, None, 0, last)
        hub.publish(self.event(1))
        self.assertEqual([e.resource_version for e in first.events], [1, 2])
        self.assertEqual([e.resource_version for e in last.events], [1, 2])

    def test_watch_from_a_callback_gets_each_event_once(self) -> None:
        """A watch started inside a callback replays the history, then gets later events exactly once."""
        hub = WatchHub()
        late = _Recorder()

        def starter(event: WatchEvent) -> None:
            if event.resource_version == 1:
                hub.publish(self.event(2, "b"))
                hub.watch(THINGS, None, 0, late)

        hub.watch(THINGS, None, 0, starter)
        hub.publish(self.event(1))
        hub.publish(self.event(3, "c"))
        self.assertEqual([e.resource_version for e in late.events], [1, 2, 3])

    def test_cancel_from_a_callback(self) -> None:
        """A watch cancelled by another watcher's callback gets nothing more, not even the current event."""
        hub = WatchHub()
        victim = _Recorder()
        watches = []

        def canceller(event: WatchEvent) -> None:
            watches[0].cancel()

        hub.watch(THINGS, None, 0, canceller)
        watches.append(hub.watch(THINGS, None, 0, victim))
        hub.publish(self.event(1))
        self.assertEqual(victim.events, [])

    def test_raising_during_replay(self) -> None:
        """A callback that raises during the replay is logged and cancelled; watch still returns."""
        hub = WatchHub()
        hub.publish(self.event(1))
        hub.publish(self.event(2))
        calls: list[int] = []

        def broken(event: WatchEvent) -> None:
            calls.append(event.resource_version)
            raise RuntimeError("broken watcher")

        watch = hub.watch(THINGS, None, 0, broken)
        hub.publish(self.event(3))
        watch.cancel()
        self.assertEqual(calls, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FileStoreTests(SynchronousTestCase):
    """What only the file store promises: durability, its layout, one writer, recovery after a crash."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.failing = False
        self.writes: list[str] = []
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def write(self, path: str, data: bytes) -> None:
        """write_atomic, counted, failing like a full disk while self.failing is set."""
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        self.writes.append(path)
        write_atomic(path, data)

    def remove(self, path: str) -> None:
        """os.unlink, failing like a read-only disk while self.failing is set."""
        if self.failing:
            raise OSError(errno.EROFS, "Read-only file system", path)
        os.unlink(path)

    def open(self, history_size: int = DEFAULT_HISTORY_SIZE) -> FileStore:
        """A FileStore on self.path with the test's write and remove, closed when the test ends."""
        store = FileStore.open(self.path, write=self.write, remove=self.remove, history_size=history_size)
        self.addCleanup(self.close, store)
        return store

    def close(self, store: FileStore) -> None:
        """Close a store (again, harmlessly, at cleanup)."""
        self.successResultOf(Deferred.fromCoroutine(store.close()))

    def result_of(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The result of a store coroutine that must succeed."""
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def warnings(self) -> list[tuple[str, str]]:
        """(path, problem) of each warning logged so far."""
        return [(e.get("path", ""), e.get("problem", "")) for e in self.log if e["log_level"] == LogLevel.warn]

    def files(self) -> dict[str, bytes]:
        """Every file under the folder, by relative path, with its content (the lock file excepted)."""
        found = {}
        for folder, _, names in os.walk(self.path):
            for name in names:
                full = os.path.join(folder, name)
                if name != ".lock":
                    with open(full, "rb") as handle:
                        found[os.path.relpath(full, self.path)] = handle.read()
        return found

    def put(self, relative: str, content: bytes | str) -> str:
        """Write a file under the folder by hand and return its path."""
        full = os.path.join(self.path, relative)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        return full

    def test_reopen_keeps_objects(self) -> None:
        """Objects written before close are there, unchanged, after reopening."""
        store = self.open()
        a = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        b = self.result_of(store.create(APISERVICES, "", "v1.b", thing("v1.b")))
        self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        a = self.result_of(store.get(THINGS, "ns", "a"))
        self.result_of(store.create(THINGS, "ns", "gone", thing("gone", "ns")))
        self.result_of(store.delete(THINGS, "ns", "gone"))
        self.close(store)
        reopened = self.open()
        self.assertEqual(self.result_of(reopened.list(THINGS, None)).items, [a])
        self.assertEqual(self.result_of(reopened.get(APISERVICES, "", "v1.b")), b)

    def test_resource_version_grows_across_restart(self) -> None:
        """After a reopen the next resourceVersion is above every earlier one, even a deleted newest object's."""
        store = self.open()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        newest = rv(self.result_of(store.create(THINGS, "ns", "b", thing("b", "ns"))))
        self.result_of(store.delete(THINGS, "ns", "b"))
        deleted_at = store.current_resource_version()
        self.assertGreater(deleted_at, newest)
        self.close(store)
        reopened = self.open()
        self.assertGreaterEqual(reopened.current_resource_version(), deleted_at)
        created = self.result_of(reopened.create(THINGS, "ns", "b", thing("b", "ns")))
        self.assertGreater(rv(created), deleted_at)

    def test_reservation_written_ahead(self) -> None:
        """resourceVersions are reserved a thousand at a time, so a write costs one file write, not two."""
        store = self.open()
        for name in "abcde":
            self.result_of(store.create(THINGS, "ns", name, thing(name, "ns")))
        reservation = os.path.join(self.path, ".resource-version")
        self.assertEqual([w for w in self.writes if w == reservation], [reservation])
        self.assertEqual(len(self.writes), 6)
        self.assertEqual(self.files()[".resource-version"], b"1000\n")
        self.close(store)
        reopened = self.open()
        self.assertEqual(reopened.current_resource_version(), 1000)
        self.assertEqual(rv(self.result_of(reopened.create(THINGS, "ns", "f", thing("f", "ns")))), 1001)
        self.assertEqual(self.files()[".resource-version"], b"2000\n")

    def test_resource_version_from_files_without_reservation(self) -> None:
        """Without its reservation file, a store starts after the highest resourceVersion in the objects."""
        store = self.open()
        for name in "abc":
            self.result_of(store.create(THINGS, "ns", name, thing(name, "ns")))
        self.close(store)
        os.unlink(os.path.join(self.path, ".resource-version"))
        reopened = self.open()
        self.assertEqual(reopened.current_resource_version(), 3)
        self.assertEqual(rv(self.result_of(reopened.create(THINGS, "ns", "d", thing("d", "ns")))), 4)

    def test_layout_and_modes(self) -> None:
        """Objects are <group>/<resource>/[<namespace>/]<name>.json, 0600, in 0700 folders, as JSON plus newline."""
        store = self.open()
        a = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        b = self.result_of(store.create(APISERVICES, "", "v1.example.grafana.app", thing("v1.example.grafana.app")))
        c = self.result_of(store.create(Collection("", "namespaces"), "", "ns", thing("ns")))
        files = self.files()
        self.assertEqual(sorted(files), [".resource-version", "apiregistration.k8s.io/apiservices/v1.example.grafana.app.json",
                                         "core/namespaces/ns.json", "example.grafana.app/things/ns/a.json"])
        for relative, obj in [("example.grafana.app/things/ns/a.json", a),
                              ("apiregistration.k8s.io/apiservices/v1.example.grafana.app.json", b),
                              ("core/namespaces/ns.json", c)]:
            self.assertEqual(json.loads(files[relative]), obj)
            self.assertTrue(files[relative].endswith(b"}\n"))
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.path, relative)).st_mode), 0o600)
        for folder in ["example.grafana.app", "example.grafana.app/things", "example.grafana.app/things/ns", "core"]:
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.path, folder)).st_mode), 0o700)

    def test_invalid_group_or_resource_rejected(self) -> None:
        """A group or resource that is not a usable folder name raises InvalidKeyError and writes nothing."""
        store = self.open()
        for collection in [Collection("..", "things"), Collection("example.grafana.app", "a/b"),
                           Collection("example.grafana.app", "")]:
            failure = self.failureResultOf(
                Deferred.fromCoroutine(store.create(collection, "", "a", thing("a"))), InvalidKeyError)
            self.assertIsInstance(failure.value, InvalidKeyError)
        self.assertEqual(store.current_resource_version(), 0)
        self.assertEqual(self.files(), {})

    def test_leftover_temporary_files_removed(self) -> None:
        """Temporary files of interrupted writes are removed at open, each logged, and not loaded."""
        store = self.open()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.close(store)
        leftovers = [self.put("example.grafana.app/things/ns/.a.json.tmp-99999", "{\"half"),
                     self.put(".resource-version.tmp-99999", "12")]
        reopened = self.open()
        for leftover in leftovers:
            self.assertFalse(os.path.exists(leftover))
        removed = [e["path"] for e in self.log if "leftover" in e["log_format"]]
        self.assertEqual(sorted(removed), sorted(leftovers))
        self.assertEqual([i["metadata"]["name"] for i in self.result_of(reopened.list(THINGS, None)).items], ["a"])
        self.assertEqual(self.warnings(), [])

    def test_unusable_files_skipped(self) -> None:
        """Corrupt, foreign and misplaced files are logged and skipped at open; the other objects are served."""
        store = self.open()
        good = self.result_of(store.create(THINGS, "ns", "good", thing("good", "ns")))
        self.close(store)
        bad = {
            self.put("example.grafana.app/things/ns/truncated.json", '{"metadata": {"name": "trun'): "not valid JSON",
            self.put("example.grafana.app/things/ns/list.json", "[1, 2]"): "not a JSON object",
            self.put("example.grafana.app/things/ns/nometa.json", "{}"): "no metadata",
            self.put("example.grafana.app/things/ns/renamed.json",
                     json.dumps({"metadata": {"name": "other", "namespace": "ns", "resourceVersion": "1"}})):
                "metadata.name",
            self.put("example.grafana.app/things/ns/moved.json",
                     json.dumps({"metadata": {"name": "moved", "namespace": "elsewhere", "resourceVersion": "1"}})):
                "metadata.namespace",
            self.put("example.grafana.app/things/ns/norv.json",
                     json.dumps({"metadata": {"name": "norv", "namespace": "ns"}})): "resourceVersion",
            self.put("example.grafana.app/stray.json", "{}"): "not where a stored object belongs",
            self.put("example.grafana.app/things/ns/deeper/x.json", "{}"): "not where a stored object belongs",
            self.put("example.grafana.app/things/ns/b%2Fc.json", "{}"): "may not be",
            self.put("example.grafana.app/things/ns/binary.json", b"\xff\xfe"): "not valid JSON",
        }
        self.put("example.grafana.app/things/ns/notes.txt", "not an object")
        self.put("example.grafana.app/things/ns/good.json.bak", "{}")
        reopened = self.open()
        warned = dict(self.warnings())
        self.assertEqual(sorted(warned), sorted(bad))
        for path, problem in bad.items():
            self.assertIn(problem, warned[path])
        self.assertEqual(self.result_of(reopened.list(THINGS, None)).items, [good])

    def test_second_open_refused(self) -> None:
        """While one store has the folder, another open raises StoreLockedError naming its pid; after close it works."""
        store = self.open()
        error = self.assertRaises(StoreLockedError, FileStore.open, self.path)
        self.assertEqual(str(error), f"storage folder {self.path} is in use by another grafana-aggregator process "
                                     f"(pid {os.getpid()}); only one may write to it")
        self.close(store)
        self.open()

    def test_closed_store_refuses_writes(self) -> None:
        """After close, writes raise StorageError and leave the folder alone."""
        store = self.open()
        self.close(store)
        self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "ns", "a", thing("a", "ns"))), StorageError)
        self.assertEqual(self.files(), {})

    def test_failed_write_changes_nothing(self) -> None:
        """A write that fails on disk raises the OSError and leaves memory, files and watchers as they were."""
        store = self.open()
        a = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        before = self.files()
        recorder = _Recorder()
        store.watch(THINGS, None, store.current_resource_version(), recorder)
        self.failing = True
        for operation in [store.create(THINGS, "ns", "b", thing("b", "ns")),
                          store.update(THINGS, "ns", "a", thing("a", "ns", size=2)),
                          store.delete(THINGS, "ns", "a")]:
            self.failureResultOf(Deferred.fromCoroutine(operation), OSError)
        self.assertEqual(self.result_of(store.list(THINGS, None)).items, [a])
        self.assertEqual(store.current_resource_version(), 1)
        self.assertEqual(self.files(), before)
        self.assertEqual(recorder.events, [])
        self.failing = False
        self.assertEqual(rv(self.result_of(store.create(THINGS, "ns", "b", thing("b", "ns")))), 2)

    def test_failed_reservation_changes_nothing(self) -> None:
        """When even the resourceVersion reservation cannot be written, the write fails and nothing changes."""
        store = self.open()
        self.failing = True
        self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "ns", "a", thing("a", "ns"))), OSError)
        self.assertEqual(store.current_resource_version(), 0)
        self.assertEqual(self.files(), {})
        self.failing = False
        self.assertEqual(rv(self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))), 1)

    def test_killed_writer_keeps_completed_writes(self) -> None:
        """After a kill -9 (lock released, store never closed, a write cut short), every completed write is there."""
        store = FileStore.open(self.path)
        a = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        b = self.result_of(store.update(THINGS, "ns", "a", thing("a", "ns", size=2)))
        c = self.result_of(store.create(APISERVICES, "", "v1.c", thing("v1.c")))
        self.assertLess(rv(a), rv(b))
        interrupted = self.put("example.grafana.app/things/ns/.d.json.tmp-99999", '{"metadata": {"na')
        os.close(store._lock_fd)  # what the kernel does when the process dies; the store is never closed
        reopened = self.open()
        self.assertEqual(self.result_of(reopened.list(THINGS, None)).items, [b])
        self.assertEqual(self.result_of(reopened.list(APISERVICES, None)).items, [c])
        self.assertFalse(os.path.exists(interrupted))
        self.assertGreater(rv(self.result_of(reopened.create(THINGS, "ns", "d", thing("d", "ns")))), rv(c))

    def test_watch_after_reopen(self) -> None:
        """After a reopen the history is empty: a watch from the current resourceVersion works, an older one is Expired."""
        store = self.open()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.close(store)
        reopened = self.open()
        current = reopened.current_resource_version()
        error = self.assertRaises(ExpiredError, reopened.watch, THINGS, None, 1, _Recorder())
        self.assertEqual(str(error), f"too old resource version: 1 ({current})")
        recorder = _Recorder()
        reopened.watch(THINGS, None, current, recorder)
        self.result_of(reopened.create(THINGS, "ns", "b", thing("b", "ns")))
        self.assertEqual(recorder.seen(), [("ADDED", "ns", "b", current + 1)])


class EtcdStoreConformanceTests(StoreConformanceMixin, SynchronousTestCase):
    """EtcdStore keeps the IStore contract, against a real etcd (each test under its own key prefix)."""

    def make_store(self, history_size: int = DEFAULT_HISTORY_SIZE) -> IStore:
        """An EtcdStore on the shared etcd, its collections primed, closed when the test ends."""
        from twisted.internet import reactor

        from grafana_aggregator.storage.etcd import EtcdStore

        from .etcd import client_for, run, shared_etcd

        store = EtcdStore(client_for(shared_etcd()), reactor, f"/test/{self.id()}", history_size)
        self.addCleanup(lambda: run(store.close()))
        for collection in (THINGS, OTHERS, APISERVICES):
            run(store.list(collection, None))
        self.start_rv = store.current_resource_version()
        return store

    def result_of(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The result of a store coroutine that must succeed (the reactor runs until it is done)."""
        from .etcd import run

        return self.successResultOf(run(coroutine))

    def fails(self, coroutine: Coroutine[Any, Any, Any], error: type[Exception]) -> Failure:
        """The failure of a store coroutine that must fail with error."""
        from .etcd import run

        return self.failureResultOf(run(coroutine), error)
