# -*- test-case-name: tests.test_informer -*-
"""Tests for L{grafana_aggregator.storage.informer}: the shared index of listed and watched collections, what its
listeners are told (at start, on each write, after a re-list) and how it retries a failed list, over memory stores."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage import Collection, ExpiredError, IWatch, ListResult, StorageError, WatchEvent
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore

T = TypeVar("T")

THINGS = Collection("example.grafana.app", "things")
OTHERS = Collection("example.grafana.app", "others")


def thing(name: str, namespace: str = "", **spec: Any) -> dict[str, Any]:
    """An object as a caller hands it to the store."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "example.grafana.app/v1", "kind": "Thing", "metadata": metadata, "spec": spec}


class FailingListStore(MemoryStore):
    """A memory store whose next `list_failures` lists raise StorageError; it counts every list."""

    list_failures = 0
    lists = 0

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        self.lists += 1
        if self.list_failures:
            self.list_failures -= 1
            raise StorageError("the disk is on fire")
        return await super().list(collection, namespace)


class FailingWatchStore(FailingListStore):
    """A memory store whose next watches raise: `expirations` ExpiredErrors, then `watch_failures` StorageErrors."""

    expirations = 0
    watch_failures = 0
    watches = 0

    def watch(self, collection: Collection, namespace: str | None, resource_version: int,
              on_event: Callable[[WatchEvent], None]) -> IWatch:
        self.watches += 1
        if self.expirations:
            self.expirations -= 1
            raise ExpiredError(f"too old resource version: {resource_version}")
        if self.watch_failures:
            self.watch_failures -= 1
            raise StorageError("no more watches")
        return super().watch(collection, namespace, resource_version, on_event)


class GatedListStore(MemoryStore):
    """A memory store whose lists take their snapshot at once but return it only when the test fires `gates`."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.gates: list[Deferred[None]] = []
        self.cancelled = 0

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        result = await super().list(collection, namespace)
        gate: Deferred[None] = Deferred()
        self.gates.append(gate)
        try:
            await gate
        except CancelledError:
            self.cancelled += 1
            raise
        return result


class Recorder:
    """A listener that keeps each event and what the informer held when the event arrived."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self.events: list[WatchEvent] = []
        #: For each event: the informer's object at the event's key, whether it was synced, and its generation.
        self.seen: list[tuple[Any, bool, int]] = []

    def __call__(self, event: WatchEvent) -> None:
        self.events.append(event)
        self.seen.append((self.informer.get(event.collection, event.namespace, event.name), self.informer.synced(),
                          self.informer.generation))

    def summary(self) -> list[tuple[str, str, str, str]]:
        """(type, resource, namespace, name) of each event, in order."""
        return [(e.type, e.collection.resource, e.namespace, e.name) for e in self.events]


class InformerTestCase(SynchronousTestCase):
    """Drives store coroutines and builds informers over a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.logged = EventLoggingObserver()
        globalLogPublisher.addObserver(self.logged)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged)

    def store_warnings(self) -> list[dict[str, Any]]:
        """The one-line warnings of failed lists and watches (a store error is no traceback)."""
        return [e for e in self.logged if e.get("log_format", "").startswith("could not list and watch {collections}:")
                and e.get("log_level") == LogLevel.warn]

    def result_of(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """The result of a store coroutine that completes at once."""
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def create(self, store: MemoryStore, collection: Collection, name: str, namespace: str = "",
               **spec: Any) -> dict[str, Any]:
        return self.result_of(store.create(collection, namespace, name, thing(name, namespace, **spec)))

    def update(self, store: MemoryStore, collection: Collection, name: str, namespace: str = "",
               **spec: Any) -> dict[str, Any]:
        return self.result_of(store.update(collection, namespace, name, thing(name, namespace, **spec)))

    def delete(self, store: MemoryStore, collection: Collection, name: str, namespace: str = "") -> dict[str, Any]:
        return self.result_of(store.delete(collection, namespace, name))

    def informer(self, store: MemoryStore, collections: tuple[Collection, ...] = (THINGS,),
                 retry_delay: float = 1.0, start: bool = True) -> Informer:
        """An informer over store, started unless told otherwise, and stopped when the test ends."""
        informer = Informer(store, collections, self.clock, retry_delay=retry_delay)
        if start:
            informer.startService()
        self.addCleanup(lambda: informer.stopService() if informer.running else None)
        return informer


class IndexTests(InformerTestCase):
    """The informer lists its collections at start and keeps their objects by (namespace, name)."""

    def test_nothing_before_start(self) -> None:
        """Before startService the informer is not synced, ready has not fired and it holds nothing."""
        store = MemoryStore()
        self.create(store, THINGS, "a")
        informer = self.informer(store, start=False)
        self.assertFalse(informer.synced())
        self.assertNoResult(informer.ready)
        self.assertIsNone(informer.get(THINGS, "", "a"))
        self.assertEqual(informer.list(THINGS), [])

    def test_start_lists_every_collection(self) -> None:
        """After start, ready has fired and every stored object of every collection can be read."""
        store = MemoryStore()
        service = self.create(store, APISERVICES, "v1.example.grafana.app")
        external = self.create(store, EXTERNALNAMES, "backend", "grafana")
        informer = self.informer(store, (APISERVICES, EXTERNALNAMES))
        self.assertIsNone(self.successResultOf(informer.ready))
        self.assertTrue(informer.synced())
        self.assertEqual(informer.get(APISERVICES, "", "v1.example.grafana.app"), service)
        self.assertEqual(informer.get(EXTERNALNAMES, "grafana", "backend"), external)
        self.assertEqual(informer.list(APISERVICES), [service])
        self.assertEqual(informer.list(EXTERNALNAMES), [external])

    def test_get_missing(self) -> None:
        """get returns None for a name, or a namespace, that holds nothing."""
        store = MemoryStore()
        self.create(store, THINGS, "a", "ns")
        informer = self.informer(store)
        self.assertIsNone(informer.get(THINGS, "ns", "b"))
        self.assertIsNone(informer.get(THINGS, "other", "a"))
        self.assertIsNone(informer.get(THINGS, "", "a"))

    def test_list_sorted_by_namespace_then_name(self) -> None:
        """list orders the objects by namespace (cluster-scoped first), then name, whatever the write order."""
        store = MemoryStore()
        informer = self.informer(store)
        for namespace, name in [("b", "a"), ("a", "z"), ("", "m"), ("a", "b"), ("b", "0")]:
            self.create(store, THINGS, name, namespace)
        self.assertEqual([(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in informer.list(THINGS)],
                         [("", "m"), ("a", "b"), ("a", "z"), ("b", "0"), ("b", "a")])

    def test_collections_kept_apart(self) -> None:
        """Objects of the same key in two collections are two objects."""
        store = MemoryStore()
        things = self.create(store, THINGS, "a", size=1)
        others = self.create(store, OTHERS, "a", size=2)
        informer = self.informer(store, (THINGS, OTHERS))
        self.assertEqual(informer.get(THINGS, "", "a"), things)
        self.assertEqual(informer.get(OTHERS, "", "a"), others)
        self.delete(store, OTHERS, "a")
        self.assertEqual(informer.get(THINGS, "", "a"), things)
        self.assertIsNone(informer.get(OTHERS, "", "a"))

    def test_follows_writes(self) -> None:
        """Creates, updates and deletes after start show in get and list as soon as the write returns."""
        store = MemoryStore()
        informer = self.informer(store)
        created = self.create(store, THINGS, "a", size=1)
        self.assertEqual(informer.get(THINGS, "", "a"), created)
        updated = self.update(store, THINGS, "a", size=2)
        self.assertEqual(informer.get(THINGS, "", "a"), updated)
        self.assertEqual(informer.list(THINGS), [updated])
        self.delete(store, THINGS, "a")
        self.assertIsNone(informer.get(THINGS, "", "a"))
        self.assertEqual(informer.list(THINGS), [])

    def test_expired_watch_lists_again(self) -> None:
        """When the store ends the informer's watch as expired, the informer lists again and catches up on what
        changed while it was not watching, telling its listeners."""
        store = MemoryStore()
        self.create(store, THINGS, "a")
        informer = self.informer(store)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        store._table.hub.expire(store.current_resource_version())
        self.create(store, THINGS, "b")
        self.assertIsNone(informer.get(THINGS, "", "b"))
        self.clock.advance(0)
        self.assertEqual([o["metadata"]["name"] for o in informer.list(THINGS)], ["a", "b"])
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "b")])
        self.create(store, THINGS, "c")
        self.assertIsNotNone(informer.get(THINGS, "", "c"))

    def test_objects_are_shared(self) -> None:
        """The index keeps the objects it is given, not copies: the event's object is the one get returns, and
        every listener gets that same object."""
        store = MemoryStore()
        self.create(store, THINGS, "a")
        informer = self.informer(store, start=False)
        first, second = Recorder(informer), Recorder(informer)
        informer.add_listener(first)
        informer.add_listener(second)
        informer.startService()
        self.create(store, THINGS, "b")
        self.update(store, THINGS, "a", size=3)
        self.assertEqual(len(first.events), 3)
        for one, other, (held, _, _) in zip(first.events, second.events, first.seen):
            self.assertIs(one.object, other.object)
            self.assertIs(held, one.object)
        self.assertIs(informer.list(THINGS)[0], informer.get(THINGS, "", "a"))

    def test_generation_grows_on_every_change(self) -> None:
        """generation is larger after each create, update and delete, in any collection."""
        store = MemoryStore()
        informer = self.informer(store, (THINGS, OTHERS))
        generations = [informer.generation]
        for write in [lambda: self.create(store, THINGS, "a"), lambda: self.update(store, THINGS, "a", size=1),
                      lambda: self.create(store, OTHERS, "a"), lambda: self.delete(store, THINGS, "a"),
                      lambda: self.delete(store, OTHERS, "a")]:
            write()
            generations.append(informer.generation)
        self.assertEqual(generations, sorted(set(generations)))
        self.assertEqual(len(generations), 6)

    def test_generation_grows_at_start(self) -> None:
        """Listing at start changes generation, so something cached before it is not mistaken for current."""
        store = MemoryStore()
        informer = self.informer(store, start=False)
        before = informer.generation
        informer.startService()
        self.assertGreater(informer.generation, before)


class ListenerTests(InformerTestCase):
    """Listeners hear of every object once at start, then of each change after the index applied it."""

    def test_listener_added_before_start_sees_each_object_once(self) -> None:
        """After start, each stored object is announced once as ADDED, after ready fired and with the index full."""
        store = MemoryStore()
        self.create(store, APISERVICES, "v1.b")
        self.create(store, APISERVICES, "v1.a")
        self.create(store, EXTERNALNAMES, "backend", "grafana")
        informer = self.informer(store, (APISERVICES, EXTERNALNAMES), start=False)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        order: list[str] = []
        informer.ready.addCallback(lambda _: order.append("ready"))
        informer.add_listener(lambda event: order.append("event"))
        informer.startService()
        self.assertEqual(recorder.summary(), [("ADDED", "apiservices", "", "v1.a"), ("ADDED", "apiservices", "", "v1.b"),
                                              ("ADDED", "externalnames", "grafana", "backend")])
        self.assertEqual(order, ["ready", "event", "event", "event"])
        for event, (held, synced, _) in zip(recorder.events, recorder.seen):
            self.assertIs(held, event.object)
            self.assertTrue(synced)
            self.assertEqual(event.resource_version, int(event.object["metadata"]["resourceVersion"]))
            self.assertIsNone(event.previous)
        self.assertEqual(len(informer.list(EXTERNALNAMES)), 1)

    def test_nothing_announced_for_empty_store(self) -> None:
        """Starting over an empty store fires ready and announces nothing."""
        informer = self.informer(MemoryStore(), start=False)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.startService()
        self.successResultOf(informer.ready)
        self.assertEqual(recorder.events, [])

    def test_listener_added_after_start_sees_only_later_changes(self) -> None:
        """A listener added once the informer is synced is not told of the objects already there."""
        store = MemoryStore()
        self.create(store, THINGS, "a")
        informer = self.informer(store)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        self.assertEqual(recorder.events, [])
        self.create(store, THINGS, "b")
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "b")])

    def test_each_write_arrives_once(self) -> None:
        """A create, an update and a delete after start each reach the listener once, as the store's events;
        the update carries the object before it as previous."""
        store = MemoryStore()
        informer = self.informer(store, start=False)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.startService()
        created = self.create(store, THINGS, "a", "ns", size=1)
        updated = self.update(store, THINGS, "a", "ns", size=2)
        deleted = self.delete(store, THINGS, "a", "ns")
        self.assertEqual(recorder.summary(), [("ADDED", "things", "ns", "a"), ("MODIFIED", "things", "ns", "a"),
                                              ("DELETED", "things", "ns", "a")])
        added, modified, gone = recorder.events
        self.assertEqual(added.object, created)
        self.assertIsNone(added.previous)
        self.assertEqual(modified.object, updated)
        self.assertEqual(modified.previous, created)
        self.assertEqual(modified.resource_version, int(updated["metadata"]["resourceVersion"]))
        self.assertEqual(gone.object["spec"], deleted["spec"])
        self.assertEqual(gone.resource_version, store.current_resource_version())

    def test_index_applied_before_listener_runs(self) -> None:
        """When a listener runs, get already returns the event's object (None for DELETED) and generation has
        grown."""
        store = MemoryStore()
        informer = self.informer(store)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        generations = [informer.generation]
        self.create(store, THINGS, "a")
        generations.append(informer.generation)
        self.update(store, THINGS, "a", size=1)
        generations.append(informer.generation)
        self.delete(store, THINGS, "a")
        generations.append(informer.generation)
        held = [seen[0] for seen in recorder.seen]
        self.assertIs(held[0], recorder.events[0].object)
        self.assertIs(held[1], recorder.events[1].object)
        self.assertIsNone(held[2])
        self.assertEqual([seen[2] for seen in recorder.seen], generations[1:])

    def test_raising_listener_does_not_stop_the_others(self) -> None:
        """A listener that raises is logged, the listeners after it still get the event, and the watch goes on."""
        store = MemoryStore()
        self.create(store, THINGS, "a")
        self.create(store, THINGS, "b")
        informer = self.informer(store, start=False)

        def broken(event: WatchEvent) -> None:
            raise ZeroDivisionError(event.name)

        recorder = Recorder(informer)
        informer.add_listener(broken)
        informer.add_listener(recorder)
        informer.startService()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertEqual([e.name for e in recorder.events], ["a", "b"])
        self.create(store, THINGS, "c")
        self.update(store, THINGS, "c", size=1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertEqual(recorder.summary()[2:], [("ADDED", "things", "", "c"), ("MODIFIED", "things", "", "c")])
        self.assertIsNotNone(informer.get(THINGS, "", "c"))
        self.assertEqual(informer.get(THINGS, "", "c")["spec"], {"size": 1})

    def test_listener_writing_sees_changes_in_order(self) -> None:
        """A listener that writes to the store from inside an event gets that write as the next event, once."""
        store = MemoryStore()
        informer = self.informer(store)
        recorder = Recorder(informer)

        def echo(event: WatchEvent) -> None:
            if event.type == "ADDED" and event.name == "a":
                self.create(store, THINGS, "echo")

        informer.add_listener(echo)
        informer.add_listener(recorder)
        self.create(store, THINGS, "a")
        self.assertEqual([e.name for e in recorder.events], ["a", "echo"])
        self.assertIs(recorder.seen[1][0], recorder.events[1].object)

    def test_write_between_list_and_watch_announced_once(self) -> None:
        """A write made while the list is on its way is announced once at start, in its latest state, and not
        before ready."""
        store = GatedListStore()
        self.create(store, THINGS, "a", size=1)
        informer = self.informer(store, start=False)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.startService()
        self.assertNoResult(informer.ready)
        updated = self.update(store, THINGS, "a", size=2)
        created = self.create(store, THINGS, "b")
        self.assertEqual(recorder.events, [])
        store.gates[0].callback(None)
        self.successResultOf(informer.ready)
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "a"), ("ADDED", "things", "", "b")])
        self.assertEqual([e.object for e in recorder.events], [updated, created])
        self.assertEqual(informer.list(THINGS), [updated, created])
        self.create(store, THINGS, "c")
        self.assertEqual([e.name for e in recorder.events], ["a", "b", "c"])


class RetryTests(InformerTestCase):
    """A failed list is retried after retry_delay; an expired watch right after a list re-lists at once."""

    def test_failed_list_retried_after_retry_delay(self) -> None:
        """A list that fails is logged and tried again retry_delay later; ready fires and listeners hear of
        everything then."""
        store = FailingListStore()
        store.list_failures = 1
        self.create(store, THINGS, "a")
        informer = self.informer(store, retry_delay=2.0, start=False)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.startService()
        self.assertEqual((len(self.store_warnings()), self.flushLoggedErrors()), (1, []))
        self.assertNoResult(informer.ready)
        self.assertFalse(informer.synced())
        self.clock.advance(1.75)
        self.assertEqual(store.lists, 1)
        self.assertNoResult(informer.ready)
        self.clock.advance(0.25)
        self.assertEqual(store.lists, 2)
        self.successResultOf(informer.ready)
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "a")])
        self.assertIsNotNone(informer.get(THINGS, "", "a"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failed_list_retried_until_it_works(self) -> None:
        """Every failed attempt is logged and followed by another, retry_delay apart."""
        store = FailingListStore()
        store.list_failures = 3
        informer = self.informer(store, retry_delay=1.0)
        for attempts in (1, 2, 3):
            self.assertEqual(store.lists, attempts)
            self.assertNoResult(informer.ready)
            self.clock.advance(1.0)
        self.assertEqual(store.lists, 4)
        self.successResultOf(informer.ready)
        self.assertEqual((len(self.store_warnings()), self.flushLoggedErrors()), (3, []))

    def test_failure_of_a_later_collection_relists_all_quietly(self) -> None:
        """When the second collection's list fails, the retry lists both again and the listener hears of each
        object once, including one written in between."""
        store = FailingListStore()
        self.create(store, THINGS, "a")
        self.create(store, OTHERS, "x")
        informer = self.informer(store, (THINGS, OTHERS), start=False)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        original = store.list

        async def second_fails_once(collection: Collection, namespace: str | None) -> ListResult:
            if collection == OTHERS and store.lists == 1:
                store.list_failures = 1
            return await original(collection, namespace)

        store.list = second_fails_once  # type: ignore[method-assign]
        informer.startService()
        self.assertEqual((len(self.store_warnings()), self.flushLoggedErrors()), (1, []))
        self.create(store, THINGS, "b")
        self.assertEqual(recorder.events, [])
        self.clock.advance(1.0)
        self.assertEqual(store.lists, 4)
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "a"), ("ADDED", "things", "", "b"),
                                              ("ADDED", "others", "", "x")])
        self.create(store, THINGS, "c")
        self.assertEqual(recorder.summary()[3:], [("ADDED", "things", "", "c")])

    def test_expired_watch_relists_at_once(self) -> None:
        """An ExpiredError from the watch right after a list makes the informer list again at once, without
        logging, retry timer or duplicate announcements."""
        store = FailingWatchStore()
        store.expirations = 2
        self.create(store, THINGS, "a")
        informer = self.informer(store, start=False)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.startService()
        self.successResultOf(informer.ready)
        self.assertEqual((store.lists, store.watches), (3, 3))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "a")])
        self.create(store, THINGS, "b")
        self.assertEqual(recorder.summary()[1:], [("ADDED", "things", "", "b")])

    def test_failed_watch_retried_after_retry_delay(self) -> None:
        """A watch that fails with another error is logged and the list and watch are tried again retry_delay
        later."""
        store = FailingWatchStore()
        store.watch_failures = 1
        self.create(store, THINGS, "a")
        informer = self.informer(store, retry_delay=3.0)
        self.assertEqual((len(self.store_warnings()), self.flushLoggedErrors()), (1, []))
        self.assertNoResult(informer.ready)
        self.clock.advance(2.5)
        self.assertEqual(store.lists, 1)
        self.clock.advance(0.5)
        self.assertEqual((store.lists, store.watches), (2, 2))
        self.successResultOf(informer.ready)
        self.create(store, THINGS, "b")
        self.assertIsNotNone(informer.get(THINGS, "", "b"))


class LifecycleTests(InformerTestCase):
    """stopService cancels the watches, a pending list and a pending retry; starting again re-lists."""

    def test_stop_cancels_watches(self) -> None:
        """After stopService, writes change neither the index nor generation, and listeners hear nothing."""
        store = MemoryStore()
        kept = self.create(store, THINGS, "a")
        informer = self.informer(store)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.stopService()
        generation = informer.generation
        self.create(store, THINGS, "b")
        self.update(store, THINGS, "a", size=1)
        self.assertEqual(recorder.events, [])
        self.assertEqual(informer.generation, generation)
        self.assertEqual(informer.list(THINGS), [kept])

    def test_stop_cancels_retry(self) -> None:
        """stopService while a retry waits cancels it: nothing is listed again."""
        store = FailingListStore()
        store.list_failures = 1
        informer = self.informer(store)
        self.assertTrue(self.store_warnings())
        informer.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(store.lists, 1)
        self.assertNoResult(informer.ready)

    def test_stop_cancels_pending_list(self) -> None:
        """stopService while a list is on its way cancels it, quietly and without scheduling a retry."""
        store = GatedListStore()
        informer = self.informer(store)
        self.assertEqual(len(store.gates), 1)
        informer.stopService()
        self.assertEqual(store.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(informer.ready)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_restart_announces_differences(self) -> None:
        """Started again, the informer re-lists and announces what changed while it was stopped: DELETED,
        ADDED, and MODIFIED with the object it held before as previous; unchanged objects are not announced."""
        store = MemoryStore()
        self.create(store, THINGS, "changed", "ns", size=1)
        self.create(store, THINGS, "gone", "ns")
        self.create(store, THINGS, "same")
        informer = self.informer(store)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        old = informer.get(THINGS, "ns", "changed")
        gone = informer.get(THINGS, "ns", "gone")
        informer.stopService()
        self.update(store, THINGS, "changed", "ns", size=2)
        self.delete(store, THINGS, "gone", "ns")
        self.create(store, THINGS, "new", "ns")
        generation = informer.generation
        informer.startService()
        self.assertEqual(sorted(recorder.summary()), [("ADDED", "things", "ns", "new"),
                                                      ("DELETED", "things", "ns", "gone"),
                                                      ("MODIFIED", "things", "ns", "changed")])
        events = {e.type: e for e in recorder.events}
        self.assertIs(events["MODIFIED"].previous, old)
        self.assertEqual(events["MODIFIED"].object["spec"], {"size": 2})
        self.assertEqual(events["MODIFIED"].resource_version,
                         int(events["MODIFIED"].object["metadata"]["resourceVersion"]))
        self.assertIs(events["DELETED"].object, gone)
        for event, (held, synced, _) in zip(recorder.events, recorder.seen):
            self.assertTrue(synced)
            if event.type == "DELETED":
                self.assertIsNone(held)
            else:
                self.assertIs(held, event.object)
        self.assertGreater(informer.generation, generation)
        self.assertEqual([o["metadata"]["name"] for o in informer.list(THINGS)], ["same", "changed", "new"])
        self.update(store, THINGS, "same", size=9)
        self.assertEqual(recorder.summary()[3:], [("MODIFIED", "things", "", "same")])

    def test_restart_without_changes_announces_nothing(self) -> None:
        """Started again with nothing changed, the informer announces nothing and keeps following writes."""
        store = MemoryStore()
        self.create(store, THINGS, "a")
        informer = self.informer(store)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.stopService()
        informer.startService()
        self.assertEqual(recorder.events, [])
        self.create(store, THINGS, "b")
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "b")])

    def test_relist_after_expired_watch_announces_differences_once(self) -> None:
        """When the watch after a re-list has expired, the second re-list does not announce the differences
        again."""
        store = FailingWatchStore()
        self.create(store, THINGS, "a")
        informer = self.informer(store)
        recorder = Recorder(informer)
        informer.add_listener(recorder)
        informer.stopService()
        self.create(store, THINGS, "b")
        store.expirations = 1
        informer.startService()
        self.assertEqual(store.lists, 3)
        self.assertEqual(recorder.summary(), [("ADDED", "things", "", "b")])
