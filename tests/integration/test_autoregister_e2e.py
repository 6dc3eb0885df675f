"""Auto-registration end to end: a remote services file with one live example server and one dead entry.

Both APIServices appear, labelled and carrying the configured CA bundle; kubectl lists the live
backend's resources promptly despite the dead one and explains its kinds; an entry removed from the
file is removed from the server at the next start.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import yaml

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from .test_daemon import BIN, TWISTD, DaemonProcess, require_kubectl
from .test_kubectl_e2e import versioned_kubectl
from .test_seed_walkthrough import REPO, free_port


class AutoRegistrationTests(TestCase):
    """`remote_services_file` as the seed's last section uses it."""

    timeout = 180

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.data = os.path.join(self.folder, "data")
        self.pki = os.path.join(self.data, "grafana-aggregator")
        subprocess.run([os.path.join(REPO, "hack", "make-aggregator-pki.sh"), "--out", self.pki], check=True,
                       capture_output=True)
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1",
                    "KUBECONFIG": os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")}
        self.live, self.dead = free_port(), free_port()
        self.services = os.path.join(self.folder, "apiservices.yaml")
        self.write_services(with_dead=True)
        with open(os.path.join(REPO, "conf", "dev.ini")) as handle:
            ini = handle.read()
        self.ini = os.path.join(self.folder, "aggregator.ini")
        with open(self.ini, "w") as handle:
            handle.write(ini.replace("data/grafana-aggregator/", f"{self.pki}/").replace("data = data", f"data = {self.data}")
                         .replace("secure_port = 6443", "secure_port = 6443\nlisten = tcp:0:interface=127.0.0.1\n"
                                                         f"remote_services_file = {self.services}"))

    def write_services(self, with_dead: bool) -> None:
        entries = [{"group": "example.grafana.app", "version": "v0alpha1", "host": "localhost", "port": self.live}]
        if with_dead:
            entries.append({"group": "query.grafana.app", "version": "v0alpha1", "host": "localhost", "port": self.dead})
        with open(self.services, "w") as handle:
            yaml.safe_dump(entries, handle)

    def spawn(self, process: DaemonProcess, argv: list[str]) -> DaemonProcess:
        process.process = reactor.spawnProcess(process, argv[0], argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(process.stop()))
        return process

    async def aggregator(self) -> DaemonProcess:
        daemon = self.spawn(DaemonProcess(), [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator",
                                              "--config", self.ini])
        await daemon.serving
        return daemon

    async def kubectl(self, *args: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(require_kubectl(), args, env=self.env, path=self.folder)
        return out.decode(), err.decode(), code

    async def test_autoregistration(self) -> None:
        """Registered with labels and caBundle; discovery and explain work with a dead backend; removal at restart."""
        example = DaemonProcess()
        example.serving.addErrback(lambda failure: None)
        self.spawn(example, [
            os.path.join(BIN, "twistd"), "--nodaemon", "--pidfile=", "grafana-example-apiserver",
            "--runtime-config=example.grafana.app/v0alpha1=true", "--secure-port", str(self.live),
            "--tls-cert-file", f"{self.pki}/server.crt", "--tls-private-key-file", f"{self.pki}/server.key",
            f"--requestheader-client-ca-file={self.pki}/ca.crt"])
        aggregator = await self.aggregator()

        out, err, code = await self.kubectl("get", "apiservice", "-o", "json")
        self.assertEqual(code, 0, err)
        items = {i["metadata"]["name"]: i for i in json.loads(out)["items"]}
        with open(f"{self.pki}/ca.crt", "rb") as handle:
            bundle = base64.b64encode(handle.read()).decode()
        for name in ("v0alpha1.example.grafana.app", "v0alpha1.query.grafana.app"):
            self.assertEqual(items[name]["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"], "onstart")
            self.assertEqual(items[name]["spec"]["caBundle"], bundle)
            self.assertEqual(items[name]["spec"]["groupPriorityMinimum"], 16000)

        for _ in range(100):
            out, _, _ = await self.kubectl("get", "apiservice", "v0alpha1.example.grafana.app", "--no-headers")
            if out.split()[2:3] == ["True"]:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(out.split()[2], "True", out)

        for _ in range(50):
            started = time.monotonic()
            out, err, _ = await self.kubectl("api-resources")
            elapsed = time.monotonic() - started
            names = [line.split()[0] for line in out.splitlines()[1:]]
            if "dummy" in names:
                break
            await deferLater(reactor, 0.2, lambda: None)
        self.assertIn("dummy", names, err)
        self.assertIn("runtime", names)
        self.assertLess(elapsed, 10)

        out, err, code = await self.kubectl("explain", "dummy")
        self.assertEqual(code, 0, err)
        self.assertIn("DummyResource", out)
        old, err, code = await getProcessOutputAndValue(versioned_kubectl(27), ("explain", "dummy"), env=self.env,
                                                        path=self.folder)
        self.assertEqual(code, 0, err)
        self.assertIn(b"DummyResource", old)

        await aggregator.stop()
        self.write_services(with_dead=False)
        await self.aggregator()
        out, err, code = await self.kubectl("get", "apiservice", "-o", "json")
        self.assertEqual(code, 0, err)
        names = sorted(i["metadata"]["name"] for i in json.loads(out)["items"])
        self.assertEqual(names, ["v0alpha1.example.grafana.app", "v0alpha1.service.grafana.app",
                                 "v1.apiextensions.k8s.io", "v1.apiregistration.k8s.io", "v1.authentication.k8s.io", "v1.authorization.k8s.io",
                                 "v1beta1.authentication.k8s.io"])
