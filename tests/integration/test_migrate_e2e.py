# -*- test-case-name: tests.integration.test_migrate_e2e -*-
"""`grafana-aggregator-migrate`, installed, between the daemon's file storage and a real etcd: a store populated
through the daemon's REST API (APIServices with labels and status conditions, ExternalNames in two namespaces,
managed fields from a server-side apply) goes to etcd and back with nothing lost but resourceVersions, and a
daemon started on the migrated etcd serves the same objects; while the daemon holds the file store, the command
refuses to run, saying to stop it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from grafana_aggregator.storage.etcd import EtcdStore
from grafana_aggregator.storage.file import FileStore

from ..etcd import EtcdServer, client_for
from .test_daemon import BIN, TWISTD, DaemonProcess

MIGRATE = os.path.join(BIN, "grafana-aggregator-migrate")
APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
EXTERNALNAMES = "/apis/service.grafana.app/v0alpha1/namespaces/{}/externalnames"
PREFIX = "/migrated"


def apiservice(group: str) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": f"v1.{group}", "labels": {"team": group.split(".")[0]}},
            "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "insecureSkipTLSVerify": True, "service": {"name": "missing", "namespace": "grafana",
                                                                "port": 7443}}}


async def everything(store: Any) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Every object of a store by (group, resource, namespace, name), without its resourceVersion."""
    held = {}
    for collection, keys in (await store.stored_keys()).items():
        for namespace, name in keys:
            obj = await store.get(collection, namespace, name)
            obj["metadata"].pop("resourceVersion")
            held[(collection.group, collection.resource, namespace, name)] = obj
    return held


class MigrateDaemonTests(TestCase):
    """The command on the daemon's own stores."""

    timeout = 180

    async def setUp(self) -> None:  # type: ignore[override]
        self.folder = os.path.abspath(self.mktemp())
        self.data = os.path.join(self.folder, "data")
        self.storage = os.path.join(self.data, "grafana-apiserver")
        os.makedirs(self.data)
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}
        self.env.pop("KUBECONFIG", None)
        self.etcd = EtcdServer()
        self.addCleanup(self.etcd.remove)
        await deferToThread(self.etcd.start)

    async def start(self, *storage: str) -> DaemonProcess:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", self.data, "--ensure-kubectl-access", "true", *storage]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        self.url = await daemon.serving
        with open(os.path.join(self.storage, "grafana.kubeconfig")) as handle:
            token = yaml.safe_load(handle)["users"][0]["user"]["token"]
        with open(os.path.join(self.storage, "certs", "apiserver.crt"), "rb") as handle:
            anchor = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", handle.read(), re.S)[-1]
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor)),
                                       pool=HTTPConnectionPool(reactor, persistent=False)))
        self.headers = {"Authorization": f"Bearer {token}"}
        return daemon

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        data = (body if isinstance(body, bytes) else json.dumps(body).encode()) if body is not None else None
        response = await self.client.request(method, self.url + path, data=data,
                                             headers={**self.headers, "Content-Type": content_type})
        text = await response.text()
        try:
            return response.code, json.loads(text)
        except ValueError:
            return response.code, text

    async def migrate(self, *argv: str) -> tuple[int, str, str]:
        out, err, code = await getProcessOutputAndValue(MIGRATE, argv, env=self.env, path=self.folder)
        return code, out.decode(), err.decode()

    async def populate(self) -> None:
        """APIServices with labels (the availability controller adds their conditions), ExternalNames in two
        namespaces, one of them made by a server-side apply (managed fields)."""
        for group in ("a.example", "b.example"):
            code, body = await self.request("POST", APISERVICES, apiservice(group))
            self.assertEqual(code, 201, body)
        code, body = await self.request("POST", EXTERNALNAMES.format("other"), {
            "apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"note": "kept"}},
            "spec": {"host": "web.other.example"}})
        self.assertEqual(code, 201, body)
        applied = b"apiVersion: service.grafana.app/v0alpha1\nkind: ExternalName\nmetadata:\n  name: web\n" \
                  b"  labels:\n    app: web\nspec:\n  host: web.example\n"
        code, body = await self.request("PATCH", EXTERNALNAMES.format("grafana") + "/web?fieldManager=migrate-test",
                                        applied, "application/apply-patch+yaml")
        self.assertIn(code, (200, 201), body)
        self.assertEqual(body["metadata"]["managedFields"][0]["manager"], "migrate-test")
        for _ in range(100):
            code, body = await self.request("GET", f"{APISERVICES}/v1.a.example")
            if body.get("status", {}).get("conditions"):
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(body["status"]["conditions"], body)

    async def test_file_to_etcd_and_back(self) -> None:
        """Populated through the daemon, the file store goes to etcd and back with every object and field (but
        resourceVersion) as it was, and a daemon on the migrated etcd lists the same objects."""
        daemon = await self.start()
        await self.populate()
        code, out, err = await self.migrate("--from", f"file:{self.storage}", "--to", f"etcd:{self.etcd.url}")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("stop the daemon first", err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(await daemon.stop(), 0)

        store = FileStore.open(self.storage)
        try:
            original = await everything(store)
        finally:
            await store.close()
        self.assertTrue({("apiregistration.k8s.io", "apiservices", "", "v1.a.example"),
                         ("service.grafana.app", "externalnames", "grafana", "web"),
                         ("service.grafana.app", "externalnames", "other", "web")} <= set(original))

        code, out, err = await self.migrate("--from", f"file:{self.storage}", "--to", f"etcd:{self.etcd.url}",
                                            "--etcd-prefix", PREFIX)
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn(f"total: copied {len(original)} objects in 2 collections", out)
        etcd = EtcdStore(client_for(self.etcd), reactor, PREFIX)
        try:
            self.assertEqual(await everything(etcd), original)
        finally:
            await etcd.close()

        back = os.path.join(self.folder, "back")
        code, out, err = await self.migrate("--from", f"etcd:{self.etcd.url}", "--etcd-prefix", PREFIX,
                                            "--to", f"file:{back}")
        self.assertEqual((code, err), (0, ""), out)
        store = FileStore.open(back)
        try:
            self.assertEqual(await everything(store), original)
        finally:
            await store.close()

        await self.start("--storage-type", "etcd", "--etcd-servers", self.etcd.url, "--etcd-prefix", PREFIX)
        code, listed = await self.request("GET", APISERVICES)
        self.assertEqual(code, 200, listed)
        self.assertEqual({(i["metadata"]["name"], i["metadata"]["uid"]) for i in listed["items"]},
                         {(k[3], o["metadata"]["uid"]) for k, o in original.items() if k[1] == "apiservices"})
        code, web = await self.request("GET", EXTERNALNAMES.format("grafana") + "/web")
        self.assertEqual(code, 200, web)
        web["metadata"].pop("resourceVersion")
        self.assertEqual(web, original[("service.grafana.app", "externalnames", "grafana", "web")])
