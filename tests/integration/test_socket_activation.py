"""systemd socket activation for real: the daemon adopts a listening socket passed as fd 3 and serves TLS on it."""

from __future__ import annotations

import os
import socket

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from .test_daemon import TWISTD, DaemonProcess

#: What systemd does for a socket unit: LISTEN_PID is the pid of the process that is to adopt the
#: sockets, so it is set by the shell that then execs (keeping its pid) into twistd.
WRAPPER = 'LISTEN_PID=$$ exec "$@"'


class SocketActivationTests(TestCase):
    """Start twistd with `--listen systemd:...` as grafana-aggregator.socket and its drop-in do, on a socket the test bound."""

    timeout = 120

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.data = os.path.join(self.folder, "data")
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1",
                    "LISTEN_FDS": "1", "LISTEN_FDNAMES": "grafana-aggregator"}
        for name in ("KUBECONFIG", "LISTEN_PID"):
            self.env.pop(name, None)

    def bind(self) -> socket.socket:
        """A listening TCP socket on an ephemeral loopback port, as systemd's ListenStream= makes one."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        return listener

    def start(self, listener: socket.socket, *args: str) -> DaemonProcess:
        """Run the daemon with the listener as its fd 3, LISTEN_PID being its own pid."""
        daemon = DaemonProcess()
        argv = ["/bin/sh", "-c", WRAPPER, "sh", TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", *args]
        daemon.process = reactor.spawnProcess(daemon, argv[0], argv, env=self.env, path=self.folder,
                                              childFDs={0: "w", 1: "r", 2: "r", 3: listener.fileno()})
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        return daemon

    def client(self) -> HTTPClient:
        """An HTTPS client trusting only the root of the self-signed serving chain the daemon generated."""
        with open(os.path.join(self.data, "grafana-apiserver", "certs", "apiserver.crt"), "rb") as handle:
            anchor = x509.load_pem_x509_certificates(handle.read())[-1]
        policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor.public_bytes(Encoding.PEM)))
        return HTTPClient(Agent(reactor, policy, pool=HTTPConnectionPool(reactor, persistent=False)))

    async def test_serves_tls_on_passed_socket(self) -> None:
        """The daemon serves /healthz and, with the kubeconfig's token, /version over TLS on the socket it was passed."""
        listener = self.bind()
        port = listener.getsockname()[1]
        daemon = self.start(listener, "--listen", "systemd:domain=INET:index=0", "--data-dir", self.data,
                            "--ensure-kubectl-access", "true")
        url = await daemon.serving
        self.assertEqual(url, f"https://127.0.0.1:{port}", daemon.output.decode())

        base = f"https://127.0.0.1:{port}"
        client = self.client()
        response = await client.get(base + "/healthz")
        self.assertEqual((response.code, await response.text()), (200, "ok"))

        with open(os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig"), encoding="utf-8") as handle:
            kubeconfig = yaml.safe_load(handle)
        token = kubeconfig["users"][0]["user"]["token"]
        headers: dict[bytes | str, bytes | str] = {"Authorization": f"Bearer {token}"}
        response = await client.get(base + "/version", headers=headers)
        self.assertEqual(response.code, 200)
        version = await response.json()
        self.assertEqual((version["major"], version["minor"]), ("1", "33"))

        self.assertIn(await daemon.stop(), (0, -15))
