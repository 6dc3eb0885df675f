"""The seed's whole walk-through (steps 1–7) with real processes: dev PKI, aggregator, example server, kubectl.

The aggregator runs as `make run` runs it (conf/dev.ini's settings, on an ephemeral port), the example
server with the seed's own flags; the only change to the seed's manifests is the backend port, since
tests never use fixed ports.  Identity must reach the backend and must not be forgeable.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from typing import Any

import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from .test_daemon import BIN, TWISTD, DaemonProcess, require_kubectl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    """A loopback port that was free a moment ago (the example server needs a number on its command line)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ExampleProcess(DaemonProcess):
    """The example server; it logs no URL, so readiness is polled instead."""


class WalkthroughCase(TestCase):
    """The seed's set-up: a dev PKI, conf/dev.ini on an ephemeral port, its manifests, kubectl and the example server."""

    timeout = 180

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.data = os.path.join(self.folder, "data")
        self.pki = os.path.join(self.data, "grafana-aggregator")
        subprocess.run([os.path.join(REPO, "hack", "make-aggregator-pki.sh"), "--out", self.pki], check=True,
                       capture_output=True)
        self.kubeconfig = os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1", "KUBECONFIG": self.kubeconfig}
        self.port = free_port()
        self.manifests = os.path.join(self.folder, "manual-test")
        shutil.copytree(os.path.join(REPO, "examples", "manual-test"), self.manifests)
        path = os.path.join(self.manifests, "apiservice.yaml")
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text.replace("port: 7443", f"port: {self.port}"))
        self.ini = os.path.join(self.folder, "dev.ini")
        with open(os.path.join(REPO, "conf", "dev.ini")) as handle:
            ini = handle.read()
        with open(self.ini, "w") as handle:
            handle.write(ini.replace("data/grafana-aggregator/", f"{self.pki}/").replace("data = data", f"data = {self.data}")
                         .replace("secure_port = 6443", "secure_port = 6443\nlisten = tcp:0:interface=127.0.0.1"))

    def spawn(self, process: DaemonProcess, executable: str, argv: list[str]) -> DaemonProcess:
        process.process = reactor.spawnProcess(process, executable, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(process.stop()))
        return process

    async def kubectl(self, *args: str, ok: bool = True) -> tuple[str, str]:
        out, err, code = await getProcessOutputAndValue(require_kubectl(), args, env=self.env, path=self.folder)
        if ok:
            self.assertEqual(code, 0, f"kubectl {' '.join(args)} failed: {err.decode()}")
        return out.decode(), err.decode()

    async def wait_available(self, wanted: str, within: float) -> float:
        started = time.monotonic()
        cell = ""
        while time.monotonic() - started < within:
            out, _ = await self.kubectl("get", "apiservice", "v0alpha1.example.grafana.app", "--no-headers")
            cell = " ".join(out.split()[2:-1])
            if cell == wanted:
                return time.monotonic() - started
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"AVAILABLE stayed {cell!r}, wanted {wanted!r} within {within}s")

    def example_argv(self) -> list[str]:
        pki = self.pki
        return [os.path.join(BIN, "twistd"), "--nodaemon", "--pidfile=", "grafana-example-apiserver",
                "--runtime-config=example.grafana.app/v0alpha1=true", "--secure-port", str(self.port),
                "--tls-cert-file", f"{pki}/server.crt", "--tls-private-key-file", f"{pki}/server.key",
                f"--requestheader-client-ca-file={pki}/ca.crt", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--requestheader-group-headers=X-Remote-Group", "--requestheader-username-headers=X-Remote-User",
                "-v", "10"]

    def start_aggregator(self) -> DaemonProcess:
        """The aggregator as `make run` runs it."""
        return self.spawn(DaemonProcess(), TWISTD, [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator",
                                                    "--config", self.ini])

    def start_example(self, argv: list[str] | None = None) -> DaemonProcess:
        """The example server with the seed's flags (its readiness is seen through the APIService)."""
        example = self.spawn(ExampleProcess(), os.path.join(BIN, "twistd"), argv or self.example_argv())
        example.serving.addErrback(lambda failure: None)
        return example

    def forging_client(self) -> tuple[HTTPClient, str, str]:
        """A raw HTTPS client trusting the aggregator, with the kubeconfig's server and token."""
        with open(self.kubeconfig) as handle:
            config = yaml.safe_load(handle)
        cluster = config["clusters"][0]["cluster"]
        anchor = ssl.Certificate.loadPEM(base64.b64decode(cluster["certificate-authority-data"]))
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=anchor),
                      pool=HTTPConnectionPool(reactor, persistent=False))
        return HTTPClient(agent), cluster["server"], config["users"][0]["user"]["token"]



class SeedWalkthroughTests(WalkthroughCase):
    """kubectl, the aggregator and the example backend, as the seed's README runs them."""

    async def test_walkthrough(self) -> None:
        """Steps 3–7: registered, FailedDiscoveryCheck, Available within seconds, proxied with identity, down again, deleted."""
        await self.start_aggregator().serving

        out, _ = await self.kubectl("apply", "-f", self.manifests)
        self.assertEqual(out.splitlines(), [
            "apiservice.apiregistration.k8s.io/v0alpha1.example.grafana.app created",
            "externalname.service.grafana.app/example-apiserver created",
        ])
        await self.wait_available("False (FailedDiscoveryCheck)", within=10)

        example = self.start_example()
        seconds = await self.wait_available("True", within=10)
        self.assertLess(seconds, 10)

        out, _ = await self.kubectl("get", "--raw", "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy")
        self.assertEqual([i["metadata"]["name"] for i in json.loads(out)["items"]], ["test1", "test2", "test3"])
        out, _ = await self.kubectl("get", "--raw", "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy/test1/sub")
        identity = json.loads(out)["identity"]
        self.assertEqual(identity["user"], "system:apiserver")
        self.assertIn("system:masters", identity["groups"])
        self.assertIn("system:authenticated", identity["groups"])

        # Discovery lists the backend's kinds from the moment it is Available: no retry.
        out, _ = await self.kubectl("get", "dummy", "-n", "default")
        self.assertEqual([line.split()[0] for line in out.splitlines()], ["NAME", "test1", "test2", "test3"])

        client, server, token = self.forging_client()
        response = await client.get(server + "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy/test1/sub",
                                    headers={"Authorization": f"Bearer {token}", "X-Remote-User": "admin",
                                             "X-Remote-Group": "evil", "Impersonate-User": "admin",
                                             "Impersonate-Group": "system:masters",
                                             "X-Remote-Extra-Scopes": "everything"})
        forged: Any = await response.json()
        # A master may impersonate, as in kube: the backend sees the impersonated user, never the forged headers.
        self.assertEqual((forged["identity"]["user"], forged["identity"]["groups"]),
                         ("admin", ["system:masters", "system:authenticated"]))
        self.assertNotIn("evil", forged["identity"]["groups"])
        self.assertNotIn("scopes", forged["identity"]["extra"])

        await example.stop()
        _, err = await self.kubectl("get", "--raw", "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy",
                                    ok=False)
        self.assertIn("ServiceUnavailable", err)
        # The failed proxied request makes the controller re-probe at once instead of at the next resync.
        seconds = await self.wait_available("False (FailedDiscoveryCheck)", within=10)
        self.assertLess(seconds, 5)
        _, err = await self.kubectl("get", "--raw", "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy",
                                    ok=False)
        self.assertIn("ServiceUnavailable", err)

        out, _ = await self.kubectl("delete", "-f", self.manifests)
        self.assertEqual(out.splitlines(), [
            'apiservice.apiregistration.k8s.io "v0alpha1.example.grafana.app" deleted',
            'externalname.service.grafana.app "example-apiserver" deleted',
        ])

    async def test_backend_with_certificate_from_another_ca(self) -> None:
        """A backend whose certificate does not chain to the APIService's caBundle is never Available."""
        await self.start_aggregator().serving
        other = os.path.join(self.folder, "other-pki")
        subprocess.run([os.path.join(REPO, "hack", "make-aggregator-pki.sh"), "--out", other], check=True,
                       capture_output=True)
        with open(os.path.join(self.pki, "ca.crt"), "rb") as handle:
            ca_bundle = base64.b64encode(handle.read()).decode()
        path = os.path.join(self.manifests, "apiservice.yaml")
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text.replace("insecureSkipTLSVerify: true", f"caBundle: {ca_bundle}"))
        await self.kubectl("apply", "-f", self.manifests)
        self.start_example([a.replace(f"{self.pki}/server.", f"{other}/server.") for a in self.example_argv()])
        await deferLater(reactor, 3, lambda: None)
        await self.wait_available("False (FailedDiscoveryCheck)", within=5)
        _, err = await self.kubectl("get", "--raw", "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy",
                                    ok=False)
        self.assertIn("ServiceUnavailable", err)
