"""The in-memory store (for unit tests) and the object table it shares with the file store.

Writes are planned first (keys, preconditions, the next resourceVersion), then applied: a durable
backend persists the planned change between the two steps, so a failed write changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from attrs import define, field, frozen
from zope.interface import implementer

from .interface import (
    AlreadyExistsError,
    Collection,
    ConflictError,
    ExpiredError,
    IStore,
    IWatch,
    ListResult,
    NotFoundError,
    Object,
    WatchEvent,
    validate_path_segment,
)
from .watch import DEFAULT_HISTORY_SIZE, WatchHub

#: kube's OptimisticLockErrorMsg, for an update made against an older resourceVersion.
MODIFIED_MESSAGE = "the object has been modified; please apply your changes to the latest version and try again"

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"


def validate_key(namespace: str, name: str) -> None:
    """Refuse a name, or a non-empty namespace, that cannot be a storage key (InvalidKeyError)."""
    validate_path_segment(name, "name")
    if namespace:
        validate_path_segment(namespace, "namespace")


def stamped(obj: Object, name: str, namespace: str, resource_version: int | None) -> Object:
    """A deep copy of obj whose metadata carries its key and resourceVersion (None: none yet, as etcd learns
    it once the write is done)."""
    if not isinstance(obj, dict):
        raise TypeError(f"a stored object must be a dict, not {type(obj).__name__}")
    result = copy.deepcopy(obj)
    metadata = result.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    metadata["name"] = name
    if namespace:
        metadata["namespace"] = namespace
    else:
        metadata.pop("namespace", None)
    if resource_version is None:
        metadata.pop("resourceVersion", None)
    else:
        metadata["resourceVersion"] = str(resource_version)
    return result


@frozen
class Change:
    """A write that passed its checks and is ready to apply.

    `object` is what will be stored (for DELETED, the last state stamped with the deletion's
    resourceVersion, as the event carries it); `previous` is the stored state it replaces.
    """

    type: str
    collection: Collection
    namespace: str
    name: str
    resource_version: int
    object: Object
    previous: Object | None


@define
class ObjectTable:
    """Objects by collection and key, the store's resourceVersion counter, and the hub that announces changes."""

    hub: WatchHub
    resource_version: int = 0
    _objects: dict[Collection, dict[tuple[str, str], Object]] = field(init=False, factory=dict)

    def load(self, collection: Collection, namespace: str, name: str, obj: Object) -> None:
        """Put an object read back from durable storage, as it is, without an event."""
        self._objects.setdefault(collection, {})[(namespace, name)] = obj

    def keys(self) -> dict[Collection, set[tuple[str, str]]]:
        """The (namespace, name) of every stored object, by collection (for copying a whole store)."""
        return {collection: set(objects) for collection, objects in self._objects.items() if objects}

    def get(self, collection: Collection, namespace: str, name: str) -> Object:
        """A copy of the stored object; NotFoundError if missing."""
        validate_key(namespace, name)
        return copy.deepcopy(self._current(collection, namespace, name))

    def list(self, collection: Collection, namespace: str | None) -> ListResult:
        """Copies of the objects in namespace (all when None), sorted by namespace then name."""
        if namespace:
            validate_path_segment(namespace, "namespace")
        objects = self._objects.get(collection, {})
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return ListResult([copy.deepcopy(objects[k]) for k in keys], self.resource_version)

    def list_at(self, collection: Collection, namespace: str | None, resource_version: int) -> ListResult:
        """The objects as they were at resource_version, rebuilt by undoing the later changes the hub kept;
        ExpiredError when it did not keep them all (or a deleted object's state before its deletion)."""
        if namespace:
            validate_path_segment(namespace, "namespace")
        if resource_version >= self.resource_version:
            return self.list(collection, namespace)
        base, events = self.hub.history()
        expired = ExpiredError(f"too old resource version: {resource_version} ({base})")
        if resource_version < base:
            raise expired
        objects = dict(self._objects.get(collection, {}))
        for index in range(len(events) - 1, -1, -1):
            event = events[index]
            if event.resource_version <= resource_version:
                break
            if event.collection != collection:
                continue
            key = (event.namespace, event.name)
            if event.type == ADDED:
                objects.pop(key, None)
            elif event.type == MODIFIED:
                assert event.previous is not None
                objects[key] = event.previous
            else:
                before = next((e.object for e in reversed(events[:index]) if e.collection == collection
                               and (e.namespace, e.name) == key), None)
                if before is None:
                    raise expired
                objects[key] = before
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return ListResult([copy.deepcopy(objects[k]) for k in keys], resource_version)

    def watch(
        self,
        collection: Collection,
        namespace: str | None,
        resource_version: int,
        on_event: Callable[[WatchEvent], None],
    ) -> IWatch:
        """Register a watch with the hub, after checking the namespace."""
        if namespace:
            validate_path_segment(namespace, "namespace")
        return self.hub.watch(collection, namespace, resource_version, on_event)

    def plan_create(self, collection: Collection, namespace: str, name: str, obj: Object) -> Change:
        """The ADDED change that stores obj; AlreadyExistsError if the key is taken."""
        validate_key(namespace, name)
        if (namespace, name) in self._objects.get(collection, {}):
            raise AlreadyExistsError(f"{name} already exists")
        rv = self.resource_version + 1
        return Change(ADDED, collection, namespace, name, rv, stamped(obj, name, namespace, rv), None)

    def plan_update(
        self,
        collection: Collection,
        namespace: str,
        name: str,
        obj: Object,
        expected_resource_version: int | None,
    ) -> Change:
        """The MODIFIED change that replaces the object; NotFoundError or ConflictError when it cannot."""
        validate_key(namespace, name)
        current = self._current(collection, namespace, name)
        if expected_resource_version is not None and str(expected_resource_version) != _version(current):
            raise ConflictError(MODIFIED_MESSAGE)
        rv = self.resource_version + 1
        return Change(MODIFIED, collection, namespace, name, rv, stamped(obj, name, namespace, rv), current)

    def plan_delete(
        self,
        collection: Collection,
        namespace: str,
        name: str,
        expected_resource_version: int | None,
        expected_uid: str | None,
    ) -> Change:
        """The DELETED change that removes the object, after kube's precondition checks (uid, then resourceVersion)."""
        validate_key(namespace, name)
        current = self._current(collection, namespace, name)
        uid = current["metadata"].get("uid", "")
        if expected_uid is not None and expected_uid != uid:
            raise ConflictError(f"Precondition failed: UID in precondition: {expected_uid}, UID in object meta: {uid}")
        if expected_resource_version is not None and str(expected_resource_version) != _version(current):
            raise ConflictError(f"Precondition failed: ResourceVersion in precondition: {expected_resource_version}, "
                                f"ResourceVersion in object meta: {_version(current)}")
        rv = self.resource_version + 1
        return Change(DELETED, collection, namespace, name, rv, stamped(current, name, namespace, rv), current)

    def apply(self, change: Change) -> Object:
        """Make a planned change current, announce it, and return what the writer gets back (a copy)."""
        if change.resource_version != self.resource_version + 1:
            raise RuntimeError(f"change planned at resourceVersion {change.resource_version - 1}, "
                               f"but the store is at {self.resource_version}")
        objects = self._objects.setdefault(change.collection, {})
        key = (change.namespace, change.name)
        if change.type == DELETED:
            del objects[key]
            if not objects:
                del self._objects[change.collection]
            event_object = change.object
            assert change.previous is not None
            result = change.previous
        else:
            objects[key] = change.object
            event_object = copy.deepcopy(change.object)
            result = copy.deepcopy(change.object)
        self.resource_version = change.resource_version
        self.hub.publish(WatchEvent(change.type, event_object, change.resource_version, change.collection,
                                    change.namespace, change.name,
                                    change.previous if change.type == MODIFIED else None))
        return result

    def _current(self, collection: Collection, namespace: str, name: str) -> Object:
        """The stored object itself (not a copy); NotFoundError if missing."""
        try:
            return self._objects[collection][(namespace, name)]
        except KeyError:
            raise NotFoundError(f"{name} not found") from None


def _version(obj: Object) -> str:
    """The object's metadata.resourceVersion."""
    return str(obj["metadata"]["resourceVersion"])


class TableStore:
    """The reads, watches and writes of a store that serves its objects from an ObjectTable (the memory and file
    stores); a subclass says how a planned change is committed (`_commit`)."""

    __slots__ = ()
    _table: ObjectTable

    def _commit(self, change: Change) -> Object:
        """Make a planned change durable as the store keeps things, apply it to the table, return the stored object."""
        raise NotImplementedError

    async def get(self, collection: Collection, namespace: str, name: str) -> Object:
        """The stored object (a copy); NotFoundError if missing."""
        return self._table.get(collection, namespace, name)

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        """The objects of one namespace ("" for cluster-scoped), or of all when None, and the store's resourceVersion."""
        return self._table.list(collection, namespace)

    async def list_at(self, collection: Collection, namespace: str | None, resource_version: int) -> ListResult:
        """The objects as they were at resource_version; ExpiredError when the history no longer has it."""
        return self._table.list_at(collection, namespace, resource_version)

    async def stored_keys(self) -> dict[Collection, set[tuple[str, str]]]:
        """The (namespace, name) of every stored object, by collection (what `migrate` copies)."""
        return self._table.keys()

    async def create(self, collection: Collection, namespace: str, name: str, obj: Object) -> Object:
        """Store a new object; AlreadyExistsError if the name is taken."""
        return self._commit(self._table.plan_create(collection, namespace, name, obj))

    async def update(
        self,
        collection: Collection,
        namespace: str,
        name: str,
        obj: Object,
        expected_resource_version: int | None = None,
    ) -> Object:
        """Replace an existing object, only if still at expected_resource_version when that is given."""
        return self._commit(
            self._table.plan_update(collection, namespace, name, obj, expected_resource_version))

    async def delete(
        self,
        collection: Collection,
        namespace: str,
        name: str,
        expected_resource_version: int | None = None,
        expected_uid: str | None = None,
    ) -> Object:
        """Remove an object and return its last stored state."""
        return self._commit(
            self._table.plan_delete(collection, namespace, name, expected_resource_version, expected_uid))

    def watch(
        self,
        collection: Collection,
        namespace: str | None,
        resource_version: int,
        on_event: Callable[[WatchEvent], None],
    ) -> IWatch:
        """Deliver every change after resource_version, then every later one; ExpiredError if too old."""
        return self._table.watch(collection, namespace, resource_version, on_event)

    def current_resource_version(self) -> int:
        """The resourceVersion of the latest change."""
        return self._table.resource_version


@implementer(IStore)
@define
class MemoryStore(TableStore):
    """A store that keeps everything in memory and forgets it on exit: for unit tests.

    Objects are deep-copied in and out; the resourceVersion counter starts at 0, so the first write gets 1.
    """

    history_size: int = DEFAULT_HISTORY_SIZE
    _table: ObjectTable = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._table = ObjectTable(WatchHub(self.history_size))

    def _commit(self, change: Change) -> Object:
        return self._table.apply(change)

    def write_problem(self) -> str | None:
        """Memory never fills up here: None."""
        return None

    async def probe_write(self) -> None:
        """Nothing to probe."""

    async def sync(self) -> None:
        """Reads always see every write: nothing to wait for."""

    async def close(self) -> None:
        """Nothing to release."""
