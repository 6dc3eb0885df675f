# -*- test-case-name: tests.integration.test_etcd_e2e -*-
"""The installed daemon with `storage_type = etcd` on a real etcd started by the test: the Python kubernetes client
creates, gets, lists, watches and deletes APIServices; objects outlive the daemon; paging keeps its snapshot until
etcd compacts it (410); a watch from before the cache is 410; with etcd stopped, writes get 503 at once and
/readyz fails naming etcd, and everything recovers by itself when etcd returns.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from typing import Any

import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from ..etcd import EtcdServer
from .test_daemon import TWISTD, DaemonProcess

APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"


def apiservice(group: str) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": f"v1.{group}"},
            "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "insecureSkipTLSVerify": True, "service": {"name": "x", "namespace": "grafana", "port": 7443}}}


class EtcdDaemonTests(TestCase):
    """The daemon over etcd, end to end."""

    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        self.folder = os.path.abspath(self.mktemp())
        self.data = os.path.join(self.folder, "data")
        os.makedirs(self.data)
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}
        self.env.pop("KUBECONFIG", None)
        self.etcd = EtcdServer()
        self.addCleanup(self.etcd.remove)
        await deferToThread(self.etcd.start)

    async def start(self) -> DaemonProcess:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", self.data, "--ensure-kubectl-access", "true", "--storage-type", "etcd",
                "--etcd-servers", self.etcd.url, "--etcd-prefix", "/e2e", "--request-timeout", "6s"]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        self.url = await daemon.serving
        self.kubeconfig = os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")
        with open(self.kubeconfig) as handle:
            token = yaml.safe_load(handle)["users"][0]["user"]["token"]
        with open(os.path.join(self.data, "grafana-apiserver", "certs", "apiserver.crt"), "rb") as handle:
            anchor = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", handle.read(), re.S)[-1]
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor)),
                                       pool=HTTPConnectionPool(reactor, persistent=False)))
        self.headers = {"Authorization": f"Bearer {token}"}
        await self.wait_ready()
        return daemon

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        response = await self.client.request(method, self.url + path, data=data,
                                             headers={**self.headers, "Content-Type": "application/json"})
        text = await response.text()
        try:
            return response.code, json.loads(text)
        except ValueError:
            return response.code, text

    async def wait_ready(self, seconds: float = 20.0) -> None:
        for _ in range(int(seconds * 10)):
            code, _ = await self.request("GET", "/readyz")
            if code == 200:
                return
            await deferLater(reactor, 0.1, lambda: None)
        code, body = await self.request("GET", "/readyz?verbose")
        self.fail(f"/readyz still answers {code}:\n{body}")

    def compact(self) -> None:
        """Compact etcd to its latest revision (through its gateway, as etcdctl compact would)."""
        with urllib.request.urlopen(urllib.request.Request(f"{self.etcd.url}/v3/kv/range", data=b'{"key":"AA=="}'),
                                    timeout=5) as answer:
            revision = json.load(answer)["header"]["revision"]
        body = json.dumps({"revision": revision, "physical": True}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{self.etcd.url}/v3/kv/compaction", data=body),
                                    timeout=5):
            pass

    async def test_python_client_crud_and_watch(self) -> None:
        """Create, get, list, watch and delete an APIService with the kubernetes client; it is kept in etcd under
        the prefix, and a second daemon on the same etcd serves it."""
        await self.start()

        def steps() -> list[Any]:
            from kubernetes import client, config, dynamic

            configuration = client.Configuration()
            config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
            api = dynamic.DynamicClient(client.ApiClient(configuration=configuration)).resources.get(
                api_version="apiregistration.k8s.io/v1", kind="APIService")
            start = api.get().metadata.resourceVersion
            created = api.create(body=apiservice("a.example"))
            # The same object (the availability controller may already have written its status: compare uids).
            seen: list[Any] = [api.get(name="v1.a.example").metadata.uid == created.metadata.uid]
            seen.append("v1.a.example" in [i.metadata.name for i in api.get().items])
            api.patch(name="v1.a.example", body={"spec": {"versionPriority": 20}},
                      content_type="application/merge-patch+json")
            api.create(body=apiservice("b.example"))
            api.delete(name="v1.b.example")
            events = []
            for event in api.watch(resource_version=start, timeout=5):
                if event["object"].metadata.name in ("v1.a.example", "v1.b.example"):
                    events.append((event["type"], event["object"].metadata.name))
                if event["type"] == "DELETED":
                    break
            seen.append(events)
            return seen

        found, listed, events = await deferToThread(steps)
        # The availability controller writes status too: more MODIFIED events may come between these.
        self.assertEqual((found, listed, events[0], events[-1]),
                         (True, True, ("ADDED", "v1.a.example"), ("DELETED", "v1.b.example")))
        self.assertEqual([e for e in events if e[0] != "MODIFIED"],
                         [("ADDED", "v1.a.example"), ("ADDED", "v1.b.example"), ("DELETED", "v1.b.example")])
        self.assertIn(("MODIFIED", "v1.a.example"), events)
        with urllib.request.urlopen(urllib.request.Request(
                f"{self.etcd.url}/v3/kv/range",
                data=json.dumps({"key": "L2UyZS9hcGlyZWdpc3RyYXRpb24uazhzLmlvL2FwaXNlcnZpY2VzL3YxLmEuZXhhbXBsZQ=="})
                .encode()), timeout=5) as answer:
            stored = json.load(answer)["kvs"]
        self.assertEqual(len(stored), 1)  # /e2e/apiregistration.k8s.io/apiservices/v1.a.example

    async def test_paging_snapshot_then_compaction(self) -> None:
        """The pages after the first come from its snapshot, whatever was written since; once etcd compacted that
        snapshot, the continue token is 410 Expired; a watch from before this daemon's cache is 410 too."""
        for _ in range(2):  # writes before the daemon starts, outside its prefix
            with urllib.request.urlopen(urllib.request.Request(f"{self.etcd.url}/v3/kv/put",
                                                               data=b'{"key":"L290aGVy","value":"eA=="}'), timeout=5):
                pass
        await self.start()
        for group in ("a.example", "b.example", "c.example"):
            self.assertEqual((await self.request("POST", APISERVICES, apiservice(group)))[0], 201)
        code, first = await self.request("GET", f"{APISERVICES}?limit=2")
        self.assertEqual(code, 200)
        await self.request("POST", APISERVICES, apiservice("aa.example"))
        await self.request("DELETE", f"{APISERVICES}/v1.c.example")
        code, rest = await self.request("GET", f"{APISERVICES}?limit=500&continue={first['metadata']['continue']}")
        names = [i["metadata"]["name"] for i in first["items"] + rest["items"]]
        self.assertIn("v1.c.example", names)
        self.assertNotIn("v1.aa.example", names)
        self.assertEqual(rest["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"])
        await deferToThread(self.compact)
        code, expired = await self.request("GET", f"{APISERVICES}?limit=2&continue={first['metadata']['continue']}")
        self.assertEqual((code, expired["reason"]), (410, "Expired"))
        code, watched = await self.request("GET", f"{APISERVICES}?watch=1&resourceVersion=2&timeoutSeconds=1")
        self.assertEqual(code, 200, watched)
        self.assertEqual((watched["type"], watched["object"]["code"], watched["object"]["reason"]),
                         ("ERROR", 410, "Expired"))

    async def test_etcd_down_then_back(self) -> None:
        """With etcd stopped, a write answers 503 at once (well within the request timeout) and /readyz fails
        naming etcd; when etcd returns, /readyz passes and writes work, without a restart; no traceback is logged."""
        daemon = await self.start()
        self.assertEqual((await self.request("POST", APISERVICES, apiservice("a.example")))[0], 201)
        await deferToThread(self.etcd.stop)
        started = time.monotonic()
        code, status = await self.request("POST", APISERVICES, apiservice("b.example"))
        self.assertLess(time.monotonic() - started, 6.0)
        self.assertEqual((code, status["kind"], status["reason"]), (503, "Status", "ServiceUnavailable"))
        self.assertIn("etcd cannot be reached", status["message"])
        for _ in range(50):
            code, body = await self.request("GET", "/readyz?verbose")
            if code != 200:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(code, 500)
        self.assertIn("[-]etcd failed", body)
        await deferToThread(self.etcd.start)
        await self.wait_ready()
        self.assertEqual((await self.request("POST", APISERVICES, apiservice("b.example")))[0], 201)
        code, listed = await self.request("GET", APISERVICES)
        self.assertTrue({"v1.a.example", "v1.b.example"} <= {i["metadata"]["name"] for i in listed["items"]})
        self.assertNotIn(b"Traceback", daemon.output, daemon.output.decode())
        self.assertNotIn(b"Starting factory", daemon.output)
