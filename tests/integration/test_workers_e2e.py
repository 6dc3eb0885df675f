"""`workers` over real processes: every process serves, writes and watches reach the owner, forged identity is
refused, SIGTERM drains every process, certificates reload in every process, a killed worker is replaced."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
from typing import Any

import treq
import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.server import Site

from grafana_aggregator.tls.certificates import ServingTLS, TLSServerEndpoint, load_key_pair

from ..support import CertificateAuthority
from . import test_shutdown, test_socket_activation
from .test_cert_reload import RecordingPolicy
from .test_daemon import TWISTD, DaemonProcess, get_until
from .test_shutdown_drain import SlowBackend
from .test_python_client import WIDGETS_CRD

EXTERNALNAMES = "/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames"
#: Which process logged an access line: `... user=<name> worker=<n>`.
SERVED_BY = re.compile(rb"\[grafana_aggregator\.access#info\] (\S+) (\S+) (\d+) .* worker=(\d+)")


def externalname(name: str) -> dict[str, Any]:
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": name, "namespace": "grafana"}, "spec": {"host": "localhost"}}


def served_by(output: bytes, method: bytes | None = None) -> set[int]:
    """The processes whose access log has a line (of that method)."""
    return {int(m.group(4)) for m in SERVED_BY.finditer(output) if method is None or m.group(1) == method}


class WorkersCase(TestCase):
    """The daemon with `--workers`, started as the shutdown tests start it."""

    timeout = 120
    setUp = test_shutdown.ShutdownTests.setUp

    async def start_workers(self, workers: str, *extra: str, anchor: bytes | None = None) -> tuple[DaemonProcess, str]:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", self.data, "--ensure-kubectl-access", "true", "--shutdown-delay-duration", "1s",
                "--workers", workers, *extra]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        url = await daemon.serving
        self._client_for(url, anchor)
        await self.ready(url)
        return daemon, url

    def _client_for(self, url: str, anchor_pem: bytes | None) -> None:
        with open(os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")) as handle:
            config = yaml.safe_load(handle)
        cluster = config["clusters"][0]["cluster"]
        anchor = ssl.Certificate.loadPEM(anchor_pem or base64.b64decode(cluster["certificate-authority-data"]))
        # A new connection per request: the kernel hands each to whichever process accepts it.
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=anchor),
                                       pool=HTTPConnectionPool(reactor, persistent=False)))
        self.headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}"}

    async def ready(self, url: str, within: float = 30) -> str:
        started = time.monotonic()
        text = ""
        while time.monotonic() - started < within:
            response = await self.client.get(url + "/readyz?verbose", headers=self.headers)
            text = (await treq.content(response)).decode()
            if response.code == 200:
                return text
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"not ready within {within} s:\n{text}")

    async def until_every_process(self, daemon: DaemonProcess, processes: int, method: bytes,
                                  request: Any, most: int = 150) -> int:
        """Send requests (new connections) until each process has logged one of that method; returns how many."""
        for sent in range(1, most + 1):
            await request(sent)
            if served_by(daemon.output, method) >= set(range(processes)):
                return sent
        self.fail(f"after {most} requests only processes {sorted(served_by(daemon.output, method))} served {method!r}")


class WorkersTests(WorkersCase):
    """Several processes behind one address."""

    async def test_writes_reads_and_metrics_through_every_process(self) -> None:
        """With workers = 3, creates and reads succeed in every process; /metrics sums them; readyz has workers."""
        daemon, url = await self.start_workers("3")
        self.assertIn("[+]workers ok", await self.ready(url))

        async def create(n: int) -> None:
            response = await self.client.post(url + EXTERNALNAMES, json=externalname(f"e{n}"), headers=self.headers)
            self.assertEqual(response.code, 201, await treq.content(response))

        created = await self.until_every_process(daemon, 3, b"POST", create)
        listed = await self.client.get(url + EXTERNALNAMES, headers=self.headers)
        names = {item["metadata"]["name"] for item in (await treq.json_content(listed))["items"]}
        self.assertEqual(names, {f"e{n}" for n in range(1, created + 1)})

        async def delete(n: int) -> None:
            response = await self.client.delete(f"{url}{EXTERNALNAMES}/e{n}", headers=self.headers)
            self.assertEqual(response.code, 200, await treq.content(response))

        for n in range(1, created + 1):
            await delete(n)
        self.assertEqual(served_by(daemon.output, b"DELETE") - {0, 1, 2}, set())

        metrics = await self.client.get(url + "/metrics", headers=self.headers)
        text = (await treq.content(metrics)).decode()
        posts = re.search(r'apiserver_request_total\{code="201",component="apiserver",group="service.grafana.app",'
                          r'resource="externalnames",scope="resource",subresource="",verb="POST",'
                          r'version="v0alpha1"\} (\S+)', text)
        self.assertIsNotNone(posts, text)
        assert posts is not None
        self.assertEqual(float(posts.group(1)), created)  # each counted once, by the process that accepted it

    async def test_custom_resources_through_every_worker(self) -> None:
        """With workers = 3 on file storage, a CRD created through one process serves its kind through every
        worker (the workers pass local groups to the owner, which serves them as a single process does), and
        its deletion removes it from all of them.

        The owner does all the local work, so the kernel rarely hands it a new connection while the workers are
        idle: the test asks that both workers served a create, not the owner."""
        daemon, url = await self.start_workers("3")
        crds = url + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        response = await self.client.post(crds, json=WIDGETS_CRD, headers=self.headers)
        self.assertEqual(response.code, 201, await treq.content(response))
        widgets = url + "/apis/example.com/v1/namespaces/default/widgets"

        async def create(n: int) -> None:
            for _ in range(50):  # served once the owner has established it: within milliseconds
                response = await self.client.post(widgets, headers=self.headers, json={
                    "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": f"w{n}"},
                    "spec": {"size": n}})
                if response.code != 404:
                    break
                await deferLater(reactor, 0.02, lambda: None)
            self.assertEqual(response.code, 201, await treq.content(response))

        widgets_path = widgets[len(url):].encode()
        created = 0
        while not {1, 2} <= {int(m.group(4)) for m in SERVED_BY.finditer(daemon.output)
                             if m.group(1) == b"POST" and m.group(2) == widgets_path}:
            created += 1
            self.assertLessEqual(created, 150, "the workers did not both serve a create in 150 requests")
            await create(created)
        listed = await treq.json_content(await self.client.get(widgets, headers=self.headers))
        self.assertEqual(sorted(item["spec"]["size"] for item in listed["items"]), list(range(1, created + 1)))
        response = await self.client.delete(crds + "/widgets.example.com", headers=self.headers)
        self.assertEqual(response.code, 200, await treq.content(response))
        # The cleanup deletes the instances, then the CRD.
        gone = await get_until(self.client, crds + "/widgets.example.com", self.headers, 404, 0.05)
        self.assertEqual(gone, 404)
        for _ in range(6):  # whichever process answers
            response = await self.client.get(widgets, headers=self.headers)
            await treq.content(response)
            self.assertEqual(response.code, 404)
        self.assertNotIn(b"Traceback", daemon.output)

    async def test_forged_identity_over_tls_is_not_trusted(self) -> None:
        """X-Remote-* and impersonator headers from a client without credentials get 401 from every process."""
        daemon, url = await self.start_workers("2")
        forged = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters",
                  "X-Aggregator-Impersonator-User": "admin"}

        async def forge(n: int) -> None:
            response = await self.client.get(url + EXTERNALNAMES, headers=forged)
            self.assertEqual(response.code, 401, await treq.content(response))

        await self.until_every_process(daemon, 2, b"GET", forge)

    async def test_watch_through_every_process(self) -> None:
        """Watches opened on any process get the events of a write made on any process."""
        daemon, url = await self.start_workers("2")
        first = await self.client.post(url + EXTERNALNAMES, json=externalname("first"), headers=self.headers)
        self.assertEqual(first.code, 201)
        streams: list[tuple[Any, list[bytes]]] = []

        async def open_watch(n: int) -> None:
            response = await self.client.get(url + EXTERNALNAMES + "?watch=true", headers=self.headers,
                                             unbuffered=True)
            self.assertEqual(response.code, 200)
            chunks: list[bytes] = []
            streams.append((treq.collect(response, chunks.append), chunks))

        for n in range(24):  # enough that both processes take some, even when one is busier
            await open_watch(n)
        created = await self.client.post(url + EXTERNALNAMES, json=externalname("seen"), headers=self.headers)
        self.assertEqual(created.code, 201)
        for _ in range(50):
            if all(b'"seen"' in b"".join(chunks) for _, chunks in streams):
                break
            await deferLater(reactor, 0.1, lambda: None)
        for _, chunks in streams:
            events = [json.loads(line) for line in b"".join(chunks).splitlines() if line]
            self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in events],
                             [("ADDED", "first"), ("ADDED", "seen")])
        self.assertEqual(await daemon.stop(), 0)
        for done, _ in streams:
            await done  # every watch ended cleanly at shutdown
        self.assertEqual(served_by(daemon.output, b"GET"), {0, 1})  # watches were served by both processes

    async def test_sigterm_drains_every_process(self) -> None:
        """Slow proxied requests in flight in every process all get their 200 after SIGTERM; the owner exits 0."""
        folder = os.path.abspath(self.mktemp())
        pair = load_key_pair(*CertificateAuthority().server().write(folder, "backend"))
        port = await TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                       ServingTLS(pair)).listen(Site(SlowBackend()))
        self.addCleanup(port.stopListening)
        daemon, url = await self.start_workers("3")
        apiservice = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                      "metadata": {"name": "v1.slow.example"},
                      "spec": {"group": "slow.example", "version": "v1", "groupPriorityMinimum": 1000,
                               "versionPriority": 15, "insecureSkipTLSVerify": True,
                               "service": {"name": "slow", "namespace": "grafana", "port": port.getHost().port}}}
        slow_name = {**externalname("slow"), "spec": {"host": "127.0.0.1"}}
        for path, body in ((EXTERNALNAMES, slow_name), ("/apis/apiregistration.k8s.io/v1/apiservices", apiservice)):
            created = await self.client.post(url + path, json=body, headers=self.headers)
            self.assertEqual(created.code, 201, await treq.content(created))
        probe = await get_until(self.client, url + "/apis/slow.example/v1", self.headers, 200, 0.1)
        self.assertEqual(probe, 200)
        await self.ready(url)

        slow = [self.client.get(url + "/apis/slow.example/v1/things", headers=self.headers) for _ in range(18)]
        await deferLater(reactor, 0.5, lambda: None)
        daemon.process.signalProcess("TERM")
        for request in slow:
            response = await request
            self.assertEqual((response.code, await treq.content(response)), (200, b'{"slow":true}'))
        self.assertEqual(await daemon.ended, 0)
        self.assertEqual(served_by(daemon.output, b"GET") >= {1, 2}, True, daemon.output.decode()[-3000:])
        self.assertEqual(len(re.findall(rb"worker \d exited \(status 0", daemon.output)), 2, daemon.output.decode())
        self.assertIn(b"shut down cleanly", daemon.output)

    async def test_killed_worker_is_replaced(self) -> None:
        """SIGKILL of a worker: requests keep succeeding, it is restarted, counted, and readyz is ok again."""
        daemon, url = await self.start_workers("3")
        pid = int(re.search(rb"started worker 1 \(pid (\d+)\)", daemon.output).group(1))  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 3:
            response = await self.client.get(url + EXTERNALNAMES, headers=self.headers)
            await treq.content(response)
            self.assertEqual(response.code, 200)
            answered += 1
        self.assertGreater(answered, 10)
        self.assertIn(b"worker 1 (pid %d) exited" % pid, daemon.output)
        await self.ready(url)
        pids = [int(p) for p in re.findall(rb"started worker 1 \(pid (\d+)\)", daemon.output)]
        self.assertEqual(len(pids), 2)
        self.assertNotEqual(pids[1], pid)
        metrics = await self.client.get(url + "/metrics", headers=self.headers)
        self.assertIn('grafana_aggregator_worker_restarts_total{worker="1"} 1.0', (await treq.content(metrics)).decode())
        self.assertEqual(await daemon.stop(), 0)

    async def test_owner_gone_workers_exit(self) -> None:
        """A worker whose owner was killed stops by itself."""
        daemon, url = await self.start_workers("2")
        pid = int(re.search(rb"started worker 1 \(pid (\d+)\)", daemon.output).group(1))  # type: ignore[union-attr]
        daemon.process.signalProcess("KILL")
        await daemon.ended
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await deferLater(reactor, 0.1, lambda: None)
        self.fail("the worker outlived its owner by 10 s")


class WorkersReloadTests(WorkersCase):
    """Every process reloads its certificates itself."""

    timeout = 150

    async def test_rotation_reaches_every_process(self) -> None:
        """After the serving certificate and the client CA files change, every process serves the new ones."""
        pki = os.path.join(self.folder, "pki")
        server_ca, client_ca = CertificateAuthority("server-ca"), CertificateAuthority("client-ca")
        first = server_ca.server()
        cert, key = first.write(pki, "server")
        client_ca_file = client_ca.write_ca(pki, "client-ca")
        daemon, url = await self.start_workers("3", "--tls-cert-file", cert, "--tls-private-key-file", key,
                                               "--client-ca-file", client_ca_file, anchor=server_ca.issued.cert_pem)
        newcomer_ca = CertificateAuthority("new-client-ca")
        newcomer = newcomer_ca.issue("newcomer", ["system:masters"])
        second = server_ca.server()
        second.write(pki, "server")
        with open(client_ca_file, "wb") as handle:
            handle.write(client_ca.issued.cert_pem + newcomer_ca.issued.cert_pem)
        for _ in range(300):
            if daemon.output.count(b"reloaded the serving certificate") >= 3:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(daemon.output.count(b"reloaded the serving certificate"), 3)
        for _ in range(300):
            if daemon.output.count(b"reloaded the client CA bundle") >= 3:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(daemon.output.count(b"reloaded the client CA bundle"), 3)
        policy = RecordingPolicy(server_ca.issued.cert_pem, newcomer)
        client = HTTPClient(Agent(reactor, policy, pool=HTTPConnectionPool(reactor, persistent=False)))

        async def as_newcomer(n: int) -> None:
            response = await client.get(url + EXTERNALNAMES)
            self.assertEqual(response.code, 200, await treq.content(response))

        await self.until_every_process(daemon, 3, b"GET", as_newcomer)
        self.assertEqual(set(policy.server_serials()), {second.certificate.serial_number})
        self.assertEqual(await daemon.stop(), 0)


class WorkersSocketActivationTests(test_socket_activation.SocketActivationTests):
    """`--listen systemd:…` with workers: every process serves on the socket systemd passed to the owner."""

    async def test_serves_tls_on_passed_socket(self) -> None:
        """The owner and its worker both accept on the passed socket; the owner exits 0 on SIGTERM."""
        listener = self.bind()
        port = listener.getsockname()[1]
        daemon = self.start(listener, "--listen", "systemd:domain=INET:index=0", "--data-dir", self.data,
                            "--ensure-kubectl-access", "true", "--workers", "2")
        url = await daemon.serving
        self.assertEqual(url, f"https://127.0.0.1:{port}", daemon.output.decode())
        with open(os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig"), encoding="utf-8") as handle:
            token = yaml.safe_load(handle)["users"][0]["user"]["token"]
        client = self.client()
        for _ in range(300):  # the worker is ready once it accepts on the socket and knows the APIServices
            response = await client.get(url + "/readyz", headers={"Authorization": f"Bearer {token}"})
            await response.content()
            if response.code == 200:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(response.code, 200)
        for _ in range(100):
            response = await client.get(url + "/version", headers={"Authorization": f"Bearer {token}"})
            self.assertEqual(response.code, 200)
            await response.content()
            if served_by(daemon.output) == {0, 1}:
                break
        self.assertEqual(served_by(daemon.output), {0, 1})
        self.assertEqual(await daemon.stop(), 0)
