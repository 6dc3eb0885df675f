# -*- test-case-name: tests.test_availability -*-
"""Tests for L{grafana_aggregator.controllers.availability}: probing remote APIServices with StubTreq backends.

The controller reads a started L{Informer} over a MemoryStore, so every store write reaches it
synchronously; StubTreq backends answer synchronously too, and only timeouts, backoff, the resync
and later reactor turns need the Clock.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

from attrs import frozen
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from grafana_aggregator.aggregation.remote_discovery import MAX_DOCUMENT_BYTES, DiscoveryCache
from grafana_aggregator.aggregation.upstream import Backend
from grafana_aggregator.controllers.availability import AvailabilityController
from grafana_aggregator.controllers.workqueue import PER_TURN
from grafana_aggregator.registry.apiservice import APISERVICES, available_condition, local_available_condition
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage import Collection, ConflictError, WatchEvent
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore

from .support import RacingStore

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
NAME = "v0alpha1.example.grafana.app"
URL = "https://backend.test:7443/apis/example.grafana.app/v0alpha1"
PATH = b"/apis/example.grafana.app/v0alpha1"
#: What the fake backend lists in its discovery documents, and what the controller caches of it.
LISTED = [{"name": "widgets", "singularName": "widget", "namespaced": True, "kind": "Widget",
           "verbs": ["get", "list"]}]
CACHED = [{"resource": "widgets", "scope": "Namespaced", "singularResource": "widget", "verbs": ["get", "list"],
           "responseKind": {"group": "example.grafana.app", "version": "v0alpha1", "kind": "Widget"}}]


def apiservice(name: str = NAME, service: str | None = "example-apiserver", group: str = "example.grafana.app",
               version: str = "v0alpha1") -> dict[str, Any]:
    """A remote APIService pointing at ExternalName grafana/<service> on port 7443, or a Local one."""
    spec: dict[str, Any] = {"group": group, "version": version, "groupPriorityMinimum": 1000,
                            "versionPriority": 15}
    if service is not None:
        spec["service"] = {"namespace": "grafana", "name": service, "port": 7443}
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
            "spec": spec}


def externalname(name: str = "example-apiserver", host: str = "backend.test") -> dict[str, Any]:
    """An ExternalName in namespace grafana."""
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": name, "namespace": "grafana"}, "spec": {"host": host}}


def resource_list(group_version: str, **extra: Any) -> bytes:
    """A backend's APIResourceList of group_version, listing LISTED."""
    return json.dumps({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                       "resources": LISTED, **extra}).encode()


@frozen
class Seen:
    """One request a fake backend received."""

    at: float
    method: bytes
    path: bytes
    headers: Headers


class FakeBackend(Resource):
    """A backend that records every request and answers with a configurable code and body, or never.

    Unless told otherwise it answers with the APIResourceList of the group-version requested.
    """

    isLeaf = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.code = 200
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.hang = False
        self.held: list[IRequest] = []
        self.requests: list[Seen] = []
        self.on_request: Callable[[], None] | None = None

    def render(self, request: IRequest) -> bytes | int:
        assert request.path is not None
        self.requests.append(Seen(self.clock.seconds(), request.method, request.path, request.requestHeaders))
        if self.on_request is not None:
            self.on_request()
        if self.hang:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        if self.body is not None:
            return self.body
        path = request.path.decode()
        return resource_list(path.removeprefix("/apis/") if path.startswith("/apis/") else path.removeprefix("/api/"))

    def probe_times(self) -> list[float]:
        """When probes started (each probe sends up to five requests at one moment)."""
        return sorted({seen.at for seen in self.requests})


class RecordingClient:
    """A StubTreq that also records the keyword arguments of each GET, as the controller passed them."""

    def __init__(self, stub: StubTreq) -> None:
        self.stub: Any = stub
        self.sent: list[dict[str, Any]] = []

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        self.sent.append(kwargs)
        response: Deferred[Any] = self.stub.get(url, **kwargs)
        return response


class CountingStore(MemoryStore):
    """A store that records which objects are read one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, collection: Collection, namespace: str, name: str) -> dict[str, Any]:
        self.reads.append(name)
        return await super().get(collection, namespace, name)


class StaleStore(MemoryStore):
    """A store whose updates all conflict while `stale` (its reads lag behind what was written)."""

    stale = False

    async def update(self, collection: Collection, namespace: str, name: str, obj: dict[str, Any],
                     *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.stale and collection == APISERVICES:
            raise ConflictError("the object has been modified")
        return await super().update(collection, namespace, name, obj, *args, **kwargs)


class TurnClock(Clock):
    """A Clock whose advance, like one reactor iteration, runs only the calls due when it begins.

    A plain Clock also runs the zero-delay calls scheduled meanwhile, so every later reactor turn
    would happen inside one advance; here each one takes an `advance(0)`.
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        self._sortCalls()
        for call in [call for call in self.calls if call.getTime() <= self.rightNow]:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class ControllerTestCase(SynchronousTestCase):
    """A MemoryStore, a Clock, a discovery cache, and one fake backend per ExternalName host."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.now = T0
        self.store = MemoryStore()
        self.discovery = DiscoveryCache()
        self.backend = FakeBackend(self.clock)
        self.backends: dict[str, FakeBackend] = {"backend.test": self.backend}
        self.stubs: dict[str, RecordingClient] = {}
        self.resolved: list[Backend] = []
        self.closed: list[Backend] = []

    def client_for(self, backend: Backend) -> Any:
        self.resolved.append(backend)
        fake = self.backends.setdefault(backend.host, FakeBackend(self.clock))
        return self.stubs.setdefault(backend.host, RecordingClient(StubTreq(fake)))

    def wait(self, coroutine: Any) -> Any:
        return self.successResultOf(Deferred.fromCoroutine(coroutine))

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "APIService":
            return self.wait(self.store.create(APISERVICES, "", obj["metadata"]["name"], obj))  # type: ignore[no-any-return]
        return self.wait(self.store.create(EXTERNALNAMES, "grafana", obj["metadata"]["name"], obj))  # type: ignore[no-any-return]

    def get(self, name: str = NAME) -> dict[str, Any]:
        return self.wait(self.store.get(APISERVICES, "", name))  # type: ignore[no-any-return]

    def condition(self, name: str = NAME) -> dict[str, Any] | None:
        return available_condition(self.get(name))

    def rv(self, name: str = NAME) -> str:
        return str(self.get(name)["metadata"]["resourceVersion"])

    def controller(self, clients: Callable[[Backend], Any] | None = None, *, start_informer_first: bool = True,
                   listener: Callable[[WatchEvent], None] | None = None, **kwargs: Any) -> AvailabilityController:
        """A started controller over a started informer of self.store (started first, as the daemon does).

        `listener` is told every event of the informer after the controller is.
        """
        self.informer = Informer(self.store, (APISERVICES, EXTERNALNAMES), self.clock)
        kwargs.setdefault("discovery", self.discovery)
        controller = AvailabilityController(self.store, self.informer, clients or self.client_for, self.clock,
                                            lambda: self.now, **kwargs)
        if listener is not None:
            self.informer.add_listener(listener)
        self.addCleanup(self.stop, controller, self.informer)
        if start_informer_first:
            self.informer.startService()
        controller.startService()
        if not start_informer_first:
            self.informer.startService()
        return controller

    def stop(self, controller: AvailabilityController, informer: Informer) -> None:
        if controller.running:
            self.successResultOf(controller.stopService())
        if informer.running:
            informer.stopService()

    def standard(self) -> None:
        """The APIService and its ExternalName."""
        self.create(apiservice())
        self.create(externalname())


class ProbeResultTests(ControllerTestCase):
    """The condition each kind of backend answer gives."""

    def test_service_not_found(self) -> None:
        """A missing ExternalName makes the APIService ServiceNotFound with kube's message, without a request."""
        self.create(apiservice())
        controller = self.controller()
        self.assertEqual(self.condition(), {
            "type": "Available", "status": "False", "lastTransitionTime": "2026-01-01T12:00:00Z",
            "reason": "ServiceNotFound", "message": 'service/example-apiserver in "grafana" is not present'})
        self.assertEqual(self.resolved, [])
        self.assertTrue(controller.synced)

    def test_passed(self) -> None:
        """A backend answering 200 with its APIResourceList makes the APIService Available with reason Passed."""
        self.standard()
        controller = self.controller()
        self.assertEqual(self.condition(), {
            "type": "Available", "status": "True", "lastTransitionTime": "2026-01-01T12:00:00Z",
            "reason": "Passed", "message": "all checks passed"})
        self.assertEqual(self.discovery.resources(NAME), CACHED)
        self.assertEqual([(s.method, s.path) for s in self.backend.requests], [(b"GET", PATH)])
        self.assertEqual(self.resolved[0].url, "https://backend.test:7443")
        self.assertTrue(controller.synced)
        self.assertEqual(controller.in_flight, {})

    def test_probe_observed(self) -> None:
        """Each backend probe is reported with its result, for the probe latency metric."""
        self.standard()
        observed: list[tuple[str, str, float]] = []
        self.controller(observe_probe=lambda name, result, seconds: observed.append((name, result, seconds)))
        self.assertEqual(observed, [(NAME, "success", 0.0)])

    def test_bad_status(self) -> None:
        """A 503 from all five attempts is FailedDiscoveryCheck with kube's bad-status message."""
        self.standard()
        self.backend.code = 503
        controller = self.controller()
        self.assertEqual(self.condition(), {
            "type": "Available", "status": "False", "lastTransitionTime": "2026-01-01T12:00:00Z",
            "reason": "FailedDiscoveryCheck",
            "message": f"failing or missing response from {URL}: bad status from {URL}: 503"})
        self.assertEqual(len(self.backend.requests), 5)
        self.assertEqual(controller.failures, {NAME: 1})

    def test_redirect_not_followed(self) -> None:
        """A 302 is a failure and its Location is never requested."""
        self.standard()
        self.backend.code = 302
        self.backend.headers = {"Location": "https://backend.test:7443/elsewhere"}
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]),
                         ("False", "FailedDiscoveryCheck",
                          f"failing or missing response from {URL}: bad status from {URL}: 302"))
        self.assertEqual({s.path for s in self.backend.requests}, {PATH})

    def test_timeout(self) -> None:
        """A backend that never answers fails every attempt after probe_timeout with Go's client timeout text."""
        self.standard()
        self.backend.hang = True
        controller = self.controller(probe_timeout=5.0)
        self.assertIsNone(self.condition())
        self.assertEqual(list(controller.in_flight), [NAME])
        self.assertFalse(controller.synced)
        self.clock.pump([1.0] * 4)
        self.assertIsNone(self.condition())
        self.clock.pump([1.0])
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]), (
            "False", "FailedDiscoveryCheck",
            f'failing or missing response from {URL}: Get "{URL}": context deadline exceeded '
            "(Client.Timeout exceeded while awaiting headers)"))
        self.assertEqual(len(self.backend.requests), 5)
        self.assertEqual(controller.in_flight, {})
        self.assertTrue(controller.synced)

    def test_connection_error(self) -> None:
        """A connection error is FailedDiscoveryCheck with the error text after `Get "<url>":`."""
        self.standard()

        class Refusing:
            def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
                return fail(ConnectionRefusedError("111: Connection refused"))

        self.controller(clients=lambda backend: Refusing())
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]), (
            "False", "FailedDiscoveryCheck",
            f'failing or missing response from {URL}: Get "{URL}": '
            "Connection was refused by other side: 111: Connection refused."))

    def test_one_success_is_enough(self) -> None:
        """When some attempts fail and one succeeds, the APIService is Passed."""
        self.standard()
        answers = iter([503, 500, 200, 503, 503])

        def next_code() -> None:
            self.backend.code = next(answers)

        self.backend.on_request = next_code
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")
        self.assertEqual(len(self.backend.requests), 3)

    def test_last_error_wins(self) -> None:
        """When every attempt fails, the message is the error of the attempt that finished last."""
        self.standard()
        answers = iter([500, 501, 502, 503, 504])

        def next_code() -> None:
            self.backend.code = next(answers)

        self.backend.on_request = next_code
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["message"], f"failing or missing response from {URL}: bad status from {URL}: 504")

    def test_large_body_still_passes(self) -> None:
        """A discovery document of a megabyte (within the 8 MiB limit) is read whole and passes."""
        self.standard()
        self.backend.body = resource_list("example.grafana.app/v0alpha1", padding="x" * (1024 * 1024))
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")
        self.assertEqual(self.discovery.resources(NAME), CACHED)

    def test_body_over_limit_fails(self) -> None:
        """A 2xx body larger than 8 MiB is FailedDiscoveryCheck, and nothing of it is cached."""
        self.standard()
        self.backend.body = resource_list("example.grafana.app/v0alpha1", padding="x" * MAX_DOCUMENT_BYTES)
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]), (
            "False", "FailedDiscoveryCheck",
            f'failing or missing response from {URL}: Get "{URL}": '
            f"the discovery document is larger than {MAX_DOCUMENT_BYTES} bytes"))
        self.assertIsNone(self.discovery.resources(NAME))

    def test_missing_host(self) -> None:
        """An ExternalName without a host is FailedDiscoveryCheck with the resolver's error, unwrapped."""
        self.create(apiservice())
        self.create(externalname(host=""))
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]),
                         ("False", "FailedDiscoveryCheck", 'service/example-apiserver in "grafana" has no host'))

    def test_identity_headers(self) -> None:
        """The probe is a GET for JSON as system:kube-aggregator in system:masters, with no uid and no extras."""
        self.standard()
        self.controller()
        seen = self.backend.requests[0]
        self.assertEqual((seen.method, seen.path), (b"GET", PATH))
        self.assertEqual(seen.headers.getRawHeaders("x-remote-user"), ["system:kube-aggregator"])
        self.assertEqual(seen.headers.getRawHeaders("x-remote-group"), ["system:masters"])
        self.assertEqual(seen.headers.getRawHeaders("accept"), ["application/json"])
        remote = sorted(name.decode().lower() for name, _ in seen.headers.getAllRawHeaders()
                        if name.lower().startswith(b"x-remote-"))
        self.assertEqual(remote, ["x-remote-group", "x-remote-user"])

    def test_probe_keeps_connection_alive(self) -> None:
        """The probe does not ask for `Connection: close`, so its pooled connection stays open to notice the
        backend closing it (the test's Agent adds its own `close`, hence the check of what the controller sent)."""
        self.standard()
        self.controller()
        sent = self.stubs["backend.test"].sent
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["allow_redirects"], False)
        self.assertEqual(sorted(name.lower() for name in sent[0]["headers"]),
                         ["accept", "x-remote-group", "x-remote-user"])

    def test_legacy_core_path(self) -> None:
        """The APIService `v1.` is probed at /api/<version>."""
        self.create(apiservice(name="v1.", group="", version="v1"))
        self.create(externalname())
        self.controller()
        self.assertEqual(self.backend.requests[0].path, b"/api/v1")

    def test_close_idle_after_failed_probe(self) -> None:
        """close_idle is called with the backend after a failed probe, and not after a passed one."""
        self.standard()
        controller = self.controller(close_idle=self.closed.append)
        self.assertEqual(self.closed, [])
        self.clock.pump([1.0])
        self.backend.code = 503
        controller.recheck(NAME)
        self.assertEqual(self.closed, [self.resolved[-1]])
        self.assertEqual((self.closed[0].host, self.closed[0].port), ("backend.test", 7443))

    def test_close_idle_without_backend(self) -> None:
        """An APIService without a backend (no ExternalName, or one without a host) closes nothing."""
        self.create(apiservice())
        self.create(apiservice(name="v1.nohost.test", service="nohost", group="nohost.test", version="v1"))
        self.create(externalname(name="nohost", host=""))
        controller = self.controller(close_idle=self.closed.append)
        self.assertEqual(controller.failures, {NAME: 1, "v1.nohost.test": 1})
        self.assertEqual(self.closed, [])


class DiscoveryCacheTests(ControllerTestCase):
    """The probe's answer is the group-version's discovery document, cached in step with the Available condition."""

    def test_resources_cached_when_available(self) -> None:
        """The backend's resources are cached when the write making the condition True happens, and are gone once
        it turns False."""
        self.standard()
        written: list[tuple[str, Any]] = []

        def on_event(event: WatchEvent) -> None:
            condition = available_condition(event.object) if event.collection == APISERVICES else None
            if condition is not None and (not written or written[-1][0] != condition["status"]):
                written.append((condition["status"], self.discovery.resources(NAME)))

        controller = self.controller(listener=on_event)
        self.assertEqual(written, [("True", CACHED)])
        self.clock.pump([1.0])
        self.backend.code = 503
        controller.recheck(NAME)
        self.assertEqual([status for status, _ in written], ["True", "False"])
        self.assertIsNone(self.discovery.resources(NAME))
        self.backend.code = 200
        self.clock.pump([0.5])
        self.assertEqual(written[2:], [("True", CACHED)])
        self.assertEqual(self.discovery.resources(NAME), CACHED)

    def test_html_answer_fails(self) -> None:
        """A 2xx answer that is not JSON (an HTML page) is FailedDiscoveryCheck and caches nothing."""
        self.standard()
        self.backend.headers = {"Content-Type": "text/html"}
        self.backend.body = b"<html><body>Welcome to nginx!</body></html>"
        controller = self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]), (
            "False", "FailedDiscoveryCheck",
            f"failing or missing response from {URL}: "
            "the discovery document is not JSON: Expecting value: line 1 column 1 (char 0)"))
        self.assertIsNone(self.discovery.resources(NAME))
        self.assertEqual(controller.failures, {NAME: 1})

    def test_not_a_resource_list_fails(self) -> None:
        """A 2xx JSON answer that is not an object with a list of resources is FailedDiscoveryCheck."""
        self.standard()
        self.backend.body = b'{"kind":"APIResourceList","groupVersion":"example.grafana.app/v0alpha1","resources":{}}'
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]), (
            "False", "FailedDiscoveryCheck",
            f"failing or missing response from {URL}: the discovery document is not an APIResourceList"))
        self.assertIsNone(self.discovery.resources(NAME))

    def test_other_group_version_fails(self) -> None:
        """An APIResourceList of another group-version is FailedDiscoveryCheck and drops what was cached."""
        self.standard()
        controller = self.controller()
        self.assertEqual(self.discovery.resources(NAME), CACHED)
        self.clock.pump([1.0])
        self.backend.body = resource_list("other.grafana.app/v1")
        controller.recheck(NAME)
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"], condition["message"]), (
            "False", "FailedDiscoveryCheck",
            f"failing or missing response from {URL}: the discovery document is of 'other.grafana.app/v1', "
            "not of 'example.grafana.app/v0alpha1'"))
        self.assertIsNone(self.discovery.resources(NAME))

    def test_service_not_found_drops_resources(self) -> None:
        """An APIService whose ExternalName is deleted loses its cached resources with its availability."""
        self.standard()
        self.controller()
        self.assertEqual(self.discovery.resources(NAME), CACHED)
        self.wait(self.store.delete(EXTERNALNAMES, "grafana", "example-apiserver"))
        self.assertEqual(self.condition()["reason"], "ServiceNotFound")  # type: ignore[index]
        self.assertIsNone(self.discovery.resources(NAME))

    def test_deleted_drops_resources(self) -> None:
        """A deleted APIService loses its cached resources."""
        self.standard()
        self.controller()
        self.assertEqual(self.discovery.resources(NAME), CACHED)
        self.wait(self.store.delete(APISERVICES, "", NAME))
        self.assertIsNone(self.discovery.resources(NAME))


class WriteTests(ControllerTestCase):
    """How the condition is written back to storage."""

    def test_no_write_when_nothing_changed(self) -> None:
        """Resync ticks probe again but leave the resourceVersion alone while the answer stays the same."""
        self.standard()
        self.controller(resync=30.0)
        before = self.rv()
        self.clock.pump([30.0] * 4)
        self.assertEqual(self.rv(), before)
        self.assertEqual(self.backend.probe_times(), [0.0, 30.0, 60.0, 90.0, 120.0])

    def test_unchanged_result_reads_nothing(self) -> None:
        """A probe that agrees with the watched condition neither reads nor copies the stored APIService."""
        self.store = CountingStore()
        self.standard()
        self.controller(resync=30.0)
        self.assertEqual(self.condition()["status"], "True")  # type: ignore[index]
        self.store.reads.clear()
        self.clock.pump([30.0] * 2)
        self.assertEqual(self.backend.probe_times(), [0.0, 30.0, 60.0])
        self.assertEqual(self.store.reads, [])

    def test_resync_spreads_over_reactor_turns(self) -> None:
        """A start or resync of more APIServices than one turn's share starts the rest on the next reactor turn."""
        self.clock = self.backend.clock = TurnClock()
        self.create(externalname())
        for index in range(PER_TURN + 2):
            self.create(apiservice(name=f"v0alpha1.g{index}.example.com", group=f"g{index}.example.com"))

        def probed_at(when: float) -> int:
            return len([seen for seen in self.backend.requests if seen.at == when])

        self.controller(resync=30.0)
        self.assertEqual(probed_at(0.0), PER_TURN)
        self.clock.advance(0)
        self.assertEqual(probed_at(0.0), PER_TURN + 2)
        self.clock.advance(30)
        self.assertEqual(probed_at(30.0), PER_TURN)
        self.clock.advance(0)
        self.assertEqual(probed_at(30.0), PER_TURN + 2)

    def test_no_write_when_still_failing_the_same_way(self) -> None:
        """Backoff retries of a backend failing with the same error write nothing."""
        self.standard()
        self.backend.code = 503
        self.controller()
        before = self.rv()
        self.clock.pump([0.5] * 20)
        self.assertEqual(self.rv(), before)
        self.assertGreater(len(self.backend.probe_times()), 3)

    def test_last_transition_time_only_on_status_change(self) -> None:
        """A new message keeps lastTransitionTime; a new status moves it."""
        self.standard()
        self.backend.code = 503
        self.controller()
        self.now = T0 + datetime.timedelta(minutes=1)
        self.backend.code = 500
        self.clock.pump([0.5])
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["message"], condition["lastTransitionTime"]),
                         (f"failing or missing response from {URL}: bad status from {URL}: 500",
                          "2026-01-01T12:00:00Z"))
        self.now = T0 + datetime.timedelta(minutes=2)
        self.backend.code = 200
        self.clock.pump([0.5] * 2)
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["lastTransitionTime"]), ("True", "2026-01-01T12:02:00Z"))

    def test_local_untouched(self) -> None:
        """A Local APIService keeps its Local condition and its resourceVersion; nothing is probed."""
        local = apiservice(name="v1.local.test", service=None, group="local.test", version="v1")
        local["status"] = {"conditions": [local_available_condition(T0)]}
        self.create(local)
        controller = self.controller()
        before = self.get("v1.local.test")
        self.clock.pump([30.0] * 3)
        self.assertEqual(self.get("v1.local.test"), before)
        self.assertEqual(self.resolved, [])
        self.assertTrue(controller.synced)

    def test_deleted_not_recreated(self) -> None:
        """An APIService deleted while its backend answers is not written back."""
        self.standard()

        def delete() -> None:
            self.wait(self.store.delete(APISERVICES, "", NAME))

        self.backend.on_request = delete
        controller = self.controller()
        self.assertEqual(self.wait(self.store.list(APISERVICES, "")).items, [])
        self.assertEqual(controller.in_flight, {})

    def test_deleted_while_in_flight_cancels(self) -> None:
        """Deleting an APIService cancels its probe in flight quietly, and writes nothing."""
        self.standard()
        self.backend.hang = True
        controller = self.controller()
        self.wait(self.store.delete(APISERVICES, "", NAME))
        self.assertEqual(controller.in_flight, {})
        self.clock.advance(0)
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls()], [30.0])
        self.assertEqual(controller.failures, {})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_deleted_during_probe_leaves_nothing_cached(self) -> None:
        """An APIService deleted while its backend answers leaves no resources in the discovery cache."""
        self.standard()

        def delete() -> None:
            self.backend.on_request = None
            self.wait(self.store.delete(APISERVICES, "", NAME))

        self.backend.on_request = delete
        self.controller()
        self.assertIsNone(self.discovery.resources(NAME))

    def test_conflict_retried_with_fresh_read(self) -> None:
        """A write that conflicts is retried on a fresh read and keeps the other writer's change."""
        store = self.store = RacingStore()
        self.standard()
        store.racing = True
        self.controller()
        self.assertFalse(store.racing)
        stored = self.get()
        self.assertEqual(stored["metadata"]["labels"], {"touched": "yes"})
        condition = available_condition(stored)
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")

    def test_stale_reads_retried_after_backoff(self) -> None:
        """A store whose reads keep lagging its writes (a cache catching up) gets the status later, after a backoff,
        with a warning and no traceback."""
        store = self.store = StaleStore()
        self.standard()
        logged: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        store.stale = True
        self.controller()
        self.assertIsNone(self.condition())
        self.assertFalse([e for e in logged if e.get("log_failure") is not None])
        self.assertTrue([e for e in logged if "kept changing" in e.get("log_format", "")])
        store.stale = False
        self.clock.advance(10)
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")

    def test_spec_changed_during_probe(self) -> None:
        """A result for an old spec is not written; the new spec is probed instead."""
        self.standard()
        self.create(externalname(name="other", host="other.test"))
        self.backend.code = 503
        other = self.backends["other.test"] = FakeBackend(self.clock)

        def repoint() -> None:
            self.backend.on_request = None
            current = self.get()
            current["spec"]["service"]["name"] = "other"
            self.wait(self.store.update(APISERVICES, "", NAME, current))

        self.backend.on_request = repoint
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")
        self.assertEqual(len(other.requests), 1)

    def test_spec_changed_during_probe_keeps_new_resources(self) -> None:
        """A failed probe of an old spec does not drop the resources the probe of the new spec cached."""
        self.standard()
        self.create(externalname(name="other", host="other.test"))
        self.backend.code = 503

        def repoint() -> None:
            self.backend.on_request = None
            current = self.get()
            current["spec"]["service"]["name"] = "other"
            self.wait(self.store.update(APISERVICES, "", NAME, current))

        self.backend.on_request = repoint
        self.controller()
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["status"], "True")
        self.assertEqual(self.discovery.resources(NAME), CACHED)

    def test_overwritten_status_restored(self) -> None:
        """A status written by someone else is checked again and corrected."""
        self.standard()
        self.backend.code = 503
        self.controller()
        current = self.get()
        current["status"]["conditions"][0].update(status="True", reason="Passed", message="all checks passed")
        self.wait(self.store.update(APISERVICES, "", NAME, current))
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"]), ("False", "FailedDiscoveryCheck"))

    def test_change_logged(self) -> None:
        """Each condition change logs one line with name, old and new status, reason and message."""
        log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.standard()
        self.backend.code = 503
        self.controller()
        self.backend.code = 200
        self.clock.pump([0.5] * 3)
        changes = [(e["name"], e["old"], e["new"], e["reason"], e["detail"]) for e in log
                   if "availability changed" in e.get("log_format", "")]
        self.assertEqual(changes, [
            (NAME, None, "False", "FailedDiscoveryCheck",
             f"failing or missing response from {URL}: bad status from {URL}: 503"),
            (NAME, "False", "True", "Passed", "all checks passed"),
        ])


class SchedulingTests(ControllerTestCase):
    """When probes happen: backoff, events, recheck, coalescing and concurrency."""

    def test_backoff_doubles_up_to_max(self) -> None:
        """An unavailable backend is retried after 0.5, 1, 2, then every max_backoff seconds."""
        self.standard()
        self.backend.code = 503
        self.controller(max_backoff=4.0)
        self.clock.pump([0.5] * 32)
        self.assertEqual(self.backend.probe_times(), [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5])

    def test_recovered_backend_available_within_max_backoff(self) -> None:
        """A backend that comes up is Available within max_backoff plus the probe time."""
        self.standard()
        self.backend.code = 503
        self.controller(max_backoff=4.0)
        self.clock.pump([0.5] * 40)
        self.backend.code = 200
        steps = 0
        while True:
            condition = self.condition()
            assert condition is not None
            if condition["status"] == "True":
                break
            self.clock.pump([0.5])
            steps += 1
        self.assertLessEqual(steps * 0.5, 4.0)

    def test_success_resets_backoff(self) -> None:
        """After a success, the next failure is retried after 0.5 s again."""
        self.standard()
        self.backend.code = 503
        self.controller(max_backoff=4.0)
        self.clock.pump([0.5] * 16)
        self.backend.code = 200
        self.clock.pump([0.5] * 8)
        self.backend.code = 503
        self.backend.requests.clear()
        self.clock.pump([0.5] * 44)
        self.assertEqual(self.backend.probe_times(), [30.0, 30.5, 31.5, 33.5])

    def test_externalname_change_reprobes(self) -> None:
        """Changing the ExternalName's host probes the new host at once."""
        self.standard()
        self.controller()
        moved = externalname(host="moved.test")
        self.wait(self.store.update(EXTERNALNAMES, "grafana", "example-apiserver", moved))
        self.assertEqual([b.host for b in self.resolved], ["backend.test", "moved.test"])
        self.assertEqual(len(self.backends["moved.test"].requests), 1)

    def test_externalname_created_after_service_not_found(self) -> None:
        """Creating the missing ExternalName makes the APIService Available at once."""
        self.create(apiservice())
        self.controller()
        self.create(externalname())
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")

    def test_externalname_deleted(self) -> None:
        """Deleting the ExternalName makes the APIService ServiceNotFound at once."""
        self.standard()
        self.controller()
        self.wait(self.store.delete(EXTERNALNAMES, "grafana", "example-apiserver"))
        condition = self.condition()
        assert condition is not None
        self.assertEqual((condition["status"], condition["reason"]), ("False", "ServiceNotFound"))

    def test_unrelated_change_does_not_probe(self) -> None:
        """A label change on the APIService or its ExternalName does not probe again."""
        self.standard()
        self.controller()
        current = self.get()
        current["metadata"]["labels"] = {"a": "b"}
        self.wait(self.store.update(APISERVICES, "", NAME, current))
        name = externalname()
        name["metadata"]["labels"] = {"a": "b"}
        self.wait(self.store.update(EXTERNALNAMES, "grafana", "example-apiserver", name))
        self.assertEqual(len(self.backend.requests), 1)

    def test_spec_change_reprobes(self) -> None:
        """Changing the APIService's spec probes it at once."""
        self.standard()
        self.controller()
        current = self.get()
        current["spec"]["service"]["port"] = 8443
        self.wait(self.store.update(APISERVICES, "", NAME, current))
        self.assertEqual([b.url for b in self.resolved], ["https://backend.test:7443", "https://backend.test:8443"])

    def test_new_apiservice_probed(self) -> None:
        """An APIService created after start is probed at once."""
        self.create(externalname())
        self.controller()
        self.create(apiservice())
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")

    def test_recheck(self) -> None:
        """recheck() probes again at once and notices a backend that went away."""
        self.standard()
        controller = self.controller()
        self.clock.pump([1.0])
        self.backend.code = 503
        controller.recheck(NAME)
        self.assertEqual(self.backend.probe_times(), [0.0, 1.0])
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "FailedDiscoveryCheck")

    def test_backend_closed_probes_at_once(self) -> None:
        """backend_closed of a backend's host and port probes every APIService it serves at once, not at the resync."""
        self.standard()
        self.create(apiservice(name="v1.second.test", group="second.test", version="v1"))
        self.create(apiservice(name="v1.elsewhere.test", service="elsewhere", group="elsewhere.test", version="v1"))
        self.create(externalname(name="elsewhere", host="elsewhere.test"))
        controller = self.controller()
        self.clock.pump([1.0])
        self.backend.code = 503
        controller.backend_closed("backend.test", 7443)
        self.assertEqual(sorted({seen.path for seen in self.backend.requests if seen.at == 1.0}),
                         [PATH, b"/apis/second.test/v1"])
        self.assertEqual(self.condition()["reason"], "FailedDiscoveryCheck")  # type: ignore[index]
        self.assertEqual(self.condition("v1.second.test")["reason"], "FailedDiscoveryCheck")  # type: ignore[index]
        self.assertEqual(self.backends["elsewhere.test"].probe_times(), [0.0])

    def test_backend_closed_elsewhere_probes_nothing(self) -> None:
        """backend_closed of another host, or of the backend's host on another port, probes nothing."""
        self.standard()
        self.create(apiservice(name="v1.local.test", service=None, group="local.test", version="v1"))
        self.create(apiservice(name="v1.orphan.test", service="missing", group="orphan.test", version="v1"))
        self.create(apiservice(name="v1.nohost.test", service="nohost", group="nohost.test", version="v1"))
        self.create(externalname(name="nohost", host=""))
        controller = self.controller()
        self.clock.pump([1.0])
        controller.backend_closed("backend.test", 8443)
        controller.backend_closed("other.test", 7443)
        controller.backend_closed("", 7443)
        self.assertEqual(self.backend.probe_times(), [0.0])
        self.assertEqual([backend.host for backend in self.resolved], ["backend.test"])

    def test_recheck_rate_limited(self) -> None:
        """A recheck right after a probe waits until 0.5 s after that probe."""
        self.standard()
        controller = self.controller()
        self.clock.pump([0.25])
        controller.recheck(NAME)
        controller.recheck(NAME)
        self.assertEqual(self.backend.probe_times(), [0.0])
        self.clock.pump([0.25])
        self.assertEqual(self.backend.probe_times(), [0.0, 0.5])

    def test_triggers_coalesce(self) -> None:
        """Triggers during a probe in flight lead to exactly one more probe after it."""
        self.standard()
        self.backend.hang = True
        controller = self.controller()
        first = controller.in_flight[NAME]
        for _ in range(3):
            controller.recheck(NAME)
        controller.backend_closed("backend.test", 7443)
        current = self.get()
        current["spec"]["versionPriority"] = 20
        self.wait(self.store.update(APISERVICES, "", NAME, current))
        self.assertEqual(len(self.backend.requests), 5)
        self.clock.pump([1.0] * 5)
        self.assertEqual(len(self.backend.requests), 10)
        self.assertNoResult(first)
        self.clock.pump([1.0] * 5)
        self.assertIsNone(self.successResultOf(first))
        self.assertEqual(self.backend.probe_times(), [0.0, 5.0])
        self.assertEqual(controller.in_flight, {})

    def test_slow_backend_does_not_delay_others(self) -> None:
        """A backend that hangs does not keep another APIService from becoming Available."""
        self.standard()
        self.create(apiservice(name="v1.fast.test", service="fast", group="fast.test", version="v1"))
        self.create(externalname(name="fast", host="fast.test"))
        self.backend.hang = True
        controller = self.controller()
        condition = self.condition("v1.fast.test")
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")
        self.assertEqual(list(controller.in_flight), [NAME])

    def test_exception_logged_and_loop_continues(self) -> None:
        """A client factory that raises is logged, and later probes still run and succeed."""
        self.standard()
        calls: list[int] = []

        def flaky(backend: Backend) -> Any:
            calls.append(1)
            if len(calls) <= 2:
                raise RuntimeError("factory broke")
            return self.client_for(backend)

        controller = self.controller(clients=flaky)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(self.condition())
        self.assertEqual(controller.failures, {NAME: 1})
        self.clock.pump([0.5])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.pump([0.5] * 2)
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")
        self.clock.pump([30.0] * 2)
        self.assertEqual(len(calls), 5)

    def test_resync_survives_errors(self) -> None:
        """A factory that always raises is logged on every resync tick and the resync keeps ticking."""
        self.create(apiservice())
        self.create(externalname())

        def broken(backend: Backend) -> StubTreq:
            raise RuntimeError("factory broke")

        self.controller(clients=broken, resync=30.0, max_backoff=60.0)
        self.clock.pump([0.5, 1.0, 2.0, 4.0, 8.0, 14.0])
        before = len(self.flushLoggedErrors(RuntimeError))
        self.assertEqual(before, 6)
        self.clock.pump([30.0] * 3)
        self.assertGreaterEqual(len(self.flushLoggedErrors(RuntimeError)), 3)


class LifecycleTests(ControllerTestCase):
    """Start, readiness and stop."""

    def test_synced_after_first_pass(self) -> None:
        """synced turns true once every stored APIService has been checked once."""
        self.standard()
        self.create(apiservice(name="v1.fast.test", service="fast", group="fast.test", version="v1"))
        self.create(externalname(name="fast", host="fast.test"))
        self.backend.hang = True
        controller = self.controller()
        self.assertFalse(controller.synced)
        self.assertIsNotNone(controller.check())
        self.clock.pump([1.0] * 5)
        self.assertTrue(controller.synced)
        self.assertIsNone(controller.check())

    def test_synced_with_nothing_stored(self) -> None:
        """With no APIServices, the controller is synced (and ready) right after start."""
        controller = self.controller()
        self.assertTrue(controller.synced)
        self.assertIsNone(controller.check())

    def test_started_before_informer(self) -> None:
        """A controller started before the informer has synced probes what the informer announces, and is synced."""
        self.standard()
        controller = self.controller(start_informer_first=False)
        self.assertEqual(self.backend.probe_times(), [0.0])
        self.assertTrue(controller.synced)
        condition = self.condition()
        assert condition is not None
        self.assertEqual(condition["reason"], "Passed")

    def test_started_before_informer_probes_once(self) -> None:
        """A controller started before the informer has synced probes each announced APIService once, not again
        for the announcement of its ExternalName."""
        self.standard()
        self.controller(start_informer_first=False)
        self.assertEqual(len(self.backend.requests), 1)

    def test_stop_cancels_everything(self) -> None:
        """stopService cancels probes, timers, the resync loop and the watches, and fires when done."""
        self.standard()
        self.create(apiservice(name="v1.down.test", service="down", group="down.test", version="v1"))
        self.create(externalname(name="down", host="down.test"))
        self.backends["down.test"] = FakeBackend(self.clock)
        self.backends["down.test"].code = 503
        self.backend.hang = True
        controller = self.controller()
        self.assertEqual(list(controller.in_flight), [NAME])
        self.assertGreater(len(self.clock.getDelayedCalls()), 0)
        stopped = controller.stopService()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(controller.in_flight, {})
        before = self.rv(NAME), self.rv("v1.down.test")
        self.wait(self.store.update(EXTERNALNAMES, "grafana", "example-apiserver", externalname(host="new.test")))
        self.assertEqual([b.host for b in self.resolved], ["backend.test", "down.test"])
        self.assertEqual((self.rv(NAME), self.rv("v1.down.test")), before)
        self.assertEqual(self.condition(NAME), None)
