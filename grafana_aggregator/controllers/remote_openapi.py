# -*- test-case-name: tests.test_remote_openapi -*-
"""The remote OpenAPI controller: keeps every Available remote APIService's OpenAPI documents fetched.

Each APIService is one key of a work queue, synced when it turns Available, when its spec or its
ExternalName changes, and every 60 s; a failed fetch is retried after a backoff from 1 s up to 60 s,
and keeps the last good documents, as kube does.  A backend that does not answer at all is reported
(`on_unreachable`, the availability controller's recheck), as a failed proxied request is.  An unavailable APIService is not asked at all
(kube's download would be a 503 from its own proxy).  Its documents go when it is deleted or turns local.

The moment an APIService turns Available its documents are marked *loading* (in the informer's
event, that is, before the status write returns), so `/openapi/*` waits for them instead of
answering without its kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..aggregation.remote_openapi import FETCH_TIMEOUT, OpenAPIFetcher, OpenAPIFetchError, RemoteOpenAPI
from ..aggregation.upstream import Backend, BackendUnresolvable, describe_failure, resolve_backend
from ..registry.apiservice import APISERVICES, is_available, is_local, service_reference
from ..registry.externalname import EXTERNALNAMES
from ..storage import WatchEvent
from ..storage.informer import Informer
from .workqueue import Retry, WorkQueue

_log = Logger()

#: Seconds between refreshes of every available remote APIService's documents.
REFRESH_INTERVAL = 60.0
#: The first retry delay after a failed fetch; it doubles up to REFRESH_INTERVAL.
INITIAL_BACKOFF = 1.0


class RemoteOpenAPIController(Service):
    """Fetches the documents of every available remote APIService into a RemoteOpenAPI."""

    def __init__(self, informer: Informer, documents: RemoteOpenAPI, client_for: Callable[[Backend], Any],
                 clock: IReactorTime, interval: float = REFRESH_INTERVAL, timeout: float = FETCH_TIMEOUT,
                 on_unreachable: Callable[[str], None] = lambda name: None):
        self._informer = informer
        self._on_unreachable = on_unreachable
        self._documents = documents
        self._client_for = client_for
        self._clock = clock
        self._interval = interval
        self._fetcher = OpenAPIFetcher(clock, timeout)
        self._queue: WorkQueue | None = None
        self._loop: LoopingCall | None = None
        informer.add_listener(self._changed)

    def startService(self) -> None:
        super().startService()
        self._queue = WorkQueue(self._clock, self._sync, "remote OpenAPI", initial_backoff=INITIAL_BACKOFF,
                                max_backoff=self._interval)
        if self._informer.synced():
            # What the informer announced before this start was missed: take it all now.
            for apiservice in self._informer.list(APISERVICES):
                self._follow(apiservice["metadata"]["name"], apiservice, None)
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False).addErrback(
            lambda failure: _log.failure("the OpenAPI refresh loop stopped", failure))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._queue is not None:
            self._queue.stop()
        self._queue = None

    def refresh(self) -> None:
        """Fetch every available remote APIService's documents again (the periodic refresh)."""
        if self._queue is not None:
            self._queue.add_all(a["metadata"]["name"] for a in self._informer.list(APISERVICES)
                                if not is_local(a) and is_available(a))

    # Following changes.

    def _changed(self, event: WatchEvent) -> None:
        if self._queue is None or not self.running:
            return
        if event.collection == APISERVICES:
            self._follow(event.name, None if event.type == "DELETED" else event.object, event.previous)
            return
        if event.collection == EXTERNALNAMES:
            previous = event.previous
            if self._informer.announcing or (previous is not None and previous.get("spec") == event.object.get("spec")):
                # The informer's start-up announcements of APIServices already queue every fetch.
                return
            for apiservice in self._informer.list(APISERVICES):
                if not is_local(apiservice) and service_reference(apiservice) == (event.namespace, event.name) \
                        and is_available(apiservice):
                    self._queue.add(apiservice["metadata"]["name"])

    def _follow(self, name: str, apiservice: dict[str, Any] | None, previous: dict[str, Any] | None) -> None:
        assert self._queue is not None
        if apiservice is None or is_local(apiservice):
            self._queue.forget(name)
            self._documents.drop(name)
            return
        if not is_available(apiservice):
            return
        if previous is None or previous.get("spec") != apiservice.get("spec") or not is_available(previous):
            if not self._documents.has_documents(name):
                spec = apiservice.get("spec") or {}
                self._documents.loading(name, str(spec.get("group") or ""), str(spec.get("version") or ""))
            self._queue.add(name)

    # Syncing one APIService.

    async def _sync(self, name: str) -> None:
        try:
            await self._fetch(name)
        finally:
            self._documents.loaded(name)

    async def _fetch(self, name: str) -> None:
        apiservice = self._informer.get(APISERVICES, "", name)
        if apiservice is None or is_local(apiservice):
            self._documents.drop(name)
            return
        if not is_available(apiservice):
            return
        spec = apiservice.get("spec") or {}
        documents = self._documents.documents(name, str(spec.get("group") or ""), str(spec.get("version") or ""))
        documents.priority = int(spec.get("groupPriorityMinimum") or 0)
        try:
            backend = resolve_backend(apiservice, self._informer.get(EXTERNALNAMES, *service_reference(apiservice)))
            client = self._client_for(backend)
            await self._fetcher.update(documents, client, backend)
        except Exception as error:
            if self._queue is None:
                raise
            if not isinstance(error, (OpenAPIFetchError, BackendUnresolvable)):
                # Not a bad answer but no answer: the backend may be gone, which its availability must reflect.
                self._on_unreachable(name)
            if not documents.failing:
                _log.info("loading the OpenAPI documents of {apiservice} failed, keeping the last ones: {error}",
                          apiservice=name, error=describe_failure(error))
            documents.failing = True
            raise Retry() from None
        if documents.failing:
            documents.failing = False
            _log.info("OpenAPI documents of {apiservice} fetched again", apiservice=name)
