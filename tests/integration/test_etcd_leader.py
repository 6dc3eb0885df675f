# -*- test-case-name: tests.integration.test_etcd_leader -*-
"""Two aggregator replicas on a 3-member etcd cluster, as real processes: when the leader is SIGKILLed, status writes
resume on the other within twice the lease TTL; a leader cut off from etcd stops leading within the TTL; a replica
cut off from a backend (the backend refuses its client certificate) never flips the shared `Available` condition,
and answers 503 for that backend itself; after an etcd outage a leader is elected again by itself."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.request
from typing import Any

import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols import portforward
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from ..etcd import EtcdCluster
from .test_daemon import TWISTD, DaemonProcess
from .test_seed_walkthrough import REPO, WalkthroughCase

#: The lease TTL the replicas run with (seconds): short, so that the test is short.
TTL = 3
PREFIX = "/leader-test"
NAME = "v0alpha1.example.grafana.app"
APISERVICE_PATH = f"/apis/apiregistration.k8s.io/v1/apiservices/{NAME}"
DUMMY_PATH = "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy"


class Replica:
    """One aggregator process with its own data folder (its own kubeconfig and token) and a client for it."""

    def __init__(self, name: str, data: str, process: DaemonProcess):
        self.name = name
        self.data = data
        self.process = process
        self.url = ""
        self.client: HTTPClient | None = None
        self.token = ""

    def connect(self, url: str) -> None:
        self.url = url
        with open(os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")) as handle:
            config = yaml.safe_load(handle)
        cluster = config["clusters"][0]["cluster"]
        anchor = ssl.Certificate.loadPEM(base64.b64decode(cluster["certificate-authority-data"]))
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=anchor),
                                       pool=HTTPConnectionPool(reactor, persistent=False)))
        self.token = config["users"][0]["user"]["token"]

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.client is not None
        data = json.dumps(body).encode() if body is not None else None
        response = await self.client.request(method, self.url + path, data=data, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        text = await response.text()
        try:
            return response.code, json.loads(text)
        except ValueError:
            return response.code, text


class CuttableRelay:
    """A TCP relay from a loopback port to etcd that can be cut: every connection dropped, new ones refused."""

    def __init__(self, port: int):
        self.factory = portforward.ProxyFactory("127.0.0.1", port)
        self.listening: Any = reactor.listenTCP(0, self.factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.listening.getHost().port}"
        self.connections: list[Any] = []
        build = self.factory.buildProtocol

        def tracked(address: Any) -> Any:
            protocol = build(address)
            self.connections.append(protocol)
            return protocol

        self.factory.buildProtocol = tracked  # type: ignore[method-assign]

    async def cut(self) -> None:
        await self.listening.stopListening()
        for protocol in self.connections:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            if protocol.peer is not None and protocol.peer.transport is not None:
                protocol.peer.transport.abortConnection()


class ReplicaLeaderTests(WalkthroughCase):
    """Leader election and per-replica availability over real processes and a real etcd."""

    timeout = 240

    async def start_etcd(self) -> None:
        self.cluster = EtcdCluster()
        self.addCleanup(self.cluster.remove)
        await deferToThread(self.cluster.start)

    async def start_replica(self, name: str, *flags: str, etcd: str = "") -> Replica:
        data = os.path.join(self.folder, f"data-{name}")
        os.makedirs(data, exist_ok=True)
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--config", self.ini,
                "--data-dir", data, "--storage-type", "etcd", "--etcd-servers", etcd or ",".join(self.cluster.urls),
                "--etcd-prefix", PREFIX, "--etcd-lease-ttl", str(TTL), "--replica-name", name, *flags]
        replica = Replica(name, data, self.spawn(DaemonProcess(), TWISTD, argv))
        replica.connect(await replica.process.serving)
        return replica

    async def wait_ready(self, replica: Replica, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            code, _ = await replica.request("GET", "/readyz")
            if code == 200:
                return
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"replica {replica.name} not ready: {await replica.request('GET', '/readyz?verbose')}")

    def leader(self) -> str:
        """The replica holding the leader key, as the first member that answers says."""
        key = base64.b64encode(f"{PREFIX}/.replicas/leader".encode()).decode()
        for member in self.cluster.members:
            request = urllib.request.Request(f"{member.url}/v3/kv/range", data=json.dumps({"key": key}).encode())
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    kvs = json.load(answer).get("kvs") or []
            except OSError:
                continue
            return str(json.loads(base64.b64decode(kvs[0]["value"]))["replica"]) if kvs else ""
        return ""

    async def wait_leader(self, within: float = 15.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            leader = await deferToThread(self.leader)
            if leader:
                return leader
            await deferLater(reactor, 0.1, lambda: None)
        self.fail("no replica became the leader")

    def manifests_objects(self) -> list[tuple[str, dict[str, Any]]]:
        objects = []
        for file in ("externalname.yaml", "apiservice.yaml"):
            with open(os.path.join(self.manifests, file)) as handle:
                obj = yaml.safe_load(handle)
            if obj["kind"] == "APIService":
                objects.append(("/apis/apiregistration.k8s.io/v1/apiservices", obj))
            else:
                namespace = obj["metadata"].get("namespace", "default")
                objects.append((f"/apis/service.grafana.app/v0alpha1/namespaces/{namespace}/externalnames", obj))
        return objects

    async def condition(self, replica: Replica) -> dict[str, Any] | None:
        code, body = await replica.request("GET", APISERVICE_PATH)
        if code != 200:
            return None
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Available":
                return dict(condition)
        return None

    async def test_leader_dies_status_writes_resume_within_twice_the_ttl(self) -> None:
        """SIGKILL the leader, then register an APIService on the survivor: its condition is written within 2×TTL."""
        await self.start_etcd()
        replicas = {name: await self.start_replica(name) for name in ("a", "b")}
        for replica in replicas.values():
            await self.wait_ready(replica)
        leader = await self.wait_leader()
        survivor = replicas["b" if leader == "a" else "a"]
        replicas[leader].process.process.signalProcess(signal.SIGKILL)
        killed_at = time.monotonic()
        await replicas[leader].process.ended
        for path, obj in self.manifests_objects():
            code, body = await survivor.request("POST", path, obj)
            self.assertEqual(code, 201, body)
        written = None
        while time.monotonic() - killed_at < 3 * TTL:
            condition = await self.condition(survivor)
            if condition is not None:
                written = time.monotonic() - killed_at
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIsNotNone(written, "no status was written after the leader died")
        assert written is not None
        self.assertLessEqual(written, 2 * TTL, f"status written {written:.2f} s after the leader died")
        self.assertEqual((condition or {}).get("reason"), "FailedDiscoveryCheck")
        self.assertEqual(await deferToThread(self.leader), survivor.name)
        _, metrics = await survivor.request("GET", "/metrics")
        self.assertIn("\ngrafana_aggregator_replica_leader 1.0\n", metrics)
        print(f"\nstatus written {written:.2f} s after the leader was killed (TTL {TTL} s)")  # noqa: T201

    async def test_replica_cut_off_from_backend_never_flips_the_condition(self) -> None:
        """b's client certificate is not trusted by the backend: Available stays True (naming b), b answers 503
        for the backend itself and counts it, a proxies."""
        await self.start_etcd()
        other = os.path.join(self.folder, "other-pki")
        subprocess.run([os.path.join(REPO, "hack", "make-aggregator-pki.sh"), "--out", other], check=True,
                       capture_output=True)
        a = await self.start_replica("a")
        b = await self.start_replica("b", "--proxy-client-cert-file", f"{other}/client.crt",
                                     "--proxy-client-key-file", f"{other}/client.key")
        for replica in (a, b):
            await self.wait_ready(replica)
        self.start_example()
        for path, obj in self.manifests_objects():
            code, body = await a.request("POST", path, obj)
            self.assertEqual(code, 201, body)
        deadline = time.monotonic() + 20
        condition: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            condition = await self.condition(b)
            if condition is not None and condition["status"] == "True" and "not reachable from b" in condition["message"]:
                break
            await deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail(f"the condition never said True naming b: {condition}")
        assert condition is not None
        first = condition
        # Several of b's failing probes (retried every second) and a's resyncs: the condition never flips.
        seen = []
        for _ in range(40):
            for replica in (a, b):
                current = await self.condition(replica)
                assert current is not None
                seen.append(current["status"])
                self.assertEqual((current["status"], current["lastTransitionTime"]),
                                 ("True", first["lastTransitionTime"]), f"flipped: {current}")
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(set(seen), {"True"})
        code, body = await a.request("GET", DUMMY_PATH)
        self.assertEqual(code, 200, body)
        code, body = await b.request("GET", DUMMY_PATH)
        self.assertEqual((code, body.get("reason")), (503, "ServiceUnavailable"), body)
        self.assertIn(f"replica b cannot reach the backend of APIService {NAME}", body["message"])
        _, metrics = await b.request("GET", "/metrics")
        self.assertRegex(metrics, rf'grafana_aggregator_replica_unreachable_requests_total\{{apiservice="{NAME}"\}} [1-9]')

    async def test_etcd_outage_then_a_leader_again(self) -> None:
        """etcd stopped for longer than the TTL: no replica leads, /readyz names etcd; once it is back, a leader is
        elected again by itself and status writes resume."""
        await self.start_etcd()
        replicas = [await self.start_replica(name) for name in ("a", "b")]
        for replica in replicas:
            await self.wait_ready(replica)
        await self.wait_leader()
        await deferToThread(self.cluster.kill_all)
        await deferLater(reactor, 2 * TTL, lambda: None)
        for replica in replicas:
            code, body = await replica.request("GET", "/readyz?verbose")
            self.assertEqual(code, 500, body)
            self.assertIn("[-]etcd", body)
            _, metrics = await replica.request("GET", "/metrics")
            self.assertIn("\ngrafana_aggregator_replica_leader 0.0\n", metrics, f"{replica.name} still leads")
        await deferToThread(self.cluster.start)
        back = time.monotonic()
        for replica in replicas:
            await self.wait_ready(replica)
        leader = await self.wait_leader()
        self.assertIn(leader, ("a", "b"))
        for path, obj in self.manifests_objects():
            code, body = await replicas[0].request("POST", path, obj)
            self.assertEqual(code, 201, body)
        while time.monotonic() - back < 30:
            condition = await self.condition(replicas[1])
            if condition is not None:
                break
            await deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("no status was written after etcd came back")
        self.assertEqual(condition["reason"], "FailedDiscoveryCheck")

    async def leads(self, replica: Replica) -> bool:
        _, metrics = await replica.request("GET", "/metrics")
        return "\ngrafana_aggregator_replica_leader 1.0\n" in metrics

    async def test_leader_cut_off_from_etcd_steps_down_within_the_ttl(self) -> None:
        """The leader loses etcd (its connections dropped, new ones refused) but keeps serving: it stops leading
        within the TTL, and the other replica leads within twice the TTL."""
        await self.start_etcd()
        relays = [CuttableRelay(member.client_port) for member in self.cluster.members]
        for relay in relays:
            self.addCleanup(relay.listening.stopListening)
        a = await self.start_replica("a", etcd=",".join(relay.url for relay in relays))
        await self.wait_ready(a)
        self.assertEqual(await self.wait_leader(), "a")
        b = await self.start_replica("b")
        await self.wait_ready(b)
        self.assertTrue(await self.leads(a))
        for relay in relays:
            await relay.cut()
        cut_at = time.monotonic()
        # When a is seen not leading, it stepped down at some time before: the bound is on when it was last seen
        # leading, counted from the start of the request that saw it (its answer describes a later moment).
        stepped_down = took_over = None
        last_seen_leading = 0.0
        while time.monotonic() - cut_at < 3 * TTL and (stepped_down is None or took_over is None):
            if stepped_down is None:
                asked = time.monotonic() - cut_at
                if await self.leads(a):
                    last_seen_leading = asked
                else:
                    stepped_down = time.monotonic() - cut_at
            if took_over is None and await deferToThread(self.leader) == "b":
                took_over = time.monotonic() - cut_at
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIsNotNone(stepped_down, "a kept leading")
        self.assertIsNotNone(took_over, "b never took over")
        assert stepped_down is not None and took_over is not None
        self.assertLessEqual(last_seen_leading, TTL)
        self.assertLessEqual(took_over, 2 * TTL)
        self.assertTrue(await self.leads(b))
        print(f"\na was last seen leading {last_seen_leading:.2f} s after the cut and not leading at {stepped_down:.2f} s,"
              f" b led after {took_over:.2f} s (TTL {TTL} s)")  # noqa: T201
