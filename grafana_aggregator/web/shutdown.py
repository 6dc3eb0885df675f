"""Shutting down as kube-apiserver does: not ready first, then no new connections, then drain, then close."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.application import service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..storage import IStore
from .health import ReadinessService
from .root import InFlight

_log = Logger()


#: Seconds given to finished responses and ended watch streams to flush their last bytes at shutdown.
FLUSH_GRACE = 0.5


class GracefulServer(service.MultiService):
    """Owns the listener and the store, and stops them in kube-apiserver's order on SIGTERM.

    `/readyz` fails at once; requests keep being served for the shutdown delay; then the listener
    closes, in-flight requests get up to the drain timeout to finish, open watches are ended cleanly,
    and only then is the store flushed and its lock released.
    """

    def __init__(self, readiness: ReadinessService, in_flight: InFlight, watches: set[Any], store: IStore,
                 clock: Any, delay: float, drain_timeout: float,
                 before_close: Callable[[], Deferred[Any]] | None = None):
        super().__init__()
        #: Awaited after the watches end and before the store closes (the owner waits for its workers there).
        self._before_close = before_close
        self._readiness = readiness
        self._in_flight = in_flight
        self._watches = watches
        self._store = store
        self._clock = clock
        self._delay = delay
        self._drain_timeout = drain_timeout

    def stopService(self) -> Deferred[None]:
        self._readiness.shutting_down = True
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        _log.info("shutting down: not ready; serving for {delay} more seconds", delay=self._delay)
        if self._delay > 0:
            await deferLater(self._clock, self._delay, lambda: None)
        await super().stopService()
        drained = self._in_flight.idle()
        timer = self._clock.callLater(self._drain_timeout, drained.cancel)
        try:
            await drained
        except CancelledError:
            _log.warn("shutting down with requests still in flight after {seconds} seconds",
                      seconds=self._drain_timeout)
        else:
            if timer.active():
                timer.cancel()
        for stream in list(self._watches):
            stream.end()
        # Let the last responses and the ends of the watch streams reach their clients before the reactor
        # stops and drops the connections.
        await deferLater(self._clock, FLUSH_GRACE, lambda: None)
        if self._before_close is not None:
            await self._before_close()
        await self._store.close()
        _log.info("shut down cleanly")


class ClosingService(service.Service):
    """Runs a coroutine function when the daemon stops (closing pools, for example)."""

    def __init__(self, close: Callable[[], Coroutine[Any, Any, None]]):
        self._close = close

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._close())
