"""Tests for L{grafana_aggregator.storage.migrate} and the `grafana-aggregator-migrate` command
(L{grafana_aggregator.migrate_cli}): every object of every collection is copied whole but for its
resourceVersion, a target in the way is refused unless told to overwrite, a dry run writes nothing, the report
counts, and errors are one line; with a real etcd, a file store goes to etcd and back with nothing lost."""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from grafana_aggregator.migrate_cli import run
from grafana_aggregator.storage import Collection
from grafana_aggregator.storage.etcd import EtcdStore
from grafana_aggregator.storage.file import FileStore
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.storage.migrate import MigrationError, migrate

from .etcd import client_for, free_port, shared_etcd

T = TypeVar("T")

APISERVICES = Collection("apiregistration.k8s.io", "apiservices")
EXTERNALNAMES = Collection("service.grafana.app", "externalnames")
#: A kind added later (a CRD's objects): copied without migrate knowing it.
WIDGETS = Collection("widgets.example.grafana.app", "widgets")
#: The core group ("" in the collection, `core` on disk and in etcd).
CONFIGMAPS = Collection("", "configmaps")

MANAGED = [{"manager": "kubectl", "operation": "Apply", "apiVersion": "apiregistration.k8s.io/v1",
            "time": "2025-01-02T03:04:05Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:group": {}}}}]


def objects() -> list[tuple[Collection, str, str, dict[str, Any]]]:
    """A populated store's objects: every metadata field the daemon keeps, status, several namespaces and kinds."""
    return [
        (APISERVICES, "", "v1.a.example", {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1.a.example", "uid": "uid-a", "creationTimestamp": "2025-01-02T03:04:05Z",
                         "generation": 3, "labels": {"team": "a"}, "annotations": {"note": "ünïcode"},
                         "managedFields": MANAGED, "finalizers": ["example.com/keep"]},
            "spec": {"group": "a.example", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"name": "a", "namespace": "grafana", "port": 7443}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck",
                                       "message": "no answer", "lastTransitionTime": "2025-01-02T03:04:06Z"}]}}),
        (APISERVICES, "", "v1.b.example", {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1.b.example", "uid": "uid-b", "creationTimestamp": "2025-01-02T03:04:07Z",
                         "deletionTimestamp": "2025-01-03T00:00:00Z", "deletionGracePeriodSeconds": 0,
                         "finalizers": ["example.com/keep"]},
            "spec": {"group": "b.example", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15}}),
        (EXTERNALNAMES, "grafana", "web", {
            "apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": "web", "namespace": "grafana", "uid": "uid-web",
                         "creationTimestamp": "2025-01-02T03:04:08Z", "labels": {"app": "web"}},
            "spec": {"host": "web.example.com"}}),
        (EXTERNALNAMES, "other", "web", {
            "apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": "web", "namespace": "other", "uid": "uid-web-2",
                         "creationTimestamp": "2025-01-02T03:04:09Z"},
            "spec": {"host": "web.other.example.com"}}),
        (WIDGETS, "grafana", "w", {
            "apiVersion": "widgets.example.grafana.app/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "grafana", "uid": "uid-w", "creationTimestamp": "2025-01-02T03:04:10Z",
                         "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}]},
            "spec": {"size": 3, "nested": {"list": [1, 2.5, None, True]}}}),
        (CONFIGMAPS, "grafana", "settings", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "grafana", "uid": "uid-cm"},
            "data": {"key": "value"}}),
    ]


def without_resource_version(obj: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    result["metadata"].pop("resourceVersion", None)
    return result


def done(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    return Deferred.fromCoroutine(coroutine)


class MigrateTests(SynchronousTestCase):
    """migrate between memory and file stores."""

    def populated(self) -> MemoryStore:
        store = MemoryStore()
        for collection, namespace, name, obj in objects():
            self.successResultOf(done(store.create(collection, namespace, name, obj)))
        return store

    def file_store(self) -> FileStore:
        store = FileStore.open(self.mktemp())
        self.addCleanup(lambda: self.successResultOf(done(store.close())))
        return store

    def assertHolds(self, store: Any, expected: list[tuple[Collection, str, str, dict[str, Any]]]) -> None:
        """store holds exactly expected's objects, field by field, whatever their resourceVersions."""
        held = {}
        for collection in self.successResultOf(done(store.stored_keys())):
            for item in self.successResultOf(done(store.list(collection, None))).items:
                self.assertTrue(item["metadata"]["resourceVersion"].isdigit())
                held[(collection, item["metadata"].get("namespace", ""), item["metadata"]["name"])] = \
                    without_resource_version(item)
        self.assertEqual(held, {(c, ns, n): without_resource_version(o) for c, ns, n, o in expected})

    def test_every_object_and_field_is_kept(self) -> None:
        """Every object of every collection (a later kind and the core group too) reaches the file store whole, on
        disk, and comes back into an empty store as it was; only resourceVersions differ."""
        source = self.populated()
        target = self.file_store()
        report = self.successResultOf(done(migrate(source, target)))
        self.assertEqual(report.total, len(objects()))
        self.successResultOf(done(target.close()))
        reopened = FileStore.open(target.path)
        self.addCleanup(lambda: self.successResultOf(done(reopened.close())))
        self.assertHolds(reopened, objects())
        back = MemoryStore()
        self.successResultOf(done(migrate(reopened, back)))
        self.assertHolds(back, objects())

    def test_report_counts_each_collection_and_the_total(self) -> None:
        """The report has one line a collection (kubectl's name, with the group) and a total line."""
        report = self.successResultOf(done(migrate(self.populated(), MemoryStore())))
        self.assertEqual(report.lines(), [
            "configmaps: copied 1",
            "apiservices.apiregistration.k8s.io: copied 2",
            "externalnames.service.grafana.app: copied 2",
            "widgets.widgets.example.grafana.app: copied 1",
            "total: copied 6 objects in 4 collections",
        ])

    def test_target_in_the_way_is_refused_then_overwritten(self) -> None:
        """A target holding objects of the collections copied is refused, naming them and --overwrite, and nothing is
        written; with overwrite, the one of the same name is replaced (a new resourceVersion) and the other kept."""
        target = MemoryStore()
        self.successResultOf(done(target.create(APISERVICES, "", "v1.a.example", {"metadata": {"uid": "old"}})))
        self.successResultOf(done(target.create(APISERVICES, "", "v1.z.example", {"metadata": {"uid": "z"}})))
        before = target.current_resource_version()
        failure = self.failureResultOf(done(migrate(self.populated(), target)), MigrationError)
        message = str(failure.value)
        for part in ("already holds 2 objects", "apiservices.apiregistration.k8s.io v1.a.example",
                     "apiservices.apiregistration.k8s.io v1.z.example", "--overwrite", "nothing was copied"):
            self.assertIn(part, message)
        self.assertEqual(target.current_resource_version(), before)

        report = self.successResultOf(done(migrate(self.populated(), target, overwrite=True)))
        self.assertEqual((report.total, report.collections[1].replaced), (6, 1))
        self.assertIn("apiservices.apiregistration.k8s.io: copied 2 (1 replacing existing objects)", report.lines())
        replaced = self.successResultOf(done(target.get(APISERVICES, "", "v1.a.example")))
        self.assertEqual(without_resource_version(replaced), without_resource_version(objects()[0][3]))
        self.assertEqual(self.successResultOf(done(target.get(APISERVICES, "", "v1.z.example")))["metadata"]["uid"], "z")

    def test_other_collections_of_the_target_are_no_obstacle(self) -> None:
        """Objects of collections the source does not have are neither in the way nor touched."""
        target = MemoryStore()
        self.successResultOf(done(target.create(Collection("x.example", "others"), "", "o", {"metadata": {}})))
        self.assertEqual(self.successResultOf(done(migrate(self.populated(), target))).total, 6)

    def test_dry_run_writes_nothing(self) -> None:
        """A dry run reports the same counts and leaves the target empty."""
        target = self.file_store()
        report = self.successResultOf(done(migrate(self.populated(), target, dry_run=True)))
        self.assertEqual(report.total, 6)
        self.assertEqual(report.lines()[-1], "total: would copy 6 objects in 4 collections (dry run: nothing written)")
        self.assertEqual((target.current_resource_version(), self.successResultOf(done(target.stored_keys()))),
                         (0, {}))

    def test_failing_write_names_the_object(self) -> None:
        """A write the target refuses stops the copy with an error naming the object."""
        source = MemoryStore()
        self.successResultOf(done(source.create(EXTERNALNAMES, "grafana", "web", objects()[2][3])))
        target = self.file_store()

        def full(path: str, data: bytes) -> None:
            raise OSError(28, "No space left on device", path)

        target._write = full
        failure = self.failureResultOf(done(migrate(source, target)), MigrationError)
        self.assertIn("cannot copy externalnames.service.grafana.app grafana/web:", str(failure.value))
        self.assertIn("file system is full", str(failure.value))


class CommandTests(SynchronousTestCase):
    """The command over file stores: arguments, the report, and one-line errors."""

    def setUp(self) -> None:
        self.source = os.path.abspath(self.mktemp())
        store = FileStore.open(self.source)
        for collection, namespace, name, obj in objects():
            self.successResultOf(done(store.create(collection, namespace, name, obj)))
        self.successResultOf(done(store.close()))
        self.target = os.path.abspath(self.mktemp())

    def command(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = self.successResultOf(done(run(None, argv, out, err)))
        return code, out.getvalue(), err.getvalue()

    def test_copies_and_reports(self) -> None:
        """file: to file: copies and prints the stores, a line a collection and the total; exit 0."""
        code, out, err = self.command("--from", f"file:{self.source}", "--to", f"file:{self.target}")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[0], f"file:{self.source} -> file:{self.target}")
        self.assertEqual(out.splitlines()[-1], "total: copied 6 objects in 4 collections")
        copied = FileStore.open(self.target)
        self.addCleanup(lambda: self.successResultOf(done(copied.close())))
        self.assertEqual(sum(map(len, self.successResultOf(done(copied.stored_keys())).values())), 6)

    def test_dry_run_and_refusal_exit_codes(self) -> None:
        """A dry run exits 0 and writes nothing; a second copy onto the first is refused (exit 1, one line naming
        --overwrite); with --overwrite it succeeds."""
        code, out, _ = self.command("--from", f"file:{self.source}", "--to", f"file:{self.target}", "--dry-run")
        self.assertEqual(code, 0)
        self.assertIn("would copy 6", out)
        self.assertEqual([n for n in os.listdir(self.target) if not n.startswith(".")], [])
        self.assertEqual(self.command("--from", f"file:{self.source}", "--to", f"file:{self.target}")[0], 0)
        code, out, err = self.command("--from", f"file:{self.source}", "--to", f"file:{self.target}")
        self.assertEqual((code, out, err.count("\n")), (1, "", 1))
        self.assertIn("--overwrite", err)
        code, out, _ = self.command("--from", f"file:{self.source}", "--to", f"file:{self.target}", "--overwrite")
        self.assertEqual(code, 0)
        self.assertIn("(2 replacing existing objects)", out)

    def test_config_gives_the_storage_path(self) -> None:
        """With --config, a bare file: is the ini file's storage_path, as the daemon reads it."""
        ini = os.path.abspath(self.mktemp())
        with open(ini, "w") as handle:
            handle.write(f"[grafana-apiserver]\nstorage_path = {self.source}\n")
        code, out, err = self.command("--config", ini, "--from", "file:", "--to", f"file:{self.target}")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[-1], "total: copied 6 objects in 4 collections")

    def test_locked_store_says_stop_the_daemon(self) -> None:
        """A file store a daemon holds gives one line saying so (with its pid) and to stop the daemon; exit 1."""
        daemon = FileStore.open(self.source)
        self.addCleanup(lambda: self.successResultOf(done(daemon.close())))
        code, out, err = self.command("--from", f"file:{self.source}", "--to", f"file:{self.target}")
        self.assertEqual((code, out, err.count("\n")), (1, "", 1))
        self.assertIn(f"pid {os.getpid()}", err)
        self.assertIn("stop the daemon first", err)
        self.assertNotIn("Traceback", err)

    def test_bad_arguments(self) -> None:
        """A missing source folder, the same store twice, an etcd without endpoints and a bad endpoint are one line
        each (exit 1); an unknown store kind is a usage error (exit 2)."""
        missing = os.path.abspath(self.mktemp())
        cases = [
            (["--from", f"file:{missing}", "--to", f"file:{self.target}"], f"file:{missing}: there is no such folder"),
            (["--from", f"file:{self.source}", "--to", f"file:{self.source}"], "are the same store"),
            (["--from", f"file:{self.source}", "--to", "etcd:"], "needs its endpoints"),
            (["--from", f"file:{self.source}", "--to", "etcd:ftp://x"], "is not an etcd endpoint"),
            (["--from", f"file:{self.source}", "--to", "etcd:http://127.0.0.1:1", "--etcd-cafile", missing],
             "does not exist"),
        ]
        for argv, expected in cases:
            code, out, err = self.command(*argv)
            self.assertEqual((code, out, err.count("\n")), (1, "", 1), argv)
            self.assertIn(expected, err)
        self.assertFalse(os.path.exists(missing))
        code, out, err = self.command("--from", "s3:bucket", "--to", f"file:{self.target}")
        self.assertEqual((code, out), (2, ""))
        self.assertIn("'s3:bucket' is not a store: use file:<storage_path> or etcd:<endpoint>", err)


class EtcdMigrationTests(TestCase):
    """The command with a real etcd (the reactor runs: the etcd client resolves and connects as the daemon's)."""

    timeout = 60

    async def test_file_to_etcd_and_back_loses_nothing(self) -> None:
        """A populated file store goes to etcd (every object field by field, under `<prefix>/<group>/<resource>/`),
        then back into an empty file store, which then holds what the first held; a second copy is refused and
        --overwrite replaces; a key bound to a lease is not copied."""
        server = shared_etcd()
        prefix = f"/migrate/{self.id()}"
        source = os.path.abspath(self.mktemp())
        store = FileStore.open(source)
        for collection, namespace, name, obj in objects():
            await store.create(collection, namespace, name, obj)
        await store.close()

        out, err = io.StringIO(), io.StringIO()
        argv = ["--from", f"file:{source}", "--to", f"etcd:{server.url}", "--etcd-prefix", prefix]
        self.assertEqual((await run(reactor, argv, out, err), err.getvalue()), (0, ""))
        self.assertIn("total: copied 6 objects in 4 collections", out.getvalue())

        etcd = EtcdStore(client_for(server), reactor, prefix)
        self.addCleanup(lambda: Deferred.fromCoroutine(etcd.close()))
        keys = await etcd.stored_keys()
        self.assertEqual(keys, {c: {(ns, n) for c2, ns, n, _ in objects() if c2 == c} for c, _, _, _ in objects()})
        for collection, namespace, name, obj in objects():
            self.assertEqual(without_resource_version(await etcd.get(collection, namespace, name)), obj)
        raw = await etcd.client.range(f"{prefix}/core/configmaps/grafana/settings".encode())
        self.assertEqual(len(raw["kvs"]), 1)
        lease = await etcd.client.call("lease/grant", {"TTL": 60}, idempotent=False)
        from grafana_aggregator.storage.etcd_client import b64
        await etcd.client.call("kv/put", {"key": b64(f"{prefix}/leases.example/views/r1".encode()),
                                          "value": b64(b'{"metadata":{"name":"r1"}}'), "lease": lease["ID"]},
                               idempotent=False)

        back = os.path.abspath(self.mktemp())
        argv = ["--from", f"etcd:{server.url}", "--etcd-prefix", prefix, "--to", f"file:{back}"]
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual((await run(reactor, argv, out, err), err.getvalue()), (0, ""))
        self.assertNotIn("leases.example", out.getvalue())
        restored = FileStore.open(back)
        try:
            held = {}
            for collection, found in (await restored.stored_keys()).items():
                for namespace, name in found:
                    held[(collection, namespace, name)] = without_resource_version(
                        await restored.get(collection, namespace, name))
        finally:
            await restored.close()
        self.assertEqual(held, {(c, ns, n): o for c, ns, n, o in objects()})

        argv = ["--from", f"file:{source}", "--to", f"etcd:{server.url}", "--etcd-prefix", prefix]
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(await run(reactor, argv, out, err), 1)
        self.assertIn("already holds 6 objects", err.getvalue())
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(await run(reactor, [*argv, "--overwrite"], out, err), 0)
        self.assertIn("total: copied 6 objects", out.getvalue())
        self.assertEqual(without_resource_version(await etcd.get(APISERVICES, "", "v1.a.example")), objects()[0][3])

    async def test_unreachable_etcd_is_one_line(self) -> None:
        """With nothing listening at the endpoint, the command fails at once with one line naming etcd; exit 1."""
        source = os.path.abspath(self.mktemp())
        store = FileStore.open(source)
        await store.create(*objects()[2])
        await store.close()
        out, err = io.StringIO(), io.StringIO()
        argv = ["--from", f"file:{source}", "--to", f"etcd:http://127.0.0.1:{free_port()}", "--etcd-timeout", "3"]
        self.assertEqual(await run(reactor, argv, out, err), 1)
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("etcd cannot be reached", err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())
