"""Graceful shutdown of the real daemon on SIGTERM: readyz fails first, serving continues for the delay,
open watches end cleanly, the exit status is 0, and nothing stored is lost."""

from __future__ import annotations

import base64
import json
import os

import treq
import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from .test_daemon import TWISTD, DaemonProcess

EXTERNALNAME = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                "metadata": {"name": "kept", "namespace": "grafana"}, "spec": {"host": "localhost"}}


class ShutdownTests(TestCase):
    """SIGTERM while a watch is open."""

    timeout = 60

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.data = os.path.join(self.folder, "data")
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}

    async def start(self) -> tuple[DaemonProcess, str]:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", self.data, "--ensure-kubectl-access", "true", "--shutdown-delay-duration", "1s"]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        url = await daemon.serving
        with open(os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")) as handle:
            config = yaml.safe_load(handle)
        anchor = ssl.Certificate.loadPEM(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=anchor),
                                       pool=HTTPConnectionPool(reactor, persistent=False)))
        self.headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}"}
        return daemon, url

    async def test_sigterm_with_open_watch(self) -> None:
        """readyz fails at once, requests are still served during the delay, the watch ends cleanly, exit 0."""
        daemon, url = await self.start()
        collection = url + "/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames"
        created = await self.client.post(collection, json=EXTERNALNAME, headers=self.headers)
        self.assertEqual(created.code, 201)
        watch = await self.client.get(collection + "?watch=true", headers=self.headers, unbuffered=True)
        chunks: list[bytes] = []
        watch_done = treq.collect(watch, chunks.append)

        daemon.process.signalProcess("TERM")
        for _ in range(50):
            readyz = await self.client.get(url + "/readyz?verbose", headers=self.headers)
            text = (await treq.content(readyz)).decode()
            if readyz.code != 200:
                break
        self.assertEqual(readyz.code, 500)
        self.assertIn("[-]shutdown failed", text)
        healthz = await self.client.get(url + "/healthz", headers=self.headers)
        self.assertEqual(healthz.code, 200)
        during = await self.client.get(collection, headers=self.headers)
        self.assertEqual(during.code, 200)

        await watch_done
        events = [json.loads(line) for line in b"".join(chunks).splitlines() if line]
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in events], [("ADDED", "kept")])
        self.assertEqual(await daemon.ended, 0)
        self.assertIn(b"shut down cleanly", daemon.output)

        daemon, url = await self.start()
        kept = await self.client.get(url + "/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames/kept",
                                     headers=self.headers)
        self.assertEqual((kept.code, (await kept.json())["spec"]), (200, {"host": "localhost"}))
