"""Tests for L{grafana_aggregator.storage.etcd_lease} over a fake etcd whose leases expire on a Clock: a leader cut
off from etcd steps down within the lease's TTL, another takes over within twice the TTL and never while the
first still leads, a clean stop hands over at once, and a replica's views live and die with its lease."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.controllers.leadership import LeaderOnly, any_ready
from grafana_aggregator.storage import StorageTimeoutError, StorageUnavailableError
from grafana_aggregator.storage.etcd_lease import EtcdSession, LeaderElection, ReplicaViews

TTL = 4
#: Seconds a call to a cut-off etcd takes before it fails (the client's deadline).
CALL_TIMEOUT = 5.0
PREFIX = "/registry"


def _b(text: str) -> bytes:
    return base64.b64decode(text)


class FakeEtcd:
    """Keys, revisions and leases that expire on the clock: the subset of etcd the lease module uses."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.revision = 1
        self.keys: dict[bytes, dict[str, Any]] = {}
        self.leases: dict[int, Any] = {}
        self.next_lease = 100
        self.watchers: list[FakeWatch] = []

    def grant(self, ttl: int) -> tuple[int, int]:
        self.next_lease += 1
        lease = self.next_lease
        self.leases[lease] = self.clock.callLater(ttl, self.expire, lease)
        return lease, ttl

    def keepalive(self, lease: int, ttl: int) -> int:
        timer = self.leases.get(lease)
        if timer is None:
            return 0
        timer.reset(ttl)
        return ttl

    def expire(self, lease: int) -> None:
        timer = self.leases.pop(lease, None)
        if timer is not None and timer.active():
            timer.cancel()
        for key in [k for k, kv in self.keys.items() if kv["lease"] == lease]:
            self.delete(key)

    def put(self, key: bytes, value: bytes, lease: int) -> None:
        self.revision += 1
        old = self.keys.get(key)
        self.keys[key] = {"key": key, "value": value, "lease": lease, "mod": self.revision,
                          "create": old["create"] if old else self.revision}
        self.notify({"kv": self.kv(key)})

    def delete(self, key: bytes) -> None:
        if self.keys.pop(key, None) is None:
            return
        self.revision += 1
        self.notify({"type": "DELETE", "kv": {"key": base64.b64encode(key).decode(), "mod_revision": str(self.revision)}})

    def notify(self, event: dict[str, Any]) -> None:
        key = _b(event["kv"]["key"])
        for watcher in list(self.watchers):
            if watcher.key <= key < watcher.end:
                watcher.on_events([event], self.revision)

    def kv(self, key: bytes) -> dict[str, Any]:
        kv = self.keys[key]
        return {"key": base64.b64encode(key).decode(), "value": base64.b64encode(kv["value"]).decode(),
                "lease": str(kv["lease"]), "mod_revision": str(kv["mod"]), "create_revision": str(kv["create"])}


class FakeWatch:
    def __init__(self, etcd: FakeEtcd, key: bytes, end: bytes, on_events: Callable[..., None]):
        self.etcd, self.key, self.end, self.on_events = etcd, key, end, on_events

    def stop(self) -> None:
        if self in self.etcd.watchers:
            self.etcd.watchers.remove(self)


class FakeClient:
    """One replica's client of the FakeEtcd; `cut` makes every call hang (a replica partitioned from etcd)."""

    def __init__(self, etcd: FakeEtcd):
        self.etcd = etcd
        self.cut = False
        self.refuse = False
        self.keepalives = 0

    async def _reach(self) -> None:
        if self.refuse:
            raise StorageUnavailableError("etcd cannot be reached")
        if self.cut:
            # A partition: the call hangs until the client's deadline, longer than the TTL.
            await deferLater(self.etcd.clock, CALL_TIMEOUT, lambda: None)
            raise StorageTimeoutError("etcd did not answer")

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        await self._reach()
        return self.etcd.grant(ttl)

    async def lease_keepalive(self, lease: int) -> int:
        await self._reach()
        self.keepalives += 1
        return self.etcd.keepalive(lease, TTL)

    async def lease_revoke(self, lease: int) -> None:
        await self._reach()
        self.etcd.expire(lease)

    async def range(self, key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
        await self._reach()
        end = range_end or key + b"\0"
        kvs = [self.etcd.kv(k) for k in sorted(self.etcd.keys) if key <= k < end]
        return {"header": {"revision": str(self.etcd.revision)}, "kvs": kvs}

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]]) -> dict[str, Any]:
        await self._reach()
        ok = True
        for c in compare:
            assert c["target"] == "CREATE" and c["create_revision"] == "0"
            ok = ok and _b(c["key"]) not in self.etcd.keys
        responses = []
        for request in success if ok else failure:
            if "request_put" in request:
                put = request["request_put"]
                lease = int(put.get("lease", 0))
                if lease and lease not in self.etcd.leases:
                    raise StorageUnavailableError("etcdserver: requested lease not found")
                self.etcd.put(_b(put["key"]), _b(put["value"]), lease)
                responses.append({"response_put": {}})
            elif "request_range" in request:
                key = _b(request["request_range"]["key"])
                kvs = [self.etcd.kv(key)] if key in self.etcd.keys else []
                responses.append({"response_range": {"kvs": kvs}})
            elif "request_delete_range" in request:
                self.etcd.delete(_b(request["request_delete_range"]["key"]))
                responses.append({"response_delete_range": {}})
        return {"succeeded": ok, "responses": responses, "header": {"revision": str(self.etcd.revision)}}

    def watch(self, key: bytes, range_end: bytes, start_revision: int, on_events: Callable[..., None],
              on_compacted: Callable[[int], None]) -> FakeWatch:
        watch = FakeWatch(self.etcd, key, range_end, on_events)
        self.etcd.watchers.append(watch)
        return watch


class Replica:
    """A replica's session, election and views on its own FakeClient."""

    def __init__(self, etcd: FakeEtcd, clock: Clock, name: str):
        self.client = FakeClient(etcd)
        self.session = EtcdSession(self.client, clock, TTL)  # type: ignore[arg-type]
        self.election = LeaderElection(self.client, self.session, clock, PREFIX, name)  # type: ignore[arg-type]
        self.views = ReplicaViews(self.client, self.session, clock, PREFIX, "availability", name)  # type: ignore[arg-type]

    def start(self) -> None:
        for part in (self.session, self.views, self.election):
            part.startService()

    def stop(self) -> None:
        for part in (self.election, self.views, self.session):
            part.stopService()


class LeaseTests(SynchronousTestCase):
    """Sessions and the leader election over the fake etcd."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcd(self.clock)
        self.a = Replica(self.etcd, self.clock, "a")
        self.b = Replica(self.etcd, self.clock, "b")

    def run_for(self, seconds: float, step: float = 0.05, check: Callable[[], None] | None = None) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            if check is not None:
                check()

    def test_session_keeps_its_lease_by_renewing(self) -> None:
        """A session renews every third of the TTL and keeps one lease as long as etcd answers."""
        self.a.session.startService()
        lease = self.a.session.lease
        self.assertIsNotNone(lease)
        self.run_for(10 * TTL)
        self.assertEqual(self.a.session.lease, lease)
        self.assertIn(lease, self.etcd.leases)
        self.assertGreaterEqual(self.a.client.keepalives, 25)

    def test_first_replica_leads_the_other_follows(self) -> None:
        """One key, one leader: the second replica sees the first as leader."""
        self.a.start()
        self.b.start()
        self.run_for(TTL)
        self.assertTrue(self.a.election.is_leader)
        self.assertFalse(self.b.election.is_leader)
        self.assertEqual(self.b.election.leader, "a")

    def test_cut_off_leader_steps_down_within_ttl_and_other_takes_over_within_twice_ttl(self) -> None:
        """A leader whose renewals hang stops leading within the TTL of its last renewal; the other replica
        leads within twice the TTL, and never while the first still does."""
        self.a.start()
        self.b.start()
        self.run_for(1.0)
        self.assertTrue(self.a.election.is_leader)
        cut_at = self.clock.seconds()
        self.a.client.cut = True
        stepped_down: list[float] = []
        took_over: list[float] = []

        def check() -> None:
            self.assertFalse(self.a.election.is_leader and self.b.election.is_leader, "two leaders at once")
            if not self.a.election.is_leader and not stepped_down:
                stepped_down.append(self.clock.seconds())
            if self.b.election.is_leader and not took_over:
                took_over.append(self.clock.seconds())

        self.run_for(3 * TTL, check=check)
        self.assertTrue(stepped_down and took_over)
        self.assertLessEqual(stepped_down[0] - cut_at, TTL)
        self.assertLessEqual(took_over[0] - cut_at, 2 * TTL)
        self.assertGreaterEqual(took_over[0], stepped_down[0])

    def test_refused_renewals_step_down_too(self) -> None:
        """Renewals that fail (etcd refuses or is down) end the leadership at the lease's expiry, not before."""
        self.a.start()
        self.run_for(1.0)
        self.assertTrue(self.a.election.is_leader)
        valid_until = self.a.session.valid_until
        self.a.client.refuse = True
        self.run_for(valid_until - self.clock.seconds() - 0.1)
        self.assertTrue(self.a.election.is_leader)
        self.run_for(0.2)
        self.assertFalse(self.a.election.is_leader)

    def test_clean_stop_hands_over_within_a_quarter_ttl(self) -> None:
        """Stopping revokes the lease, so the leader key goes at once and the other campaigns successfully."""
        self.a.start()
        self.b.start()
        self.run_for(1.0)
        self.a.stop()
        self.run_for(TTL / 4 + 0.1)
        self.assertTrue(self.b.election.is_leader)

    def test_stop_does_not_wait_on_an_unreachable_etcd(self) -> None:
        """Shutdown gives up revoking after a second; the lease then simply expires."""
        self.a.session.startService()
        self.a.client.cut = True
        stopped = self.a.session.stopService()
        self.assertNoResult(stopped)
        self.clock.advance(1.0)
        self.successResultOf(stopped)

    def test_reconnected_replica_campaigns_with_a_new_lease(self) -> None:
        """After losing its lease a replica gets a new one once etcd answers, and follows the new leader."""
        self.a.start()
        self.b.start()
        self.run_for(1.0)
        self.a.client.cut = True
        self.run_for(2 * TTL)
        self.a.client.cut = False
        self.run_for(CALL_TIMEOUT + TTL)
        self.assertIsNotNone(self.a.session.lease)
        self.assertFalse(self.a.election.is_leader)
        self.assertTrue(self.b.election.is_leader)


class ViewsTests(SynchronousTestCase):
    """The availability board: one document per (subject, replica), bound to the replica's lease."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.etcd = FakeEtcd(self.clock)
        self.a = Replica(self.etcd, self.clock, "a")
        self.b = Replica(self.etcd, self.clock, "b")
        self.a.start()
        self.b.start()

    def test_published_views_reach_every_replica(self) -> None:
        """What a replica publishes is read by all, and a change is announced to listeners."""
        heard: list[str] = []
        self.b.views.add_listener(heard.append)
        self.a.views.publish("v1.x", {"status": "True"})
        self.b.views.publish("v1.x", {"status": "False"})
        self.assertEqual(self.a.views.views("v1.x"), {"a": {"status": "True"}, "b": {"status": "False"}})
        self.assertEqual(self.b.views.views("v1.x"), self.a.views.views("v1.x"))
        self.assertIn("v1.x", heard)

    def test_replica_names_with_slashes(self) -> None:
        """Worker replicas are named `host:port/worker-n`: their views still belong to the right subject."""
        worker = Replica(self.etcd, self.clock, "vm:6443/worker-2")
        worker.start()
        worker.views.publish("v1.x", {"status": "True"})
        self.assertEqual(self.a.views.views("v1.x"), {"vm:6443/worker-2": {"status": "True"}})
        late = Replica(self.etcd, self.clock, "c")
        late.start()
        self.assertEqual(late.views.views("v1.x"), {"vm:6443/worker-2": {"status": "True"}})

    def test_unchanged_view_is_not_written_again(self) -> None:
        """Publishing the same document twice writes once."""
        self.a.views.publish("v1.x", {"status": "True"})
        revision = self.etcd.revision
        self.a.views.publish("v1.x", {"status": "True"})
        self.assertEqual(self.etcd.revision, revision)

    def test_dead_replica_view_goes_with_its_lease_and_comes_back_with_a_new_one(self) -> None:
        """A cut-off replica's views vanish when its lease expires; with a new lease they are published again."""
        self.a.views.publish("v1.x", {"status": "True"})
        self.a.client.cut = True
        self.clock.advance(TTL + 0.1)
        self.assertEqual(self.b.views.views("v1.x"), {})
        self.a.client.cut = False
        for _ in range(int(CALL_TIMEOUT * 2 / 0.1)):
            self.clock.advance(0.1)
        self.assertEqual(self.b.views.views("v1.x"), {"a": {"status": "True"}})

    def test_withdrawn_view_is_deleted(self) -> None:
        """Withdrawing removes the replica's document for every reader."""
        self.a.views.publish("v1.x", {"status": "True"})
        self.a.views.withdraw("v1.x")
        self.assertEqual(self.b.views.views("v1.x"), {})

    def test_board_read_at_start_holds_earlier_views(self) -> None:
        """A replica that starts later reads what the others published before."""
        self.a.views.publish("v1.x", {"status": "True"})
        late = Replica(self.etcd, self.clock, "c")
        late.start()
        self.assertEqual(late.views.views("v1.x"), {"a": {"status": "True"}})
        self.assertEqual(json.loads(self.etcd.keys[b"/registry/.replicas/availability/v1.x/a"]["value"]),
                         {"status": "True"})


class Recorder(Service):
    """A child service that records its starts and stops."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def startService(self) -> None:
        super().startService()
        self.events.append("start")

    def stopService(self) -> None:
        super().stopService()
        self.events.append("stop")


class FakeLeadership:
    def __init__(self) -> None:
        self.is_leader = False
        self.listeners: list[Callable[[bool], None]] = []

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        self.listeners.append(listener)

    def set(self, leading: bool) -> None:
        self.is_leader = leading
        for listener in self.listeners:
            listener(leading)


class LeaderOnlyTests(SynchronousTestCase):
    """Controllers that write run only while their replica leads."""

    def test_children_run_only_while_leading(self) -> None:
        """Not started as a follower; started on election; stopped at once on losing it; stopped with the parent."""
        leadership = FakeLeadership()
        gate = LeaderOnly(leadership)
        child = Recorder()
        child.setServiceParent(gate)
        gate.startService()
        self.assertEqual(child.events, [])
        leadership.set(True)
        self.assertEqual(child.events, ["start"])
        self.assertTrue(child.running)
        leadership.set(False)
        self.assertEqual(child.events, ["start", "stop"])
        leadership.set(True)
        gate.stopService()
        self.assertEqual(child.events, ["start", "stop", "start", "stop"])
        leadership.set(True)
        self.assertEqual(child.events, ["start", "stop", "start", "stop"])

    def test_any_ready(self) -> None:
        """A check made of several passes when one passes, else says what the first says."""
        self.assertIsNone(any_ready(lambda: "no", lambda: None)())
        self.assertEqual(any_ready(lambda: "first", lambda: "second")(), "first")
