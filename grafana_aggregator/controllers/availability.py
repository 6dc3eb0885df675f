# -*- test-case-name: tests.test_availability -*-
"""The availability controller: probes every remote APIService's backend and keeps its `Available` condition right.

Behaviour follows kube-aggregator's remote availability controller in Grafana's ExternalName variant
(kube-aggregator.md §1.4, §1.5, §6; grafana-aggregator.md §3):

- an APIService whose ExternalName (`spec.service.namespace`/`spec.service.name`) is missing is
  `Available=False`, reason `ServiceNotFound`;
- otherwise five `GET <backend>/apis/<group>/<version>` attempts run in parallel as
  `system:kube-aggregator` in `system:masters`; the first 2xx makes it `Passed`, and when all five
  fail the last error becomes the `FailedDiscoveryCheck` message.  Redirects are never followed and
  a 3xx is a failure;
- the status is written only when it changes (so steady state causes no writes), through the stored
  object with its resourceVersion as a precondition; Local APIServices are never touched.

**Available means served.**  The probe's answer is the group-version's discovery document: it goes
into the discovery cache before `Available=True` is written, so `/apis` lists the resources from the
moment the condition turns True; an answer that is not an APIResourceList fails the check.  Both
leave discovery together again when the condition turns False.

Each APIService is one key of a work queue, synced at start, when it or its ExternalName changes,
every `resync` seconds, on `recheck()` (rate-limited), at once when its backend closes an idle
pooled connection (its process died, most likely: the probe keeps a connection open for exactly
this), and, while unavailable, again after a backoff of at most `max_backoff`.

The probe goes through the same client as proxied requests, so it verifies the backend with the
APIService's caBundle unless `insecureSkipTLSVerify` is set.  After a failed probe the backend's idle
connections are closed, so none is reused (security-and-reliability.md SEC-7).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
from collections.abc import Callable
from typing import Any, Protocol

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse

from ..aggregation.reachability import Reachability
from ..aggregation.remote_discovery import (
    MAX_DOCUMENT_BYTES,
    DiscoveryCache,
    DiscoveryDocumentError,
    resources_from_discovery,
)
from ..aggregation.upstream import DISCOVERY_TIMEOUT, Backend, BackendUnresolvable, describe_failure, resolve_backend
from ..registry.apiservice import (
    APISERVICES,
    available_condition,
    is_local,
    new_condition,
    service_reference,
    set_condition,
)
from ..registry.externalname import EXTERNALNAMES
from ..storage import ConflictError, IStore, NotFoundError, StorageUnavailableError, WatchEvent
from ..storage.informer import Informer
from .workqueue import Retry, WorkQueue

#: Parallel discovery requests per probe; one success is enough (kube's `attempts := 5`).
PROBE_ATTEMPTS = 5
#: The first retry delay after a failed probe; it doubles up to the controller's max_backoff.
INITIAL_BACKOFF = 0.5
#: Fresh reads and writes tried when the APIService keeps changing under a status write.
CONFLICT_RETRIES = 5

#: The identity a probe presents (kube's SetAuthProxyHeaders with no uid and no extras).
PROBE_USER = "system:kube-aggregator"
PROBE_GROUP = "system:masters"
PROBE_HEADERS = {"X-Remote-User": [PROBE_USER], "X-Remote-Group": [PROBE_GROUP], "Accept": ["application/json"]}

PASSED = "Passed"
PASSED_MESSAGE = "all checks passed"
SERVICE_NOT_FOUND = "ServiceNotFound"
FAILED_DISCOVERY_CHECK = "FailedDiscoveryCheck"
#: What Go's http.Client says when its Timeout expires.
TIMEOUT_TEXT = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"


class ProbeClient(Protocol):
    """The part of a treq client a probe uses (`treq.client.HTTPClient` and `treq.testing.StubTreq` fit)."""

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        """Send a GET request; the Deferred fires with an IResponse."""


def probe_path(apiservice: dict[str, Any]) -> str:
    """The discovery path a backend must serve: `/apis/<group>/<version>`, or `/api/<version>` for `v1.`."""
    spec = apiservice.get("spec") or {}
    if apiservice.get("metadata", {}).get("name") == "v1.":
        return f"/api/{spec.get('version', '')}"
    return f"/apis/{spec.get('group', '')}/{spec.get('version', '')}"


def _failed_request(url: str, reason: str) -> str:
    """A failed probe request as kube words it, with Go's `*url.Error` inside."""
    return f'failing or missing response from {url}: Get "{url}": {reason}'


class ViewPublisher(Protocol):
    """Where a replica publishes its own probe results when several replicas share one etcd (`ReplicaViews`)."""

    def publish(self, subject: str, document: Any) -> None:
        """Make this replica's document about subject `document`."""

    def withdraw(self, subject: str) -> None:
        """Remove this replica's document about subject."""


def probed_digest(apiservice: dict[str, Any], externalname: dict[str, Any] | None) -> str:
    """A short digest of what a probe depends on (the APIService's and its ExternalName's specs): replicas'
    views of one APIService are comparable only when they were probed against the same digest."""
    specs = [apiservice.get("spec"), (externalname or {}).get("spec")]
    return hashlib.sha256(json.dumps(specs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@define(eq=False)
class ConditionWriter:
    """Writes an APIService's `Available` condition to the store when it changes, with a resourceVersion
    precondition and fresh reads on conflict.

    :param store: where the status is written.
    :param informer: the shared view of the APIServices (to skip writes that change nothing).
    :param now: the wall-clock time written as `lastTransitionTime`.
    """

    _log = Logger()

    _store: IStore
    _informer: Informer
    _now: Callable[[], datetime.datetime]
    #: The status last written, by name: its own writes coming back by watch are not changes.
    written: dict[str, Any] = field(init=False, factory=dict)

    async def record(self, name: str, spec: Any, status: str, reason: str, message: str) -> None:
        """Set the Available condition on the stored APIService, writing only when that changes its status."""
        watched = available_condition(self._informer.get(APISERVICES, "", name) or {})
        if (watched is not None and watched.get("status") == status and watched.get("reason", "") == reason
                and watched.get("message", "") == message):
            # The informer's copy is current (the store delivers events as it writes) and already says so:
            # nothing to write, and no copies of the stored object to make (a resync checks every APIService).
            return
        for _ in range(CONFLICT_RETRIES):
            try:
                current = await self._store.get(APISERVICES, "", name)
            except NotFoundError:
                return
            if is_local(current) or current.get("spec") != spec:
                # Changed since the probe: the watch event brings a fresh probe.
                return
            old = copy.deepcopy(available_condition(current))
            updated = copy.deepcopy(current)
            set_condition(updated, new_condition(status, reason, message, self._now()))
            if updated.get("status") == current.get("status"):
                return
            self.written[name] = updated["status"]
            try:
                await self._store.update(APISERVICES, "", name, updated,
                                         expected_resource_version=int(current["metadata"]["resourceVersion"]))
            except ConflictError:
                continue
            except NotFoundError:
                return
            # The message goes in `detail`: Twisted's legacy log bridge overwrites a `message` field.
            self._log.info("APIService {name} availability changed from {old} to {new} ({reason}): {detail}",
                           name=name, old=(old or {}).get("status"), new=status, reason=reason, detail=message)
            return
        # Every write met a newer object (another writer, or a store's cache still catching up after an outage):
        # try again after the backoff, from a fresh read.
        self._log.warn("APIService {name} kept changing; its status will be written after a backoff", name=name)
        raise Retry()


class _Body(StreamProtocol):
    """Collects a response body up to a limit, dropping the connection when it grows past it."""

    def __init__(self, limit: int, done: Deferred[bytes]):
        self._left = limit
        self._done = done
        self._chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self.abort()
            if not self._done.called:
                self._done.errback(DiscoveryDocumentError(f"the discovery document is larger than "
                                                          f"{MAX_DOCUMENT_BYTES} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if not self._done.called:
            self._done.callback(b"".join(self._chunks))

    def abort(self) -> None:
        """Stop reading: the body transport (an IPushProducer) drops the connection."""
        stop = getattr(self.transport, "stopProducing", None)
        if stop is not None:
            stop()


@define(eq=False, slots=False)
class AvailabilityController(Service):
    """Keeps the `Available` condition of every remote APIService equal to what its backend answers.

    :param store: where the status is written.
    :param informer: the shared view of APIServices and ExternalNames.
    :param clients: the HTTP client for a backend (`UpstreamClients.client_for` in production).
    :param clock: time for timeouts, backoff and resync.
    :param now: the wall-clock time written as `lastTransitionTime`.
    :param discovery: where each backend's discovery document goes once it answers.
    :param resync: seconds between probes of every remote APIService, even with no change.
    :param probe_timeout: seconds one discovery request (connect, headers and body) may take.
    :param max_backoff: the cap of the retry delay for unavailable APIServices.
    :param close_idle: closes the idle connections to a backend whose probe failed.
    """

    _log = Logger()

    _store: IStore
    _informer: Informer
    _clients: Callable[[Backend], Any]
    _clock: IReactorTime
    _now: Callable[[], datetime.datetime]
    _discovery: DiscoveryCache = field(factory=DiscoveryCache)
    _resync: float = 30.0
    _probe_timeout: float = DISCOVERY_TIMEOUT
    #: Short, so that a backend that starts is seen within about a second (an ExternalName has no endpoints to watch).
    _max_backoff: float = 1.0
    #: Called with (APIService name, "success" or "failure", seconds) after each backend probe (for metrics).
    _observe_probe: Callable[[str, str, float], None] | None = None
    _close_idle: Callable[[Backend], None] | None = None
    #: This replica's own view of the backends, set after every probe (the routing table reads it).
    _reachability: Reachability | None = None
    #: With replicas on etcd: where probe results go instead of the store (the leader writes the condition).
    _views: ViewPublisher | None = None

    #: True once every APIService stored at start has been checked once (a readiness signal).
    synced: bool = field(init=False, default=False)
    #: How many checks ended unavailable (ServiceNotFound, FailedDiscoveryCheck or an internal error), by name.
    failures: dict[str, int] = field(init=False, factory=dict)

    _queue: WorkQueue | None = field(init=False, default=None)
    _unsynced: set[str] | None = field(init=False, default=None)
    _writer: ConditionWriter = field(init=False)
    _loop: LoopingCall | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._writer = ConditionWriter(self._store, self._informer, self._now)
        self._informer.add_listener(self._changed)

    # Service life cycle.

    def startService(self) -> None:
        super().startService()
        self._queue = WorkQueue(self._clock, self._sync, "availability", initial_backoff=INITIAL_BACKOFF,
                                max_backoff=self._max_backoff)
        self._unsynced = None
        self.synced = False
        # Once the informer is synced, what it held at start is announced to listeners as ADDED; if it
        # was synced before this start, those announcements were missed and everything is queued here.
        announced_later = not self._informer.synced()
        self._informer.ready.addCallback(self._informer_ready, announced_later)
        self._loop = LoopingCall(self._resync_all)
        self._loop.clock = self._clock
        self._loop.start(self._resync, now=False).addErrback(
            lambda failure: self._log.failure("the resync loop stopped", failure))

    def stopService(self) -> Deferred[None]:
        """Stop the resync loop and the queue, cancelling every probe in flight; fires when they have stopped."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        running = list(self.in_flight.values())
        if self._queue is not None:
            self._queue.stop()
        stopped: Deferred[Any] = DeferredList(running, consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def _informer_ready(self, result: None, announced_later: bool) -> None:
        if not self.running or self._queue is None:
            return
        names = [a["metadata"]["name"] for a in self._informer.list(APISERVICES)]
        self._unsynced = set(names)
        self._check_synced()
        if not announced_later:
            self._queue.add_all(names)

    @property
    def in_flight(self) -> dict[str, Deferred[None]]:
        """The probes in progress, by APIService name."""
        return self._queue.in_flight() if self._queue is not None else {}

    def recheck(self, name: str) -> None:
        """Probe an APIService again, for example because a proxied request could not reach its backend.

        Rechecks of one APIService are at least INITIAL_BACKOFF seconds apart, so a burst of failing
        requests cannot turn into a burst of probes.
        """
        if self._queue is not None and self.running:
            self._queue.add_rate_limited(name)

    def backend_closed(self, host: str, port: int) -> None:
        """A backend closed an idle pooled connection: probe the APIServices it serves at once."""
        if self._queue is None or not self.running:
            return
        names = []
        for apiservice in self._informer.list(APISERVICES):
            if is_local(apiservice):
                continue
            externalname = self._informer.get(EXTERNALNAMES, *service_reference(apiservice))
            try:
                backend = resolve_backend(apiservice, externalname)
            except BackendUnresolvable:
                continue
            if (backend.host, backend.port) == (host, port):
                names.append(apiservice["metadata"]["name"])
        if names:
            self._log.info("backend {host}:{port} closed an idle connection; probing {apiservices}", host=host,
                           port=port, apiservices=names)
        for name in names:
            self._queue.add(name)

    def check(self) -> str | None:
        """The readiness check: None once every APIService stored at start has been checked."""
        return None if self.synced else "the availability of remote APIServices is not known yet"

    # Following changes.

    def _resync_all(self) -> None:
        """Probe every remote APIService (the periodic resync); the queue spreads them over reactor turns."""
        if self._queue is not None:
            self._queue.add_all(a["metadata"]["name"] for a in self._informer.list(APISERVICES) if not is_local(a))

    def _changed(self, event: WatchEvent) -> None:
        queue = self._queue
        if queue is None or not self.running:
            return
        if event.collection == APISERVICES:
            if event.type == "DELETED":
                queue.forget(event.name)
                self._forget(event.name)
                return
            previous = event.previous
            if previous is not None and previous.get("spec") == event.object.get("spec"):
                status = event.object.get("status")
                if (status == previous.get("status") or status == self._writer.written.get(event.name)
                        or self._views is not None):
                    # With views the leader keeps the status right; a probe depends on the spec only.
                    return
            queue.add(event.name)
        elif event.collection == EXTERNALNAMES:
            previous = event.previous
            if self._informer.announcing or (previous is not None and previous.get("spec") == event.object.get("spec")):
                # The informer's start-up announcements of APIServices already queue every check.
                return
            for apiservice in self._informer.list(APISERVICES):
                if not is_local(apiservice) and service_reference(apiservice) == (event.namespace, event.name):
                    queue.add(apiservice["metadata"]["name"])

    def _forget(self, name: str) -> None:
        """Stop everything about a deleted APIService."""
        self.failures.pop(name, None)
        self._writer.written.pop(name, None)
        self._discovery.forget(name)
        if self._reachability is not None:
            self._reachability.forget(name)
        if self._views is not None:
            self._views.withdraw(name)
        self._checked(name)

    def _checked(self, name: str) -> None:
        if self._unsynced is not None:
            self._unsynced.discard(name)
            self._check_synced()

    def _check_synced(self) -> None:
        if self._unsynced is not None and not self._unsynced and not self.synced:
            self.synced = True
            self._log.info("every APIService has been checked once")

    # Checking one APIService.

    async def _sync(self, name: str) -> None:
        """Probe one APIService and record the result; Retry (after a backoff) while it is unavailable."""
        try:
            await self._check(name)
        except CancelledError:
            raise
        except Retry:
            self.failures[name] = self.failures.get(name, 0) + 1
            raise
        except StorageUnavailableError as error:
            # etcd is away: one line (the `etcd` readyz check says so too), and a retry after the backoff.
            self.failures[name] = self.failures.get(name, 0) + 1
            self._log.warn("cannot record the availability of APIService {name}: {error}", name=name, error=str(error))
            raise Retry() from None
        except Exception:
            if not self.running:
                raise
            self.failures[name] = self.failures.get(name, 0) + 1
            self._log.failure("checking the availability of APIService {name} failed", name=name)
            raise Retry() from None
        finally:
            self._checked(name)

    async def _check(self, name: str) -> None:
        apiservice = self._informer.get(APISERVICES, "", name)
        if apiservice is None or is_local(apiservice):
            self._discovery.forget(name)
            return
        spec = apiservice.get("spec")
        reference = service_reference(apiservice)
        externalname = self._informer.get(EXTERNALNAMES, *reference)
        digest = probed_digest(apiservice, externalname)
        if externalname is None:
            # Nothing to retry: the ExternalName's arrival is an event that brings a fresh check.
            self.failures[name] = self.failures.get(name, 0) + 1
            await self._conclude(name, spec, digest, "False", SERVICE_NOT_FOUND,
                                 f'service/{reference[1]} in "{reference[0]}" is not present')
            self._discovery.forget(name)
            return
        backend: Backend | None = None
        failed: str | None
        try:
            backend = resolve_backend(apiservice, externalname)
            client = self._clients(backend)
        except BackendUnresolvable as error:
            failed = str(error)
        else:
            url = backend.url + probe_path(apiservice)
            started = self._clock.seconds()
            failed, body = await self._probe(client, url)
            current = self._informer.get(APISERVICES, "", name)
            if current is None or current.get("spec") != spec:
                # Deleted or changed while it was probed: that change has queued a fresh check.
                return
            if failed is None:
                group, version = str((spec or {}).get("group") or ""), str((spec or {}).get("version") or "")
                try:
                    resources = resources_from_discovery(group, version, body)
                except DiscoveryDocumentError as error:
                    failed = f"failing or missing response from {url}: {error}"
                else:
                    # In the cache before the condition says True: /apis lists them from that moment on.
                    self._discovery.store(name, resources)
            if self._observe_probe is not None:
                self._observe_probe(name, "success" if failed is None else "failure", self._clock.seconds() - started)
        if failed is None:
            await self._conclude(name, spec, digest, "True", PASSED, PASSED_MESSAGE)
            return
        if backend is not None and self._close_idle is not None:
            self._close_idle(backend)
        try:
            await self._conclude(name, spec, digest, "False", FAILED_DISCOVERY_CHECK, failed)
        finally:
            self._discovery.forget(name)
        raise Retry()

    async def _conclude(self, name: str, spec: Any, digest: str, status: str, reason: str, message: str) -> None:
        """Act on a probe's result: this replica's own view, then the condition (or, with replicas, the view
        published for the leader, who writes the condition from every replica's)."""
        if self._reachability is not None:
            self._reachability.set(name, status == "True", message)
        if self._views is not None:
            self._views.publish(name, {"digest": digest, "status": status, "reason": reason, "message": message})
            return
        await self._record(name, spec, status, reason, message)

    async def _record(self, name: str, spec: Any, status: str, reason: str, message: str) -> None:
        """Set the Available condition on the stored APIService, writing only when that changes its status."""
        await self._writer.record(name, spec, status, reason, message)

    async def _probe(self, client: ProbeClient, url: str) -> tuple[str | None, bytes]:
        """Up to PROBE_ATTEMPTS parallel requests: (None, body) at the first success, else the error that came last."""
        attempts: list[Deferred[tuple[str | None, bytes]]] = []
        errors: list[str] = []
        finished = False

        def cancel(_: Deferred[tuple[str | None, bytes]]) -> None:
            nonlocal finished
            finished = True
            for attempt in attempts:
                attempt.cancel()

        outcome: Deferred[tuple[str | None, bytes]] = Deferred(cancel)

        def settled(result: tuple[str | None, bytes]) -> None:
            if finished or outcome.called:
                return
            error = result[0]
            if error is None:
                outcome.callback(result)
                return
            errors.append(error)
            if len(errors) == PROBE_ATTEMPTS:
                outcome.callback(result)

        def broke(failure: Failure) -> None:
            if not finished and not outcome.called:
                outcome.errback(failure)

        for _ in range(PROBE_ATTEMPTS):
            if outcome.called:
                break
            attempt = Deferred.fromCoroutine(self._attempt(client, url))
            attempts.append(attempt)
            attempt.addCallbacks(settled, broke)
        try:
            return await outcome
        finally:
            finished = True
            for attempt in attempts:
                attempt.cancel()

    async def _attempt(self, client: ProbeClient, url: str) -> tuple[str | None, bytes]:
        """One discovery request within probe_timeout: (None, body) for a 2xx answer, else the error text."""
        timed_out = False
        request: Deferred[Any] = client.get(url, headers=PROBE_HEADERS, allow_redirects=False)
        waiting: Deferred[Any] = request

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            waiting.cancel()

        deadline = self._clock.callLater(self._probe_timeout, expire)
        try:
            try:
                response: IResponse = await request
            except Exception as error:
                return _failed_request(url, TIMEOUT_TEXT if timed_out else describe_failure(error)), b""
            done: Deferred[bytes] = Deferred(lambda _: reader.abort())
            reader = _Body(MAX_DOCUMENT_BYTES, done)
            waiting = done
            response.deliverBody(reader)
            try:
                body = await done
            except DiscoveryDocumentError as error:
                body, problem = b"", str(error)
            except Exception as error:
                body, problem = b"", TIMEOUT_TEXT if timed_out else describe_failure(error)
            else:
                problem = ""
            if not 200 <= response.code < 300:
                return f"failing or missing response from {url}: bad status from {url}: {response.code}", b""
            if problem:
                return _failed_request(url, problem), b""
            return None, body
        finally:
            if deadline.active():
                deadline.cancel()
