"""A real etcd for the tests: `EtcdServer` runs the `etcd` binary on free loopback ports with a temporary data
folder, waits until it answers, and stops it.  Without the binary the tests skip, except in CI (`CI` set), where a
missing etcd is a failure: `.ci/run` installs Debian's `etcd-server`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest

T = TypeVar("T")

#: Seconds etcd gets to start answering.
START_TIMEOUT = 20.0


def etcd_binary() -> str:
    """The etcd binary; SkipTest without it locally, an error in CI."""
    binary = shutil.which("etcd")
    if binary is None:
        message = "etcd is not installed (apt-get install etcd-server): the etcd store's tests need a real etcd"
        if os.environ.get("CI"):
            raise RuntimeError(message)
        raise SkipTest(message)
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EtcdServer:
    """One etcd member on 127.0.0.1 (client and peer ports free at start), its data in a temporary folder."""

    def __init__(self) -> None:
        self.binary = etcd_binary()
        self.folder = tempfile.mkdtemp(prefix="etcd-test-")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client endpoint."""
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        """Run etcd (again, on the same ports and data) and wait until it is healthy."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(os.path.join(self.folder, "etcd.log"), "ab")
        self.process = subprocess.Popen(
            [self.binary, "--name", "test", "--data-dir", os.path.join(self.folder, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--log-level", "warn", "--logger", "zap"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.folder}/etcd.log")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if b'"true"' in answer.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy within {START_TIMEOUT:g} s; see {self.folder}/etcd.log")

    def stop(self) -> None:
        """Stop etcd (its data stays until `remove`)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def remove(self) -> None:
        """Stop etcd and delete its data."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


_shared: EtcdServer | None = None


def shared_etcd() -> EtcdServer:
    """One etcd for the whole test run (tests use their own key prefixes), removed when the run ends."""
    global _shared
    if _shared is None or _shared.process is None:
        server = EtcdServer()
        server.start()
        _shared = server
        atexit.register(server.remove)
    return _shared


def spin(deferred: Deferred[T], timeout: float = 15.0) -> None:
    """Run the global reactor until deferred has fired (a SynchronousTestCase's way to talk to a real etcd)."""
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not deferred.called and time.monotonic() < deadline:
        reactor.iterate(0.002)  # type: ignore[attr-defined]
    if not deferred.called:
        raise AssertionError(f"not done within {timeout:g} s")


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 15.0) -> Deferred[T]:
    """The coroutine's Deferred, fired (by spinning the reactor)."""
    deferred = Deferred.fromCoroutine(coroutine)
    spin(deferred, timeout)
    return deferred


def client_for(server: EtcdServer, timeout: float = 5.0) -> Any:
    """An EtcdClient of server over TCP endpoints made directly (no name resolution: the reactor's resolver
    needs a running reactor's thread pool, and the conformance tests only iterate the reactor)."""
    from treq.client import HTTPClient
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.web.client import Agent, HTTPConnectionPool

    from grafana_aggregator.storage.etcd_client import EtcdClient

    class Direct:
        def endpointForURI(self, uri: Any) -> TCP4ClientEndpoint:
            return TCP4ClientEndpoint(reactor, uri.host.decode(), uri.port, timeout=timeout)

    pool = HTTPConnectionPool(reactor)
    agent = Agent.usingEndpointFactory(reactor, Direct(), pool)
    return EtcdClient([server.url], HTTPClient(agent), reactor, timeout, pool)


def etcdctl_binary() -> str:
    """etcdctl (Debian's etcd-client), for the backup and restore test; SkipTest without it locally, an error in CI."""
    binary = shutil.which("etcdctl")
    if binary is None:
        message = "etcdctl is not installed (apt-get install etcd-client): the etcd backup and restore test needs it"
        if os.environ.get("CI"):
            raise RuntimeError(message)
        raise SkipTest(message)
    return binary
