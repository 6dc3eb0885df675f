# -*- test-case-name: tests.integration.test_etcd_faults -*-
"""The installed daemon on a real 3-member etcd cluster while members die, hang or are compacted under it.

A member killed while four clients write: every acknowledged write is kept, resourceVersions never go back, a
watch through the aggregator delivers each acknowledged write exactly once, and failed writes are 5xx Statuses.
All members killed or stopped (SIGSTOP: connections hang): requests get 503/504 within the request timeout,
/readyz names etcd, and everything recovers by itself.  After a compaction a watch from before it is 410 Expired
and kubectl, listing again, keeps watching.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import attrs
import treq
import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from ..etcd import EtcdCluster
from .test_daemon import TWISTD, DaemonProcess, require_kubectl

EXTERNALNAMES = "/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames"
APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
#: The daemon's request timeout in these tests (etcd calls get half of it).
REQUEST_TIMEOUT = 4.0


def externalname(name: str, host: str) -> dict[str, Any]:
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": name, "namespace": "grafana"}, "spec": {"host": host}}


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@attrs.define
class Watcher:
    """A watch through the aggregator, its events collected as they stream in."""

    events: list[dict[str, Any]] = attrs.field(factory=list)
    buffer: bytes = b""
    ended: Deferred[Any] | None = None

    def received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.events.append(json.loads(line))

    def seen(self) -> list[tuple[str, str, str]]:
        """(type, name, resourceVersion) of every event, in order."""
        return [(e["type"], e["object"]["metadata"].get("name", ""), e["object"]["metadata"].get("resourceVersion", ""))
                for e in self.events]


class ClusterCase(TestCase):
    """A 3-member etcd cluster and the daemon on it (`--etcd-servers` listing every member)."""

    timeout = 180

    async def setUp(self) -> None:  # type: ignore[override]
        self.folder = os.path.abspath(self.mktemp())
        self.data = os.path.join(self.folder, "data")
        os.makedirs(self.data)
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}
        self.env.pop("KUBECONFIG", None)
        self.cluster = EtcdCluster()
        self.addCleanup(self.cluster.remove)
        await deferToThread(self.cluster.start)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def start(self) -> DaemonProcess:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", self.data, "--ensure-kubectl-access", "true", "--storage-type", "etcd",
                "--etcd-servers", ",".join(self.cluster.urls), "--etcd-prefix", "/faults",
                "--request-timeout", f"{REQUEST_TIMEOUT:g}s"]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        self.daemon = daemon

        def keep_log() -> None:  # for a failed test's post-mortem, in _trial_temp
            with open(os.path.join(self.folder, "daemon.log"), "wb") as handle:
                handle.write(daemon.output)

        self.addCleanup(keep_log)
        self.url = await daemon.serving
        self.kubeconfig = os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")
        self.env["KUBECONFIG"] = self.kubeconfig
        with open(self.kubeconfig) as handle:
            token = yaml.safe_load(handle)["users"][0]["user"]["token"]
        with open(os.path.join(self.data, "grafana-apiserver", "certs", "apiserver.crt"), "rb") as handle:
            anchor = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", handle.read(), re.S)[-1]
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor)),
                                       pool=self.pool))
        self.headers = {"Authorization": f"Bearer {token}"}
        await self.wait_ready()
        return daemon

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        response = await self.client.request(method, self.url + path, data=data,
                                             headers={**self.headers, "Content-Type": content_type})
        text = await response.text()
        try:
            return response.code, json.loads(text)
        except ValueError:
            return response.code, text

    async def wait_ready(self, seconds: float = 30.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            code, _ = await self.request("GET", "/readyz")
            if code == 200:
                return time.monotonic() - started
            await sleep(0.1)
        code, body = await self.request("GET", "/readyz?verbose")
        self.fail(f"/readyz still answers {code}:\n{body}")

    async def watch(self, path: str, resource_version: str) -> Watcher:
        """Open a watch of path from resource_version; its events stream into the Watcher."""
        watcher = Watcher()
        response = await self.client.get(
            f"{self.url}{path}?watch=1&resourceVersion={resource_version}&timeoutSeconds=300", headers=self.headers)
        self.assertEqual(response.code, 200)
        watcher.ended = treq.collect(response, watcher.received)
        watcher.ended.addErrback(lambda failure: None)
        ended = watcher.ended

        async def close() -> None:  # the daemon's exit ends the stream
            await self.daemon.stop()
            await ended

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        return watcher

    def assert_failure_status(self, code: int, body: Any, allowed: tuple[int, ...] = (503, 504)) -> None:
        """A failed request during an outage is a Kubernetes Status with one of the allowed codes and a message."""
        self.assertIsInstance(body, dict, f"{code}: {body!r}")
        self.assertEqual((body.get("kind"), body.get("code")), ("Status", code), body)
        self.assertIn(code, allowed, body)
        self.assertIn("etcd", body.get("message", ""), body)


@attrs.define
class Writes:
    """What one writing client did: its acknowledged writes (name, resourceVersion, host) in order, and its
    failures (name, host, code, body)."""

    acknowledged: list[tuple[str, int, str]] = attrs.field(factory=list)
    attempted: dict[str, list[str]] = attrs.field(factory=dict)
    failed: list[tuple[str, str, int, Any]] = attrs.field(factory=list)


class MemberDiesTests(ClusterCase):
    """A member is killed (SIGKILL) while four clients write and a watch is open."""

    async def writes_through_a_kill(self, victim: Callable[[], int], pause: bool = False) -> None:
        daemon = await self.start()
        code, listed = await self.request("GET", EXTERNALNAMES)
        self.assertEqual(code, 200, listed)
        watcher = await self.watch(EXTERNALNAMES, listed["metadata"]["resourceVersion"])
        stop_at = time.monotonic() + 6.0
        clients = [Writes() for _ in range(4)]

        async def write(index: int, writes: Writes) -> None:
            serial = 0
            while time.monotonic() < stop_at:
                name = f"c{index}-{serial}"
                serial += 1
                for step in range(3):  # a create, then two updates
                    host = f"h{step}.{name}.example"
                    writes.attempted.setdefault(name, []).append(host)
                    if step == 0:
                        code, body = await self.request("POST", EXTERNALNAMES, externalname(name, host))
                    else:
                        code, body = await self.request("PATCH", f"{EXTERNALNAMES}/{name}", {"spec": {"host": host}},
                                                        "application/merge-patch+json")
                    if 200 <= code < 300:
                        writes.acknowledged.append((name, int(body["metadata"]["resourceVersion"]), host))
                    else:
                        writes.failed.append((name, host, code, body))
                        if step == 0 or code == 404:
                            break  # the create's outcome is unknown: the next object

        async def kill() -> int:
            await sleep(2.0)
            index = victim()
            member = self.cluster.members[index]
            await deferToThread(member.pause if pause else member.kill)
            return index

        killing = Deferred.fromCoroutine(kill())
        await DeferredList([Deferred.fromCoroutine(write(i, w)) for i, w in enumerate(clients)], fireOnOneErrback=True,
                           consumeErrors=True)
        killed = await killing
        if pause:
            self.cluster.members[killed].resume()

        acknowledged = [a for w in clients for a in w.acknowledged]
        failures = [f for w in clients for f in w.failed]
        print(f"\n{'stopped' if pause else 'killed'} member {killed}; {len(acknowledged)} writes acknowledged; failures: "
              f"{sorted({(f[2], (f[3].get('message') if isinstance(f[3], dict) else f[3])) for f in failures})}")
        self.assertGreater(len(acknowledged), 20)
        for name, host, code, body in failures:  # no 409: each name is created once, patches carry no resourceVersion
            self.assert_failure_status(code, body)

        # resourceVersions never go back: per client (its writes are sequential) and so per object.
        for writes in clients:
            versions = [rv for _, rv, _ in writes.acknowledged]
            self.assertEqual(versions, sorted(set(versions)), "a client saw a resourceVersion go back")

        # Every acknowledged write is there, with at least what was written; nothing twice.
        code, listed = await self.request("GET", EXTERNALNAMES)
        self.assertEqual(code, 200, listed)
        names = [i["metadata"]["name"] for i in listed["items"]]
        self.assertEqual(len(names), len(set(names)))
        stored = {i["metadata"]["name"]: i for i in listed["items"]}
        last: dict[str, tuple[int, str]] = {}
        for name, rv, host in acknowledged:
            last[name] = (rv, host)
        attempted = {name: hosts for w in clients for name, hosts in w.attempted.items()}
        for name, (rv, host) in last.items():
            self.assertIn(name, stored, f"acknowledged write of {name} at {rv} is lost")
            self.assertGreaterEqual(int(stored[name]["metadata"]["resourceVersion"]), rv)
            later = attempted[name][attempted[name].index(host):]
            self.assertIn(stored[name]["spec"]["host"], later, f"{name} lost its acknowledged content")
        self.assertLessEqual(set(stored), set(attempted))

        # The watch, open through the kill, delivers each acknowledged write once, in order per object.
        wanted = {(name, str(rv)) for name, rv, _ in acknowledged}
        for _ in range(150):
            got = {(name, rv) for _, name, rv in watcher.seen()}
            if wanted <= got:
                break
            await sleep(0.1)
        seen = watcher.seen()
        self.assertEqual(wanted - {(name, rv) for _, name, rv in seen}, set(), "acknowledged writes never watched")
        self.assertEqual(len(seen), len(set(seen)), "an event was delivered twice")
        per_object: dict[str, list[int]] = {}
        for kind, name, rv in seen:
            self.assertIn(kind, ("ADDED", "MODIFIED"), seen)
            per_object.setdefault(name, []).append(int(rv))
        for name, versions in per_object.items():
            self.assertEqual(versions, sorted(versions), f"the watch went back on {name}")
        await self.wait_ready()
        self.assertNotIn(b"Traceback", daemon.output, daemon.output.decode())

    async def test_first_endpoint_dies(self) -> None:
        """Killing the member the aggregator talks to first loses no acknowledged write or watch event."""
        await self.writes_through_a_kill(lambda: 0)

    async def test_raft_leader_dies(self) -> None:
        """Killing etcd's raft leader loses no acknowledged write or watch event."""
        await self.writes_through_a_kill(self.cluster.leader)

    async def test_first_endpoint_hangs(self) -> None:
        """Stopping (SIGSTOP) the member the aggregator talks to first, so that its connections hang, loses no
        acknowledged write or watch event either."""
        await self.writes_through_a_kill(lambda: 0, pause=True)


class EtcdDownTests(ClusterCase):
    """Every member killed or stopped, then back: bounded failures, /readyz naming etcd, recovery by itself."""

    async def outage(self, down: Callable[[], None], up: Callable[[], None], expected: tuple[int, str]) -> None:
        daemon = await self.start()
        code, created = await self.request("POST", EXTERNALNAMES, externalname("before", "before.example"))
        self.assertEqual(code, 201, created)
        code, page = await self.request("GET", f"{EXTERNALNAMES}?limit=1")
        self.assertEqual(code, 200, page)
        await self.request("POST", EXTERNALNAMES, externalname("second", "second.example"))
        code, page = await self.request("GET", f"{EXTERNALNAMES}?limit=1")
        watcher = await self.watch(EXTERNALNAMES, created["metadata"]["resourceVersion"])

        await deferToThread(down)
        # Writes, and reads that need etcd (a continue token's snapshot), fail in time with a 503/504 Status.
        for method, path, body in [("POST", EXTERNALNAMES, externalname("during", "during.example")),
                                   ("GET", f"{EXTERNALNAMES}?limit=1&continue={page['metadata']['continue']}", None),
                                   ("GET", EXTERNALNAMES, None),  # resourceVersion "": a consistent read
                                   ("GET", f"{EXTERNALNAMES}/before", None),
                                   ("PATCH", f"{EXTERNALNAMES}/before", {"spec": {"host": "x.example"}}),
                                   ("DELETE", f"{EXTERNALNAMES}/before", None)]:
            started = time.monotonic()
            code, answer = await self.request(method, path, body, "application/merge-patch+json"
                                              if method == "PATCH" else "application/json")
            elapsed = time.monotonic() - started
            print(f"\n{method} with etcd down: {code} in {elapsed:.2f} s: {answer.get('message')}")
            self.assertLess(elapsed, REQUEST_TIMEOUT + 1.0, f"{method} took {elapsed:.1f} s")
            self.assert_failure_status(code, answer)
            self.assertEqual((code, answer["reason"]), expected, answer)
        # Reads at resourceVersion 0 ("any") are served by the watch cache (the last state it saw), never hang.
        started = time.monotonic()
        code, listed = await self.request("GET", f"{EXTERNALNAMES}?resourceVersion=0")
        self.assertEqual(code, 200, listed)
        self.assertLess(time.monotonic() - started, REQUEST_TIMEOUT)
        for _ in range(100):
            code, checks = await self.request("GET", "/readyz?verbose")
            if code != 200:
                break
            await sleep(0.1)
        self.assertEqual(code, 500, checks)
        self.assertIn("[-]etcd failed", checks)

        await deferToThread(up)
        print(f"ready again {await self.wait_ready():.2f} s after etcd returned")
        code, written = await self.request("POST", EXTERNALNAMES, externalname("after", "after.example"))
        self.assertEqual(code, 201, written)
        code, listed = await self.request("GET", EXTERNALNAMES)
        names = {i["metadata"]["name"] for i in listed["items"]}
        if expected[0] == 503:  # refused: never sent, so never applied
            self.assertEqual(names, {"before", "second", "after"}, listed)
        else:  # a timeout's outcome is unknown: the stopped etcd applies the queued writes once it runs again
            self.assertTrue({"second", "after"} <= names, listed)
        for _ in range(100):
            if ("ADDED", "after", written["metadata"]["resourceVersion"]) in watcher.seen():
                break
            await sleep(0.1)
        seen = watcher.seen()
        self.assertIn(("ADDED", "after", written["metadata"]["resourceVersion"]), seen)
        self.assertEqual(len(seen), len(set(seen)), "an event was delivered twice")
        if expected[0] == 503:
            self.assertEqual([e for e in seen if e[1] == "during"], [])
        self.assertNotIn(b"Traceback", daemon.output, daemon.output.decode())

    async def test_all_members_killed(self) -> None:
        """With every member killed (connections refused), requests fail at once and all recovers on restart."""
        await self.outage(self.cluster.kill_all, self.cluster.start, (503, "ServiceUnavailable"))

    async def test_all_members_stopped(self) -> None:
        """With every member stopped (SIGSTOP: connections hang), requests still fail within the request timeout
        and all recovers on SIGCONT; the timeout is a 504, not a 503 claiming etcd went away."""
        await self.outage(self.cluster.pause_all, self.cluster.resume_all, (504, "Timeout"))


def apiservice(group: str) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": f"v1.{group}"},
            "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "insecureSkipTLSVerify": True, "service": {"name": "x", "namespace": "grafana", "port": 7443}}}


class Output(ProcessProtocol):
    """A long-running kubectl's output, collected as it comes."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class CompactionTests(ClusterCase):
    """A watch from a revision etcd compacted (and the watch cache never had) is 410 Expired; clients relist."""

    def put_and_compact(self) -> int:
        """Write outside the daemon's prefix, then compact etcd to its latest revision, which it returns."""
        etcd = self.cluster.members[0].url
        for _ in range(3):
            with urllib.request.urlopen(urllib.request.Request(f"{etcd}/v3/kv/put",
                                                               data=b'{"key":"L290aGVy","value":"eA=="}'), timeout=5):
                pass
        revision = self.cluster.revision()
        body = json.dumps({"revision": revision, "physical": True}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{etcd}/v3/kv/compaction", data=body), timeout=5):
            pass
        return revision

    async def kubectl(self, *args: str) -> tuple[str, str]:
        out, err, code = await getProcessOutputAndValue(require_kubectl(), args, env=self.env, path=self.folder)
        self.assertEqual(code, 0, f"kubectl {' '.join(args)} failed: {err.decode()}")
        return out.decode(), err.decode()

    async def test_kubectl_and_client_relist(self) -> None:
        """kubectl's watch from a compacted revision gets one ERROR event, 410 Expired, and its stream ends (as
        kube-apiserver's does); the Python client gets 410 and, listing again, watches on and sees a write;
        `kubectl get --watch` (list, then watch) prints a write made after its list."""
        compacted = await deferToThread(self.put_and_compact)
        await self.start()
        self.assertEqual((await self.request("POST", APISERVICES, apiservice("a.example")))[0], 201)

        out, _ = await self.kubectl("get", "--raw", f"{APISERVICES}?watch=1&resourceVersion=2",
                                    "--request-timeout=20s")
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.assertEqual(len(events), 1, out)
        self.assertEqual((events[0]["type"], events[0]["object"]["kind"], events[0]["object"]["code"],
                          events[0]["object"]["reason"]), ("ERROR", "Status", 410, "Expired"))
        self.assertIn("too old resource version", events[0]["object"]["message"])

        def relist() -> tuple[int, list[tuple[str, str]]]:
            from kubernetes import client, config, watch

            configuration = client.Configuration()
            config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
            api = client.ApiregistrationV1Api(client.ApiClient(configuration=configuration))
            try:
                for _ in watch.Watch().stream(api.list_api_service, resource_version=str(compacted - 1)):
                    pass
            except client.ApiException as error:
                status = int(error.status)
            else:
                status = 0
            listed = api.list_api_service()
            api.create_api_service(body=apiservice("b.example"))
            seen = []
            for event in watch.Watch().stream(api.list_api_service, resource_version=listed.metadata.resource_version,
                                              timeout_seconds=5):
                seen.append((event["type"], event["object"].metadata.name))
                if event["object"].metadata.name == "v1.b.example":
                    break
            return status, seen

        status, seen = await deferToThread(relist)
        self.assertEqual(status, 410)
        self.assertEqual(seen[0], ("ADDED", "v1.b.example"))

        watching = Output()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            watching, require_kubectl(), [require_kubectl(), "get", "apiservices", "--watch", "--output-watch-events",
                                          "-o", "name"], env=self.env, path=self.folder)
        self.addCleanup(lambda: watching.ended)
        self.addCleanup(lambda: process.signalProcess("KILL") if process.pid else None)
        for _ in range(200):
            if b"v1.b.example" in watching.output:
                break
            await sleep(0.05)
        self.assertIn(b"apiservice.apiregistration.k8s.io/v1.a.example\n", watching.output)  # the list
        self.assertEqual((await self.request("POST", APISERVICES, apiservice("c.example")))[0], 201)
        for _ in range(200):
            if b"v1.c.example" in watching.output:
                break
            await sleep(0.05)
        self.assertIn(b"\napiservice.apiregistration.k8s.io/v1.c.example\n", watching.output)  # -o name: no event type
