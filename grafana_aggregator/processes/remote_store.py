# -*- test-case-name: tests.test_workers -*-
"""A worker's view of the owner's APIServices and ExternalNames: the read half of IStore, over the owner channel.

The worker's Informer lists and watches through `ChannelStore` exactly as the owner's informer
reads its file store, so the worker's routing table is built by the same code from the same objects
(status included).  `list` is a GET, `watch` a watch stream (one JSON event per line); the store
cannot write.  A watch stream that ends or fails is reported to `on_broken` (the informer then
lists again), since a remote watch cannot fail synchronously as the local store's does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from zope.interface import implementer

from ..aggregation.proxy import forward_headers
from ..identity.auth import MASTERS_GROUP, UserInfo
from ..storage import Collection, ExpiredError, ListResult, WatchEvent
from ..storage.interface import IStore, IWatch, Object

_log = Logger()

#: Who a worker is on the owner channel when it reads for itself.
WORKER_USER = UserInfo(name="system:grafana-aggregator:worker", groups=(MASTERS_GROUP,))
#: The host named in URLs sent over the channel (the Unix socket is the destination, whatever the URL says).
CHANNEL_URL = "http://owner.channel"


@implementer(IAgentEndpointFactory)
class _UnixEndpoints:
    def __init__(self, reactor: Any, path: str):
        self._reactor = reactor
        self._path = path

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self._reactor, self._path, timeout=5)


class _QuietFactory(_HTTP11ClientFactory):
    """Twisted's per-connection client factory without its "Starting/Stopping factory" log lines."""

    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory


def unix_agent(reactor: Any, path: str, persistent: bool = True) -> IAgent:
    """An Agent whose every request goes to the Unix socket at `path`, over a pool of kept connections."""
    pool = _QuietPool(reactor, persistent=persistent)
    pool.maxPersistentPerHost = 64
    agent: IAgent = Agent.usingEndpointFactory(reactor, _UnixEndpoints(reactor, path), pool=pool)
    return agent


def _identity_headers() -> Headers:
    return forward_headers(Headers({b"accept": [b"application/json"]}), WORKER_USER, "", "owner.channel", "")


@implementer(IWatch)
class _RemoteWatch:
    def __init__(self, request: Deferred[Any]):
        self._request = request
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._request.cancel()


@implementer(IStore)
class ChannelStore:
    """List and watch of the owner's objects over the channel; `on_broken` is told when a watch stops.

    Only what the Informer reads is served; the writing methods refuse (a worker forwards writes instead).
    """

    def __init__(self, agent: IAgent, clock: IReactorTime, on_broken: Callable[[], None] = lambda: None):
        self._http = HTTPClient(agent)
        self._clock = clock
        self.on_broken = on_broken

    @staticmethod
    def _path(collection: Collection) -> str:
        version = "v0alpha1" if collection.group == "service.grafana.app" else "v1"
        return f"{CHANNEL_URL}/apis/{collection.group}/{version}/{collection.resource}"

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        response = await self._http.get(self._path(collection), headers=_identity_headers())
        body = await response.content()
        if response.code != 200:
            raise ChannelError(f"listing {collection.resource} from the owner answered {response.code}: "
                               f"{body[:200]!r}")
        document = json.loads(body)
        return ListResult(list(document.get("items") or []),
                          int(document.get("metadata", {}).get("resourceVersion") or 0))

    async def list_at(self, collection: Collection, namespace: str | None, resource_version: int) -> ListResult:
        """The owner's list when it is still at resource_version; the channel keeps no history, so any other
        snapshot is Expired (the informer never pages; REST requests are the owner's)."""
        result = await self.list(collection, namespace)
        if result.resource_version != resource_version:
            raise ExpiredError(f"the snapshot at resourceVersion {resource_version} is not kept by the owner channel")
        return result

    def watch(self, collection: Collection, namespace: str | None, resource_version: int,
              on_event: Callable[[WatchEvent], None]) -> IWatch:
        url = f"{self._path(collection)}?watch=true&resourceVersion={resource_version}"
        request = self._http.get(url, headers=_identity_headers(), unbuffered=True)
        watch = _RemoteWatch(request)
        Deferred.fromCoroutine(self._stream(request, collection, on_event, watch)).addErrback(
            self._stream_failed, watch)
        return watch

    async def _stream(self, request: Deferred[Any], collection: Collection, on_event: Callable[[WatchEvent], None],
                      watch: _RemoteWatch) -> None:
        response = await request
        if response.code != 200:
            await response.content()
            raise ChannelError(f"watching {collection.resource} on the owner answered {response.code}")
        pending = [b""]

        def received(data: bytes) -> None:
            lines = (pending[0] + data).split(b"\n")
            pending[0] = lines.pop()
            for line in lines:
                if not line.strip() or watch.cancelled:
                    continue
                try:
                    event = parse_event(line, collection)
                except (ChannelError, ValueError, TypeError, AttributeError) as error:
                    _log.info("the owner's watch of {resource} stopped: {error}; listing again",
                              resource=collection.resource, error=str(error))
                    watch.cancelled = True
                    self.on_broken()
                    return
                on_event(event)

        await collect(response, received)
        if not watch.cancelled:
            _log.info("the owner ended the watch of {resource}; listing again", resource=collection.resource)
            self.on_broken()

    def _stream_failed(self, failure: Failure, watch: _RemoteWatch) -> None:
        if watch.cancelled or failure.check(CancelledError):
            return
        _log.info("the watch of the owner's objects broke: {error}; listing again", error=failure.getErrorMessage())
        watch.cancelled = True
        self.on_broken()

    async def get(self, collection: Collection, namespace: str, name: str) -> Object:
        raise ChannelError("a worker reads single objects through its informer")

    async def create(self, collection: Collection, namespace: str, name: str, obj: Object) -> Object:
        raise ChannelError("a worker does not write; it forwards writes to the owner")

    async def update(self, collection: Collection, namespace: str, name: str, obj: Object,
                     expected_resource_version: int | None = None) -> Object:
        raise ChannelError("a worker does not write; it forwards writes to the owner")

    async def delete(self, collection: Collection, namespace: str, name: str,
                     expected_resource_version: int | None = None, expected_uid: str | None = None) -> Object:
        raise ChannelError("a worker does not write; it forwards writes to the owner")

    async def probe_write(self) -> None:
        return None

    async def sync(self) -> None:
        return None

    def current_resource_version(self) -> int:
        return 0

    def write_problem(self) -> str | None:
        return None

    async def close(self) -> None:
        return None


class ChannelError(Exception):
    """The owner answered a read of the channel with an error."""


def parse_event(line: bytes, collection: Collection) -> WatchEvent:
    """One watch line as the store's WatchEvent; an ERROR event (an expired resourceVersion) is a ChannelError."""
    event = json.loads(line)
    kind, obj = event.get("type"), event.get("object") or {}
    if kind not in ("ADDED", "MODIFIED", "DELETED"):
        raise ChannelError(f"the owner's watch sent {kind}: {obj.get('message', '')}")
    meta: dict[str, Any] = obj.get("metadata") or {}
    return WatchEvent(kind, obj, int(meta.get("resourceVersion") or 0), collection, meta.get("namespace", ""),
                      meta.get("name", ""))

