# -*- test-case-name: tests.integration.test_etcd_replicas -*-
"""The seed's walk-through on etcd with two replicas: two aggregator processes (their own ports and data folders,
the same etcd, dev PKI, serving certificate and kubectl token), the example backend, and kubectl.

The APIService is applied through replica A; it turns Available on both, the example backend is reached through
both, and a write through A appears in a list and a watch on B (within 5 s here; the 1 s target is the bench's).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from typing import Any

import treq
import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from ..etcd import EtcdServer
from .test_daemon import TWISTD, DaemonProcess
from .test_etcd_faults import Watcher
from .test_seed_walkthrough import WalkthroughCase

EXTERNALNAMES = "/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames"


class Replica:
    """One aggregator process: its ini file, data folder, kubeconfig and an HTTPS client with its token."""

    def __init__(self, name: str, ini: str, data: str) -> None:
        self.name = name
        self.ini = ini
        self.data = data
        self.kubeconfig = os.path.join(data, "grafana-apiserver", "grafana.kubeconfig")
        self.process = DaemonProcess()
        self.url = ""
        self.token = ""
        self.client: HTTPClient | None = None

    def connect(self, pool: HTTPConnectionPool) -> None:
        """Read the kubeconfig the replica wrote: its URL, CA and token."""
        with open(self.kubeconfig) as handle:
            config = yaml.safe_load(handle)
        cluster = config["clusters"][0]["cluster"]
        anchor = ssl.Certificate.loadPEM(base64.b64decode(cluster["certificate-authority-data"]))
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=anchor), pool=pool))
        self.url = cluster["server"]
        self.token = config["users"][0]["user"]["token"]


class EtcdReplicasWalkthroughTests(WalkthroughCase):
    """kubectl, two aggregator replicas on one etcd, and the example backend."""

    timeout = 240

    async def setUp(self) -> None:  # type: ignore[override]
        super().setUp()
        self.etcd = EtcdServer()
        self.addCleanup(self.etcd.remove)
        await deferToThread(self.etcd.start)
        with open(self.ini) as handle:
            ini = handle.read()
        self.replicas = []
        for name in ("a", "b"):
            data = self.data if name == "a" else os.path.join(self.folder, "data-b")
            path = os.path.join(self.folder, f"replica-{name}.ini")
            with open(path, "w") as handle:
                handle.write(ini.replace(f"data = {self.data}", f"data = {data}").replace(
                    "storage_type = file",
                    f"storage_type = etcd\netcd_servers = {self.etcd.url}\netcd_prefix = /replicas"))
            self.replicas.append(Replica(name, path, data))
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def start_replica(self, replica: Replica) -> None:
        self.spawn(replica.process, TWISTD, [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator",
                                             "--config", replica.ini])
        await replica.process.serving
        replica.connect(self.pool)

    async def kubectl_on(self, replica: Replica, *args: str, ok: bool = True) -> tuple[str, str]:
        return await self.kubectl("--kubeconfig", replica.kubeconfig, *args, ok=ok)

    async def available_on(self, replica: Replica, within: float) -> float:
        started = time.monotonic()
        cell = ""
        while time.monotonic() - started < within:
            out, _ = await self.kubectl_on(replica, "get", "apiservice", "v0alpha1.example.grafana.app",
                                           "--no-headers")
            cell = " ".join(out.split()[2:-1])
            if cell == "True":
                return time.monotonic() - started
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"AVAILABLE stayed {cell!r} on replica {replica.name} within {within}s")

    async def test_walkthrough_on_two_replicas(self) -> None:
        """The APIService applied through A turns Available on A and B, the example backend answers through both,
        and a write through A is in B's list and watch within 5 s."""
        a, b = self.replicas
        await self.start_replica(a)
        # B is another machine's replica of the same deployment: the same serving certificate and kubectl token.
        shutil.copytree(os.path.join(a.data, "grafana-apiserver"), os.path.join(b.data, "grafana-apiserver"),
                        ignore=shutil.ignore_patterns("grafana.kubeconfig"))
        await self.start_replica(b)
        self.assertNotEqual(a.url, b.url)
        self.assertEqual(a.token, b.token)

        out, _ = await self.kubectl_on(a, "apply", "-f", self.manifests)
        self.assertEqual(out.splitlines(), [
            "apiservice.apiregistration.k8s.io/v0alpha1.example.grafana.app created",
            "externalname.service.grafana.app/example-apiserver created",
        ])
        out, _ = await self.kubectl_on(b, "get", "externalname", "-n", "grafana", "example-apiserver", "-o", "name")
        self.assertEqual(out.strip(), "externalname.service.grafana.app/example-apiserver")

        self.start_example()
        for replica in (a, b):
            seconds = await self.available_on(replica, within=15)
            print(f"\nAvailable on replica {replica.name} after {seconds:.2f} s more")
        for replica in (a, b):
            out, _ = await self.kubectl_on(replica, "get", "--raw",
                                           "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy")
            self.assertEqual([i["metadata"]["name"] for i in json.loads(out)["items"]], ["test1", "test2", "test3"])
            out, _ = await self.kubectl_on(replica, "get", "--raw",
                                           "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy/test1/sub")
            self.assertEqual(json.loads(out)["identity"]["user"], "system:apiserver")
            out, _ = await self.kubectl_on(replica, "get", "dummy", "-n", "default")
            self.assertEqual([line.split()[0] for line in out.splitlines()], ["NAME", "test1", "test2", "test3"])

        # A write through A: in B's list and B's watch.
        assert a.client is not None and b.client is not None
        response = await b.client.get(b.url + EXTERNALNAMES, headers={"Authorization": f"Bearer {b.token}"})
        listed: Any = await response.json()
        watcher = Watcher()
        response = await b.client.get(
            f"{b.url}{EXTERNALNAMES}?watch=1&resourceVersion={listed['metadata']['resourceVersion']}",
            headers={"Authorization": f"Bearer {b.token}"})
        self.assertEqual(response.code, 200)
        watcher.ended = treq.collect(response, watcher.received)
        watcher.ended.addErrback(lambda failure: None)
        ended = watcher.ended

        async def close() -> None:  # B's exit ends the stream
            await b.process.stop()
            await ended

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        started = time.monotonic()
        response = await a.client.post(a.url + EXTERNALNAMES, headers={"Authorization": f"Bearer {a.token}"},
                                       json={"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                                             "metadata": {"name": "through-a", "namespace": "grafana"},
                                             "spec": {"host": "a.example"}})
        created: Any = await response.json()
        self.assertEqual(response.code, 201, created)
        wanted = ("ADDED", "through-a", created["metadata"]["resourceVersion"])
        while wanted not in watcher.seen() and time.monotonic() - started < 5:
            await deferLater(reactor, 0.005, lambda: None)
        watched = time.monotonic() - started
        self.assertIn(wanted, watcher.seen())
        response = await b.client.get(b.url + EXTERNALNAMES, headers={"Authorization": f"Bearer {b.token}"})
        names = [i["metadata"]["name"] for i in (await response.json())["items"]]
        listed_after = time.monotonic() - started
        self.assertIn("through-a", names)
        print(f"a write through A: in B's watch {watched * 1000:.0f} ms after the request was sent "
              f"(in B's list after {listed_after * 1000:.0f} ms)")
        for replica in (a, b):
            self.assertNotIn(b"Traceback", replica.process.output, replica.process.output.decode())

    async def test_custom_resources_on_two_replicas(self) -> None:
        """A CRD created through A is established (by whichever replica leads) and its kind served by B: an instance
        created through B is read through A, and deleting the CRD through B removes the kind on both."""
        a, b = self.replicas
        await self.start_replica(a)
        shutil.copytree(os.path.join(a.data, "grafana-apiserver"), os.path.join(b.data, "grafana-apiserver"),
                        ignore=shutil.ignore_patterns("grafana.kubeconfig"))
        await self.start_replica(b)
        crd = os.path.join(self.folder, "widgets.yaml")
        with open(crd, "w") as handle:
            handle.write(WIDGETS_CRD)
        await self.kubectl_on(a, "apply", "-f", crd)
        started = time.monotonic()
        await self.kubectl_on(b, "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s")
        body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "default"},
                "spec": {"size": 2}}
        assert a.client is not None and b.client is not None
        url = "/apis/example.com/v1/namespaces/default/widgets"
        while True:  # B serves the kind once its own informer has seen the CRD established
            response = await b.client.post(b.url + url, headers={"Authorization": f"Bearer {b.token}"}, json=body)
            created: Any = await response.json()
            if response.code != 404 or time.monotonic() - started > 5:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(response.code, 201, created)
        print(f"\nCRD applied through A: an instance created through B after {time.monotonic() - started:.2f} s")
        out, _ = await self.kubectl_on(a, "get", "widgets", "-n", "default", "-o", "jsonpath={.items[*].spec.size}")
        self.assertEqual(out, "2")
        await self.kubectl_on(b, "delete", "crd", "widgets.example.com", "--timeout=30s")
        for replica in (a, b):
            for _ in range(50):  # each replica stops serving the kind once its informer sees the CRD gone
                _, err = await self.kubectl_on(replica, "get", "--raw", url, ok=False)
                if "NotFound" in err:
                    break
                await deferLater(reactor, 0.1, lambda: None)
            self.assertIn("NotFound", err)
        for replica in (a, b):
            self.assertNotIn(b"Traceback", replica.process.output, replica.process.output.decode())


WIDGETS_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"""
