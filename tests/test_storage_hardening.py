# -*- test-case-name: tests.test_storage_hardening -*-
"""Tests for the file store's edges: names up to the 253-byte limit, a full disk, and owner-only modes.

The full disk is simulated at the `os.write` level under the real `write_atomic` (and through the REST
layer, which must answer 507 InsufficientStorage); a real full file system is exercised by
`tests.integration.test_disk_full`.  The modes are checked on a whole fresh start of the daemon, built by
`tap.make_service` on a MemoryReactorClock, under a umask that hides nothing.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import stat
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.config.settings import load_settings
from grafana_aggregator.storage import Collection, StorageError, StorageFullError, WatchEvent
from grafana_aggregator.storage.file import FileStore, object_file_name
from grafana_aggregator.storage.files import NAME_MAX, make_private_folders, write_atomic
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import load_runtime, local_groups, make_service
from grafana_aggregator.web.health import HealthChecks, HealthResource, StorageCheck

from .support import serve_apis

T = TypeVar("T")

THINGS = Collection("example.grafana.app", "things")
EXTERNALNAMES_URL = "https://agg.test/apis/service.grafana.app/v0alpha1/namespaces/default/externalnames"
EPOCH = 1_750_000_000.0

#: Names at and near the limit: ASCII of 240 to 253 characters, and multi-byte UTF-8 names of up to 253 bytes.
LONG_ASCII = ["n" * length for length in range(240, 254)]
LONG_UTF8 = [
    "é" * 126 + "a",        # 253 bytes, 2-byte characters
    "日" * 84 + "a",         # 253 bytes, 3-byte characters
    "😀" * 63 + "a",         # 253 bytes, 4-byte characters
    "a" + "日" * 84,         # 253 bytes, the cut of a shortened file name falls inside a character
    "ab" + "😀" * 62 + "cd",  # 252 bytes
]


def thing(name: str, namespace: str = "", **spec: Any) -> dict[str, Any]:
    """An object as a caller hands it to the store."""
    metadata: dict[str, Any] = {"name": name, "uid": f"uid-{len(name)}"}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "example.grafana.app/v1", "kind": "Thing", "metadata": metadata, "spec": spec}


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def tree(root: str) -> Iterator[tuple[str, bool, int]]:
    """(path relative to root, is a folder, permission bits) of root and everything under it."""
    yield ".", True, stat.S_IMODE(os.stat(root).st_mode)
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            full = os.path.join(folder, name)
            yield os.path.relpath(full, root), name in folders, stat.S_IMODE(os.lstat(full).st_mode)


class _StoreCase(SynchronousTestCase):
    """A temporary folder, file stores on it (closed at the end), and the log."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.written: list[str] = []

    def open(self, write: Callable[[str, bytes], None] | None = None) -> FileStore:
        def recording(path: str, data: bytes) -> None:
            self.written.append(path)
            (write or write_atomic)(path, data)

        store = FileStore.open(self.path, write=recording)
        self.addCleanup(lambda: self.result_of(store.close()))
        return store

    def result_of(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def files(self) -> dict[str, bytes]:
        """Every file under the folder (the lock excepted), by relative path, with its content."""
        found = {}
        for folder, _, names in os.walk(self.path):
            for name in names:
                if name != ".lock":
                    full = os.path.join(folder, name)
                    with open(full, "rb") as handle:
                        found[os.path.relpath(full, self.path)] = handle.read()
        return found

    def problems(self, since: int = 0) -> list[dict[str, Any]]:
        """The events logged (from event number `since`) at warning level or above, and every logged failure."""
        events = [self.log[i] for i in range(since, len(self.log))]
        return [e for e in events if e["log_level"] >= LogLevel.warn or "log_failure" in e]


class LongNameTests(_StoreCase):
    """Every name the storage accepts (up to 253 bytes of UTF-8) can be stored, whatever its length."""

    def test_file_names_fit(self) -> None:
        """The object file of any name up to 253 bytes has a name of at most 255 bytes, ending in .json."""
        for name in LONG_ASCII + LONG_UTF8 + ["a", "v1.example.grafana.app"]:
            file_name = object_file_name(name)
            self.assertLessEqual(len(file_name.encode("utf-8")), NAME_MAX, name)
            self.assertTrue(file_name.endswith(".json"))
            file_name.encode("utf-8")  # a whole number of characters

    def test_short_names_keep_their_file_name(self) -> None:
        """Names whose `<name>.json` fits keep that file name, so existing folders read as before."""
        for name in ["a", "v1.example.grafana.app", "n" * 250, "é" * 125]:
            self.assertEqual(object_file_name(name), f"{name}.json")

    def test_long_file_names_cannot_collide(self) -> None:
        """A shortened file name holds a '%' (which no name may contain) and differs for names sharing a prefix."""
        first, second = "x" * 252, "x" * 251 + "y"
        self.assertIn("%", object_file_name(first))
        self.assertNotEqual(object_file_name(first), object_file_name(second))

    def test_store_long_names(self) -> None:
        """Objects with names of 240 to 253 bytes are created, updated, reopened and deleted, every file fitting."""
        store = self.open()
        names = LONG_ASCII + LONG_UTF8
        for name in names:
            created = self.result_of(store.create(THINGS, "ns", name, thing(name, "ns", size=1)))
            self.assertEqual(created["metadata"]["name"], name)
            self.result_of(store.update(THINGS, "ns", name, thing(name, "ns", size=2)))
        for path in self.written:
            self.assertLessEqual(len(os.path.basename(path).encode("utf-8")), NAME_MAX, path)
        self.result_of(store.close())
        reopened = self.open()
        listed = self.result_of(reopened.list(THINGS, "ns")).items
        self.assertEqual(sorted(i["metadata"]["name"] for i in listed), sorted(names))
        self.assertEqual({i["spec"]["size"] for i in listed}, {2})
        self.assertEqual([p for p in self.problems()], [])
        for name in names:
            self.result_of(reopened.delete(THINGS, "ns", name))
        self.assertEqual(list(self.files()), [".resource-version"])

    def test_temporary_file_names_fit(self) -> None:
        """The temporary file of a write has a name of at most 255 bytes even for the longest object file."""
        opened: list[str] = []
        real_open = os.open

        def recording_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_CREAT:
                opened.append(os.fsdecode(path))
            return real_open(path, flags, mode, *args, **kwargs)

        store = self.open()
        self.patch(os, "open", recording_open)
        for name in ["n" * 240, "n" * 253, "😀" * 63 + "a"]:
            self.result_of(store.create(THINGS, "ns", name, thing(name, "ns")))
        self.assertEqual(len(opened), 4)  # the reservation, then one temporary file per object
        for path in opened:
            self.assertLessEqual(len(os.path.basename(path).encode("utf-8")), NAME_MAX, path)

    def test_foreign_percent_file_skipped(self) -> None:
        """A file named like a shortened file name that is not the one of the object it holds is skipped, saying so."""
        store = self.open()
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.result_of(store.close())
        stray = os.path.join(self.path, "example.grafana.app", "things", "ns", "b%" + "0" * 64 + ".json")
        with open(stray, "w") as handle:
            json.dump({"metadata": {"name": "b", "namespace": "ns", "resourceVersion": "7"}}, handle)
        reopened = self.open()
        self.assertEqual([i["metadata"]["name"] for i in self.result_of(reopened.list(THINGS, None)).items], ["a"])
        warned = [(e.get("path"), e.get("problem")) for e in self.log if e["log_level"] == LogLevel.warn]
        self.assertEqual(warned, [(stray, "the file name is not the one of metadata.name 'b' (b.json)")])

    def test_long_names_through_rest(self) -> None:
        """ExternalNames named with 240 to 253 characters (and multi-byte names) are created, read, listed and
        deleted through the REST API over the file store."""
        clock = Clock()
        clock.advance(EPOCH)
        store = self.open()
        _, groups = local_groups(lambda: datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc))
        root = Resource()
        root.putChild(b"apis", serve_apis(store, clock, groups).apis)
        client = StubTreq(root)

        def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
            data = json.dumps(body).encode() if body is not None else None
            deferred = client.request(method, url, data=data, headers={"Content-Type": "application/json"})
            client.flush()
            response = self.successResultOf(deferred)
            content = client.content(response)
            client.flush()
            return response.code, json.loads(self.successResultOf(content))

        names = LONG_ASCII + LONG_UTF8
        for name in names:
            code, body = request("POST", EXTERNALNAMES_URL, {
                "apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                "metadata": {"name": name}, "spec": {"host": "example.com"}})
            self.assertEqual((code, body["metadata"]["name"]), (201, name), body)
            code, body = request("GET", f"{EXTERNALNAMES_URL}/{quote(name)}")
            self.assertEqual((code, body["metadata"]["name"]), (200, name))
        code, body = request("GET", EXTERNALNAMES_URL)
        self.assertEqual((code, sorted(i["metadata"]["name"] for i in body["items"])), (200, sorted(names)))
        for name in names:
            code, body = request("DELETE", f"{EXTERNALNAMES_URL}/{quote(name)}")
            self.assertEqual(code, 200, body)
        self.assertEqual(self.problems(), [])


def failing_after(budget: int, error: int = errno.ENOSPC) -> Callable[[int, memoryview], int]:
    """An `os.write` that lets `budget` bytes through in all, then fails like a full disk."""
    left = [budget]

    def write(fd: int, data: memoryview) -> int:
        if left[0] <= 0:
            raise OSError(error, os.strerror(error))
        written = os.write(fd, bytes(data[: left[0]]))
        left[0] -= written
        return written

    return write


class DiskFullTests(_StoreCase):
    """A write that finds the disk full fails with StorageFullError, logs one line and changes nothing."""

    def setUp(self) -> None:
        super().setUp()
        self.full: Callable[[int, memoryview], int] | None = None

    def write(self, path: str, data: bytes) -> None:
        """write_atomic, through the failing os.write while self.full is set."""
        if self.full is None:
            write_atomic(path, data)
        else:
            write_atomic(path, data, write_fd=self.full)

    def test_full_disk_changes_nothing(self) -> None:
        """Writes cut short by ENOSPC leave every stored file, the memory, the watchers and the next
        resourceVersion as they were, and leave no temporary file behind."""
        store = self.open(self.write)
        a = self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns", size=1)))
        before = self.files()
        events: list[WatchEvent] = []
        store.watch(THINGS, None, store.current_resource_version(), events.append)
        for budget in (0, 10, 100):
            self.full = failing_after(budget)
            for operation in [store.create(THINGS, "ns", "b", thing("b", "ns", size=1)),
                              store.update(THINGS, "ns", "a", thing("a", "ns", size=2))]:
                failure = self.failureResultOf(Deferred.fromCoroutine(operation), StorageFullError)
                self.assertEqual(str(failure.value),
                                 "the storage folder's file system is full (No space left on device)")
                self.assertEqual(failure.value.errno, errno.ENOSPC)
        self.assertEqual(self.files(), before)
        self.assertEqual(self.result_of(store.list(THINGS, None)).items, [a])
        self.assertEqual((store.current_resource_version(), events), (1, []))
        self.full = None
        self.assertEqual(rv(self.result_of(store.create(THINGS, "ns", "b", thing("b", "ns")))), 2)
        self.assertEqual([e.resource_version for e in events], [2])

    def test_one_line_per_failed_write(self) -> None:
        """Each failed write logs exactly one error line naming the file, with no traceback."""
        store = self.open(self.write)
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.full = failing_after(0)
        mark = len(self.log)
        self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "ns", "b", thing("b", "ns"))),
                             StorageFullError)
        problems = self.problems(mark)
        self.assertEqual(len(problems), 1, problems)
        self.assertEqual(problems[0]["log_level"], LogLevel.error)
        self.assertNotIn("log_failure", problems[0])
        self.assertEqual(problems[0]["path"], os.path.join(self.path, "example.grafana.app", "things", "ns", "b.json"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_quota_exceeded(self) -> None:
        """EDQUOT is a full store too, with its own wording."""
        store = self.open(self.write)
        self.full = failing_after(0, errno.EDQUOT)
        failure = self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "ns", "a", thing("a", "ns"))),
                                       StorageFullError)
        self.assertEqual(str(failure.value), "the storage folder's disk quota is used up (Disk quota exceeded)")
        self.assertEqual(store.write_problem(), str(failure.value))

    def test_other_errors_stay_what_they_are(self) -> None:
        """An OSError that is not about space (EIO, say) is not a StorageFullError and does not mark the store full."""
        store = self.open(self.write)
        self.full = failing_after(0, errno.EIO)
        failure = self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "ns", "a", thing("a", "ns"))),
                                       OSError)
        self.assertNotIsInstance(failure.value, StorageError)
        self.assertIsNone(store.write_problem())

    def test_write_problem_until_a_write_succeeds(self) -> None:
        """write_problem says why writes fail from the first failure until a write succeeds; the recovery is logged."""
        store = self.open(self.write)
        self.assertIsNone(store.write_problem())
        self.full = failing_after(0)
        self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "ns", "a", thing("a", "ns"))),
                             StorageFullError)
        self.assertEqual(store.write_problem(), "the storage folder's file system is full (No space left on device)")
        self.failureResultOf(Deferred.fromCoroutine(store.probe_write()), StorageFullError)
        self.assertIsNotNone(store.write_problem())
        self.full = None
        mark = len(self.log)
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.assertIsNone(store.write_problem())
        self.assertEqual([self.log[i]["log_format"] for i in range(mark, len(self.log))],
                         ["writes to the storage folder {path} work again"])

    def test_probe_write_clears(self) -> None:
        """probe_write rewrites the reservation: once it succeeds the store is no longer full, and nothing moved."""
        store = self.open(self.write)
        self.result_of(store.create(THINGS, "ns", "a", thing("a", "ns")))
        self.full = failing_after(0)
        self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "ns", "b", thing("b", "ns"))),
                             StorageFullError)
        before = self.files()
        self.full = None
        self.result_of(store.probe_write())
        self.assertIsNone(store.write_problem())
        self.assertEqual((self.files(), store.current_resource_version()), (before, 1))

    def test_full_disk_through_rest(self) -> None:
        """Creates, updates, patches and deletes that find the disk full answer 507 InsufficientStorage, log one
        line each and no traceback, and the stored object is unchanged."""
        clock = Clock()
        clock.advance(EPOCH)
        store = self.open(self.write)
        _, groups = local_groups(lambda: datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc))
        root = Resource()
        root.putChild(b"apis", serve_apis(store, clock, groups).apis)
        client = StubTreq(root)

        def request(method: str, url: str, body: Any = None,
                    content_type: str = "application/json") -> tuple[int, Any]:
            data = json.dumps(body).encode() if body is not None else None
            deferred = client.request(method, url, data=data, headers={"Content-Type": content_type})
            client.flush()
            response = self.successResultOf(deferred)
            content = client.content(response)
            client.flush()
            return response.code, json.loads(self.successResultOf(content))

        def external_name(name: str, host: str) -> dict[str, Any]:
            return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                    "metadata": {"name": name}, "spec": {"host": host}}

        code, stored = request("POST", EXTERNALNAMES_URL, external_name("a", "a.example"))
        self.assertEqual(code, 201)
        before = self.files()
        self.full = failing_after(0)
        mark = len(self.log)
        replaced = dict(stored, spec={"host": "b.example"})
        attempts = [
            ("POST", EXTERNALNAMES_URL, external_name("b", "b.example"), "application/json"),
            ("PUT", f"{EXTERNALNAMES_URL}/a", replaced, "application/json"),
            ("PATCH", f"{EXTERNALNAMES_URL}/a", {"spec": {"host": "c.example"}}, "application/merge-patch+json"),
        ]
        for method, url, body, content_type in attempts:
            code, status = request(method, url, body, content_type)
            self.assertEqual((code, status), (507, {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the object could not be stored: the storage folder's file system is full "
                           "(No space left on device)",
                "reason": "InsufficientStorage", "code": 507}), method)
        self.assertEqual(len(self.problems(mark)), len(attempts), self.problems(mark))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.files(), before)
        self.full = None
        self.assertEqual(request("GET", f"{EXTERNALNAMES_URL}/a"), (200, stored))
        code, created = request("POST", EXTERNALNAMES_URL, external_name("b", "b.example"))
        self.assertEqual((code, rv(created)), (201, rv(stored) + 1))


class StorageCheckTests(SynchronousTestCase):
    """The `storage` readiness check fails while writes find the disk full, and recovers without traffic."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.full = False
        self.store = FileStore.open(self.path, write=self.write)
        self.addCleanup(lambda: self.successResultOf(Deferred.fromCoroutine(self.store.close())))
        self.clock = Clock()
        self.check = StorageCheck(self.store, self.clock, interval=5.0)
        checks = HealthChecks()
        checks.add("storage", self.check.check, endpoints=("readyz",))
        root = Resource()
        root.putChild(b"readyz", HealthResource("readyz", checks))
        self.client = StubTreq(root)

    def write(self, path: str, data: bytes) -> None:
        write_atomic(path, data, write_fd=failing_after(0) if self.full else os.write)

    def readyz(self, path: str = "/readyz?verbose") -> tuple[int, bytes]:
        response = self.successResultOf(self.client.get(f"https://agg.test{path}"))
        return response.code, self.successResultOf(self.client.content(response))

    def test_ready_while_writes_work(self) -> None:
        """With writes working the check passes."""
        self.check.startService()
        self.addCleanup(self.check.stopService)
        self.assertEqual(self.readyz(), (200, b"[+]storage ok\nreadyz check passed\n"))

    def test_fails_while_full_and_recovers_by_itself(self) -> None:
        """After a write found the disk full the check fails; once space is back, a probe makes it pass again."""
        self.check.startService()
        self.addCleanup(self.check.stopService)
        self.full = True
        self.failureResultOf(Deferred.fromCoroutine(self.store.create(THINGS, "", "a", thing("a"))),
                             StorageFullError)
        self.assertEqual(self.readyz(), (500, b"[-]storage failed: reason withheld\nreadyz check failed\n"))
        self.assertEqual(self.readyz("/readyz/storage"), (
            500, b"internal server error: the storage folder's file system is full (No space left on device)\n"))
        self.clock.pump([5.0] * 3)
        self.assertEqual(self.readyz()[0], 500)
        self.full = False
        self.clock.pump([5.0])
        self.assertEqual(self.readyz(), (200, b"[+]storage ok\nreadyz check passed\n"))
        self.assertEqual(self.store.current_resource_version(), 0)

    def test_probe_loop_survives_errors(self) -> None:
        """A probe that raises something unexpected is logged and the probing goes on."""
        calls: list[int] = []

        class Broken(MemoryStore):
            def write_problem(self) -> str | None:
                return "full"

            async def probe_write(self) -> None:
                calls.append(1)
                raise RuntimeError("boom")

        check = StorageCheck(Broken(), self.clock, interval=5.0)
        check.startService()
        self.addCleanup(check.stopService)
        self.clock.pump([5.0] * 3)
        self.assertEqual(len(calls), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)


class DaemonStorageCheckTests(SynchronousTestCase):
    """The daemon built by make_service answers /readyz with the `storage` check."""

    def test_readyz_storage(self) -> None:
        """/readyz fails on `storage` while the daemon's store finds the disk full, and passes once a probe writes."""
        folder = os.path.abspath(self.mktemp())
        settings = load_settings(None, {"data-dir": os.path.join(folder, "data"), "bind-address": "127.0.0.1",
                                        "secure-port": "16443"})
        runtime = load_runtime(settings)
        self.successResultOf(Deferred.fromCoroutine(runtime.store.close()))
        full = [False]

        def write(path: str, data: bytes) -> None:
            write_atomic(path, data, write_fd=failing_after(0) if full[0] else os.write)

        store = FileStore.open(settings.storage_path, write=write)
        reactor = MemoryReactorClock()
        top = make_service(settings, attrs.evolve(runtime, store=store), reactor)
        top.startService()
        self.addCleanup(lambda: (top.stopService(), reactor.pump([1.0] * 30)))
        client = StubTreq(reactor.tcpServers[0][1].wrappedFactory.resource)

        def readyz() -> tuple[int, bytes]:
            response = self.successResultOf(client.get("https://agg.test/readyz?verbose"))
            return response.code, self.successResultOf(client.content(response))

        code, body = readyz()
        self.assertEqual(code, 200, body)
        self.assertIn(b"[+]storage ok\n", body)
        full[0] = True
        self.failureResultOf(Deferred.fromCoroutine(store.create(THINGS, "", "a", thing("a"))), StorageFullError)
        code, body = readyz()
        self.assertEqual(code, 500, body)
        self.assertIn(b"[-]storage failed: reason withheld\n", body)
        full[0] = False
        reactor.pump([5.0])
        self.assertEqual(readyz()[0], 200)


class PrivateFolderTests(SynchronousTestCase):
    """Folders and secret files are owner-only from the moment they exist, whatever the umask."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        self.created: list[tuple[str, int]] = []
        real_mkdir, real_open = os.mkdir, os.open

        def mkdir(path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
            real_mkdir(path, mode, *args, **kwargs)
            self.created.append((os.fsdecode(path), stat.S_IMODE(os.stat(path).st_mode)))

        def open_(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
            existed = os.path.lexists(path)
            fd = real_open(path, flags, mode, *args, **kwargs)
            if flags & os.O_CREAT and not existed:
                self.created.append((os.fsdecode(path), stat.S_IMODE(os.fstat(fd).st_mode)))
            return fd

        self.patch(os, "mkdir", mkdir)
        self.patch(os, "open", open_)

    def test_make_private_folders(self) -> None:
        """Every missing folder of the path is created 0700; existing ones are left as they are."""
        os.chmod(self.folder, 0o755)
        target = os.path.join(self.folder, "a", "b", "c")
        self.assertEqual(make_private_folders(target), [os.path.join(self.folder, "a"),
                                                        os.path.join(self.folder, "a", "b"), target])
        self.assertEqual([mode for _, mode in self.created], [0o700] * 3)
        self.assertEqual(stat.S_IMODE(os.stat(self.folder).st_mode), 0o755)
        self.assertEqual(make_private_folders(target), [])

    def test_owner_bits_restored_under_a_harsh_umask(self) -> None:
        """Even a umask that takes the owner's bits away leaves a folder the daemon can use (0700)."""
        os.umask(0o277)
        target = os.path.join(self.folder, "x", "y")
        make_private_folders(target)
        for folder in (os.path.join(self.folder, "x"), target):
            self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o700)

    def test_write_atomic_temporary_is_private(self) -> None:
        """write_atomic's temporary file is 0600 from its creation, even for a file that ends up 0644."""
        target = os.path.join(self.folder, "public.crt")
        write_atomic(target, b"certificate", mode=0o644)
        self.assertEqual([mode for _, mode in self.created], [0o600])
        self.assertEqual(stat.S_IMODE(os.stat(target).st_mode), 0o644)

    def test_write_atomic_does_not_follow_a_planted_temporary(self) -> None:
        """A symlink planted where the temporary file goes is replaced, never written through."""
        victim = os.path.join(self.folder, "victim")
        with open(victim, "wb") as handle:
            handle.write(b"precious")
        target = os.path.join(self.folder, "secret.key")
        os.symlink(victim, os.path.join(self.folder, f".secret.key.tmp-{os.getpid()}"))
        write_atomic(target, b"key")
        with open(victim, "rb") as handle:
            self.assertEqual(handle.read(), b"precious")
        with open(target, "rb") as handle:
            self.assertEqual(handle.read(), b"key")
        self.assertEqual(sorted(os.listdir(self.folder)), ["secret.key", "victim"])

    def test_fresh_start_tree(self) -> None:
        """A fresh start creates the data folder and everything in it owner-only: folders 0700, secrets 0600,
        only the public serving certificate 0644, each with that mode from its creation."""
        data = os.path.join(self.folder, "data")
        settings = load_settings(None, {"data-dir": data, "bind-address": "127.0.0.1", "secure-port": "16443",
                                        "ensure-kubectl-access": "true"})
        reactor = MemoryReactorClock()
        top = make_service(settings, load_runtime(settings), reactor)
        top.startService()
        stopped = top.stopService()
        reactor.pump([1.0] * 30)
        self.successResultOf(stopped)
        found = {path: (is_folder, mode) for path, is_folder, mode in tree(data)}
        self.assertIn("grafana-apiserver/certs/apiserver.key", found)
        self.assertIn("grafana-apiserver/grafana.kubeconfig", found)
        self.assertIn("grafana-apiserver/loopback-token", found)
        self.assertIn("grafana-apiserver/apiregistration.k8s.io/apiservices/v1.apiregistration.k8s.io.json", found)
        wrong = {path: oct(mode) for path, (is_folder, mode) in found.items()
                 if mode != (0o700 if is_folder else 0o644 if path.endswith("apiserver.crt") else 0o600)}
        self.assertEqual(wrong, {})
        created_loose = [(path, oct(mode)) for path, mode in self.created if mode & 0o077]
        self.assertEqual(created_loose, [])
        self.assertIn((data, 0o700), self.created)
