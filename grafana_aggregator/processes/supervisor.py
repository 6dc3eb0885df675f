# -*- test-case-name: tests.test_workers -*-
"""The owner's side of the workers: starting them on the shared socket, restarting them, stopping them.

Each worker is the same program started again (`Command`) with the listening socket as its file
descriptor 3 and a pipe on its descriptor 4 on which it reports `ready` (its informer is synced and
it accepts) or `not-ready` (it is shutting down), and the hints the availability controller takes
from the proxy: `unreachable <apiservice>` and `closed <host> <port>` (a backend closed an idle
pooled connection).  A worker that exits while the owner runs is
restarted after an exponential backoff (1 s doubling to 30 s; back to 1 s once it reports ready),
logged and counted in `grafana_aggregator_worker_restarts_total`.  Stopping sends SIGTERM to every
worker and fires once all have exited (SIGKILL after `stop_timeout`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from attrs import define, field
from prometheus_client import CollectorRegistry, Counter
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()

#: Seconds before the first restart of a worker that exited; doubled per exit in a row, up to RESTART_MAX.
RESTART_BASE = 1.0
RESTART_MAX = 30.0
#: The worker's end of the socket it accepts on, and of the pipe it reports readiness on.
LISTEN_FD = 3
STATUS_FD = 4
#: The environment variable that makes the program a worker: `<index>:<channel folder>`.
WORKER_ENV = "GRAFANA_AGGREGATOR_WORKER"

#: What starts worker `index`: the executable, its argv and its environment.
Command = Callable[[int], tuple[str, list[str], dict[str, str]]]


def restart_delay(failures: int, base: float = RESTART_BASE, most: float = RESTART_MAX) -> float:
    """The backoff before restarting a worker that exited `failures` times in a row (1, 2, 4, … seconds, capped)."""
    return float(min(most, base * 2 ** max(0, failures - 1)))


@define
class _Slot:
    index: int
    process: Any = None
    pid: int | None = None
    ready: bool = False
    failures: int = 0
    restart: IDelayedCall | None = None
    exited: list[Deferred[None]] = field(factory=list)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, slot: _Slot):
        self._supervisor = supervisor
        self._slot = slot
        self._pending = b""

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd != STATUS_FD:
            return
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._supervisor.reported(self._slot, line.strip().decode("ascii", "replace"))

    def processEnded(self, reason: Failure) -> None:
        self._supervisor.ended(self._slot, reason)


class WorkerSupervisor(Service):
    """Runs workers 1 … count-1 of the owner (worker 0) on the owner's listening socket.

    :param reactor: spawns the processes and times the restarts.
    :param count: the number of processes in all, the owner included.
    :param command: what starts one worker.
    :param registry: where the restart counter is kept (the owner's metrics).
    :param stop_timeout: seconds the workers get to drain after SIGTERM before SIGKILL.
    """

    def __init__(self, reactor: Any, count: int, command: Command, registry: CollectorRegistry | None = None,
                 stop_timeout: float = 90.0, on_unreachable: Callable[[str], None] = lambda name: None,
                 on_backend_closed: Callable[[str, int], None] = lambda host, port: None):
        self._reactor = reactor
        self._on_unreachable = on_unreachable
        self._on_backend_closed = on_backend_closed
        self._command = command
        self._stop_timeout = stop_timeout
        self._slots = [_Slot(index) for index in range(1, count)]
        self._listen_fd: int | None = None
        self._stopping = False
        self.restarts = Counter("grafana_aggregator_worker_restarts_total",
                                "Worker processes restarted after they exited, by worker number.", ["worker"],
                                registry=registry)

    def on_unreachable_hint(self, unreachable: Callable[[str], None], closed: Callable[[str, int], None]) -> None:
        """Where the workers' hints go: the availability controller's recheck and backend-closed handlers."""
        self._on_unreachable = unreachable
        self._on_backend_closed = closed

    # Starting.

    def start_workers(self, listen_fd: int) -> None:
        """Start every worker on this listening socket (once the owner listens)."""
        self._listen_fd = listen_fd
        if self._stopping:
            return
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart = None
        if self._stopping or self._listen_fd is None:
            return
        executable, argv, env = self._command(slot.index)
        slot.ready = False
        slot.process = self._reactor.spawnProcess(
            _WorkerProtocol(self, slot), executable, argv, env=env, path=os.getcwd(),
            childFDs={0: "w", 1: 1, 2: 2, LISTEN_FD: self._listen_fd, STATUS_FD: "r"})
        slot.pid = slot.process.pid
        _log.info("started worker {worker} (pid {pid})", worker=slot.index, pid=slot.pid)

    # What the workers report.

    def reported(self, slot: _Slot, status: str) -> None:
        if status == "ready":
            slot.ready = True
            slot.failures = 0
            _log.info("worker {worker} is ready", worker=slot.index)
        elif status == "not-ready":
            slot.ready = False
        elif status.startswith("unreachable "):
            self._on_unreachable(status.partition(" ")[2])
        elif status.startswith("closed "):
            host, _, port = status.partition(" ")[2].rpartition(" ")
            if port.isdigit():
                self._on_backend_closed(host, int(port))

    def ended(self, slot: _Slot, reason: Failure) -> None:
        code: Any = None
        signal: Any = None
        if isinstance(reason.value, (ProcessDone, ProcessTerminated)):
            code, signal = reason.value.exitCode, reason.value.signal
        slot.process, slot.ready = None, False
        waiting, slot.exited = slot.exited, []
        for waiter in waiting:
            waiter.callback(None)
        if self._stopping:
            _log.info("worker {worker} exited (status {code}, signal {signal})", worker=slot.index, code=code,
                      signal=signal)
            return
        slot.failures += 1
        delay = restart_delay(slot.failures)
        self.restarts.labels(worker=str(slot.index)).inc()
        _log.warn("worker {worker} (pid {pid}) exited (status {code}, signal {signal}); restarting it in {delay} s",
                  worker=slot.index, pid=slot.pid, code=code, signal=signal, delay=delay)
        slot.restart = self._reactor.callLater(delay, self._spawn, slot)

    # What the owner asks.

    def check(self) -> str | None:
        """The `workers` readiness check: None once every worker runs and is ready."""
        if self._listen_fd is None:
            return "the workers are not started yet"
        problems = []
        for slot in self._slots:
            if slot.process is None:
                problems.append(f"worker {slot.index} is not running")
            elif not slot.ready:
                problems.append(f"worker {slot.index} is not ready")
        return "; ".join(problems) or None

    def running_workers(self) -> list[int]:
        """The numbers of the workers whose process runs now."""
        return [slot.index for slot in self._slots if slot.process is not None]

    # Stopping.

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        waits: list[Deferred[None]] = []
        for slot in self._slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None
            if slot.process is not None:
                exited: Deferred[None] = Deferred()
                slot.exited.append(exited)
                waits.append(exited)
                self._signal(slot, "TERM")
        if not waits:
            return Deferred.fromCoroutine(_nothing())
        kill = self._reactor.callLater(self._stop_timeout, self._kill_all)
        done: Deferred[Any] = DeferredList(waits)

        def finished(result: object) -> None:
            if kill.active():
                kill.cancel()

        return done.addCallback(finished)

    def exited(self) -> Deferred[None]:
        """Fires once every worker has exited (at once when none runs)."""
        waits: list[Deferred[None]] = []
        for slot in self._slots:
            if slot.process is not None:
                waiter: Deferred[None] = Deferred()
                slot.exited.append(waiter)
                waits.append(waiter)
        return DeferredList(waits).addCallback(lambda _: None)

    def _kill_all(self) -> None:
        for slot in self._slots:
            if slot.process is not None:
                _log.warn("worker {worker} did not exit in {seconds} s; killing it", worker=slot.index,
                          seconds=self._stop_timeout)
                self._signal(slot, "KILL")

    @staticmethod
    def _signal(slot: _Slot, name: str) -> None:
        try:
            slot.process.signalProcess(name)
        except ProcessExitedAlready:
            pass


async def _nothing() -> None:
    return None
