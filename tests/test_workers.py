"""Workers, in memory: the owner channel's trust rule, the forwarded identity, the worker's informer source
over the channel, the restart backoff, the owner watch, the worker field, and the summed metrics."""

from __future__ import annotations

import copy
import json
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from grafana_aggregator.aggregation.proxy import Proxy
from grafana_aggregator.aggregation.routing import ProxyMaker
from grafana_aggregator.apimachinery.strategy import wall_clock
from grafana_aggregator.identity.auth import Authenticator, TokenAuthenticator, UserInfo
from grafana_aggregator.processes.channel import ChannelRoot
from grafana_aggregator.processes.forward import OWNER, ForwardToOwner, WorkerTree
from grafana_aggregator.processes.metrics import SummedMetricsResource, sum_expositions
from grafana_aggregator.storage import ExpiredError
from grafana_aggregator.processes.remote_store import ChannelStore, parse_event, ChannelError
from grafana_aggregator.processes.supervisor import STATUS_FD, WorkerSupervisor, restart_delay
from grafana_aggregator.processes.worker import OwnerWatch, WorkerLogger, accept_one_at_a_time
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import local_groups
from grafana_aggregator.web.health import HealthChecks
from grafana_aggregator.web.metrics import Metrics
from grafana_aggregator.web.root import AuthenticatingRoot, build_tree
from grafana_aggregator.web.site import api_call

from .support import serve_apis
from .test_routing import apiservice, externalname

ADMIN = UserInfo("admin", "42", ("system:masters",), {"scopes": ("a", "b")})
TOKENS = {"admin-token": ADMIN, "viewer-token": UserInfo("viewer", "7", ())}


class Recorder(Resource):
    """Answers 200 with the identity headers it was sent (stands for the owner, or a backend)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, list[str]]] = []
        self.paths: list[bytes] = []

    def render(self, request: IRequest) -> bytes:
        headers = {name.decode().lower(): [v.decode() for v in values]
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        self.seen.append(headers)
        self.paths.append(request.uri)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"ok": True}).encode()


class Echo(Resource):
    """Answers with who the root admitted: the user and the impersonator of the request's ApiCall."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        call = api_call(request)
        return json.dumps({"user": call.user.name if call.user else None,
                           "groups": list(call.user.groups) if call.user else None,
                           "extra": {k: list(v) for k, v in call.user.extra.items()} if call.user else None,
                           "impersonator": call.impersonator.name if call.impersonator else None}).encode()


class HostEcho(Resource):
    """Answers with the Host header the owner's tree sees, and any X-Aggregator-Host left over."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        host = request.getHeader(b"host")
        left = request.getHeader(b"x-aggregator-host")
        return (host or b"") + b" " + (left or b"None")


def echo_tree() -> Resource:
    tree = Resource()
    tree.putChild(b"who", Echo())
    return tree


class ChannelTrustTests(SynchronousTestCase):
    """On the owner channel the forwarded headers are the identity; on the TLS listener's root they are not."""

    def ask(self, root: Any, headers: dict[bytes, list[bytes]]) -> tuple[int, Any]:
        client = StubTreq(root)
        response = self.successResultOf(client.get("https://agg.test/who", headers=headers))
        body = self.successResultOf(client.content(response))
        return response.code, json.loads(body) if response.code == 200 else body

    def test_channel_takes_identity_from_headers(self) -> None:
        """The channel root admits the user a worker forwarded, groups and extra as sent, and notes the impersonator."""
        code, who = self.ask(ChannelRoot(echo_tree()), {
            b"X-Remote-User": [b"jane"], b"X-Remote-Group": [b"system:masters", b"team"],
            b"X-Remote-Extra-Scopes": [b"x"], b"X-Aggregator-Impersonator-User": [b"admin"]})
        self.assertEqual(code, 200)
        self.assertEqual(who, {"user": "jane", "groups": ["system:masters", "team"], "extra": {"scopes": ["x"]},
                               "impersonator": "admin"})

    def test_channel_without_identity_is_401(self) -> None:
        """A channel request without the forwarded user is refused, never anonymous."""
        code, _ = self.ask(ChannelRoot(echo_tree()), {})
        self.assertEqual(code, 401)

    def test_tls_root_ignores_forwarded_identity_headers(self) -> None:
        """The same headers sent to the listener's root by a client without credentials are not believed (401)."""
        root = AuthenticatingRoot(echo_tree(), Authenticator([TokenAuthenticator(TOKENS)], anonymous=True))
        code, _ = self.ask(root, {b"X-Remote-User": [b"jane"], b"X-Remote-Group": [b"system:masters"],
                                  b"X-Aggregator-Impersonator-User": [b"admin"]})
        self.assertEqual(code, 401)


class WorkerForwardingTests(SynchronousTestCase):
    """A worker authenticates, then forwards to the owner with the caller (and impersonator) in headers."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.owner = Recorder()
        self.backend = Recorder()
        backend_agent = RequestTraversalAgent(self.backend)
        maker = ProxyMaker(self.clock, lambda backend: backend_agent)
        self.informer = Informer(self.store, (APISERVICES, EXTERNALNAMES), self.clock)
        from grafana_aggregator.aggregation.remote_discovery import DiscoveryCache
        from grafana_aggregator.aggregation.routing import RoutingTable
        routing = RoutingTable(self.informer, [], DiscoveryCache(), maker)
        self.informer.startService()
        owner = Proxy("owner", OWNER, RequestTraversalAgent(self.owner), self.clock)
        tree = WorkerTree(routing, ForwardToOwner(owner))
        self.client = StubTreq(AuthenticatingRoot(tree, Authenticator([TokenAuthenticator(TOKENS)], anonymous=True)))

    def get(self, path: str, token: str | None = "admin-token", **headers: list[bytes]) -> int:
        sent = {name.replace("_", "-").encode(): values for name, values in headers.items()}
        if token:
            sent[b"Authorization"] = [b"Bearer " + token.encode()]
        response = self.successResultOf(self.client.get("https://agg.test" + path, headers=sent))
        self.successResultOf(self.client.content(response))
        return int(response.code)

    def test_forwards_the_authenticated_caller(self) -> None:
        """A local path goes to the owner with the token's user, and the client's forged identity headers are gone."""
        code = self.get("/apis/apiregistration.k8s.io/v1/apiservices?limit=5", X_Remote_User=[b"root"],
                        X_Aggregator_Impersonator_User=[b"root"])
        self.assertEqual(code, 200)
        [seen] = self.owner.seen
        self.assertEqual(self.owner.paths, [b"/apis/apiregistration.k8s.io/v1/apiservices?limit=5"])
        self.assertEqual(seen["x-remote-user"], ["admin"])
        self.assertEqual(seen["x-remote-uid"], ["42"])
        self.assertEqual(seen["x-remote-group"], ["system:masters", "system:authenticated"])
        self.assertEqual(seen["x-remote-extra-scopes"], ["a", "b"])
        self.assertNotIn("x-aggregator-impersonator-user", seen)
        self.assertNotIn("authorization", seen)

    def test_owner_sees_the_host_the_client_asked_for(self) -> None:
        """The owner channel restores the client's Host (legacy discovery names the server address from it)."""
        tree = Resource()
        tree.putChild(b"host", HostEcho())
        client = StubTreq(ChannelRoot(tree))
        response = self.successResultOf(client.get("https://agg.test/host", headers={
            b"X-Remote-User": [b"jane"], b"X-Remote-Group": [b"system:masters"], b"Host": [b"owner.channel"],
            b"X-Aggregator-Host": [b"10.0.0.1:6443"]}))
        self.assertEqual(self.successResultOf(client.content(response)), b"10.0.0.1:6443 None")
        self.assertEqual(self.get("/apis", Host=[b"api.example:6443"], X_Aggregator_Host=[b"forged"]), 200)
        self.assertEqual(self.owner.seen[0]["x-aggregator-host"], ["api.example:6443"])

    def test_forwards_the_impersonator(self) -> None:
        """An impersonating caller is forwarded as the impersonated user, with itself as the impersonator."""
        code = self.get("/api", Impersonate_User=[b"viewer"], Impersonate_Group=[b"readers"])
        self.assertEqual(code, 200)
        [seen] = self.owner.seen
        self.assertEqual(seen["x-remote-user"], ["viewer"])
        self.assertEqual(seen["x-remote-group"], ["readers", "system:authenticated"])
        self.assertEqual(seen["x-aggregator-impersonator-user"], ["admin"])
        self.assertEqual(seen["x-aggregator-impersonator-group"], ["system:masters", "system:authenticated"])
        self.assertNotIn("impersonate-user", seen)

    def test_refused_before_forwarding(self) -> None:
        """Authentication and authorization happen in the worker: a bad token never reaches the owner."""
        self.assertEqual(self.get("/apis", token="wrong"), 401)
        self.assertEqual(self.get("/apis/apiregistration.k8s.io/v1/apiservices", token="viewer-token"), 403)
        self.assertEqual(self.owner.seen, [])

    def test_remote_group_proxied_by_the_worker(self) -> None:
        """A remote APIService the worker's informer knows is proxied to its backend, not to the owner."""
        self.successResultOf(Deferred.fromCoroutine(self.store.create(EXTERNALNAMES, "grafana", "remote",
                                                                      copy.deepcopy(externalname()))))
        self.successResultOf(Deferred.fromCoroutine(self.store.create(APISERVICES, "", "v1.remote.grafana.app",
                                                                      copy.deepcopy(apiservice()))))
        self.assertEqual(self.get("/apis/remote.grafana.app/v1/namespaces/a/things"), 200)
        self.assertEqual(self.backend.paths, [b"/apis/remote.grafana.app/v1/namespaces/a/things"])
        self.assertEqual(self.owner.seen, [])
        self.assertEqual(self.get("/apis/remote.grafana.app"), 200)
        self.assertEqual(self.get("/apis/other.grafana.app/v1/x"), 200)
        self.assertEqual(self.owner.paths, [b"/apis/remote.grafana.app", b"/apis/other.grafana.app/v1/x"])


class ChannelStoreTests(SynchronousTestCase):
    """A worker's informer lists and watches the owner's APIServices and ExternalNames over the channel."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        _, groups = local_groups(wall_clock(self.clock))
        served = self.served = serve_apis(self.store, self.clock, groups)
        owner = ChannelRoot(build_tree(health=HealthChecks(), emulated_version=(1, 33), apis=served.apis))
        self.agent = RequestTraversalAgent(owner)
        self.remote = ChannelStore(self.agent, self.clock)
        self.informer = Informer(self.remote, (APISERVICES, EXTERNALNAMES), self.clock)
        self.remote.on_broken = self.informer.relist

    def create(self, collection: Any, namespace: str, obj: dict[str, Any]) -> None:
        self.successResultOf(Deferred.fromCoroutine(self.store.create(collection, namespace, obj["metadata"]["name"],
                                                                      copy.deepcopy(obj))))

    def test_lists_then_follows_changes_with_status(self) -> None:
        """Objects stored before start are listed; later creations and status changes arrive through the watch."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        self.informer.startService()
        self.addCleanup(self.informer.stopService)
        self.agent.flush()
        self.assertTrue(self.informer.synced())
        self.assertEqual([e["metadata"]["name"] for e in self.informer.list(EXTERNALNAMES)], ["remote"])
        self.create(APISERVICES, "", apiservice(available=False))
        self.agent.flush()
        [stored] = self.informer.list(APISERVICES)
        self.assertEqual(stored["status"]["conditions"][0]["status"], "False")

    def test_list_at_only_the_current_snapshot(self) -> None:
        """The channel keeps no history: the current resourceVersion lists, any other is Expired."""
        self.create(EXTERNALNAMES, "grafana", externalname())
        listing = Deferred.fromCoroutine(self.remote.list(EXTERNALNAMES, None))
        self.agent.flush()
        current = self.successResultOf(listing)
        same = Deferred.fromCoroutine(self.remote.list_at(EXTERNALNAMES, None, current.resource_version))
        self.agent.flush()
        self.assertEqual([e["metadata"]["name"] for e in self.successResultOf(same).items], ["remote"])
        old = Deferred.fromCoroutine(self.remote.list_at(EXTERNALNAMES, None, current.resource_version - 1))
        self.agent.flush()
        self.failureResultOf(old, ExpiredError)

    def test_broken_watch_lists_again(self) -> None:
        """When the owner's watch stream ends, the informer lists again and sees what changed meanwhile."""
        self.informer.startService()
        self.addCleanup(self.informer.stopService)
        self.agent.flush()
        broken: list[bool] = []
        self.remote.on_broken = lambda: (broken.append(True), self.informer.relist())  # type: ignore[func-returns-value]
        for stream in list(self.served.watches):
            stream.end()
        self.agent.flush()
        self.assertEqual(broken, [True])
        self.create(APISERVICES, "", apiservice())
        self.clock.advance(0)
        for _ in range(3):
            self.agent.flush()
        self.assertEqual([a["metadata"]["name"] for a in self.informer.list(APISERVICES)], ["v1.remote.grafana.app"])

    def test_error_event_is_refused(self) -> None:
        """An ERROR event (an expired resourceVersion) is not an object: it stops the watch."""
        with self.assertRaises(ChannelError):
            parse_event(b'{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}', APISERVICES)
        event = parse_event(b'{"type":"MODIFIED","object":{"metadata":{"name":"x","resourceVersion":"9"}}}',
                            APISERVICES)
        self.assertEqual((event.type, event.name, event.namespace, event.resource_version), ("MODIFIED", "x", "", 9))


class FakeProcess:
    def __init__(self, pid: int):
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class ProcessClock(Clock):
    """A Clock that also records spawnProcess calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeProcess, dict[int, Any]]] = []

    def spawnProcess(self, protocol: Any, executable: str, argv: list[str], env: Any, path: str,
                     childFDs: dict[int, Any]) -> FakeProcess:
        process = FakeProcess(100 + len(self.spawned))
        self.spawned.append((protocol, process, childFDs))
        return process


def died(code: int | None = 1, signal: int | None = None) -> Failure:
    return Failure(ProcessTerminated(code, signal))


class SupervisorTests(SynchronousTestCase):
    """Workers are started on the owner's socket, restarted with backoff, counted, and stopped with SIGTERM."""

    def setUp(self) -> None:
        self.reactor = ProcessClock()
        self.metrics = Metrics()
        self.supervisor = WorkerSupervisor(self.reactor, 3, lambda n: ("python", ["python", str(n)], {}),
                                           self.metrics.registry, stop_timeout=30)
        self.supervisor.startService()

    def test_backoff_doubles_and_is_capped(self) -> None:
        """1, 2, 4 … seconds, never more than 30."""
        self.assertEqual([restart_delay(n) for n in (1, 2, 3, 4, 5, 6, 7, 20)], [1, 2, 4, 8, 16, 30, 30, 30])

    def test_starts_workers_on_the_socket_and_reports_readiness(self) -> None:
        """Each worker gets the listening socket as fd 3 and a status pipe; readyz fails until all say ready."""
        self.assertEqual(self.supervisor.check(), "the workers are not started yet")
        self.supervisor.start_workers(7)
        self.assertEqual([fds[3] for _, _, fds in self.reactor.spawned], [7, 7])
        self.assertEqual(self.reactor.spawned[0][2][STATUS_FD], "r")
        self.assertEqual(self.supervisor.check(), "worker 1 is not ready; worker 2 is not ready")
        for protocol, _, _ in self.reactor.spawned:
            protocol.childDataReceived(STATUS_FD, b"rea")
            protocol.childDataReceived(STATUS_FD, b"dy\n")
        self.assertIsNone(self.supervisor.check())

    def test_hints_reach_the_availability_controller(self) -> None:
        """A worker's proxy hints (backend unreachable, idle connection closed) go to the owner's handlers."""
        rechecked: list[str] = []
        closed: list[tuple[str, int]] = []
        self.supervisor.on_unreachable_hint(rechecked.append, lambda host, port: closed.append((host, port)))
        self.supervisor.start_workers(7)
        self.reactor.spawned[0][0].childDataReceived(STATUS_FD, b"unreachable v1.remote.grafana.app\nclosed ::1 7443\n")
        self.assertEqual((rechecked, closed), (["v1.remote.grafana.app"], [("::1", 7443)]))

    def test_dead_worker_restarted_with_backoff_and_counted(self) -> None:
        """A worker that exits is restarted after 1 s, then 2 s; readyz fails meanwhile; the restarts are counted."""
        self.supervisor.start_workers(7)
        first = self.reactor.spawned[0][0]
        first.processEnded(died(signal=9))
        self.assertEqual(self.supervisor.check(), "worker 1 is not running; worker 2 is not ready")
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.spawned[2][0].processEnded(died())
        self.reactor.advance(1.5)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 4)
        self.assertEqual(self.metrics.registry.get_sample_value("grafana_aggregator_worker_restarts_total",
                                                                {"worker": "1"}), 2.0)
        # Ready again: the next exit is restarted after 1 s again.
        self.reactor.spawned[3][0].childDataReceived(STATUS_FD, b"ready\n")
        self.reactor.spawned[3][0].processEnded(died())
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), 5)

    def test_stop_terms_every_worker_and_waits(self) -> None:
        """Stopping sends SIGTERM, restarts nothing, and fires once every worker has exited."""
        self.supervisor.start_workers(7)
        stopped = self.supervisor.stopService()
        exited = self.supervisor.exited()
        self.assertEqual([p.signals for _, p, _ in self.reactor.spawned], [["TERM"], ["TERM"]])
        self.assertNoResult(stopped)
        self.reactor.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.assertNoResult(stopped)
        self.reactor.spawned[1][0].processEnded(Failure(ProcessDone(0)))
        self.successResultOf(stopped)
        self.successResultOf(exited)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_stop_kills_a_worker_that_does_not_exit(self) -> None:
        """A worker still running after the stop timeout gets SIGKILL."""
        self.supervisor.start_workers(7)
        self.supervisor.stopService()
        self.reactor.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.reactor.advance(30)
        self.assertEqual(self.reactor.spawned[1][1].signals, ["TERM", "KILL"])


class OwnerWatchTests(SynchronousTestCase):
    """A worker stops by itself once its owner is gone."""

    def test_stops_when_reparented(self) -> None:
        """The worker stops when its parent process changes, and not before."""
        clock = Clock()
        parents = [10]
        stops: list[bool] = []
        watch = OwnerWatch(clock, lambda: stops.append(True), 10, parent=lambda: parents[0], interval=1)
        watch.startService()
        clock.pump([1, 1])
        self.assertEqual(stops, [])
        parents[0] = 1
        clock.pump([1, 1, 0])
        self.assertEqual(stops, [True])

    def test_stops_when_the_owner_died_before_it_started(self) -> None:
        """A worker whose owner is already gone when it starts stops at once."""
        stops: list[bool] = []
        clock = Clock()
        OwnerWatch(clock, lambda: stops.append(True), 10, parent=lambda: 1).startService()
        clock.advance(0)
        self.assertEqual(stops, [True])


class AcceptOneAtATimeTests(SynchronousTestCase):
    """Processes sharing a listening socket take turns: each port accepts one connection per wake-up."""

    def test_number_of_accepts_stays_one(self) -> None:
        """Twisted's growth of the accept loop (it assigns numberAccepts after each wake-up) is ignored."""
        from twisted.internet import tcp
        from twisted.internet.protocol import Factory

        port = tcp.Port(0, Factory())
        self.assertIs(accept_one_at_a_time(port), port)
        port.numberAccepts = 100  # what startListening sets
        self.assertIsInstance(port, tcp.Port)
        port.numberAccepts += 20
        self.assertEqual(port.numberAccepts, 1)
        other = accept_one_at_a_time(tcp.Port(0, Factory()))
        self.assertIs(type(other), type(port))


class WorkerLoggerTests(SynchronousTestCase):
    """Every access log event says which process served it."""

    def test_worker_field(self) -> None:
        """The event has a `worker` field; with in_text its text form ends with it too."""
        from twisted.logger import formatEvent

        events: list[dict[str, Any]] = []
        logger = WorkerLogger("grafana_aggregator.access", 2, in_text=True)
        logger.observer = events.append  # type: ignore[assignment]
        logger.info("GET {path}", path="/apis")
        self.assertEqual(events[0]["worker"], 2)
        self.assertEqual(formatEvent(events[0]), "GET /apis worker=2")
        quiet = WorkerLogger("grafana_aggregator.access", 0)
        quiet.observer = events.append  # type: ignore[assignment]
        quiet.emit(LogLevel.info, "GET {path}", path="/")
        self.assertEqual((events[1]["worker"], formatEvent(events[1])), (0, "GET /"))


OWNER_TEXT = b"""# HELP apiserver_request_total Counter of requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",verb="GET"} 3.0
# HELP apiserver_current_inflight_requests In flight.
# TYPE apiserver_current_inflight_requests gauge
apiserver_current_inflight_requests{request_kind="readOnly"} 1.0
# HELP d Durations.
# TYPE d histogram
d_bucket{le="0.1"} 1.0
d_bucket{le="+Inf"} 2.0
d_count 2.0
d_sum 0.5
"""
WORKER_TEXT = b"""# HELP apiserver_request_total Counter of requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",verb="GET"} 4.0
apiserver_request_total{code="404",verb="GET"} 1.0
# HELP apiserver_current_inflight_requests In flight.
# TYPE apiserver_current_inflight_requests gauge
apiserver_current_inflight_requests{request_kind="readOnly"} 2.0
# HELP d Durations.
# TYPE d histogram
d_bucket{le="0.1"} 0.0
d_bucket{le="+Inf"} 1.0
d_count 1.0
d_sum 0.25
"""


class SummedMetricsTests(SynchronousTestCase):
    """`/metrics` of the owner adds every worker's samples to its own."""

    def test_sums_counters_gauges_and_histograms(self) -> None:
        """Equal series add up; a series only one process has is kept under its family."""
        summed = sum_expositions([OWNER_TEXT, WORKER_TEXT]).decode()
        self.assertEqual(summed.splitlines(), [
            "# HELP apiserver_request_total Counter of requests.",
            "# TYPE apiserver_request_total counter",
            'apiserver_request_total{code="200",verb="GET"} 7.0',
            'apiserver_request_total{code="404",verb="GET"} 1.0',
            "# HELP apiserver_current_inflight_requests In flight.",
            "# TYPE apiserver_current_inflight_requests gauge",
            'apiserver_current_inflight_requests{request_kind="readOnly"} 3.0',
            "# HELP d Durations.",
            "# TYPE d histogram",
            'd_bucket{le="0.1"} 1.0',
            'd_bucket{le="+Inf"} 3.0',
            "d_count 3.0",
            "d_sum 0.75",
        ])

    def test_resource_adds_the_workers_it_reaches(self) -> None:
        """The resource sums the owner's registry with each worker's text; a worker that fails is left out."""
        metrics = Metrics()
        metrics.requests.labels("GET", "", "", "", "", "", "apiserver", "200").inc(2)

        async def worker() -> bytes:
            return metrics.render()[0]

        async def broken() -> bytes:
            raise ConnectionError("gone")

        client = StubTreq(SummedMetricsResource(metrics, lambda: [worker, broken]))
        response = self.successResultOf(client.get("https://agg.test/metrics"))
        body = self.successResultOf(client.content(response)).decode()
        self.assertIn('apiserver_request_total{code="200",component="apiserver",group="",resource="",scope="",'
                      'subresource="",verb="GET",version=""} 4.0', body)
        self.flushLoggedErrors()

