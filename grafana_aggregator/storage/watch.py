"""In-memory fan-out of storage changes to watchers, with a bounded history so a watch can resume from a
resourceVersion (like kube-apiserver's watch cache, for one store)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import define, field
from twisted.logger import Logger
from zope.interface import implementer

from .interface import EXPIRED, Collection, ExpiredError, IWatch, WatchEvent

_log = Logger()

#: How many events a hub keeps for watches that resume from an older resourceVersion.
DEFAULT_HISTORY_SIZE = 4096


@implementer(IWatch)
@define(eq=False)
class _Subscription:
    """One registered watch: what it wants, where events go, and the last resourceVersion it was given."""

    _hub: WatchHub
    collection: Collection
    namespace: str | None
    on_event: Callable[[WatchEvent], None]
    since: int
    active: bool = True

    def wants(self, event: WatchEvent) -> bool:
        """Whether the event is of this watch's collection and namespace (every namespace when None)."""
        return event.collection == self.collection and (self.namespace is None or event.namespace == self.namespace)

    def cancel(self) -> None:
        """Stop delivering events; calling it again does nothing."""
        if self.active:
            self.active = False
            self._hub._unsubscribe(self)


@define
class WatchHub:
    """Delivers every published WatchEvent, synchronously and in resourceVersion order, to the matching watches.

    `resource_version` is the latest change the hub knows of: pass the store's current resourceVersion
    when the hub is made for a store that already holds data (its history then starts empty, and only
    a watch from that resourceVersion or later can be served).  Events are shared between watchers:
    callbacks must treat `event.object` as read-only.

    A publish made from inside a callback (a watcher that writes to the store) is queued and delivered
    once the event being delivered has reached every watcher, so each watcher still sees the changes
    in order and exactly once.
    """

    history_size: int = DEFAULT_HISTORY_SIZE
    resource_version: int = 0
    #: The resourceVersion just before the oldest event kept: watches from an older one are Expired.
    _base: int = field(init=False)
    _history: deque[WatchEvent] = field(init=False)
    _subscribers: dict[Collection, dict[_Subscription, None]] = field(init=False, factory=dict)
    _pending: deque[WatchEvent] = field(init=False, factory=deque)
    _delivering: bool = field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        if self.history_size < 1:
            raise ValueError(f"history_size must be at least 1, not {self.history_size}")
        self._base = self.resource_version
        self._history = deque(maxlen=self.history_size)

    def publish(self, event: WatchEvent) -> None:
        """Record the event in the history and deliver it to every watch of its collection and namespace."""
        if event.resource_version <= self.resource_version:
            raise ValueError(f"resourceVersion {event.resource_version} published after {self.resource_version}")
        if len(self._history) == self.history_size:
            self._base = self._history[0].resource_version
        self._history.append(event)
        self.resource_version = event.resource_version
        self._pending.append(event)
        self._drain()

    def history(self) -> tuple[int, list[WatchEvent]]:
        """The resourceVersion just before the oldest event kept, and the events kept, oldest first."""
        return self._base, list(self._history)

    def watch(
        self,
        collection: Collection,
        namespace: str | None,
        resource_version: int,
        on_event: Callable[[WatchEvent], None],
    ) -> IWatch:
        """Replay every kept event after resource_version to on_event, then deliver live events.

        Raises ExpiredError when events after resource_version have already left the history.
        """
        if resource_version < self._base:
            raise ExpiredError(f"too old resource version: {resource_version} ({self._base})")
        subscription = _Subscription(self, collection, namespace, on_event, resource_version)
        replay = [e for e in self._history if e.resource_version > resource_version and subscription.wants(e)]
        self._subscribers.setdefault(collection, {})[subscription] = None
        outer = self._delivering
        self._delivering = True
        try:
            for event in replay:
                self._deliver(subscription, event)
        finally:
            self._delivering = outer
        self._drain()
        return subscription

    def expire(self, resource_version: int) -> None:
        """End every watch: each gets one EXPIRED event (at resource_version) and is cancelled; the store can no
        longer tell them what changed."""
        for collection, subscribers in list(self._subscribers.items()):
            for subscription in list(subscribers):
                if not subscription.active:
                    continue
                subscription.cancel()
                try:
                    subscription.on_event(WatchEvent(EXPIRED, {}, resource_version, collection,
                                                     subscription.namespace or "", ""))
                except Exception:
                    _log.failure("a watch of {group}/{resource} failed on its EXPIRED event",
                                 group=collection.group, resource=collection.resource)

    def _drain(self) -> None:
        """Deliver the queued events, unless a delivery further up the stack will."""
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._pending:
                event = self._pending.popleft()
                for subscription in list(self._subscribers.get(event.collection, ())):
                    self._deliver(subscription, event)
        finally:
            self._delivering = False

    def _deliver(self, subscription: _Subscription, event: WatchEvent) -> None:
        """Give one event to one watch; a watch whose callback raises is logged and cancelled."""
        if not subscription.active or event.resource_version <= subscription.since or not subscription.wants(event):
            return
        subscription.since = event.resource_version
        try:
            subscription.on_event(event)
        except Exception:
            _log.failure("a watch of {group}/{resource} failed on the {type} event of {namespace}/{name} at "
                         "resourceVersion {resource_version}; cancelling it",
                         group=event.collection.group, resource=event.collection.resource, type=event.type,
                         namespace=event.namespace, name=event.name, resource_version=event.resource_version)
            subscription.cancel()

    def _unsubscribe(self, subscription: _Subscription) -> None:
        """Forget a cancelled watch."""
        subscribers = self._subscribers.get(subscription.collection)
        if subscribers is not None:
            subscribers.pop(subscription, None)
            if not subscribers:
                del self._subscribers[subscription.collection]
