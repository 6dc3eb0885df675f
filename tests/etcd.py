"""A real etcd for the tests: `EtcdServer` runs the `etcd` binary on free loopback ports with a temporary data
folder, waits until it answers, and stops it; `EtcdCluster` runs three such members as one cluster, for the fault
tests (kill, pause or restart one member or all).  Without the binary the tests skip, except in CI (`CI` set), where a
missing etcd is a failure: `.ci/run` installs Debian's `etcd-server`.
"""

from __future__ import annotations

import atexit
import json
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
    """One etcd member on 127.0.0.1 (client and peer ports free at start), its data in a temporary folder.

    Alone it is a one-member cluster; `EtcdCluster` makes several share an initial cluster (`cluster` is then
    `name=peer,...` and `folder` a sub-folder of the cluster's).
    """

    def __init__(self, name: str = "test", cluster: str | None = None, folder: str | None = None) -> None:
        self.binary = etcd_binary()
        self.name = name
        self.folder = folder if folder is not None else tempfile.mkdtemp(prefix="etcd-test-")
        os.makedirs(self.folder, exist_ok=True)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client endpoint."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The peer endpoint."""
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        """Run etcd (again, on the same ports and data) and wait until it is healthy."""
        self.launch()
        self.wait_healthy()

    def launch(self) -> None:
        """Run etcd (again, on the same ports and data) without waiting (a cluster's members start together)."""
        log = open(os.path.join(self.folder, "etcd.log"), "ab")
        self.process = subprocess.Popen(
            [self.binary, "--name", self.name, "--data-dir", os.path.join(self.folder, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", self.cluster or f"{self.name}={self.peer_url}",
             "--initial-cluster-token", os.path.basename(os.path.dirname(self.folder.rstrip("/")))
             if self.cluster else "etcd-cluster",
             "--log-level", "warn", "--logger", "zap"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the member answers healthy (it has a leader); RuntimeError (after stopping it) if not."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
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
        raise RuntimeError(f"etcd did not become healthy within {timeout:g} s; see {self.folder}/etcd.log")

    def kill(self) -> None:
        """SIGKILL etcd, as a crash would (its data stays)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def pause(self) -> None:
        """SIGSTOP etcd: its sockets stay open and connections hang (the harder kind of outage)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT etcd after `pause`."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop etcd (its data stays until `remove`)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
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

    def status(self) -> dict[str, Any]:
        """The member's /v3/maintenance/status (its id, the leader's id, its revision)."""
        request = urllib.request.Request(f"{self.url}/v3/maintenance/status", data=b"{}")
        with urllib.request.urlopen(request, timeout=2) as answer:
            return json.load(answer)  # type: ignore[no-any-return]


class EtcdCluster:
    """Several etcd members on loopback ports (3 by default), each with its own data folder, started together;
    a test kills, pauses or restarts one member or all of them."""

    def __init__(self, size: int = 3) -> None:
        self.folder = tempfile.mkdtemp(prefix="etcd-cluster-")
        names = [f"m{index}" for index in range(size)]
        self.members = [EtcdServer(name, folder=os.path.join(self.folder, name)) for name in names]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.cluster = cluster

    @property
    def urls(self) -> list[str]:
        """The members' client endpoints, in order."""
        return [member.url for member in self.members]

    def start(self) -> None:
        """Run every member that is not running and wait until each is healthy."""
        for member in self.members:
            if member.process is None:
                member.launch()
        for member in self.members:
            member.wait_healthy()

    def leader(self) -> int:
        """The index of the raft leader, as the running members report it."""
        for _ in range(100):
            for member in self.members:
                if member.process is None:
                    continue
                try:
                    status = member.status()
                except OSError:
                    continue
                leader = int(status.get("leader", 0))
                for index, other in enumerate(self.members):
                    if other.process is not None and leader:
                        try:
                            if int(other.status()["header"]["member_id"]) == leader:
                                return index
                        except OSError:
                            continue
            time.sleep(0.1)
        raise RuntimeError("no etcd member reports a leader")

    def revision(self) -> int:
        """The cluster's current revision (from the first running member)."""
        for member in self.members:
            if member.process is not None:
                return int(member.status()["header"]["revision"])
        raise RuntimeError("no etcd member runs")

    def kill_all(self) -> None:
        """SIGKILL every member."""
        for member in self.members:
            member.kill()

    def pause_all(self) -> None:
        """SIGSTOP every member."""
        for member in self.members:
            member.pause()

    def resume_all(self) -> None:
        """SIGCONT every member."""
        for member in self.members:
            member.resume()

    def remove(self) -> None:
        """Stop every member and delete their data."""
        for member in self.members:
            member.stop()
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
