# -*- test-case-name: tests.test_storage, tests.test_etcd_store -*-
"""The etcd store: objects under `<prefix>/<group>/<resource>/[<namespace>/]<name>` (the core group's folder is
`core`, as in file storage), with the file store's semantics.

An object's resourceVersion is its key's `mod_revision`; values are the object's JSON without resourceVersion.
Create, update and delete are compare-and-swap transactions (create: version 0; a precondition: mod_revision).

A watch cache, one per process, makes the store answer like the file store, from memory: one etcd watch on the
whole prefix feeds it (so it knows the latest revision, which `current_resource_version` must give at once),
and the collections it has been asked about are kept in memory, each primed by one range at the cache's
revision.  Gets, lists and the store's watches are served from it; a write returns once the cache holds it, so a
writer reads its own write and the informer hears of it before the writer does.  A watch from before the cache
was primed (or before the history it keeps) is Expired (410), as in kube-apiserver's watch cache.  A write whose
revision has not reached the cache within `WATCH_STALL` seconds takes the cache's etcd stream as stalled (a member
that hangs keeps the connection and sends nothing) and opens it again on the next endpoint; a compare that fails
because the cache is behind waits for the cache to hold the key's current revision, so a retry reads it.  `list_at`
reads an older snapshot from etcd itself, for continue tokens.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
from collections.abc import Callable, Coroutine
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .etcd_client import EtcdClient, EtcdWatch, b64, prefix_end, unb64
from .interface import (
    AlreadyExistsError,
    Collection,
    ConflictError,
    ExpiredError,
    InvalidKeyError,
    IStore,
    IWatch,
    ListResult,
    NotFoundError,
    Object,
    StorageError,
    StorageFullError,
    WatchEvent,
    validate_path_segment,
)
from .memory import ADDED, DELETED, MODIFIED, MODIFIED_MESSAGE, stamped, validate_key
from .watch import DEFAULT_HISTORY_SIZE, WatchHub

_log = Logger()

#: The folder of the core ("") API group, as in file storage.
CORE_GROUP = "core"
#: Seconds between health probes of etcd (the `etcd` readyz check).
HEALTH_INTERVAL = 1.0
#: Seconds the member a watch stream follows has to answer the health probe before the stream moves.
WATCH_MEMBER_TIMEOUT = 1.0
#: Seconds a write's revision may take to reach the cache before its etcd stream is taken as stalled (a member
#: that hangs keeps the connection open and sends nothing) and opened again on the next endpoint.
WATCH_STALL = 1.0

Key = tuple[str, str]


def _decode(kv: dict[str, Any]) -> Object:
    """The stored object of an etcd key-value, with its resourceVersion (the mod_revision); ValueError if it is not
    a JSON object with metadata."""
    obj = json.loads(unb64(kv.get("value", "")))
    if not isinstance(obj, dict) or not isinstance(obj.setdefault("metadata", {}), dict):
        raise ValueError("the value is not a JSON object with metadata")
    obj["metadata"]["resourceVersion"] = str(kv["mod_revision"])
    return obj


def _encode(obj: Object) -> str:
    return b64(json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8"))


@define(eq=False)
class _CollectionCache:
    """One collection in memory: its objects (once primed) and the hub its watches hang on."""

    hub: WatchHub
    objects: dict[Key, Object] | None = None
    #: Events that arrived while the collection was being primed, applied on top of the range.
    pending: list[WatchEvent] = field(factory=list)
    #: The range that primes objects (made with the cache).
    priming: _Once | None = None


@implementer(IStore)
@define(eq=False)
class EtcdStore:
    """An IStore over etcd, served from a per-process watch cache (see the module docstring).

    :param client: the etcd client.
    :param prefix: the keys' prefix, `/registry` by default.
    :param clock: time for waiting on the cache.
    """

    client: EtcdClient
    clock: IReactorTime
    prefix: str = "/registry"
    history_size: int = DEFAULT_HISTORY_SIZE
    #: The latest revision the cache has taken in.
    _revision: int = field(init=False, default=0)
    _started: _Once = field(init=False)
    _watch: EtcdWatch | None = field(init=False, default=None)
    _collections: dict[Collection, _CollectionCache] = field(init=False, factory=dict)
    _waiters: list[tuple[int, int, Deferred[None]]] = field(init=False, factory=list)
    _order: itertools.count[int] = field(init=False, factory=itertools.count)
    _full: str | None = field(init=False, default=None)
    _closed: bool = field(init=False, default=False)
    #: When a stalled stream was last opened again.
    _restarted: float = field(init=False, default=float("-inf"))

    def __attrs_post_init__(self) -> None:
        self._started = _Once(self._start)
        self.prefix = "/" + self.prefix.strip("/") if self.prefix.strip("/") else ""

    # -- keys --------------------------------------------------------------------------------------------

    def _collection_prefix(self, collection: Collection) -> bytes:
        if collection.group:
            validate_path_segment(collection.group, "group")
        validate_path_segment(collection.resource, "resource")
        return f"{self.prefix}/{collection.group or CORE_GROUP}/{collection.resource}/".encode()

    def _key(self, collection: Collection, namespace: str, name: str) -> bytes:
        folder = self._collection_prefix(collection)
        return folder + (f"{namespace}/{name}" if namespace else name).encode()

    def _parse_key(self, key: bytes) -> tuple[Collection, str, str] | None:
        parts = key.decode("utf-8", "replace")[len(self.prefix) + 1:].split("/")
        if len(parts) == 3:
            group, resource, name = parts
            namespace = ""
        elif len(parts) == 4:
            group, resource, namespace, name = parts
        else:
            return None
        return Collection("" if group == CORE_GROUP else group, resource), namespace, name

    # -- the cache ---------------------------------------------------------------------------------------

    async def _ready(self, collection: Collection) -> _CollectionCache:
        """The collection's cache, primed (starting the store's watch first if need be)."""
        self._collection_prefix(collection)
        if self._closed:
            raise StorageError("the etcd store is closed")
        await self._started.wait()
        cache = self._cache(collection)
        if cache.objects is None and cache.priming is not None:
            await cache.priming.wait()
        return cache

    async def _start(self) -> None:
        root = f"{self.prefix}/".encode()
        answer = await self.client.range(root, prefix_end(root), count_only=True)
        self._revision = max(self._revision, int(answer["header"]["revision"]))
        self._watch = self.client.watch(root, prefix_end(root), self._revision + 1, self._events, self._compacted)
        _log.info("etcd storage {endpoint}{prefix}: {count} keys, revision {revision}",
                  endpoint=self.client.endpoint, prefix=self.prefix, count=int(answer.get("count", 0)),
                  revision=self._revision)

    def _cache(self, collection: Collection) -> _CollectionCache:
        cache = self._collections.get(collection)
        if cache is None:
            cache = self._collections[collection] = _CollectionCache(WatchHub(self.history_size, self._revision))
            cache.priming = _Once(lambda: self._prime(collection, self._collection_prefix(collection), cache))
        return cache

    async def _prime(self, collection: Collection, folder: bytes, cache: _CollectionCache) -> None:
        revision = self._revision
        answer = await self.client.range(folder, prefix_end(folder), revision=revision)
        objects: dict[Key, Object] = {}
        for kv in answer.get("kvs", ()):
            parsed = self._parse_key(unb64(kv["key"]))
            obj = _decode_or_skip(kv)
            if parsed is not None and obj is not None:
                objects[(parsed[1], parsed[2])] = obj
        for event in cache.pending:
            if event.resource_version > revision:
                _apply(objects, event)
        cache.pending = []
        cache.objects = objects

    def _events(self, events: list[dict[str, Any]], revision: int) -> None:
        """Take in a batch of etcd watch events (all of them up to revision)."""
        for raw in events:
            kv = raw["kv"]
            parsed = self._parse_key(unb64(kv["key"]))
            if parsed is None:
                continue
            collection, namespace, name = parsed
            cache = self._collections.get(collection)
            if cache is None:
                continue
            try:
                event = self._event(raw, collection, namespace, name)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                _log.warn("skipping the change of etcd key {key} at revision {revision}: not a stored object ({error})",
                          key=unb64(kv["key"]).decode("utf-8", "replace"), revision=kv.get("mod_revision"),
                          error=error)
                continue
            if event is None or event.resource_version <= cache.hub.resource_version:
                continue
            if cache.objects is not None:
                _apply(cache.objects, event)
            else:
                cache.pending.append(event)
            cache.hub.publish(event)
        self._revision = max(self._revision, revision)
        while self._waiters and self._waiters[0][0] <= self._revision:
            _, _, waiter = heapq.heappop(self._waiters)
            waiter.callback(None)

    def _event(self, raw: dict[str, Any], collection: Collection, namespace: str, name: str) -> WatchEvent | None:
        kv = raw["kv"]
        revision = int(kv["mod_revision"])
        previous = _decode(raw["prev_kv"]) if raw.get("prev_kv") else None
        if raw.get("type") == "DELETE":
            if previous is None:
                return None
            gone = copy.deepcopy(previous)
            gone["metadata"]["resourceVersion"] = str(revision)
            return WatchEvent(DELETED, gone, revision, collection, namespace, name)
        kind = ADDED if kv.get("version") == "1" or previous is None else MODIFIED
        return WatchEvent(kind, _decode(kv), revision, collection, namespace, name,
                          previous if kind == MODIFIED else None)

    def _compacted(self, compact_revision: int) -> None:
        # The cache's watch was away long enough for etcd to compact past it: what changed meanwhile is lost,
        # so every collection is listed again and its watches end (watchers list and watch again).
        _log.error("the etcd watch cache fell behind etcd's compaction (revision {revision}); relisting",
                   revision=compact_revision)
        for cache in self._collections.values():
            cache.hub.expire(max(compact_revision, cache.hub.resource_version))
        self._collections.clear()
        if self._watch is not None:
            self._watch.stop()  # closes the stream etcd ended (it would stay open otherwise)
        self._watch = None
        self._started = _Once(self._start)

    async def _wait_for(self, revision: int) -> None:
        """Return once the cache has taken in revision (or after the client's timeout: the write is done anyway)."""
        if revision <= self._revision:
            return
        waiter: Deferred[None] = Deferred()
        heapq.heappush(self._waiters, (revision, next(self._order), waiter))
        waiter.addTimeout(self.client.timeout, self.clock)
        stall = self.clock.callLater(min(WATCH_STALL, self.client.timeout / 2), self._stalled, revision)
        try:
            await waiter
        except DeferredTimeoutError:
            _log.warn("the etcd watch cache has not caught up with revision {revision} after {timeout} s",
                      revision=revision, timeout=self.client.timeout)
        finally:
            if stall.active():
                stall.cancel()

    def _stalled(self, revision: int) -> None:
        """A write's revision has not reached the cache in time: open the cache's etcd stream again."""
        if revision > self._revision and self._watch is not None and not self._closed:
            if self.clock.seconds() - self._restarted < WATCH_STALL:
                return  # opened again a moment ago: give the new stream its time
            self._restarted = self.clock.seconds()
            _log.warn("the etcd watch cache has not seen revision {revision} (it is at {seen}): opening its stream "
                      "again on another endpoint", revision=revision, seen=self._revision)
            self._watch.restart()

    # -- IStore --------------------------------------------------------------------------------------------

    async def get(self, collection: Collection, namespace: str, name: str) -> Object:
        """The stored object (a copy), from the cache; NotFoundError if missing."""
        validate_key(namespace, name)
        cache = await self._ready(collection)
        assert cache.objects is not None
        try:
            return copy.deepcopy(cache.objects[(namespace, name)])
        except KeyError:
            raise NotFoundError(f"{name} not found") from None

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        """The objects of one namespace (all when None), from the cache, and the cache's revision."""
        if namespace:
            validate_path_segment(namespace, "namespace")
        cache = await self._ready(collection)
        objects = cache.objects
        assert objects is not None
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return ListResult([copy.deepcopy(objects[k]) for k in keys], self._revision)

    async def list_at(self, collection: Collection, namespace: str | None, resource_version: int) -> ListResult:
        """The objects as they were at resource_version, read from etcd; ExpiredError once etcd compacted it."""
        folder = self._collection_prefix(collection)
        if namespace:
            validate_path_segment(namespace, "namespace")
            folder += f"{namespace}/".encode()
        answer = await self.client.range(folder, prefix_end(folder), revision=resource_version)
        items: list[tuple[Key, Object]] = []
        for kv in answer.get("kvs", ()):
            parsed = self._parse_key(unb64(kv["key"]))
            if parsed is not None and (namespace is None or parsed[1] == namespace):
                items.append(((parsed[1], parsed[2]), _decode(kv)))
        items.sort(key=lambda item: item[0])
        return ListResult([obj for _, obj in items], resource_version)

    async def stored_keys(self) -> dict[Collection, set[Key]]:
        """The (namespace, name) of every object under the prefix, by collection, read from etcd (what `migrate`
        copies); keys bound to a lease (kept only while their owner lives) and keys that are not an object's are
        left out."""
        if self._closed:
            raise StorageError("the etcd store is closed")
        root = f"{self.prefix}/".encode()
        answer = await self.client.call("kv/range", {"key": b64(root), "range_end": b64(prefix_end(root)),
                                                     "keys_only": True}, idempotent=True)
        found: dict[Collection, set[Key]] = {}
        for kv in answer.get("kvs", ()):
            parsed = self._parse_key(unb64(kv["key"]))
            if parsed is None or int(kv.get("lease", 0) or 0):
                continue
            collection, namespace, name = parsed
            try:
                self._collection_prefix(collection)
                validate_key(namespace, name)
            except InvalidKeyError:
                continue
            found.setdefault(collection, set()).add((namespace, name))
        return found

    async def create(self, collection: Collection, namespace: str, name: str, obj: Object) -> Object:
        """Store a new object if the key has no version; AlreadyExistsError otherwise."""
        validate_key(namespace, name)
        key = self._key(collection, namespace, name)
        stored = stamped(obj, name, namespace, None)
        await self._ready(collection)
        answer = await self._write(self.client.txn(
            [{"key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}],
            [{"request_put": {"key": b64(key), "value": _encode(stored)}}],
            [{"request_range": {"key": b64(key), "keys_only": True}}]))
        if not answer.get("succeeded"):
            await self._catch_up(answer)
            raise AlreadyExistsError(f"{name} already exists")
        return await self._written(stored, answer)

    async def update(
        self,
        collection: Collection,
        namespace: str,
        name: str,
        obj: Object,
        expected_resource_version: int | None = None,
    ) -> Object:
        """Replace an existing object, only if its mod_revision is still expected_resource_version when given."""
        validate_key(namespace, name)
        key = self._key(collection, namespace, name)
        stored = stamped(obj, name, namespace, None)
        await self._ready(collection)
        if expected_resource_version is None:
            compare = {"key": b64(key), "target": "VERSION", "result": "GREATER", "version": "0"}
        else:
            compare = {"key": b64(key), "target": "MOD", "result": "EQUAL",
                       "mod_revision": str(expected_resource_version)}
        answer = await self._write(self.client.txn(
            [compare], [{"request_put": {"key": b64(key), "value": _encode(stored)}}],
            [{"request_range": {"key": b64(key), "keys_only": True}}]))
        if not answer.get("succeeded"):
            if not await self._catch_up(answer):
                raise NotFoundError(f"{name} not found")
            raise ConflictError(MODIFIED_MESSAGE)
        return await self._written(stored, answer)

    async def delete(
        self,
        collection: Collection,
        namespace: str,
        name: str,
        expected_resource_version: int | None = None,
        expected_uid: str | None = None,
    ) -> Object:
        """Remove an object and return its last stored state; with preconditions, kube's checks (uid, then
        resourceVersion) against the stored object, and a delete only if it has not changed since."""
        validate_key(namespace, name)
        key = self._key(collection, namespace, name)
        await self._ready(collection)
        compare: list[dict[str, Any]] = []
        if expected_uid is not None or expected_resource_version is not None:
            found = (await self._write(self.client.range(key))).get("kvs") or []
            if not found:
                raise NotFoundError(f"{name} not found")
            current = _decode(found[0])
            uid = current["metadata"].get("uid", "")
            version = current["metadata"]["resourceVersion"]
            if expected_uid is not None and expected_uid != uid:
                raise ConflictError(
                    f"Precondition failed: UID in precondition: {expected_uid}, UID in object meta: {uid}")
            if expected_resource_version is not None and str(expected_resource_version) != version:
                raise ConflictError(f"Precondition failed: ResourceVersion in precondition: "
                                    f"{expected_resource_version}, ResourceVersion in object meta: {version}")
            compare = [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": version}]
        answer = await self._write(self.client.txn(
            compare, [{"request_delete_range": {"key": b64(key), "prev_kv": True}}], []))
        if not answer.get("succeeded"):
            raise ConflictError(MODIFIED_MESSAGE)
        deleted = answer["responses"][0]["response_delete_range"]
        if not deleted.get("prev_kvs"):
            raise NotFoundError(f"{name} not found")
        await self._wait_for(int(answer["header"]["revision"]))
        return _decode(deleted["prev_kvs"][0])

    def watch(
        self,
        collection: Collection,
        namespace: str | None,
        resource_version: int,
        on_event: Callable[[WatchEvent], None],
    ) -> IWatch:
        """Deliver every change after resource_version from the cache; ExpiredError when the cache does not
        reach back that far (or is not started yet: list first)."""
        if namespace:
            validate_path_segment(namespace, "namespace")
        self._collection_prefix(collection)
        if not self._started.done or collection not in self._collections:
            raise ExpiredError(f"the watch cache of {collection.resource} is starting: list, then watch again")
        hub = self._collections[collection].hub
        return hub.watch(collection, namespace, resource_version, on_event)

    def current_resource_version(self) -> int:
        """The latest revision the watch cache has taken in."""
        return self._revision

    def write_problem(self) -> str | None:
        """Why writes fail (etcd's space quota is used up) since one failed so; None once one succeeds."""
        return self._full

    async def probe_write(self) -> None:
        """Nothing to probe: the next write says whether etcd takes writes again."""

    async def sync(self) -> None:
        """Wait until the watch cache has caught up with etcd's current revision (one key-less read of it), as
        kube's consistent reads from its cache do: a write through another replica is then seen here too."""
        answer = await self.client.range(self.prefix.encode() + b"/", count_only=True)
        await self._wait_for(int(answer["header"]["revision"]))

    async def close(self) -> None:
        """Stop the cache's watch and the waiting writers."""
        self._closed = True
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        waiters, self._waiters = self._waiters, []
        for _, _, waiter in waiters:
            waiter.cancel()
        await self.client.close()

    async def _write(self, call: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = await call
        except StorageFullError as error:
            self._full = str(error)
            raise
        if self._full is not None:
            self._full = None
        return answer

    async def _catch_up(self, answer: dict[str, Any]) -> bool:
        """After a compare that failed (the key's state in etcd is not what this cache holds), wait until the cache
        holds the key's current revision, so that a caller who reads again and retries sees it; whether the key
        exists."""
        kvs = answer["responses"][0]["response_range"].get("kvs") or []
        if kvs:  # (a deletion's revision is not known here: a missing key is not waited for)
            await self._wait_for(int(kvs[0]["mod_revision"]))
        return bool(kvs)

    async def _written(self, stored: Object, answer: dict[str, Any]) -> Object:
        revision = int(answer["header"]["revision"])
        stored["metadata"]["resourceVersion"] = str(revision)
        await self._wait_for(revision)
        return stored

    # -- health ----------------------------------------------------------------------------------------------

    @property
    def watching(self) -> bool:
        """Whether the cache's etcd watch is open."""
        return self._watch is not None and self._watch.connected


def _decode_or_skip(kv: dict[str, Any]) -> Object | None:
    """The stored object of an etcd key-value, or None (and a warning) when its value is not a JSON object."""
    try:
        obj = _decode(kv)
        if isinstance(obj.get("metadata"), dict):
            return obj
        error: Exception = ValueError("metadata is not an object")
    except (ValueError, AttributeError) as decode_error:
        error = decode_error
    _log.warn("skipping etcd key {key}: not a stored object ({error})",
              key=unb64(kv["key"]).decode("utf-8", "replace"), error=error)
    return None


def _apply(objects: dict[Key, Object], event: WatchEvent) -> None:
    key = (event.namespace, event.name)
    if event.type == DELETED:
        objects.pop(key, None)
    else:
        objects[key] = event.object


class _Once:
    """A start-up step that many callers wait for: run once when first waited for, again after it failed."""

    def __init__(self, step: Callable[[], Coroutine[Any, Any, None]]):
        self._step = step
        self.done = False
        self._running: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []

    async def wait(self) -> None:
        """Return once the step has succeeded; raise its error when the run waited for fails."""
        if self.done:
            return
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._running is None:
            self._running = Deferred.fromCoroutine(self._step())
            self._running.addBoth(self._finished)
        await waiter

    def _finished(self, result: object) -> None:
        self._running = None
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            for waiter in waiters:
                waiter.errback(result)
        else:
            self.done = True
            for waiter in waiters:
                waiter.callback(None)


@define(eq=False)
class EtcdCheck(Service):
    """The `etcd` readiness check: probes etcd's status every interval and fails, naming etcd, while it cannot."""

    store: EtcdStore
    clock: IReactorTime
    interval: float = HEALTH_INTERVAL
    _problem: str | None = field(init=False, default="etcd has not been reached yet")
    _loop: LoopingCall | None = field(init=False, default=None)

    def check(self) -> str | None:
        """None while etcd answers and the cache's watch is open, else why not."""
        if self._problem is None and self.store._started.done and not self.store.watching:
            return "the etcd watch cache is not connected"
        return self._problem

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._probe)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(
            lambda failure: _log.failure("the etcd probe loop stopped", failure))

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return None

    async def _probe_once(self) -> None:
        try:
            await self.store.client.status()
            # The members the watch streams follow must answer too: a hung one would leave this cache stale.
            await self.store.client.check_watches(timeout=WATCH_MEMBER_TIMEOUT)
        except StorageError as error:
            if self._problem is None:
                _log.warn("etcd is not answering: {error}", error=str(error))
            self._problem = f"etcd: {error}"
            return
        if self._problem is not None and self._problem != "etcd has not been reached yet":
            _log.info("etcd answers again")
        self._problem = None

    def _probe(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._probe_once())


__all__ = ["EtcdCheck", "EtcdStore"]
