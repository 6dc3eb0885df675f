# -*- test-case-name: tests.test_etcd_lease -*-
"""Replicas sharing one etcd: a session lease per process, leader election on one key, and per-replica views.

- `EtcdSession` holds one lease, renewed every third of its TTL.  It knows until when the lease is surely
  alive (the time a renewal was *sent* plus the TTL etcd answered: etcd counts from when it received it,
  which is later), and declares the session lost at that moment if no renewal came back, then asks for a
  new lease.  Stopping revokes the lease, so the keys bound to it vanish at once rather than after the TTL.
- `LeaderElection` campaigns for `<prefix>/.replicas/leader` with a transaction that creates the key, bound
  to the session's lease, only when it does not exist.  The holder stays leader while its session lives;
  when the session is lost it steps down at once, that is within the lease's TTL of its last renewal, and
  never writes as leader after that.  The others campaign every quarter TTL, so one takes over within
  TTL + TTL/4 of the old leader's last renewal (or at once when the old leader stopped cleanly).
- `ReplicaViews` is a board of small JSON documents, one per (subject, replica), under
  `<prefix>/.replicas/<board>/<subject>/<replica>` (both percent-encoded), each bound to its replica's lease: what a replica
  published disappears when it dies.  Every replica reads the whole board from a watch.

The `.replicas` segment cannot be an API group (a group is a DNS subdomain, which never starts with a
dot), so these keys never mix with the stored objects.
"""

from __future__ import annotations

import json
from urllib.parse import quote, unquote
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .etcd_client import EtcdClient, EtcdWatch, b64, prefix_end, unb64
from .interface import StorageError

_log = Logger()

#: The default lease TTL in seconds (kube's leader-election lease duration).
DEFAULT_TTL = 15
#: The folder of the replicas' keys under the etcd prefix.
REPLICAS_FOLDER = ".replicas"
#: Seconds between attempts while etcd cannot be reached (capped by a third of the TTL).
RETRY_DELAY = 1.0
#: Seconds shutdown waits for etcd to revoke the lease.
REVOKE_TIMEOUT = 1.0


def replicas_prefix(prefix: str) -> bytes:
    """`<prefix>/.replicas/`: where the leader key and the boards live."""
    return f"{prefix.rstrip('/')}/{REPLICAS_FOLDER}/".encode()


async def _sleep(clock: IReactorTime, seconds: float) -> None:
    await deferLater(clock, seconds, lambda: None)


@define(eq=False)
class EtcdSession(Service):
    """One lease of `ttl` seconds kept alive for this process; listeners hear of each new lease and each loss.

    :param client: the etcd client.
    :param clock: time for the renewals and the expiry.
    :param ttl: the lease's time to live, in seconds.
    """

    client: EtcdClient
    clock: IReactorTime
    ttl: int = DEFAULT_TTL
    #: The current lease's ID; None while there is none.
    lease: int | None = field(init=False, default=None)
    #: The clock time until which the current lease is surely alive in etcd.
    valid_until: float = field(init=False, default=0.0)
    _granted: list[Callable[[int], None]] = field(init=False, factory=list)
    _lost: list[Callable[[], None]] = field(init=False, factory=list)
    _expiry: IDelayedCall | None = field(init=False, default=None)
    _loop: Deferred[None] | None = field(init=False, default=None)
    _complained: bool = field(init=False, default=False)

    def on_granted(self, listener: Callable[[int], None]) -> None:
        """Call listener(lease) whenever a new lease is held."""
        self._granted.append(listener)

    def on_lost(self, listener: Callable[[], None]) -> None:
        """Call listener() whenever the lease is lost (expired, or not renewed in time)."""
        self._lost.append(listener)

    def startService(self) -> None:
        super().startService()
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda failure: failure.trap(CancelledError))

    def stopService(self) -> Deferred[None]:
        """Stop renewing and revoke the lease, so its keys go at once (best effort: they expire anyway)."""
        super().stopService()
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        lease = self.lease
        self._lose(None)
        if lease is None:
            return Deferred.fromCoroutine(_nothing())
        return Deferred.fromCoroutine(self._revoke(lease))

    async def _revoke(self, lease: int) -> None:
        revoking = Deferred.fromCoroutine(self.client.lease_revoke(lease))
        # Shutdown does not wait on an etcd that is away: the lease then expires by itself within its TTL.
        revoking.addTimeout(REVOKE_TIMEOUT, self.clock)
        try:
            await revoking
        except (StorageError, DeferredTimeoutError, CancelledError) as error:
            _log.warn("could not revoke lease {lease} on shutdown ({error}); it expires by itself", lease=lease,
                      error=str(error) or type(error).__name__)

    @property
    def renew_interval(self) -> float:
        return self.ttl / 3

    async def _run(self) -> None:
        while self.running:
            if self.lease is None:
                sent = self.clock.seconds()
                try:
                    lease, ttl = await self.client.lease_grant(self.ttl)
                except StorageError as error:
                    self._complain(f"cannot get a lease from etcd: {error}")
                    await _sleep(self.clock, min(RETRY_DELAY, self.renew_interval))
                    continue
                self._recovered()
                self.lease = lease
                self._renewed(sent + ttl)
                for listener in list(self._granted):
                    listener(lease)
            await _sleep(self.clock, self.renew_interval)
            held = self._held()
            if held is None:
                continue
            sent = self.clock.seconds()
            try:
                ttl = await self.client.lease_keepalive(held)
            except StorageError as error:
                # The expiry timer declares the lease lost if no renewal gets through in time.
                self._complain(f"cannot renew lease {held}: {error}")
                continue
            if self._held() != held:
                continue
            if ttl <= 0:
                _log.warn("etcd says lease {lease} has expired", lease=held)
                self._lose("expired")
                continue
            self._recovered()
            self._renewed(sent + ttl)

    def _held(self) -> int | None:
        """The lease held now (a call, so that type narrowing does not outlive an await)."""
        return self.lease

    def _renewed(self, until: float) -> None:
        self.valid_until = until
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = self.clock.callLater(max(0.0, until - self.clock.seconds()), self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if self.lease is not None:
            _log.warn("lease {lease} was not renewed within its TTL of {ttl} s: it is lost", lease=self.lease,
                      ttl=self.ttl)
            self._lose("not renewed in time")
            if self.running and self._loop is not None:
                # The renewal still waiting is moot: start over with a new lease.
                self._loop.cancel()
                self._loop = Deferred.fromCoroutine(self._run())
                self._loop.addErrback(lambda failure: failure.trap(CancelledError))

    def _lose(self, why: str | None) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        if self.lease is None:
            return
        self.lease = None
        self.valid_until = 0.0
        for listener in list(self._lost):
            listener()

    def _complain(self, problem: str) -> None:
        if not self._complained:
            self._complained = True
            _log.warn("{problem}", problem=problem)

    def _recovered(self) -> None:
        if self._complained:
            self._complained = False
            _log.info("etcd renews this replica's lease again")


async def _nothing() -> None:
    return None


@define(eq=False)
class LeaderElection(Service):
    """Whether this replica leads: it holds `<prefix>/.replicas/leader` under its session's lease.

    :param client: the etcd client.
    :param session: this process's session (its lease binds the key).
    :param clock: time for the campaign loop.
    :param prefix: the etcd prefix of the deployment.
    :param replica: this replica's name, written as the key's value.
    """

    client: EtcdClient
    session: EtcdSession
    clock: IReactorTime
    prefix: str
    replica: str
    #: Whether this replica leads now.
    is_leader: bool = field(init=False, default=False)
    #: The leading replica's name as last seen ("" when unknown).
    leader: str = field(init=False, default="")
    _listeners: list[Callable[[bool], None]] = field(init=False, factory=list)
    _loop: Deferred[None] | None = field(init=False, default=None)
    _wake: Deferred[None] | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.session.on_lost(self._session_lost)
        self.session.on_granted(lambda lease: self._poke())

    @property
    def key(self) -> bytes:
        return replicas_prefix(self.prefix) + b"leader"

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Call listener(is_leader) whenever leadership changes."""
        self._listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda failure: failure.trap(CancelledError))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        self._set(False, "")

    def _poke(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.called:
            wake.callback(None)

    def _session_lost(self) -> None:
        self._set(False, "")

    async def _run(self) -> None:
        while self.running:
            lease = self.session.lease
            if lease is not None:
                try:
                    await self._campaign(lease)
                except StorageError as error:
                    _log.debug("the leader election could not reach etcd: {error}", error=str(error))
            wake = self._wake = Deferred()
            timer = self.clock.callLater(self.session.ttl / 4, self._poke)
            try:
                await wake
            finally:
                if timer.active():
                    timer.cancel()

    async def _campaign(self, lease: int) -> None:
        key = b64(self.key)
        value = b64(json.dumps({"replica": self.replica}).encode())
        answer = await self.client.txn(
            [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": {"key": key, "value": value, "lease": str(lease)}}],
            [{"request_range": {"key": key}}])
        if self.session.lease != lease:
            return  # lost meanwhile: the key, if it was ours, goes with the lease
        if answer.get("succeeded"):
            self._set(True, self.replica)
            return
        kvs = answer["responses"][0]["response_range"].get("kvs") or []
        if not kvs:
            return  # deleted meanwhile: the next round campaigns again
        holder = kvs[0]
        try:
            name = str(json.loads(unb64(holder.get("value", ""))).get("replica", ""))
        except (ValueError, AttributeError):
            name = ""
        self._set(int(holder.get("lease", 0)) == lease, name)

    def _set(self, leading: bool, leader: str) -> None:
        self.leader = leader
        if leading == self.is_leader:
            return
        self.is_leader = leading
        if leading:
            _log.info("replica {replica} is now the leader: it runs the controllers that write", replica=self.replica)
        else:
            _log.info("replica {replica} is no longer the leader", replica=self.replica)
        for listener in list(self._listeners):
            listener(leading)


@define(eq=False)
class ReplicaViews(Service):
    """A board of per-replica JSON documents by subject, each bound to its replica's lease; watched by all.

    :param client: the etcd client.
    :param session: this replica's session: its lease binds what this replica publishes.
    :param clock: time for retries.
    :param prefix: the etcd prefix of the deployment.
    :param board: the board's name (a key segment).
    :param replica: this replica's name.
    """

    client: EtcdClient
    session: EtcdSession
    clock: IReactorTime
    prefix: str
    board: str
    replica: str
    #: Whether the board has been read once (views() is complete).
    synced: bool = field(init=False, default=False)
    _views: dict[str, dict[str, Any]] = field(init=False, factory=dict)
    _listeners: list[Callable[[str], None]] = field(init=False, factory=list)
    #: What this replica wants published, by subject (None: withdrawn).
    _wanted: dict[str, Any] = field(init=False, factory=dict)
    #: What this replica has published under which lease, by subject.
    _published: dict[str, tuple[int, Any]] = field(init=False, factory=dict)
    _dirty: set[str] = field(init=False, factory=set)
    _flushing: Deferred[None] | None = field(init=False, default=None)
    _watch: EtcdWatch | None = field(init=False, default=None)
    _reading: Deferred[None] | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.session.on_granted(self._new_lease)

    @property
    def folder(self) -> bytes:
        return replicas_prefix(self.prefix) + self.board.encode() + b"/"

    def _key(self, subject: str, replica: str) -> bytes:
        # Both segments percent-encoded: replica names carry slashes (`host:6443/worker-2`).
        return self.folder + quote(subject, safe="").encode() + b"/" + quote(replica, safe="").encode()

    # Reading.

    def views(self, subject: str) -> dict[str, Any]:
        """Every live replica's document about subject, by replica name."""
        return dict(self._views.get(subject, {}))

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call listener(subject) whenever a document about subject appears, changes or goes."""
        self._listeners.append(listener)

    def startService(self) -> None:
        super().startService()
        self._reading = Deferred.fromCoroutine(self._read())
        self._reading.addErrback(lambda failure: failure.trap(CancelledError))

    def stopService(self) -> None:
        super().stopService()
        for running in (self._reading, self._flushing):
            if running is not None and not running.called:
                running.cancel()
        self._reading = self._flushing = None
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    async def _read(self) -> None:
        """List the board, then follow it from the next revision; on compaction, list again."""
        while self.running:
            try:
                answer = await self.client.range(self.folder, prefix_end(self.folder))
            except StorageError as error:
                _log.debug("cannot read the {board} board: {error}", board=self.board, error=str(error))
                await _sleep(self.clock, RETRY_DELAY)
                continue
            before = {subject: dict(views) for subject, views in self._views.items()}
            self._views = {}
            for kv in answer.get("kvs", ()):
                self._put(unb64(kv["key"]), kv.get("value", ""))
            self.synced = True
            for subject in sorted(set(before) | set(self._views)):
                if before.get(subject) != self._views.get(subject):
                    self._announce(subject)
            revision = int(answer["header"]["revision"])
            self._watch = self.client.watch(self.folder, prefix_end(self.folder), revision + 1, self._events,
                                            self._compacted)
            return

    def _compacted(self, revision: int) -> None:
        self._watch = None
        if self.running:
            self._reading = Deferred.fromCoroutine(self._read())
            self._reading.addErrback(lambda failure: failure.trap(CancelledError))

    def _events(self, events: list[dict[str, Any]], revision: int) -> None:
        touched: set[str] = set()
        for event in events:
            kv = event["kv"]
            key = unb64(kv["key"])
            if event.get("type") == "DELETE":
                parsed = self._parse(key)
                if parsed is not None:
                    subject, replica = parsed
                    views = self._views.get(subject, {})
                    views.pop(replica, None)
                    if not views:
                        self._views.pop(subject, None)
                    touched.add(subject)
            else:
                subject_touched = self._put(key, kv.get("value", ""))
                if subject_touched is not None:
                    touched.add(subject_touched)
        for subject in sorted(touched):
            self._announce(subject)

    def _parse(self, key: bytes) -> tuple[str, str] | None:
        if not key.startswith(self.folder):
            return None
        subject, _, replica = key[len(self.folder):].decode("utf-8", "replace").rpartition("/")
        return (unquote(subject), unquote(replica)) if subject and replica else None

    def _put(self, key: bytes, value: str) -> str | None:
        parsed = self._parse(key)
        if parsed is None:
            return None
        try:
            document = json.loads(unb64(value))
        except ValueError:
            return None
        subject, replica = parsed
        self._views.setdefault(subject, {})[replica] = document
        return subject

    def _announce(self, subject: str) -> None:
        for listener in list(self._listeners):
            listener(subject)

    # Publishing.

    def publish(self, subject: str, document: Any) -> None:
        """Make this replica's document about subject `document` (written in the background, kept across leases)."""
        if self._wanted.get(subject) == document and subject in self._wanted:
            return
        self._wanted[subject] = document
        self._dirty.add(subject)
        self._flush()

    def withdraw(self, subject: str) -> None:
        """Remove this replica's document about subject."""
        if subject not in self._wanted:
            return
        self._wanted[subject] = None
        self._dirty.add(subject)
        self._flush()

    def _new_lease(self, lease: int) -> None:
        self._dirty.update(self._wanted)
        self._flush()

    def _flush(self) -> None:
        if self._flushing is None and self.running:
            flushing = Deferred.fromCoroutine(self._write_all())
            if not flushing.called:
                self._flushing = flushing
                flushing.addBoth(self._flushed)

    def _flushed(self, result: object) -> None:
        self._flushing = None
        if isinstance(result, Failure) and not result.check(CancelledError):
            _log.failure("publishing to the {board} board failed", result, board=self.board)
        if self._dirty and self.session.lease is not None:
            self._flush()

    async def _write_all(self) -> None:
        while self._dirty and self.running:
            lease = self.session.lease
            if lease is None:
                return  # the next lease rewrites everything wanted
            subject = min(self._dirty)
            self._dirty.discard(subject)
            wanted = self._wanted.get(subject)
            if self._published.get(subject) == (lease, wanted):
                continue
            key = b64(self._key(subject, self.replica))
            try:
                if wanted is None:
                    await self.client.txn([], [{"request_delete_range": {"key": key}}], [])
                    if self._wanted.get(subject, 0) is None:
                        self._wanted.pop(subject, None)
                    self._published.pop(subject, None)
                else:
                    value = b64(json.dumps(wanted, sort_keys=True).encode())
                    await self.client.txn([], [{"request_put": {"key": key, "value": value,
                                                                "lease": str(lease)}}], [])
                    self._published[subject] = (lease, wanted)
            except StorageError as error:
                _log.debug("cannot publish to the {board} board: {error}", board=self.board, error=str(error))
                self._dirty.add(subject)
                await _sleep(self.clock, RETRY_DELAY)


__all__ = ["DEFAULT_TTL", "EtcdSession", "LeaderElection", "ReplicaViews", "replicas_prefix"]
