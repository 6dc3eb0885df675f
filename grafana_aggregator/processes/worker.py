# -*- test-case-name: tests.test_workers -*-
"""The worker's own parts: the adopted listening socket, readiness reports, the owner watch, the worker field.

A worker accepts on the socket the owner passed as descriptor 3 (so `--listen systemd:…` and any
other endpoint keep working), tells the owner on descriptor 4 when it is ready or stops being so,
and stops by itself once its owner is gone (it was re-parented).  Every log event of its access
log carries the worker's number.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

_log = Logger()

#: Seconds between checks that the owner still runs.
OWNER_CHECK_INTERVAL = 1.0


class WorkerLogger(Logger):
    """A Logger whose every event carries `worker` (0 for the owner): the access log says which process served.

    With `in_text`, the text form of each event ends with `worker=<n>` too (when several processes log).
    """

    def __init__(self, namespace: str, worker: int, in_text: bool = False):
        super().__init__(namespace)
        self._worker = worker
        self._in_text = in_text

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("worker", self._worker)
        if self._in_text and format is not None:
            format += " worker={worker}"
        super().emit(level, format, **kwargs)


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """An endpoint that 'listens' by adopting an already listening socket passed down by the owner."""

    def __init__(self, reactor: Any, fd: int):
        self._reactor = reactor
        self._fd = fd

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        probe = socket.socket(fileno=os.dup(self._fd))
        family = probe.family
        probe.close()
        port = accept_one_at_a_time(self._reactor.adoptStreamPort(self._fd, family, protocolFactory))
        os.close(self._fd)
        return succeed(port)


_ONE_AT_A_TIME: dict[type, type] = {}


def accept_one_at_a_time(port: Any) -> Any:
    """Make a listening port accept one connection per wake-up, so processes sharing its socket share its load.

    Twisted's port accepts up to `numberAccepts` connections per wake-up (100, growing by 20): when a
    burst arrives, the first process to wake takes all of it.  Pinned to one, every process woken for
    the socket takes its turn.  The seam: the port's class is swapped for a subclass whose
    `numberAccepts` stays 1 (Twisted assigns it after each accept loop).
    """
    base = type(port)
    if not isinstance(port, tcp.Port):  # Unix ports are tcp.Ports too
        return port
    pinned = _ONE_AT_A_TIME.get(base)
    if pinned is None:
        pinned = _ONE_AT_A_TIME[base] = type(f"OneAtATime{base.__name__}", (base,), {
            "numberAccepts": property(lambda self: 1, lambda self, value: None)})
    port.__class__ = pinned
    return port


class StatusReporter:
    """Writes `ready` / `not-ready` lines to the owner's status pipe (nothing when there is none)."""

    def __init__(self, fd: int | None):
        self._fd = fd

    def report(self, status: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, status.encode("ascii") + b"\n")
        except OSError:
            self._fd = None


class OwnerWatch(Service):
    """Stops the worker when its owner is gone: its parent process changed (the owner died and it was re-parented)."""

    def __init__(self, clock: Any, stop: Callable[[], object], owner: int, parent: Callable[[], int] = os.getppid,
                 interval: float = OWNER_CHECK_INTERVAL):
        self._clock = clock
        self._stop = stop
        self._parent = parent
        self._owner = owner
        self._interval = interval
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        if self._parent() != self._owner:
            _log.warn("the owner process {pid} is gone; this worker stops", pid=self._owner)
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            self._clock.callLater(0, self._stop)
