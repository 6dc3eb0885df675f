"""Tests for L{grafana_aggregator.storage.etcd} beyond the conformance suite (tests/test_storage.py): snapshots at
a revision and compaction, an etcd that is down, failover between endpoints, and watches that survive a restart."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.storage import (
    EXPIRED,
    Collection,
    ConflictError,
    ExpiredError,
    StorageUnavailableError,
    WatchEvent,
)
from grafana_aggregator.storage.etcd import EtcdStore
from grafana_aggregator.storage.etcd_client import EtcdClient

from .etcd import EtcdServer, client_for, free_port, run, shared_etcd, spin

THINGS = Collection("example.grafana.app", "things")


def thing(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {}}


class EtcdStoreTests(SynchronousTestCase):
    """What only the etcd store does."""

    def store(self, client: EtcdClient | None = None) -> EtcdStore:
        store = EtcdStore(client or client_for(shared_etcd()), reactor, f"/test/{self.id()}")
        self.addCleanup(lambda: run(store.close()))
        return store

    def test_list_at_reads_an_older_snapshot(self) -> None:
        """list_at gives the collection as it was at a revision, whatever was written since."""
        store = self.store()
        run(store.create(THINGS, "", "a", thing("a")))
        run(store.create(THINGS, "", "b", thing("b")))
        at = store.current_resource_version()
        run(store.create(THINGS, "", "c", thing("c")))
        run(store.delete(THINGS, "", "a"))
        snapshot = self.successResultOf(run(store.list_at(THINGS, None, at)))
        self.assertEqual(([i["metadata"]["name"] for i in snapshot.items], snapshot.resource_version), (["a", "b"], at))

    def test_compacted_revision_is_expired(self) -> None:
        """A snapshot, or a new store's watch, from before etcd's compaction is Expired (410)."""
        store = self.store()
        run(store.create(THINGS, "", "a", thing("a")))
        old = store.current_resource_version()
        run(store.update(THINGS, "", "a", thing("a")))
        run(store.client.compact(store.current_resource_version()))
        self.failureResultOf(run(store.list_at(THINGS, None, old)), ExpiredError)
        fresh = self.store()
        run(fresh.list(THINGS, None))
        self.assertRaises(ExpiredError, fresh.watch, THINGS, None, old, lambda event: None)

    def test_cache_behind_compaction_expires_its_watches(self) -> None:
        """When the cache's own etcd watch falls behind a compaction, every watch it serves gets EXPIRED (and no
        more events), so its watchers list again instead of going stale."""
        store = self.store()
        run(store.create(THINGS, "", "a", thing("a")))
        events: list[WatchEvent] = []
        store.watch(THINGS, None, store.current_resource_version(), events.append)
        store._compacted(store.current_resource_version())
        self.assertEqual([e.type for e in events], [EXPIRED])
        run(store.create(THINGS, "", "b", thing("b")))
        self.assertEqual([e.type for e in events], [EXPIRED])
        listed = self.successResultOf(run(store.list(THINGS, None)))
        self.assertEqual([i["metadata"]["name"] for i in listed.items], ["a", "b"])

    def test_etcd_down_is_unavailable_soon(self) -> None:
        """With nothing listening, a call fails with StorageUnavailableError (503) well within its timeout."""
        server = EtcdServer.__new__(EtcdServer)
        server.client_port = free_port()
        started = time.monotonic()
        failure = self.failureResultOf(run(self.store(client_for(server)).list(THINGS, None)),
                                       StorageUnavailableError)
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertIn("etcd cannot be reached", str(failure.value))

    def test_failover_to_the_next_endpoint(self) -> None:
        """A dead first endpoint is skipped: reads and writes go to the next one."""
        dead = f"http://127.0.0.1:{free_port()}"
        client = client_for(shared_etcd())
        client.endpoints = [dead, *client.endpoints]
        store = self.store(client)
        created = self.successResultOf(run(store.create(THINGS, "", "a", thing("a"))))
        self.assertEqual(self.successResultOf(run(store.get(THINGS, "", "a"))), created)

    def test_watch_resumes_after_a_restart(self) -> None:
        """When etcd restarts, the cache's watch opens again from the last revision seen: nothing missed or
        repeated, and writes work again by themselves."""
        server = EtcdServer()
        self.addCleanup(server.remove)
        server.start()
        store = self.store(client_for(server, timeout=2.0))
        run(store.list(THINGS, None))
        seen: list[tuple[str, str]] = []

        def record(event: WatchEvent) -> None:
            seen.append((event.type, event.name))

        store.watch(THINGS, None, store.current_resource_version(), record)
        run(store.create(THINGS, "", "a", thing("a")))
        server.stop()
        self.failureResultOf(run(store.create(THINGS, "", "b", thing("b"))), StorageUnavailableError)
        server.start()
        deadline = time.monotonic() + 10
        while not store.watching and time.monotonic() < deadline:
            spin(run(_sleep(0.05)))
        run(store.create(THINGS, "", "c", thing("c")))
        self.assertEqual(seen, [("ADDED", "a"), ("ADDED", "c")])

    def test_stalled_watch_is_opened_again(self) -> None:
        """When the cache's etcd stream stalls with its connection open (a member that hangs), a write whose
        revision does not arrive in time opens the stream again, so the writer reads its own write at once."""
        store = self.store()
        run(store.list(THINGS, None))
        deadline = time.monotonic() + 10
        while not store.watching and time.monotonic() < deadline:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
        assert store._watch is not None and store._watch._body is not None
        store._watch._body.transport.pauseProducing()  # nothing more is read from this stream
        created = self.successResultOf(run(store.create(THINGS, "", "a", thing("a")), timeout=10))
        self.assertEqual(self.successResultOf(run(store.get(THINGS, "", "a")))["metadata"]["resourceVersion"],
                         created["metadata"]["resourceVersion"])

    def test_conflict_waits_for_the_cache(self) -> None:
        """An update that conflicts because this replica's cache is behind (another replica wrote the object)
        returns once the cache holds the newer object, so the caller's retry (kube's for a patch without a
        resourceVersion) reads it instead of conflicting again."""
        a = self.store()
        b = EtcdStore(client_for(shared_etcd()), reactor, a.prefix)
        self.addCleanup(lambda: run(b.close()))
        created = self.successResultOf(run(a.create(THINGS, "", "x", thing("x"))))
        self.successResultOf(run(b.list(THINGS, None)))
        deadline = time.monotonic() + 10
        while not (b.watching and b.current_resource_version() >= int(created["metadata"]["resourceVersion"])) \
                and time.monotonic() < deadline:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
        assert b._watch is not None and b._watch._body is not None
        b._watch._body.transport.pauseProducing()  # b's cache falls behind
        newer = self.successResultOf(run(a.update(THINGS, "", "x", {**thing("x"), "spec": {"n": 1}})))
        stale = self.successResultOf(run(b.get(THINGS, "", "x")))
        self.failureResultOf(run(b.update(THINGS, "", "x", stale, int(stale["metadata"]["resourceVersion"])),
                                 timeout=10), ConflictError)
        self.assertEqual(self.successResultOf(run(b.get(THINGS, "", "x")))["metadata"]["resourceVersion"],
                         newer["metadata"]["resourceVersion"])


class ConsistentReadTests(SynchronousTestCase):
    """sync() is kube's consistent read: once it returns, this replica's cache holds every write committed
    before it, including another replica's."""

    def test_sync_waits_for_another_replicas_write(self) -> None:
        prefix = f"/test/{self.id()}"
        writer = EtcdStore(client_for(shared_etcd()), reactor, prefix)
        reader = EtcdStore(client_for(shared_etcd()), reactor, prefix)
        for store in (writer, reader):
            self.addCleanup(lambda store=store: run(store.close()))
            run(store.list(THINGS, None))
        deadline = time.monotonic() + 10
        while not reader.watching and time.monotonic() < deadline:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
        assert reader._watch is not None and reader._watch._body is not None
        reader._watch._body.transport.pauseProducing()  # the reader's cache falls behind
        created = self.successResultOf(run(writer.create(THINGS, "", "a", thing("a"))))
        self.failureResultOf(run(reader.get(THINGS, "", "a")))  # stale: not there yet
        self.successResultOf(run(reader.sync(), timeout=10))
        self.assertEqual(self.successResultOf(run(reader.get(THINGS, "", "a")))["metadata"]["resourceVersion"],
                         created["metadata"]["resourceVersion"])


async def _sleep(seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


class ForeignValueTests(SynchronousTestCase):
    """Keys under the prefix that are not stored objects (another program's, or damaged) are skipped with a
    warning, in the first list and in the watch, and the changes after them still arrive."""

    def test_foreign_values_skipped(self) -> None:
        from grafana_aggregator.storage.etcd_client import b64

        store = EtcdStore(client_for(shared_etcd()), reactor, f"/test/{self.id()}")
        self.addCleanup(lambda: run(store.close()))
        prefix = f"/test/{self.id()}/example.grafana.app/things/"
        run(store.client.call("kv/put", {"key": b64(f"{prefix}early".encode()), "value": b64(b"not json")},
                              idempotent=False))
        self.assertEqual(self.successResultOf(run(store.list(THINGS, None))).items, [])
        seen: list[str] = []
        store.watch(THINGS, None, store.current_resource_version(), lambda event: seen.append(event.name))
        run(store.client.call("kv/put", {"key": b64(f"{prefix}late".encode()), "value": b64(b"[1]")},
                              idempotent=False))
        run(store.create(THINGS, "", "a", thing("a")))
        self.assertEqual(seen, ["a"])
        self.assertEqual([i["metadata"]["name"] for i in self.successResultOf(run(store.list(THINGS, None))).items],
                         ["a"])
        self.flushLoggedErrors()


class HungMemberTests(SynchronousTestCase):
    """A replica that only reads follows writes made through others even when the member its watch stream
    follows hangs (SIGSTOP keeps its connections open and silent): the etcd health probe moves the stream."""

    timeout = 120

    def test_watch_moves_off_a_hung_member(self) -> None:
        from grafana_aggregator.storage.etcd import EtcdCheck

        from .etcd import EtcdCluster

        cluster = EtcdCluster()
        self.addCleanup(cluster.remove)
        cluster.start()
        prefix = f"/test/{self.id()}"
        # The member that hangs is a raft follower, so that writes go on without an election.
        leader = cluster.leader()
        hung = next(index for index in range(len(cluster.members)) if index != leader)
        others = [url for index, url in enumerate(cluster.urls) if index != hung]
        writer = EtcdStore(client_for_urls(others), reactor, prefix)
        reader = EtcdStore(client_for_urls([cluster.urls[hung], *others]), reactor, prefix)
        for store in (writer, reader):
            self.addCleanup(lambda store=store: run(store.close()))
            run(store.list(THINGS, None))
        deadline = time.monotonic() + 10
        while not reader.watching and time.monotonic() < deadline:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
        assert reader._watch is not None
        self.assertEqual(reader._watch.endpoint, cluster.urls[hung])
        check = EtcdCheck(reader, reactor, interval=0.5)
        check.startService()
        self.addCleanup(check.stopService)
        cluster.members[hung].pause()
        self.addCleanup(cluster.members[hung].resume)
        created = self.successResultOf(run(writer.create(THINGS, "", "a", thing("a")), timeout=15))
        deadline = time.monotonic() + 10
        while reader.current_resource_version() < int(created["metadata"]["resourceVersion"]) \
                and time.monotonic() < deadline:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
        self.assertEqual(self.successResultOf(run(reader.get(THINGS, "", "a")))["metadata"]["resourceVersion"],
                         created["metadata"]["resourceVersion"])
        self.assertNotEqual(reader._watch.endpoint, cluster.urls[hung])



def client_for_urls(urls: list[str]) -> EtcdClient:
    """An EtcdClient of several members, in this order (the test helper's client, given every endpoint)."""
    client: EtcdClient = client_for(shared_etcd(), timeout=2.0)
    client.endpoints = list(urls)
    return client
