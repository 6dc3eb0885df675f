"""The storage contract every backend keeps, shaped after etcd so an etcd backend fits without changing callers.

Objects are JSON-compatible dicts.  The store owns `metadata.resourceVersion`: one counter for the
whole store (like etcd's revision) that only ever grows, rendered as a decimal string.  Every write
returns the object as stored, with its new resourceVersion.  Methods that touch data are coroutines;
`watch` registers synchronously so no event can slip between a list and the watch that follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from zope.interface import Interface

#: A JSON object as stored and served.
Object = dict[str, Any]


class StorageError(Exception):
    """Base of the errors a store raises; each maps to one Kubernetes Status."""


class NotFoundError(StorageError):
    """The object does not exist (404 NotFound)."""


class AlreadyExistsError(StorageError):
    """An object with that name already exists (409 AlreadyExists)."""


class ConflictError(StorageError):
    """A precondition (resourceVersion or uid) did not hold (409 Conflict)."""


class ExpiredError(StorageError):
    """The requested resourceVersion is older than the history kept (410 Gone, reason Expired)."""


class InvalidKeyError(StorageError):
    """A name or namespace cannot be used as a storage key (400 BadRequest)."""


class StorageFullError(StorageError, OSError):
    """The store cannot write: its disk is full or its quota is used up (507 InsufficientStorage).

    Also an OSError with the errno (ENOSPC or EDQUOT) of the failed write; its message, which the 507
    Status repeats, says what is wrong without naming files.
    """

    def __init__(self, message: str, error_number: int | None = None):
        super().__init__(message)
        self.errno = error_number

    def __str__(self) -> str:
        return str(self.args[0])


class StorageUnavailableError(StorageError):
    """The storage cannot be reached (etcd is down), or the outcome of a write is unknown (503 ServiceUnavailable)."""


class StorageTimeoutError(StorageUnavailableError):
    """The storage did not answer in time (504 Timeout)."""


class StoreLockedError(StorageError):
    """Another process holds the store (file storage has one writer at a time)."""


@frozen
class Collection:
    """The objects of one resource: `apiservices` of `apiregistration.k8s.io`, for example."""

    group: str
    resource: str


@frozen
class ListResult:
    """A consistent snapshot: the items (sorted by namespace, then name) and the store's resourceVersion then."""

    items: list[Object]
    resource_version: int


@frozen
class WatchEvent:
    """One change: type ADDED, MODIFIED or DELETED, the object after it (before it, for DELETED), and the
    resourceVersion of the change (for DELETED, the object's metadata.resourceVersion is this one too)."""

    type: str
    object: Object
    resource_version: int
    collection: Collection
    namespace: str
    name: str
    #: The object before a MODIFIED change (None otherwise); shared by every watcher, never to be changed.
    previous: Object | None = None


#: The type of the last event a watch gets when the store can no longer follow it (the changes it would need
#: were compacted away): the watch is over, and the watcher lists and watches again.
EXPIRED = "EXPIRED"


class IWatch(Interface):
    """A registered watch."""

    def cancel() -> None:
        """Stop delivering events; calling it again does nothing."""


class IStore(Interface):
    """Durable, versioned object storage with watches."""

    async def get(collection: Collection, namespace: str, name: str) -> Object:
        """The stored object (a copy the caller may change); NotFoundError if missing.

        namespace is "" for cluster-scoped resources.
        """

    async def list(collection: Collection, namespace: str | None) -> ListResult:
        """Every object of the collection in one namespace ("" for cluster-scoped), or in all when None."""

    async def list_at(collection: Collection, namespace: str | None, resource_version: int) -> ListResult:
        """The objects as they were at resource_version (the snapshot a continue token names), sorted as list's.

        ExpiredError when the store no longer knows that snapshot (etcd compacted it; the history kept is shorter).
        """

    async def create(collection: Collection, namespace: str, name: str, obj: Object) -> Object:
        """Store a new object and return it with its resourceVersion; AlreadyExistsError if the name is taken."""

    async def update(
        collection: Collection,
        namespace: str,
        name: str,
        obj: Object,
        expected_resource_version: int | None = None,
    ) -> Object:
        """Replace an existing object; with expected_resource_version, only if it is still that version.

        NotFoundError if missing, ConflictError if the version moved on.
        """

    async def delete(
        collection: Collection,
        namespace: str,
        name: str,
        expected_resource_version: int | None = None,
        expected_uid: str | None = None,
    ) -> Object:
        """Remove an object and return its last stored state; preconditions as for update (uid too)."""

    def watch(
        collection: Collection,
        namespace: str | None,
        resource_version: int,
        on_event: Callable[[WatchEvent], None],
    ) -> IWatch:
        """Deliver, in order, every change after resource_version to on_event, then every later change.

        Raises ExpiredError when the history kept no longer reaches back to resource_version.
        """

    def current_resource_version() -> int:
        """The resourceVersion of the latest change (0 for an empty, new store)."""

    def write_problem() -> str | None:
        """Why writes fail (the disk is full, say) since the last write that failed so, or None while they work."""

    async def probe_write() -> None:
        """While writes fail, try a write that changes nothing stored; StorageFullError if it fails too."""

    async def sync() -> None:
        """Return once reads see every write committed before the call (kube's consistent read, resourceVersion
        ""); StorageUnavailableError or StorageTimeoutError when that cannot be known now."""

    async def close() -> None:
        """Flush and release the store (the lock, for file storage)."""


def validate_path_segment(value: str, what: str) -> None:
    """Refuse a name or namespace that could escape its folder or is not a usable file name (CVE-2022-3162)."""
    if not value:
        raise InvalidKeyError(f"{what} must not be empty")
    if value in (".", "..") or "/" in value or "%" in value or "\0" in value or "\\" in value:
        raise InvalidKeyError(f"{what} {value!r} may not be '.', '..' or contain '/', '%', '\\\\' or NUL")
    if len(value.encode("utf-8")) > 253:
        raise InvalidKeyError(f"{what} {value!r} is longer than 253 bytes")
    if value.startswith("."):
        raise InvalidKeyError(f"{what} {value!r} may not start with '.'")
