# -*- test-case-name: tests.test_workqueue -*-
"""A keyed work queue: controllers say "sync this key" and the queue decides when, like client-go's workqueue.

- **Single flight per key.** A key runs at most once at a time; adds that arrive while it runs fold
  into one more run right after it.
- **Retry with capped backoff.** A sync that raises (`Retry` for an expected failure, anything else is
  logged too) runs again after a per-key delay that doubles from `initial_backoff` up to
  `max_backoff`; a sync that returns resets it.
- **Rate limit.** `add_rate_limited` runs a key at most once per `min_interval`, so a burst of hints
  (failing proxied requests, say) cannot become a burst of syncs.
- **Spread over reactor turns.** At most `per_turn` keys start in one reactor turn; the rest start
  in the turns that follow, so a thousand keys never stall the requests being served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from attrs import define
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..storage import StorageUnavailableError

_log = Logger()

#: Keys started in one reactor turn; the rest start in later turns.
PER_TURN = 100


class Retry(Exception):
    """A sync did not reach its goal (a backend is down, say): run the key again after its backoff."""


@define(eq=False)
class _Item:
    """The state of one key."""

    #: A run is in progress (from before its first step, so an add made by the sync itself folds in).
    busy: bool = False
    #: The Deferred of the run in progress, once it waits for something.
    running: Deferred[None] | None = None
    #: Something asked for the key while it ran: run it once more at the end.
    again: bool = False
    #: The delayed start of the key (a retry, an add_after or a rate-limited add).
    timer: IDelayedCall | None = None
    #: The delay before the next retry.
    backoff: float = 0.0
    #: When the key last started, by the queue's clock.
    started: float | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class WorkQueue:
    """Runs `sync(key)` for the keys added to it (see the module docstring for the rules).

    :param clock: time for retries, delayed adds and the reactor turns.
    :param sync: the coroutine function that brings one key to its goal.
    :param name: names the queue in logs.
    """

    def __init__(self, clock: IReactorTime, sync: Callable[[str], Awaitable[None]], name: str, *,
                 initial_backoff: float = 0.5, max_backoff: float = 60.0, min_interval: float | None = None,
                 per_turn: int = PER_TURN):
        self._clock = clock
        self._sync = sync
        self._name = name
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._min_interval = initial_backoff if min_interval is None else min_interval
        self._per_turn = per_turn
        self._items: dict[str, _Item] = {}
        #: Keys waiting for a later reactor turn, in the order they were added.
        self._waiting: dict[str, None] = {}
        self._started_this_turn = 0
        self._next_turn: IDelayedCall | None = None
        self._stopped = False

    # Adding keys.

    def add(self, key: str) -> None:
        """Sync the key now (or in a coming reactor turn); if it is running, once more when that run ends."""
        if self._stopped:
            return
        item = self._item(key)
        if item.busy:
            item.again = True
            return
        item.cancel_timer()
        if key in self._waiting:
            return
        if self._started_this_turn < self._per_turn:
            self._start(key, item)
        else:
            self._waiting[key] = None
            self._schedule_turn()

    def add_all(self, keys: Iterable[str]) -> None:
        """Add every key (the periodic resync); those past this turn's share start in later turns."""
        for key in keys:
            self.add(key)

    def add_after(self, key: str, delay: float) -> None:
        """Sync the key in `delay` seconds, unless it is already due sooner."""
        if self._stopped:
            return
        item = self._item(key)
        if item.timer is not None and item.timer.active():
            if item.timer.getTime() <= self._clock.seconds() + delay:
                return
            item.timer.cancel()
        item.timer = self._clock.callLater(delay, self._due, key)

    def add_rate_limited(self, key: str) -> None:
        """Sync the key now, or `min_interval` after it last started, whichever is later."""
        if self._stopped:
            return
        item = self._item(key)
        if item.started is not None:
            wait = item.started + self._min_interval - self._clock.seconds()
            if wait > 0:
                self.add_after(key, wait)
                return
        self.add(key)

    def forget(self, key: str) -> None:
        """Drop everything about a key: its timer, its place in line, its backoff, and the run in progress."""
        item = self._items.pop(key, None)
        self._waiting.pop(key, None)
        if item is None:
            return
        item.cancel_timer()
        if item.running is not None:
            item.running.cancel()

    def stop(self) -> None:
        """Forget every key and accept no more."""
        self._stopped = True
        for key in list(self._items):
            self.forget(key)
        if self._next_turn is not None and self._next_turn.active():
            self._next_turn.cancel()
        self._next_turn = None

    # Inspecting.

    def running(self, key: str) -> Deferred[None] | None:
        """The run of the key in progress (it fires with None when the run ends), if any."""
        item = self._items.get(key)
        return item.running if item is not None else None

    def in_flight(self) -> dict[str, Deferred[None]]:
        """The runs in progress, by key."""
        return {key: item.running for key, item in self._items.items() if item.running is not None}

    def pending(self, key: str) -> bool:
        """Whether the key runs, waits for a reactor turn, or has a start scheduled."""
        item = self._items.get(key)
        if item is None:
            return False
        return item.busy or key in self._waiting or (item.timer is not None and item.timer.active())

    # Running.

    def _item(self, key: str) -> _Item:
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = _Item(backoff=self._initial_backoff)
        return item

    def _due(self, key: str) -> None:
        item = self._items.get(key)
        if item is not None:
            item.timer = None
            self.add(key)

    def _schedule_turn(self) -> None:
        if self._next_turn is None or not self._next_turn.active():
            self._next_turn = self._clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._next_turn = None
        self._started_this_turn = 0
        while self._waiting and self._started_this_turn < self._per_turn:
            key = next(iter(self._waiting))
            del self._waiting[key]
            item = self._items.get(key)
            if item is not None and not item.busy:
                self._start(key, item)
        if self._waiting:
            self._schedule_turn()

    def _start(self, key: str, item: _Item) -> None:
        if self._started_this_turn == 0:
            # The share of this turn is counted until the reactor turns over.
            self._schedule_turn()
        self._started_this_turn += 1
        item.busy = True
        run = Deferred.fromCoroutine(self._run(key, item))
        if item.busy:
            item.running = run
        run.addErrback(self._run_failed, key)

    async def _run(self, key: str, item: _Item) -> None:
        failed = False
        try:
            while True:
                item.again = False
                item.started = self._clock.seconds()
                try:
                    await self._sync(key)
                    failed = False
                except CancelledError:
                    raise
                except Retry:
                    failed = True
                except StorageUnavailableError as error:
                    _log.warn("{queue}: syncing {key} failed: {error}", queue=self._name, key=key, error=str(error))
                    failed = True
                except Exception:
                    _log.failure("{queue}: syncing {key} failed", queue=self._name, key=key)
                    failed = True
                if not item.again or self._stopped or self._items.get(key) is not item:
                    break
        finally:
            item.busy = False
            item.running = None
        if self._stopped or self._items.get(key) is not item:
            return
        if failed:
            delay = item.backoff
            item.backoff = min(item.backoff * 2, self._max_backoff)
            self.add_after(key, delay)
        else:
            item.backoff = self._initial_backoff

    def _run_failed(self, failure: Failure, key: str) -> Any:
        if not failure.check(CancelledError):
            _log.failure("{queue}: the run of {key} failed", failure, queue=self._name, key=key)
        return None
