"""The instrumented store times each storage operation and otherwise behaves as the store it wraps."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.storage import Collection, NotFoundError
from grafana_aggregator.storage.instrumented import InstrumentedStore
from grafana_aggregator.storage.memory import MemoryStore

THINGS = Collection("example.test", "things")


class InstrumentedStoreTests(SynchronousTestCase):
    """Each call is observed with its operation and resource, failures included."""

    def test_observations(self) -> None:
        """create, get, list, update and delete are each observed once; a failing get is observed too."""
        seen: list[tuple[str, str, float]] = []
        store = InstrumentedStore(MemoryStore(), lambda op, resource, seconds: seen.append((op, resource, seconds)),
                                  Clock())

        def run(coroutine: object) -> object:
            return self.successResultOf(Deferred.fromCoroutine(coroutine))  # type: ignore[arg-type]

        created = run(store.create(THINGS, "", "a", {"metadata": {"name": "a"}}))
        run(store.get(THINGS, "", "a"))
        run(store.list(THINGS, None))
        run(store.update(THINGS, "", "a", created))  # type: ignore[arg-type]
        run(store.delete(THINGS, "", "a"))
        self.failureResultOf(Deferred.fromCoroutine(store.get(THINGS, "", "a")), NotFoundError)
        self.assertEqual([(op, resource) for op, resource, _ in seen],
                         [("create", "things"), ("get", "things"), ("list", "things"), ("update", "things"),
                          ("delete", "things"), ("get", "things")])
        self.assertEqual(store.current_resource_version(), 3)
