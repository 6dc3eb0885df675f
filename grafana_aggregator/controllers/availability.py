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

Every remote APIService is probed at start, when it or its ExternalName changes, every `resync`
seconds, on `recheck()`, and, while unavailable, again after an exponential backoff.  Probes of
different APIServices run concurrently; one APIService has at most one probe in flight, and
triggers that arrive meanwhile are folded into one more run.

The probe goes through the same client as proxied requests (`UpstreamClients.client_for`), so it
verifies the backend with the APIService's caBundle unless `insecureSkipTLSVerify` is set, and it
asks for `Connection: close`, so a failed probe never leaves a connection behind for the next one
(security-and-reliability.md SEC-7).
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable
from typing import Any, Protocol

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse

from ..registry.apiservice import available_condition, is_local, new_condition, set_condition
from ..storage import Collection, ConflictError, ExpiredError, IStore, IWatch, NotFoundError, WatchEvent
from ..aggregation.upstream import Backend, BackendUnresolvable, resolve_backend
from .batches import in_batches

APISERVICES = Collection("apiregistration.k8s.io", "apiservices")
EXTERNALNAMES = Collection("service.grafana.app", "externalnames")

#: APIServices a resync triggers in one reactor turn; the rest follow in later turns.
RESYNC_BATCH = 100
#: Parallel discovery requests per probe; one success is enough (kube's `attempts := 5`).
PROBE_ATTEMPTS = 5
#: The first backoff delay after a failed probe; it doubles up to `max_backoff`.
INITIAL_BACKOFF = 0.5
#: How much of a probe response body is read (and thrown away) before the connection is dropped.
PROBE_BODY_LIMIT = 64 * 1024
#: Fresh reads and writes tried when the APIService keeps changing under a status write.
CONFLICT_RETRIES = 5
#: Times a list is repeated when the watch that follows it finds its resourceVersion already expired.
EXPIRED_RETRIES = 5

#: The identity a probe presents (kube's SetAuthProxyHeaders with no uid and no extras).
PROBE_USER = "system:kube-aggregator"
PROBE_GROUP = "system:masters"
PROBE_HEADERS = {"X-Remote-User": [PROBE_USER], "X-Remote-Group": [PROBE_GROUP], "Connection": ["close"]}

PASSED = "Passed"
PASSED_MESSAGE = "all checks passed"
SERVICE_NOT_FOUND = "ServiceNotFound"
FAILED_DISCOVERY_CHECK = "FailedDiscoveryCheck"
#: What Go's http.Client says when its Timeout expires.
TIMEOUT_TEXT = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"

# What a run of the controller for one APIService concluded, for scheduling the next one.
_AVAILABLE = "available"
_FAILED = "failed"
_IDLE = "idle"


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


def _service_ref(apiservice: dict[str, Any]) -> tuple[str, str]:
    """The (namespace, name) of the ExternalName a remote APIService points at."""
    service = (apiservice.get("spec") or {}).get("service") or {}
    return str(service.get("namespace") or ""), str(service.get("name") or "")


def _describe(error: BaseException, url: str, timed_out: bool) -> str:
    """The text of a failed request, shaped like Go's `*url.Error`: `Get "<url>": <reason>`."""
    if timed_out:
        reason = TIMEOUT_TEXT
    else:
        reasons = getattr(error, "reasons", None)
        if reasons:
            reason = "; ".join(str(r.value) or type(r.value).__name__ for r in reasons)
        else:
            reason = str(error) or type(error).__name__
    return f'Get "{url}": {reason}'


class _Drain(TwistedProtocol):
    """Reads and discards a response body, dropping the connection when it grows past the limit."""

    def __init__(self, limit: int, done: Deferred[None]):
        self._left = limit
        self._done = done

    def dataReceived(self, data: bytes) -> None:
        self._left -= len(data)
        if self._left < 0:
            self.abort()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if not self._done.called:
            self._done.callback(None)

    def abort(self) -> None:
        """Stop reading: the body transport (an IPushProducer) drops the connection."""
        stop = getattr(self.transport, "stopProducing", None)
        if stop is not None:
            stop()


@define(eq=False)
class _Tracked:
    """The scheduling state of one APIService."""

    #: A run of the controller for this APIService is in progress.
    busy: bool = False
    #: Something asked for a probe while one was running: run once more at the end.
    again: bool = False
    #: The Deferred of the run in progress (absent while the run has not yet yielded).
    deferred: Deferred[None] | None = None
    #: The next probe, scheduled by backoff or by a rate-limited recheck.
    timer: IDelayedCall | None = None
    backoff: float = INITIAL_BACKOFF
    #: When the last run started, by the injected clock.
    started: float | None = None

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@define(eq=False, slots=False)
class AvailabilityController(Service):
    """Keeps the `Available` condition of every remote APIService equal to what its backend answers.

    :param store: where APIServices and ExternalNames live (watched, and where the status is written).
    :param clients: the HTTP client for a backend (`UpstreamClients.client_for` in production).
    :param clock: time for timeouts, backoff and resync.
    :param now: the wall-clock time written as `lastTransitionTime`.
    :param resync: seconds between probes of every remote APIService, even with no change.
    :param probe_timeout: seconds one discovery request (connect, headers and body) may take.
    :param max_backoff: the cap of the exponential retry delay for unavailable APIServices.
    """

    _log = Logger()

    _store: IStore
    _clients: Callable[[Backend], ProbeClient]
    _clock: IReactorTime
    _now: Callable[[], datetime.datetime]
    _resync: float = 30.0
    _probe_timeout: float = 5.0
    #: Short, so that a backend that starts is seen within about a second (an ExternalName has no endpoints to watch).
    _max_backoff: float = 1.0
    #: Called with (APIService name, "success" or "failure", seconds) after each backend probe (for metrics).
    _observe_probe: Callable[[str, str, float], None] | None = None

    #: True once every APIService stored at start has been checked once (a readiness signal).
    synced: bool = field(init=False, default=False)
    #: The Deferreds of the runs in progress, by APIService name (each fires with None when its run ends).
    in_flight: dict[str, Deferred[None]] = field(init=False, factory=dict)
    #: How many checks ended unavailable (ServiceNotFound, FailedDiscoveryCheck or an internal error), by name.
    failures: dict[str, int] = field(init=False, factory=dict)

    _apiservices: dict[str, dict[str, Any]] = field(init=False, factory=dict)
    _externalnames: dict[tuple[str, str], dict[str, Any]] = field(init=False, factory=dict)
    _tracked: dict[str, _Tracked] = field(init=False, factory=dict)
    _unsynced: set[str] = field(init=False, factory=set)
    #: The status this controller last wrote, by name: its own writes coming back by watch are not changes.
    _written: dict[str, Any] = field(init=False, factory=dict)
    _watches: list[IWatch] = field(init=False, factory=list)
    _ready: bool = field(init=False, default=False)
    _connecting: Deferred[None] | None = field(init=False, default=None)
    _reconnect: IDelayedCall | None = field(init=False, default=None)
    _loop: LoopingCall | None = field(init=False, default=None)

    # Service life cycle.

    def startService(self) -> None:
        super().startService()
        self._begin()

    def stopService(self) -> Deferred[None]:
        """Stop the resync loop, the timers and the watches, and cancel every probe in flight.

        The Deferred fires when all of it has stopped.
        """
        super().stopService()
        self._ready = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._reconnect is not None and self._reconnect.active():
            self._reconnect.cancel()
        self._reconnect = None
        self._cancel_watches()
        pending: list[Deferred[Any]] = []
        if self._connecting is not None:
            pending.append(self._connecting)
            self._connecting.cancel()
        for tracked in self._tracked.values():
            tracked.cancel_timer()
        for deferred in list(self.in_flight.values()):
            pending.append(deferred)
            deferred.cancel()
        done: Deferred[Any] = DeferredList(pending, consumeErrors=True)
        return done.addCallback(lambda _: None)

    def recheck(self, name: str) -> None:
        """Probe an APIService again now, for example because a proxied request could not reach its backend.

        Rechecks of one APIService are at least INITIAL_BACKOFF seconds apart, so a burst of failing
        requests cannot turn into a burst of probes.
        """
        try:
            apiservice = self._apiservices.get(name)
            if apiservice is None or is_local(apiservice):
                return
            tracked = self._tracked.get(name)
            if tracked is not None and tracked.started is not None and not tracked.busy:
                wait = tracked.started + INITIAL_BACKOFF - self._clock.seconds()
                if wait > 0:
                    self._schedule(name, tracked, wait)
                    return
            self._trigger(name)
        except Exception:
            self._log.failure("could not recheck APIService {name}", name=name)

    # Watching APIServices and ExternalNames.

    def _begin(self) -> None:
        """List and watch both collections, then probe everything (again later if that fails)."""
        self._reconnect = None
        connecting = Deferred.fromCoroutine(self._connect())
        if not connecting.called:
            self._connecting = connecting
        connecting.addErrback(self._connect_failed)
        connecting.addBoth(self._connected)

    async def _connect(self) -> None:
        for attempt in range(EXPIRED_RETRIES):
            self._cancel_watches()
            try:
                apiservices = await self._store.list(APISERVICES, "")
                self._apiservices = {o["metadata"]["name"]: o for o in apiservices.items}
                self._watches.append(
                    self._store.watch(APISERVICES, "", apiservices.resource_version, self._on_apiservice))
                externalnames = await self._store.list(EXTERNALNAMES, None)
                self._externalnames = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                                       for o in externalnames.items}
                self._watches.append(
                    self._store.watch(EXTERNALNAMES, None, externalnames.resource_version, self._on_externalname))
                break
            except ExpiredError:
                if attempt == EXPIRED_RETRIES - 1:
                    raise
                self._log.info("watch expired right after listing; listing again")
        self._ready = True
        if not self.synced:
            self._unsynced = set(self._apiservices)
            self._check_synced()
        for name in sorted(self._apiservices):
            self._trigger(name)
        self._loop = LoopingCall(self._resync_tick)
        self._loop.clock = self._clock
        self._loop.start(self._resync, now=False).addErrback(
            lambda failure: self._log.failure("the resync loop stopped", failure))

    def _connect_failed(self, failure: Failure) -> None:
        self._cancel_watches()
        if failure.check(CancelledError) or not self.running:
            return
        self._log.failure("could not list and watch APIServices and ExternalNames; retrying in {delay} s",
                          failure, delay=self._max_backoff)
        self._reconnect = self._clock.callLater(self._max_backoff, self._begin)

    def _connected(self, result: None) -> None:
        self._connecting = None

    def _cancel_watches(self) -> None:
        watches, self._watches = self._watches, []
        for watch in watches:
            watch.cancel()

    def _on_apiservice(self, event: WatchEvent) -> None:
        """Follow an APIService change; probe it again when its spec (or someone else's status) changed."""
        try:
            name = event.name
            previous = self._apiservices.get(name)
            if event.type == "DELETED":
                self._apiservices.pop(name, None)
                self._forget(name)
                return
            self._apiservices[name] = event.object
            if previous is not None and previous.get("spec") == event.object.get("spec"):
                status = event.object.get("status")
                if status == previous.get("status") or status == self._written.get(name):
                    return
            self._trigger(name)
        except Exception:
            self._log.failure("could not follow the {type} event of APIService {name}", type=event.type,
                              name=event.name)

    def _on_externalname(self, event: WatchEvent) -> None:
        """Follow an ExternalName change; probe the APIServices that point at it when its spec changed."""
        try:
            key = (event.namespace, event.name)
            previous = self._externalnames.get(key)
            if event.type == "DELETED":
                self._externalnames.pop(key, None)
            else:
                self._externalnames[key] = event.object
                if previous is not None and previous.get("spec") == event.object.get("spec"):
                    return
            for name in sorted(self._apiservices):
                apiservice = self._apiservices[name]
                if not is_local(apiservice) and _service_ref(apiservice) == key:
                    self._trigger(name)
        except Exception:
            self._log.failure("could not follow the {type} event of ExternalName {namespace}/{name}",
                              type=event.type, namespace=event.namespace, name=event.name)

    def _forget(self, name: str) -> None:
        """Stop everything about a deleted APIService."""
        tracked = self._tracked.pop(name, None)
        self.failures.pop(name, None)
        self._written.pop(name, None)
        if tracked is not None:
            tracked.cancel_timer()
            if tracked.deferred is not None:
                tracked.deferred.cancel()
        self.in_flight.pop(name, None)
        self._unsynced.discard(name)
        self._check_synced()

    # Scheduling.

    def _resync_tick(self) -> None:
        """Probe every remote APIService (the periodic resync), RESYNC_BATCH per reactor turn; never raises."""
        resync = Deferred.fromCoroutine(in_batches(self._clock, sorted(self._apiservices), RESYNC_BATCH,
                                                   self._trigger_remote))
        resync.addErrback(lambda failure: self._log.failure("the availability resync failed", failure))

    def _trigger_remote(self, name: str) -> None:
        apiservice = self._apiservices.get(name)
        if apiservice is not None and not is_local(apiservice):
            self._trigger(name)

    def _schedule(self, name: str, tracked: _Tracked, delay: float) -> None:
        """Probe in `delay` seconds, unless a probe is already due sooner."""
        if tracked.timer is not None and tracked.timer.active():
            if tracked.timer.getTime() <= self._clock.seconds() + delay:
                return
            tracked.timer.cancel()
        tracked.timer = self._clock.callLater(delay, self._trigger, name)

    def _trigger(self, name: str) -> None:
        """Run the controller for one APIService now, or once more after the run in progress."""
        if not self.running or not self._ready:
            return
        tracked = self._tracked.get(name)
        if tracked is None:
            tracked = self._tracked[name] = _Tracked()
        if tracked.busy:
            tracked.again = True
            return
        tracked.cancel_timer()
        tracked.busy = True
        tracked.started = self._clock.seconds()
        run = Deferred.fromCoroutine(self._run(name, tracked))
        if tracked.busy:
            tracked.deferred = run
            self.in_flight[name] = run
        run.addErrback(self._run_failed, name)

    def _run_failed(self, failure: Failure, name: str) -> None:
        if not failure.check(CancelledError):
            self._log.failure("the availability run of APIService {name} failed", failure, name=name)

    async def _run(self, name: str, tracked: _Tracked) -> None:
        try:
            while True:
                tracked.again = False
                outcome = await self._check(name)
                if not tracked.again or not self.running:
                    break
            if not self.running or self._tracked.get(name) is not tracked:
                return
            if outcome == _FAILED:
                delay = min(tracked.backoff, self._max_backoff)
                tracked.backoff = min(tracked.backoff * 2, self._max_backoff)
                self._schedule(name, tracked, delay)
            else:
                tracked.backoff = INITIAL_BACKOFF
        finally:
            tracked.busy = False
            tracked.deferred = None
            if self._tracked.get(name) is tracked:
                self.in_flight.pop(name, None)
            if self._unsynced:
                self._unsynced.discard(name)
                self._check_synced()

    def _check_synced(self) -> None:
        if self._ready and not self._unsynced and not self.synced:
            self.synced = True
            self._log.info("every APIService has been checked once")

    # Checking one APIService.

    async def _check(self, name: str) -> str:
        """Probe one APIService and record the result; what happened decides when to probe again."""
        try:
            return await self._probe_and_record(name)
        except CancelledError:
            raise
        except Exception:
            if not self.running:
                raise
            self._log.failure("checking the availability of APIService {name} failed", name=name)
            self.failures[name] = self.failures.get(name, 0) + 1
            return _FAILED

    async def _probe_and_record(self, name: str) -> str:
        apiservice = self._apiservices.get(name)
        if apiservice is None or is_local(apiservice):
            return _IDLE
        namespace, service = _service_ref(apiservice)
        externalname = self._externalnames.get((namespace, service))
        if externalname is None:
            status, reason, message = "False", SERVICE_NOT_FOUND, f'service/{service} in "{namespace}" is not present'
            outcome = _IDLE
        else:
            try:
                backend = resolve_backend(apiservice, externalname)
                client = self._clients(backend)
            except BackendUnresolvable as error:
                failed: str | None = str(error)
            else:
                started = self._clock.seconds()
                failed = await self._probe(client, backend.url + probe_path(apiservice))
                if self._observe_probe is not None:
                    self._observe_probe(name, "success" if failed is None else "failure",
                                        self._clock.seconds() - started)
            if failed is None:
                status, reason, message, outcome = "True", PASSED, PASSED_MESSAGE, _AVAILABLE
            else:
                status, reason, message, outcome = "False", FAILED_DISCOVERY_CHECK, failed, _FAILED
        if outcome != _AVAILABLE:
            self.failures[name] = self.failures.get(name, 0) + 1
        await self._record(name, apiservice.get("spec"), status, reason, message)
        return outcome

    async def _record(self, name: str, spec: Any, status: str, reason: str, message: str) -> None:
        """Set the Available condition on the stored APIService, writing only when that changes its status."""
        watched = available_condition(self._apiservices.get(name) or {})
        if (watched is not None and watched.get("status") == status and watched.get("reason", "") == reason
                and watched.get("message", "") == message):
            # The watched copy is current (the store delivers events as it writes) and already says so:
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
            self._written[name] = updated["status"]
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
        raise ConflictError(f"APIService {name} kept changing; its status was not written")

    async def _probe(self, client: ProbeClient, url: str) -> str | None:
        """Up to PROBE_ATTEMPTS parallel requests: None at the first success, else the error that came last."""
        attempts: list[Deferred[str | None]] = []
        errors: list[str] = []
        finished = False

        def cancel(_: Deferred[str | None]) -> None:
            nonlocal finished
            finished = True
            for attempt in attempts:
                attempt.cancel()

        outcome: Deferred[str | None] = Deferred(cancel)

        def settled(error: str | None) -> None:
            if finished or outcome.called:
                return
            if error is None:
                outcome.callback(None)
                return
            errors.append(error)
            if len(errors) == PROBE_ATTEMPTS:
                outcome.callback(error)

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

    async def _attempt(self, client: ProbeClient, url: str) -> str | None:
        """One discovery request within probe_timeout: None for a 2xx answer, else the error text."""
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
                return f"failing or missing response from {url}: {_describe(error, url, timed_out)}"
            done: Deferred[None] = Deferred(lambda _: drain.abort())
            drain = _Drain(PROBE_BODY_LIMIT, done)
            waiting = done
            response.deliverBody(drain)
            try:
                await done
            except Exception:
                pass
            if 200 <= response.code < 300:
                return None
            return f"failing or missing response from {url}: bad status from {url}: {response.code}"
        finally:
            if deadline.active():
                deadline.cancel()
