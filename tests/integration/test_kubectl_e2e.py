"""The seed's walk-through with the real kubectl (the dispatcher, and the 1.27 and 1.33 binaries beside it).

A daemon is started as `make run` starts it, on an ephemeral loopback port with its own data folder;
kubectl reaches it through the kubeconfig the daemon writes.  The daemon is restarted (and killed
with SIGKILL) between steps, and everything a client was told was stored must still be there.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from .test_daemon import TWISTD, DaemonProcess, require_kubectl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANUAL_TEST = os.path.join(REPO, "examples", "manual-test")


def versioned_kubectl(minor: int) -> str:
    """The kubectl 1.<minor> binary that sits beside the dispatcher."""
    dispatcher = os.path.realpath(require_kubectl())
    binary = os.path.join(os.path.dirname(dispatcher), f"kubectl.1.{minor}")
    if not os.path.exists(binary):
        raise AssertionError(f"{binary} is missing: the machine's kubectl dispatcher should ship it")
    return binary


class KubectlDaemonCase(TestCase):
    """A daemon started as `make run` starts it, with its own data folder, and kubectl pointed at it."""

    timeout = 300

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.data = os.path.join(self.folder, "data")
        self.kubeconfig = os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1", "KUBECONFIG": self.kubeconfig}
        self.manifests = os.path.join(self.folder, "manual-test")
        shutil.copytree(MANUAL_TEST, self.manifests)
        self.daemon: DaemonProcess | None = None

    async def start(self, emulated: str = "1.33") -> str:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", self.data, "--ensure-kubectl-access", "true", "--emulated-version", emulated]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        self.daemon = daemon
        return await daemon.serving

    async def stop(self, signal: str = "TERM") -> None:
        assert self.daemon is not None
        if signal == "KILL":
            self.daemon.process.signalProcess("KILL")
            await self.daemon.ended
        else:
            await self.daemon.stop()

    async def kubectl(self, *args: str, binary: str | None = None, ok: bool = True,
                      env: dict[str, str] | None = None) -> tuple[str, str]:
        out, err, code = await getProcessOutputAndValue(binary or require_kubectl(), args, env={**self.env, **(env or {})},
                                                        path=self.folder)
        if ok:
            self.assertEqual(code, 0, f"kubectl {' '.join(args)} failed: {err.decode()}")
        return out.decode(), err.decode()


class KubectlWalkthroughTests(KubectlDaemonCase):
    """kubectl applies, lists, watches, explains and deletes the seed's manifests, across restarts."""

    async def apiservice_rows(self, binary: str | None, name: str, available: str) -> dict[str, list[str]]:
        """`kubectl get apiservice` rows by name, once name shows the wanted AVAILABLE (within 10 s)."""
        for _ in range(100):
            out, _ = await self.kubectl("get", "apiservice", binary=binary)
            lines = out.splitlines()
            self.assertEqual(lines[0].split(), ["NAME", "SERVICE", "AVAILABLE", "AGE"])
            rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
            if available in " ".join(rows.get(name, [])):
                return rows
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"{name} never became {available}: {out}")

    async def walkthrough(self, binary: str | None) -> None:
        out, _ = await self.kubectl("apply", "-f", self.manifests, binary=binary)
        self.assertEqual(out.splitlines(), [
            "apiservice.apiregistration.k8s.io/v0alpha1.example.grafana.app created",
            "externalname.service.grafana.app/example-apiserver created",
        ])
        out, _ = await self.kubectl("apply", "-f", self.manifests, binary=binary)
        self.assertEqual(out.splitlines(), [
            "apiservice.apiregistration.k8s.io/v0alpha1.example.grafana.app unchanged",
            "externalname.service.grafana.app/example-apiserver unchanged",
        ])
        with open(os.path.join(self.manifests, "externalname.yaml")) as handle:
            text = handle.read()
        with open(os.path.join(self.manifests, "externalname.yaml"), "w") as handle:
            handle.write(text.replace("host: localhost", "host: 127.0.0.1"))
        out, _ = await self.kubectl("apply", "-f", self.manifests, binary=binary)
        self.assertEqual(out.splitlines(), [
            "apiservice.apiregistration.k8s.io/v0alpha1.example.grafana.app unchanged",
            "externalname.service.grafana.app/example-apiserver configured",
        ])

        rows = await self.apiservice_rows(binary, "v0alpha1.example.grafana.app", "False (FailedDiscoveryCheck)")
        self.assertEqual(rows["v0alpha1.example.grafana.app"][:3], ["grafana/example-apiserver", "False",
                                                                    "(FailedDiscoveryCheck)"])
        self.assertEqual(rows["v1.apiregistration.k8s.io"][:2], ["Local", "True"])
        self.assertEqual(rows["v0alpha1.service.grafana.app"][:2], ["Local", "True"])

        out, _ = await self.kubectl("get", "externalname", "-n", "grafana", "-o", "json", binary=binary)
        self.assertEqual(json.loads(out)["items"][0]["spec"], {"host": "127.0.0.1"})

        out, _ = await self.kubectl("explain", "apiservice.spec", binary=binary)
        self.assertIn("groupPriorityMinimum", out)
        self.assertIn("insecureSkipTLSVerify", out)

        out, _ = await self.kubectl("api-resources", binary=binary)
        names = [line.split()[0] for line in out.splitlines()[1:]]
        self.assertIn("apiservices", names)
        self.assertIn("externalnames", names)

    async def test_walkthrough_with_dispatcher(self) -> None:
        """The seed's steps 4 and 7 with the default kubectl, with restarts and a kill -9 between steps."""
        await self.start()
        await self.walkthrough(None)

        out, _ = await self.kubectl("apply", "--server-side", "-f", self.manifests)
        self.assertEqual(out.splitlines(), [
            "apiservice.apiregistration.k8s.io/v0alpha1.example.grafana.app serverside-applied",
            "externalname.service.grafana.app/example-apiserver serverside-applied",
        ])

        await self.stop("KILL")
        await self.start()
        out, _ = await self.kubectl("get", "apiservice", "v0alpha1.example.grafana.app", "-o", "json")
        self.assertEqual(json.loads(out)["spec"]["service"], {"name": "example-apiserver", "namespace": "grafana",
                                                               "port": 7443})
        out, _ = await self.kubectl("get", "externalname", "-n", "grafana", "example-apiserver",
                                    "-o", "jsonpath={.spec.host}")
        self.assertEqual(out, "127.0.0.1")

        out, _ = await self.kubectl("delete", "-f", self.manifests)
        self.assertEqual(out.splitlines(), [
            'apiservice.apiregistration.k8s.io "v0alpha1.example.grafana.app" deleted',
            'externalname.service.grafana.app "example-apiserver" deleted',
        ])
        await self.stop()
        await self.start()
        out, err = await self.kubectl("get", "apiservice", "v0alpha1.example.grafana.app", ok=False)
        self.assertIn('apiservices.apiregistration.k8s.io "v0alpha1.example.grafana.app" not found', err)

    async def test_walkthrough_kubectl_1_27(self) -> None:
        """kubectl 1.27 (OpenAPI v2 protobuf, v2beta1 discovery) runs the walk-through against a 1.27-emulating server."""
        binary = versioned_kubectl(27)
        await self.start("1.27")
        await self.walkthrough(binary)

    async def test_walkthrough_kubectl_1_33(self) -> None:
        """kubectl 1.33 runs the walk-through."""
        binary = versioned_kubectl(33)
        await self.start("1.33")
        await self.walkthrough(binary)

    async def test_watch_sees_change_by_another_client(self) -> None:
        """`kubectl get apiservice -w` prints a change another client makes."""
        await self.start()
        await self.kubectl("apply", "-f", self.manifests)
        watcher = DaemonProcess()
        watcher.serving.addErrback(lambda failure: None)
        process: Any = reactor.spawnProcess(  # type: ignore[attr-defined]
            watcher, require_kubectl(), ["kubectl", "get", "apiservice", "-w"], env=self.env, path=self.folder)
        self.addCleanup(lambda: Deferred.fromCoroutine(watcher.stop()))
        watcher.process = process
        for _ in range(100):
            if b"v0alpha1.example.grafana.app" in watcher.output:
                break
            await deferLater(reactor, 0.1, lambda: None)
        before = watcher.output.count(b"v0alpha1.example.grafana.app")
        await self.kubectl("label", "apiservice", "v0alpha1.example.grafana.app", "changed=yes")
        for _ in range(100):
            if watcher.output.count(b"v0alpha1.example.grafana.app") > before:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertGreater(watcher.output.count(b"v0alpha1.example.grafana.app"), before, watcher.output.decode())
        self.assertEqual(watcher.output.count(b"NAME"), 1, watcher.output.decode())
