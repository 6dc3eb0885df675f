# -*- test-case-name: tests.test_storage, tests.test_storage_hardening -*-
"""The default store: one JSON file per object under a folder that one process at a time may write to.

Everything is read into memory at open; a write goes to disk (atomically) first, then to memory, then
to watchers, so a failed write changes nothing and a killed process leaves only complete files.

Every name the storage accepts fits a file name: an object whose `<name>.json` would pass NAME_MAX
(names of 251 to 253 bytes) is kept as `<the name's first bytes>%<SHA-256 of the name>.json`; no name
may contain '%', so that file name cannot be another object's.  A write that finds the disk full (ENOSPC)
or the quota used up (EDQUOT) raises StorageFullError and logs one line; `write_problem` says so until a
write succeeds again (`probe_write` tries one that changes nothing).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable

from attrs import define, field
from twisted.logger import Logger
from zope.interface import implementer

from .files import (
    NAME_MAX,
    TEMPORARY_MARK,
    fsync_folder,
    make_private_folder,
    make_private_folders,
    shorten,
    write_atomic,
)
from .interface import (
    Collection,
    InvalidKeyError,
    IStore,
    Object,
    StorageError,
    StorageFullError,
    StoreLockedError,
    validate_path_segment,
)
from .memory import ADDED, DELETED, MODIFIED, Change, ObjectTable, TableStore
from .watch import DEFAULT_HISTORY_SIZE, WatchHub

_log = Logger()

#: Held with flock by the process that writes the folder; holds that process's pid.
LOCK_FILE = ".lock"
#: The highest resourceVersion that may have been handed out (a reservation, ahead of use).
RESOURCE_VERSION_FILE = ".resource-version"
#: How many resourceVersions each write of RESOURCE_VERSION_FILE reserves.
RESERVE_AHEAD = 1000
#: The folder of the core ("") API group.
CORE_GROUP_FOLDER = "core"
#: Object files end so.
SUFFIX = ".json"
#: Joins a long name's first bytes and its digest in the object's file name; names never contain it.
DIGEST_MARK = "%"
#: The stem of a shortened object file name.
_SHORTENED = re.compile(r"[^%]*%[0-9a-f]{64}", re.DOTALL)

FOLDER_MODE = 0o700
#: How the log names each kind of change.
_VERBS = {ADDED: "create", MODIFIED: "update", DELETED: "delete"}
#: The errors of a write that found no room: the file system is full, or the owner's quota is used up.
FULL_ERRORS = {
    errno.ENOSPC: "the storage folder's file system is full",
    errno.EDQUOT: "the storage folder's disk quota is used up",
}

Writer = Callable[[str, bytes], None]
Remover = Callable[[str], None]


def object_file_name(name: str) -> str:
    """The file name of the object called name: `<name>.json`, or, when that passes NAME_MAX bytes,
    `<the name's first bytes>%<SHA-256 of the name, hex>.json`."""
    plain = f"{name}{SUFFIX}"
    if len(plain.encode("utf-8")) <= NAME_MAX:
        return plain
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    budget = NAME_MAX - len(f"{DIGEST_MARK}{digest}{SUFFIX}")
    return f"{shorten(name, budget)}{DIGEST_MARK}{digest}{SUFFIX}"


def remove_durable(path: str) -> None:
    """Remove a file (already gone is fine) and fsync its folder, so the removal survives a power cut."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fsync_folder(os.path.dirname(path) or ".")


def _encode(obj: Object) -> bytes:
    """The file content for an object: its JSON, newline-terminated."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


def _lock(path: str) -> int:
    """Take the folder's single-writer lock and record our pid in it; StoreLockedError if another process has it."""
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise StoreLockedError(f"storage folder {path} is in use by another grafana-aggregator process "
                                   f"(pid {pid}); only one may write to it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int) -> None:
    """Release the lock taken by _lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _Skip(Exception):
    """A file under the folder that is not a stored object; the message says why."""


@define
class _Loaded:
    """What open found on disk."""

    objects: list[tuple[Collection, str, str, Object]] = field(factory=list)
    resource_version: int = 0


def _scan(root: str) -> _Loaded:
    """Read every stored object under root, removing temporary files that killed writers left behind."""
    loaded = _Loaded()

    def unreadable(error: OSError) -> None:
        _log.warn("skipping {path}: {error}", path=error.filename, error=error)

    for folder, subfolders, names in os.walk(root, onerror=unreadable):
        subfolders.sort()
        relative = os.path.relpath(folder, root)
        parts = [] if relative == os.curdir else relative.split(os.sep)
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.startswith(".") and TEMPORARY_MARK in name:
                try:
                    os.unlink(path)
                except OSError as error:
                    _log.warn("cannot remove the leftover temporary file {path}: {error}", path=path, error=error)
                else:
                    _log.info("removed the leftover temporary file {path} of an interrupted write", path=path)
                continue
            if not name.endswith(SUFFIX):
                continue
            try:
                collection, namespace, key, obj, rv = _read_object(path, parts, name)
            except _Skip as problem:
                _log.warn("skipping {path}: {problem}", path=path, problem=str(problem))
                continue
            loaded.objects.append((collection, namespace, key, obj))
            loaded.resource_version = max(loaded.resource_version, rv)
    return loaded


def _read_object(path: str, parts: list[str], file_name: str) -> tuple[Collection, str, str, Object, int]:
    """The object stored in path, with its key and resourceVersion; _Skip when it is not a valid stored object."""
    if len(parts) not in (2, 3):
        raise _Skip("not where a stored object belongs (<group>/<resource>/[<namespace>/]<name>.json)")
    name = file_name[: -len(SUFFIX)]
    shortened = _SHORTENED.fullmatch(name) is not None
    try:
        for part, what in zip(parts, ("group folder", "resource folder", "namespace folder")):
            validate_path_segment(part, what)
        if not shortened:
            validate_path_segment(name, "name")
    except InvalidKeyError as error:
        raise _Skip(str(error)) from None
    group = "" if parts[0] == CORE_GROUP_FOLDER else parts[0]
    namespace = parts[2] if len(parts) == 3 else ""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise _Skip(f"cannot read it: {error}") from None
    try:
        obj = json.loads(data)
    except ValueError as error:
        raise _Skip(f"not valid JSON: {error}") from None
    if not isinstance(obj, dict):
        raise _Skip(f"not a JSON object but a {type(obj).__name__}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise _Skip("the object has no metadata")
    if shortened:
        stored_name = metadata.get("name")
        if not isinstance(stored_name, str):
            raise _Skip(f"metadata.name {stored_name!r} is not a string")
        try:
            validate_path_segment(stored_name, "metadata.name")
        except InvalidKeyError as error:
            raise _Skip(str(error)) from None
        if object_file_name(stored_name) != file_name:
            raise _Skip(f"the file name is not the one of metadata.name {stored_name!r} "
                        f"({object_file_name(stored_name)})")
        name = stored_name
    if metadata.get("name") != name:
        raise _Skip(f"metadata.name {metadata.get('name')!r} does not match the file name {name!r}")
    if (metadata.get("namespace") or "") != namespace:
        raise _Skip(f"metadata.namespace {metadata.get('namespace')!r} does not match the folder {namespace!r}")
    version = metadata.get("resourceVersion")
    if not isinstance(version, str) or not version.isdigit() or not version.isascii():
        raise _Skip(f"metadata.resourceVersion {version!r} is not a decimal number")
    return Collection(group, parts[1]), namespace, name, obj, int(version)


def _read_reservation(root: str) -> int:
    """The persisted resourceVersion reservation (0 when there is none, or it is unreadable)."""
    path = os.path.join(root, RESOURCE_VERSION_FILE)
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as error:
        _log.warn("ignoring {path}: {error}", path=path, error=error)
        return 0
    if not text.isdigit():
        _log.warn("ignoring {path}: {content!r} is not a decimal number", path=path, content=text)
        return 0
    return int(text)


@implementer(IStore)
@define
class FileStore(TableStore):
    """Objects as `<path>/<group>/<resource>/[<namespace>/]<name>.json` (mode 0600, folders 0700), served from memory.

    Make one with `FileStore.open`.  resourceVersions never repeat, across deletions and restarts:
    `<path>/.resource-version` always holds a number at least as high as any handed out.  The watch history starts
    empty at open: only watches from the resourceVersion at open or later work then.
    """

    path: str
    _lock_fd: int
    _table: ObjectTable
    _reserved: int
    _write: Writer = write_atomic
    _remove: Remover = remove_durable
    _folders: dict[tuple[Collection, str], str] = field(init=False, factory=dict)
    #: Why the last write failed for lack of room, until one succeeds.
    _full: str | None = field(init=False, default=None)

    @classmethod
    def open(
        cls,
        path: str,
        *,
        write: Writer = write_atomic,
        remove: Remover = remove_durable,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> FileStore:
        """Lock the folder (StoreLockedError if another process has it), clean it up and load it.

        write and remove put and delete one file durably; tests replace them to simulate failures.
        """
        path = os.path.normpath(path)
        make_private_folders(path)
        lock_fd = _lock(path)
        try:
            loaded = _scan(path)
            reserved = _read_reservation(path)
        except BaseException:
            _unlock(lock_fd)
            raise
        start = max(reserved, loaded.resource_version)
        table = ObjectTable(WatchHub(history_size, start), start)
        for collection, namespace, name, obj in loaded.objects:
            table.load(collection, namespace, name, obj)
        _log.info("file storage {path}: {count} objects, resourceVersion {resource_version}",
                  path=path, count=len(loaded.objects), resource_version=start)
        return cls(path, lock_fd, table, reserved, write, remove)

    def write_problem(self) -> str | None:
        """Why writes fail (the disk is full, the quota used up) since one failed so; None once one succeeds."""
        return self._full

    async def sync(self) -> None:
        """Reads always see every write (one process owns the files): nothing to wait for."""

    async def probe_write(self) -> None:
        """While writes fail for lack of room, rewrite the resourceVersion reservation as it is (a write that
        changes nothing): when it succeeds, writes work again; StorageFullError when it does not."""
        if self._full is None or self._lock_fd < 0:
            return
        try:
            self._write(os.path.join(self.path, RESOURCE_VERSION_FILE), f"{self._reserved}\n".encode("ascii"))
        except OSError as error:
            message = FULL_ERRORS.get(error.errno or 0)
            if message is None:
                raise
            raise StorageFullError(f"{message} ({os.strerror(error.errno or 0)})", error.errno) from None
        self._written()

    async def close(self) -> None:
        """Release the folder's lock; later writes fail (reads still answer from memory)."""
        if self._lock_fd >= 0:
            fd, self._lock_fd = self._lock_fd, -1
            _unlock(fd)

    def _commit(self, change: Change) -> Object:
        """Persist a planned change, then apply it in memory; an OSError leaves both unchanged."""
        if self._lock_fd < 0:
            raise StorageError(f"the file storage in {self.path} is closed")
        folder = self._folder(change.collection, change.namespace)
        target = os.path.join(folder, object_file_name(change.name))
        try:
            if change.type == DELETED:
                self._reserve(change.resource_version)
                self._remove(target)
            else:
                data = _encode(change.object)
                self._reserve(change.resource_version)
                self._make_folders(folder)
                self._write(target, data)
        except OSError as error:
            message = FULL_ERRORS.get(error.errno or 0)
            if message is None:
                raise
            reason = f"{message} ({os.strerror(error.errno or 0)})"
            self._full = reason
            # One line, no traceback: every request that meets the full disk would otherwise log a page.
            _log.error("{resource} {key} was not stored ({operation}): {path}: {reason}",
                       resource=change.collection.resource,
                       key=f"{change.namespace}/{change.name}" if change.namespace else change.name,
                       operation=_VERBS.get(change.type, change.type), path=error.filename or target, reason=reason)
            raise StorageFullError(reason, error.errno) from None
        self._written()
        return self._table.apply(change)

    def _written(self) -> None:
        """A write succeeded: writes work again if they did not."""
        if self._full is not None:
            self._full = None
            _log.info("writes to the storage folder {path} work again", path=self.path)

    def _reserve(self, resource_version: int) -> None:
        """Make sure the persisted reservation covers resource_version, reserving RESERVE_AHEAD more when not."""
        if resource_version > self._reserved:
            reserved = resource_version - 1 + RESERVE_AHEAD
            self._write(os.path.join(self.path, RESOURCE_VERSION_FILE), f"{reserved}\n".encode("ascii"))
            self._reserved = reserved

    def _folder(self, collection: Collection, namespace: str) -> str:
        """The folder of a collection's objects in namespace; InvalidKeyError for an unusable group or resource."""
        key = (collection, namespace)
        folder = self._folders.get(key)
        if folder is None:
            if collection.group:
                validate_path_segment(collection.group, "group")
            validate_path_segment(collection.resource, "resource")
            parts = [self.path, collection.group or CORE_GROUP_FOLDER, collection.resource]
            if namespace:
                parts.append(namespace)
            folder = self._folders[key] = os.path.join(*parts)
        return folder

    def _make_folders(self, folder: str) -> None:
        """Create folder and its missing parents under the store's root, each 0700 and durably recorded."""
        if os.path.isdir(folder):
            return
        parent = os.path.dirname(folder)
        if parent != self.path:
            self._make_folders(parent)
        if make_private_folder(folder):
            fsync_folder(parent)
