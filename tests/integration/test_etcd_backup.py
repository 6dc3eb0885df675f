# -*- test-case-name: tests.integration.test_etcd_backup -*-
"""The etcd backup and restore procedure of docs/operations.md, run for real: objects written through the daemon,
`etcdctl snapshot save`, more writes, the aggregator and etcd stopped, the data folder wiped, `etcdctl snapshot
restore` into a new one, etcd's revision raised past the old one and compacted, a fresh daemon: the backup's
objects are back and served, later ones are gone, and a watch from a resourceVersion of before the restore is
410 Expired (so clients list again) instead of silently missing events.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from treq.client import HTTPClient

from ..etcd import EtcdServer, etcdctl_binary
from .test_daemon import TWISTD, DaemonProcess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "/backup-test"
EXTERNALNAMES = "/apis/service.grafana.app/v0alpha1/namespaces/ops/externalnames"
APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
TOKEN = "backup-test-token-0123456789"


def externalname(name: str) -> dict[str, Any]:
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": name, "namespace": "ops"}, "spec": {"host": f"{name}.example"}}


APISERVICE = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1.kept.example"},
              "spec": {"group": "kept.example", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                       "insecureSkipTLSVerify": True, "service": {"name": "n1", "namespace": "ops", "port": 7443}}}


class EtcdBackupRestoreTests(TestCase):
    """etcdctl snapshot save and restore under a real daemon."""

    timeout = 180

    async def setUp(self) -> None:  # type: ignore[override]
        self.etcdctl = etcdctl_binary()
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        with open(os.path.join(self.folder, "tokens.csv"), "w") as handle:
            handle.write(f'{TOKEN},ops-admin,ops-admin-uid,"system:masters"\n')
        self.etcd = EtcdServer()
        self.addCleanup(self.etcd.remove)
        await deferToThread(self.etcd.start)

    def ctl(self, *argv: str) -> str:
        """Run etcdctl (v3 API) against the test's etcd; its standard output."""
        completed = subprocess.run([self.etcdctl, "--endpoints", self.etcd.url, *argv], capture_output=True,
                                   text=True, timeout=60, env={**os.environ, "ETCDCTL_API": "3"})
        if completed.returncode:
            raise AssertionError(f"etcdctl {' '.join(argv)} exited {completed.returncode}:\n{completed.stderr}")
        return completed.stdout

    async def start_daemon(self, name: str) -> DaemonProcess:
        """A daemon on the test's etcd, serving on loopback with its self-signed certificate."""
        daemon = DaemonProcess()
        data = os.path.join(self.folder, f"{name}-data")
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", data, "--token-auth-file", os.path.join(self.folder, "tokens.csv"),
                "--storage-type", "etcd", "--etcd-servers", self.etcd.url, "--etcd-prefix", PREFIX]
        env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        self.url = await daemon.serving
        with open(os.path.join(data, "grafana-apiserver", "certs", "apiserver.crt"), "rb") as handle:
            anchor = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", handle.read(), re.S)[-1]
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor)),
                                       pool=HTTPConnectionPool(reactor, persistent=False)))
        for _ in range(200):
            if (await self.request("GET", "/readyz"))[0] == 200:
                return daemon
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"the daemon never became ready:\n{daemon.output.decode()}")

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        response = await self.client.request(method, self.url + path, data=data, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        text = await response.text()
        try:
            return response.code, json.loads(text)
        except ValueError:
            return response.code, text

    async def names(self) -> list[str]:
        code, listed = await self.request("GET", EXTERNALNAMES)
        self.assertEqual(code, 200, listed)
        return sorted(item["metadata"]["name"] for item in listed["items"])

    async def test_snapshot_save_wipe_restore(self) -> None:
        """The documented procedure brings back exactly the snapshot's objects, served by a fresh daemon, and old
        resourceVersions are 410 Expired afterwards."""
        daemon = await self.start_daemon("before")
        for name in ("n0", "n1", "n2"):
            self.assertEqual((await self.request("POST", EXTERNALNAMES, externalname(name)))[0], 201)
        self.assertEqual((await self.request("POST", APISERVICES, APISERVICE))[0], 201)
        uid = (await self.request("GET", f"{EXTERNALNAMES}/n1"))[1]["metadata"]["uid"]

        backup = os.path.join(self.folder, "backup.db")
        saved = await deferToThread(self.ctl, "snapshot", "save", backup)
        self.assertIn("Snapshot saved at", saved)
        status = json.loads(await deferToThread(self.ctl, "snapshot", "status", backup, "-w", "json"))
        keys = await deferToThread(self.ctl, "get", "--prefix", f"{PREFIX}/", "--keys-only")
        self.assertIn(f"{PREFIX}/service.grafana.app/externalnames/ops/n1", keys.split())

        # Changes after the backup: lost by the restore.
        self.assertEqual((await self.request("POST", EXTERNALNAMES, externalname("later")))[0], 201)
        self.assertEqual((await self.request("DELETE", f"{EXTERNALNAMES}/n0"))[0], 200)
        code, listed = await self.request("GET", EXTERNALNAMES)
        before = int(listed["metadata"]["resourceVersion"])
        self.assertGreater(before, status["revision"])

        # Stop every aggregator, then etcd; wipe its data; restore the snapshot into a new data folder.
        self.assertEqual(await daemon.stop(), 0)
        await deferToThread(self.etcd.stop)
        data = os.path.join(self.etcd.folder, "data")
        shutil.rmtree(data)
        peer = f"http://127.0.0.1:{self.etcd.peer_port}"
        await deferToThread(self.ctl, "snapshot", "restore", backup, "--name", "test", "--data-dir", data,
                            "--initial-cluster", f"test={peer}", "--initial-advertise-peer-urls", peer)
        await deferToThread(self.etcd.start)

        # etcd's revision went back to the snapshot's: raise it past the old one, then compact there.
        header = json.loads(await deferToThread(self.ctl, "endpoint", "status", "-w", "json"))[0]["Status"]["header"]
        self.assertEqual(header["revision"], status["revision"])
        for _ in range(before - header["revision"]):
            await deferToThread(self.ctl, "put", "/grafana-aggregator-restore", "x")
        fields = await deferToThread(self.ctl, "put", "/grafana-aggregator-restore", "x", "-w", "fields")
        bumped = int(re.search(r'^"Revision" : (\d+)$', fields, re.M).group(1))  # type: ignore[union-attr]
        self.assertGreater(bumped, before)
        await deferToThread(self.ctl, "compact", str(bumped))
        await deferToThread(self.ctl, "del", "/grafana-aggregator-restore")

        await self.start_daemon("after")
        self.assertEqual(await self.names(), ["n0", "n1", "n2"])
        code, restored = await self.request("GET", f"{EXTERNALNAMES}/n1")
        self.assertEqual((code, restored["metadata"]["uid"]), (200, uid))
        self.assertEqual((await self.request("GET", f"{APISERVICES}/v1.kept.example"))[0], 200)
        code, watched = await self.request("GET", f"{EXTERNALNAMES}?watch=1&resourceVersion={before}&timeoutSeconds=2")
        self.assertEqual(code, 200, watched)
        # Without the raised revision this watch would wait, silent, for revisions the restored etcd has not reached.
        self.assertIsInstance(watched, dict, "the watch from before the restore ended without an event")
        self.assertEqual((watched["type"], watched["object"]["code"], watched["object"]["reason"]),
                         ("ERROR", 410, "Expired"))
        code, created = await self.request("POST", EXTERNALNAMES, externalname("after"))
        self.assertEqual(code, 201, created)
        self.assertGreater(int(created["metadata"]["resourceVersion"]), before)


class DocumentedProcedureTests(TestCase):
    """docs/operations.md describes the procedure the test above runs."""

    def test_commands_documented(self) -> None:
        """The etcd section names the etcdctl commands and flags the test uses, in etcd 3.4's syntax."""
        with open(os.path.join(REPO, "docs", "operations.md")) as handle:
            text = handle.read()
        for needle in ("etcdctl snapshot save", "etcdctl snapshot restore", "--initial-cluster",
                       "--initial-advertise-peer-urls", "etcdctl compact", "etcdctl snapshot status"):
            self.assertTrue(needle in text, f"docs/operations.md does not mention {needle}")
        self.assertTrue("ETCDCTL_API=3" in text, "docs/operations.md does not set ETCDCTL_API=3")


class EtcdctlBinaryTests(TestCase):
    """tests/etcd.py's etcdctl_binary: a missing etcdctl skips locally and fails in CI, never passes silently."""

    def test_missing(self) -> None:
        """Without etcdctl on PATH: SkipTest naming the Debian package, or RuntimeError when CI is set."""
        self.patch(os, "environ", {**os.environ, "PATH": self.mktemp()})
        os.environ.pop("CI", None)
        with self.assertRaises(SkipTest) as skipped:
            etcdctl_binary()
        self.assertIn("apt-get install etcd-client", str(skipped.exception))
        os.environ["CI"] = "true"
        self.assertRaises(RuntimeError, etcdctl_binary)
