"""The installed twistd plugin as a real process: listed by twistd, serving TLS, and driven by the real kubectl."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
SERVING = re.compile(rb"serving on (https://\S+)")


def require_kubectl() -> str:
    """The kubectl binary; in CI its absence is a failure, elsewhere a skip."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("kubectl is not installed, and CI must run the end-to-end tests")
        raise SkipTest("kubectl is not installed")
    return kubectl


async def get_until(client: HTTPClient, url: str, headers: dict[str, str], code: int, pause: float,
                    tries: int = 100) -> int:
    """GET url until it answers `code` (the body read each time), at most `tries` times `pause` seconds apart;
    returns the last status, for the caller to assert on."""
    status = 0
    for _ in range(tries):
        response = await client.get(url, headers=headers)
        await response.content()
        status = response.code
        if status == code:
            break
        await deferLater(reactor, pause, lambda: None)
    return status


class DaemonProcess(ProcessProtocol):
    """A running `twistd -n grafana-aggregator`; `serving` fires with its URL, `ended` with its exit."""

    def __init__(self) -> None:
        self.output = b""
        self.process: Any = None
        self.serving: Deferred[str] = Deferred()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = SERVING.search(self.output)
        if match and not self.serving.called:
            self.serving.callback(match.group(1).decode())

    errReceived = outReceived

    async def stop(self) -> int:
        """SIGTERM the daemon (if it still runs) and wait for its exit code."""
        if not self.ended.called:
            self.process.signalProcess("TERM")
        return await self.ended

    def processEnded(self, reason: Failure) -> None:
        """Record how the daemon ended: its exit status, or minus the signal that ended it."""
        code = -1
        if isinstance(reason.value, (ProcessDone, ProcessTerminated)):
            code = reason.value.exitCode if reason.value.exitCode is not None else -(reason.value.signal or 0)
        if not self.serving.called:
            self.serving.errback(AssertionError(f"daemon exited ({code}) before serving:\n{self.output.decode()}"))
        self.ended.callback(code)


class DaemonTests(TestCase):
    """Start the daemon the way `make run` does, on an ephemeral loopback port, and talk to it."""

    timeout = 120

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}
        self.env.pop("KUBECONFIG", None)

    def start(self, *args: str) -> DaemonProcess:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", *args]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        return daemon

    async def execute(self, *argv: str) -> tuple[bytes, bytes, int]:
        return await getProcessOutputAndValue(argv[0], argv[1:], env=self.env, path=self.folder)  # type: ignore[no-any-return]

    async def test_plugin_listed(self) -> None:
        """The installed package makes `twistd --help` list grafana-aggregator and its --help exit 0."""
        out, err, code = await self.execute(TWISTD, "--help")
        self.assertEqual(code, 0, err)
        self.assertIn(b"grafana-aggregator", out)
        out, err, code = await self.execute(TWISTD, "grafana-aggregator", "--help")
        self.assertEqual(code, 0, err)
        self.assertIn(b"--secure-port", out)
        self.assertIn(b"--requestheader-allowed-names", out)

    async def test_config_error_names_key_and_file(self) -> None:
        """A bad value stops startup with a message naming the key and the file."""
        ini = os.path.join(self.folder, "bad.ini")
        with open(ini, "w") as handle:
            handle.write("[grafana-apiserver]\nsecure_port = sixty\n")
        out, err, code = await self.execute(TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--config", ini)
        self.assertNotEqual(code, 0)
        self.assertIn(f"invalid value for [grafana-apiserver] secure_port in {ini}: 'sixty' is not a port number".encode(),
                      out + err)

    async def test_kubectl_through_written_kubeconfig(self) -> None:
        """kubectl reaches the daemon through the kubeconfig it writes, verifying its certificate, across a restart."""
        kubectl = require_kubectl()
        args = ("--listen", "tcp:0:interface=127.0.0.1", "--data-dir", os.path.join(self.folder, "data"),
                "--ensure-kubectl-access", "true")
        daemon = self.start(*args)
        url = await daemon.serving
        kubeconfig = os.path.join(self.folder, "data", "grafana-apiserver", "grafana.kubeconfig")
        self.assertEqual(os.stat(kubeconfig).st_mode & 0o777, 0o600)
        self.env["KUBECONFIG"] = kubeconfig

        out, err, code = await self.execute(kubectl, "version", "-o", "json")
        self.assertEqual(code, 0, err)
        version: Any = json.loads(out)
        self.assertEqual((version["serverVersion"]["major"], version["serverVersion"]["minor"]), ("1", "33"))
        self.assertTrue(version["clientVersion"]["gitVersion"].startswith("v1.33."), version["clientVersion"])

        out, err, code = await self.execute(kubectl, "get", "--raw", "/readyz?verbose")
        self.assertEqual((out, code), (b"[+]ping ok\n[+]storage ok\n[+]shutdown ok\n[+]poststarthook/local-apiservice-registration ok\n"
                                       b"[+]autoregister-completion ok\n"
                                       b"[+]poststarthook/apiservice-status-available-controller ok\n"
                                       b"[+]poststarthook/apiservice-discovery-controller ok\n"
                                       b"readyz check passed\n", 0), err)

        out, err, code = await self.execute(kubectl, "get", "--raw", "/apis")
        self.assertEqual(code, 0, err)
        self.assertEqual([g["name"] for g in json.loads(out)["groups"]], ["apiregistration.k8s.io", "authentication.k8s.io",
                                                                          "authorization.k8s.io", "apiextensions.k8s.io",
                                                                          "service.grafana.app"])

        # Restart on another port: the kubeconfig is rewritten, and the token and CA still work.
        self.assertEqual(await daemon.stop(), 0)
        daemon = self.start(*args)
        second = await daemon.serving
        self.assertNotEqual(url, second)
        out, err, code = await self.execute(kubectl, "get", "--raw", "/version")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["minor"], "33")

    async def test_anonymous_apis_is_401(self) -> None:
        """Without credentials, /apis answers the 401 Status and /healthz answers ok, over the self-signed certificate."""
        daemon = self.start("--listen", "tcp:0:interface=127.0.0.1", "--data-dir", os.path.join(self.folder, "data"))
        url = await daemon.serving
        with open(os.path.join(self.folder, "data", "grafana-apiserver", "certs", "apiserver.crt"), "rb") as handle:
            anchor = x509.load_pem_x509_certificates(handle.read())[-1]
        policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor.public_bytes(Encoding.PEM)))
        client = HTTPClient(Agent(reactor, policy, pool=HTTPConnectionPool(reactor, persistent=False)))
        response = await client.get(url + "/apis")
        self.assertEqual((response.code, await response.json()), (401, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401}))
        response = await client.get(url + "/healthz")
        self.assertEqual((response.code, await response.text()), (200, "ok"))

    async def test_emulated_version_selects_kubectl_binary(self) -> None:
        """--emulated-version 1.27 makes the version-dispatching kubectl run its 1.27 binary."""
        kubectl = require_kubectl()
        daemon = self.start("--listen", "tcp:0:interface=127.0.0.1", "--data-dir", os.path.join(self.folder, "data"),
                            "--ensure-kubectl-access", "true", "--emulated-version", "1.27")
        await daemon.serving
        self.env["KUBECONFIG"] = os.path.join(self.folder, "data", "grafana-apiserver", "grafana.kubeconfig")
        out, err, code = await self.execute(kubectl, "version", "-o", "json")
        self.assertEqual(code, 0, err)
        version: Any = json.loads(out)
        self.assertEqual(version["serverVersion"]["minor"], "27")
        self.assertTrue(version["clientVersion"]["gitVersion"].startswith("v1.27."), version["clientVersion"])
