"""The aggregation proxy as served: `/apis` routed by the RoutingTable to a Proxy, behind the Site's one request timer.

Requests go through the served Site (ApiRequest, with its RequestTimer on a Clock) and a root that
records the caller as AuthenticatingRoot does; the backend is a fake resource behind StubTreq's
in-memory agent.
"""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import treq
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from grafana_aggregator.aggregation.proxy import escape_extra_key, forward_headers, is_discovery_path
from grafana_aggregator.aggregation.routing import ProxyMaker
from grafana_aggregator.aggregation.upstream import (
    DISCOVERY_TIMEOUT,
    MAX_CONNECTIONS_PER_BACKEND,
    Backend,
    BackendUnresolvable,
)
from grafana_aggregator.config.settings import REQUEST_TIMEOUT
from grafana_aggregator.identity.auth import UserInfo
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.web.metrics import Metrics
from grafana_aggregator.web.site import Limits, api_call, build_site

from .support import CycleCheck, ServedApis, serve_apis

AVAILABLE = {"type": "Available", "status": "True", "reason": "Passed", "message": "all checks passed"}


def apiservice(available: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v0alpha1.example.grafana.app"},
        "spec": {"group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 1000,
                 "versionPriority": 15, "service": {"name": "example-apiserver", "namespace": "grafana", "port": 7443}},
        "status": {"conditions": [AVAILABLE if available else {**AVAILABLE, "status": "False",
                                                                "reason": "FailedDiscoveryCheck"}]},
    }


EXTERNALNAME = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                "metadata": {"name": "example-apiserver", "namespace": "grafana"}, "spec": {"host": "backend.test"}}
ALICE = UserInfo(name="alice", uid="u-1", groups=("dev", "system:authenticated"),
                 extra={"scopes": ("a", "b"), "authentication.kubernetes.io/credential-id": ("X509SHA256=ab",)})
BOB = UserInfo(name="bob", uid="u-2", groups=("system:authenticated",), extra={})
NAME = "v0alpha1.example.grafana.app"
BASE = "https://agg.test/apis/example.grafana.app/v0alpha1"


class Backend_(Resource):
    """A fake backend that records requests and answers as told."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, bytes, Headers, bytes]] = []
        self.code = 200
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.body = b'{"kind":"APIResourceList"}'
        self.hold: list[IRequest] = []
        self.hang = False

    def render(self, request: IRequest) -> bytes | int:
        assert request.content is not None
        self.requests.append((request.method, request.uri, request.requestHeaders, request.content.read()))
        if self.hang:
            self.hold.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body



@implementer(IResource)
class CallerRoot:
    """Records the caller on each request's ApiCall and hands the request to the tree, as AuthenticatingRoot does."""

    isLeaf = False

    def __init__(self, tree: Resource, user: UserInfo):
        self.tree = tree
        self.user = user

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        api_call(request).user = self.user
        return self.tree.getChildWithDefault(name, request)  # type: ignore[no-any-return]

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError

    def render(self, request: IRequest) -> bytes | int:
        api_call(request).user = self.user
        return self.tree.render(request)  # type: ignore[no-any-return]


def behind_site(agent: RequestTraversalAgent, root: IResource, clock: Clock) -> None:
    """Serve the agent's requests through the daemon's Site (ApiRequest, one RequestTimer on `clock`).

    StubTreq builds a plain twisted.web Site, whose requests have no timer; the served one replaces it.
    """
    agent._serverFactory = build_site(root, Limits(), clock)


class Refusing:
    """An agent whose every request fails to connect."""

    def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        failed: Deferred[Any] = Deferred()
        failed.errback(ConnectionRefusedError("Connection refused"))
        return failed


class ProxyTests(SynchronousTestCase):
    """Requests to a remote group-version, routed to its Proxy in front of a fake backend."""

    def setUp(self) -> None:
        self.backend = Backend_()
        self.upstream = RequestTraversalAgent(self.backend)
        self.clock = Clock()
        self.store = MemoryStore()
        #: The backends the proxies were made for, in order.
        self.backends: list[Backend] = []
        self.unreachable: list[str] = []
        self.metrics = Metrics()
        self.clients: list[StubTreq] = []
        self.addCleanup(self.drain)

    def drain(self) -> None:
        """End every request still in flight, so that no proxy coroutine is left suspended (waiting for a slot,
        say) for the garbage collector to close in an order no running server would see."""
        for _ in range(len(self.backend.hold) + 1):
            self.clock.advance(REQUEST_TIMEOUT)
            for request in self.backend.hold:
                if not request.finished and not getattr(request, "_disconnected", False):  # type: ignore[attr-defined]
                    request.finish()
            for client in self.clients:
                self.flush(client)

    def agent_for(self, backend: Backend) -> IAgent:
        self.backends.append(backend)
        return self.upstream  # type: ignore[return-value]

    def create(self, collection: Any, namespace: str, obj: dict[str, Any]) -> None:
        self.successResultOf(Deferred.fromCoroutine(
            self.store.create(collection, namespace, obj["metadata"]["name"], copy.deepcopy(obj))))

    def front(self, api: dict[str, Any] | None = None, externalname: dict[str, Any] | None = EXTERNALNAME,
              agent_for: Any = None, max_in_flight: int = MAX_CONNECTIONS_PER_BACKEND,
              proxying: bool = True) -> StubTreq:
        """The served `/apis` over the store holding the APIService (and its ExternalName), through the Site."""
        if externalname is not None:
            self.create(EXTERNALNAMES, "grafana", externalname)
        self.create(APISERVICES, "", api or apiservice())
        proxy_for = ProxyMaker(self.clock, agent_for or self.agent_for, meter_for=self.metrics.upstream_meter,
                               on_unreachable=self.unreachable.append,
                               extra_stripped=frozenset({"x-custom-user"}), max_in_flight=max_in_flight)
        self.served: ServedApis = serve_apis(self.store, self.clock, proxy_for=proxy_for if proxying else None)
        tree = Resource()
        tree.putChild(b"apis", self.served.apis)
        self.root = CallerRoot(tree, ALICE)
        client = StubTreq(self.root)
        behind_site(client._agent, self.root, self.clock)
        self.clients.append(client)
        return client

    def call(self, client: StubTreq, method: str, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        response = self.successResultOf(client.request(method, "https://agg.test" + path, **kwargs))
        body = self.successResultOf(client.content(response))
        return response.code, response.headers, body

    def flush(self, client: StubTreq) -> None:
        """Move what is pending between client, aggregator and backend, both ways."""
        client.flush()
        self.upstream.flush()
        client.flush()

    def test_finished_exchange_leaves_no_cycle(self) -> None:
        """A proxied request, once answered, is freed by reference counting: nothing of it is left in a reference
        cycle for the garbage collector."""
        client = self.front()
        with CycleCheck("ApiRequest", "_Exchange", "_BodyRelay", "RequestTimer") as check:
            for _ in range(3):
                code, _, _ = self.call(client, "GET", "/apis/example.grafana.app/v0alpha1/dummy")
                self.assertEqual(code, 200)
        self.assertEqual(check.counts, {"ApiRequest": 0, "_Exchange": 0, "_BodyRelay": 0, "RequestTimer": 0})

    def test_forwards_path_query_and_body(self) -> None:
        """Method, path, query and body reach https://<ExternalName host>:<port> unchanged."""
        client = self.front()
        code, headers, body = self.call(client, "POST", "/apis/example.grafana.app/v0alpha1/namespaces/x/dummy?a=1&b=2",
                                        data=b'{"x":1}', headers={"Content-Type": "application/json"})
        self.assertEqual((code, body), (200, b'{"kind":"APIResourceList"}'))
        method, uri, _, sent = self.backend.requests[0]
        self.assertEqual((method, uri, sent), (b"POST", b"/apis/example.grafana.app/v0alpha1/namespaces/x/dummy?a=1&b=2",
                                               b'{"x":1}'))
        self.assertEqual(self.backends[0].url, "https://backend.test:7443")
        self.assertEqual(self.backends[0].names, ("backend.test", "example-apiserver.grafana.svc"))

    def test_identity_headers(self) -> None:
        """The caller's identity travels as X-Remote-User, -Uid, one -Group per group and escaped -Extra- keys."""
        self.call(self.front(), "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        headers = self.backend.requests[0][2]
        self.assertEqual(headers.getRawHeaders("x-remote-user"), ["alice"])
        self.assertEqual(headers.getRawHeaders("x-remote-uid"), ["u-1"])
        self.assertEqual(headers.getRawHeaders("x-remote-group"), ["dev", "system:authenticated"])
        self.assertEqual(headers.getRawHeaders("x-remote-extra-scopes"), ["a", "b"])
        self.assertEqual(headers.getRawHeaders("x-remote-extra-authentication.kubernetes.io%2Fcredential-id"),
                         ["X509SHA256=ab"])
        self.assertEqual(headers.getRawHeaders("x-forwarded-proto"), ["https"])
        self.assertEqual(headers.getRawHeaders("x-forwarded-host"), ["backend.test:7443"])
        self.assertEqual(headers.getRawHeaders("x-forwarded-uri"), ["/apis/example.grafana.app/v0alpha1/dummy"])

    def test_each_request_carries_its_own_caller(self) -> None:
        """The identity sent is the caller of each request, not of the request that made the proxy."""
        client = self.front()
        self.call(client, "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.root.user = BOB
        self.call(client, "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual([r[2].getRawHeaders("x-remote-user") for r in self.backend.requests], [["alice"], ["bob"]])
        self.assertEqual(self.backend.requests[1][2].getRawHeaders("x-remote-uid"), ["u-2"])
        self.assertIsNone(self.backend.requests[1][2].getRawHeaders("x-remote-extra-scopes"))

    def test_backend_cookies_never_reach_another_caller(self) -> None:
        """A Set-Cookie from the backend is relayed to its caller, never remembered and sent on a later request."""
        self.backend.headers["Set-Cookie"] = "session=alice-secret; Path=/"
        client = self.front()
        code, headers, _ = self.call(client, "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual((code, headers.getRawHeaders("set-cookie")), (200, ["session=alice-secret; Path=/"]))
        self.root.user = BOB
        # A fresh client: the caller's own client would send the cookie back, which is its business.
        fresh = StubTreq(self.root)
        behind_site(fresh._agent, self.root, self.clock)
        self.call(fresh, "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual(len(self.backend.requests), 2)
        self.assertEqual(self.backend.requests[1][2].getRawHeaders("x-remote-user"), ["bob"])
        self.assertIsNone(self.backend.requests[1][2].getRawHeaders("cookie"))

    def test_content_length_relayed(self) -> None:
        """A body of known length keeps its Content-Length instead of being re-sent chunked."""
        client = self.front()
        response = self.successResultOf(client.get(BASE + "/dummy"))
        body = self.successResultOf(client.content(response))
        # The client's parser keeps Content-Length as the response length; a chunked answer has none.
        self.assertEqual((response.code, response.length, body), (200, len(self.backend.body), self.backend.body))

    def test_encoded_body_passes_through(self) -> None:
        """A gzip response is relayed as the backend sent it; no Accept-Encoding is added for the caller."""
        self.backend.headers["Content-Encoding"] = "gzip"
        self.backend.body = gzip.compress(b'{"kind":"APIResourceList"}')
        self.front()
        front = RequestTraversalAgent(self.root)  # a bare agent: treq's own client would decode the answer
        behind_site(front, self.root, self.clock)
        response = self.successResultOf(front.request(b"GET", (BASE + "/dummy").encode()))
        body = self.successResultOf(readBody(response))
        self.assertEqual((response.code, body, response.headers.getRawHeaders("content-encoding")),
                         (200, self.backend.body, ["gzip"]))
        self.assertIsNone(self.backend.requests[0][2].getRawHeaders("accept-encoding"))

    def test_forged_identity_and_credentials_stripped(self) -> None:
        """Client-sent X-Remote-*, Impersonate-*, Authorization, custom identity and hop-by-hop headers never reach the backend."""
        self.call(self.front(), "GET", "/apis/example.grafana.app/v0alpha1/dummy", headers={
            "X-Remote-User": "admin", "x-remote-group": "system:masters", "X-Remote-Extra-Scopes": "all",
            "Impersonate-User": "admin", "Impersonate-Group": "system:masters", "Authorization": "Bearer secret",
            "X-Custom-User": "admin", "Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "300",
            "Proxy-Authorization": "Basic x", "TE": "trailers", "Accept": "application/json",
        })
        headers = self.backend.requests[0][2]
        self.assertEqual(headers.getRawHeaders("x-remote-user"), ["alice"])
        self.assertEqual(headers.getRawHeaders("x-remote-group"), ["dev", "system:authenticated"])
        self.assertEqual(headers.getRawHeaders("x-remote-extra-scopes"), ["a", "b"])
        for name in ("impersonate-user", "impersonate-group", "authorization", "x-custom-user", "x-secret",
                     "keep-alive", "proxy-authorization", "te"):
            self.assertIsNone(headers.getRawHeaders(name), name)
        self.assertEqual(headers.getRawHeaders("accept"), ["application/json"])

    def test_unavailable_is_503_without_contacting_backend(self) -> None:
        """An APIService that is not Available gets 503 `service unavailable` and the backend sees nothing."""
        code, _, body = self.call(self.front(apiservice(available=False)), "GET", "/apis/example.grafana.app/v0alpha1")
        self.assertEqual((code, json.loads(body)["message"], json.loads(body)["reason"]),
                         (503, "service unavailable", "ServiceUnavailable"))
        self.assertEqual(self.backend.requests, [])

    def assert_unavailable_with_cause(self, client: StubTreq) -> None:
        code, headers, body = self.call(client, "GET", "/apis/example.grafana.app/v0alpha1/namespaces/x/dummy")
        status = json.loads(body)
        self.assertEqual((code, status["reason"], status["message"], status["details"]["causes"],
                          headers.getRawHeaders("retry-after")),
                         (503, "ServiceUnavailable", "the server is currently unable to handle the request",
                          [{"reason": "UnexpectedServerResponse", "message": "service unavailable"}], ["1"]))
        self.assertEqual(self.backend.requests, [])

    def test_missing_externalname_is_503(self) -> None:
        """Without the ExternalName there is no backend: 503 with a cause, and no proxy is made."""
        self.assert_unavailable_with_cause(self.front(externalname=None))
        self.assertEqual(self.backends, [])

    def test_externalname_without_host_is_503(self) -> None:
        """An ExternalName without a host names no backend: 503 with a cause."""
        self.assert_unavailable_with_cause(self.front(externalname={**EXTERNALNAME, "spec": {}}))
        self.assertEqual(self.backends, [])

    def test_bad_ca_bundle_is_503(self) -> None:
        """A backend whose agent cannot be made (a caBundle without a certificate) is a 503 with a cause."""
        def refusing(backend: Backend) -> IAgent:
            raise BackendUnresolvable("the APIService's caBundle holds no PEM certificate")

        self.assert_unavailable_with_cause(self.front(agent_for=refusing))

    def test_proxying_disabled_is_503(self) -> None:
        """With remote groups not proxied, a remote group-version is a 503 with a cause."""
        self.assert_unavailable_with_cause(self.front(proxying=False))

    def test_redirect_refused(self) -> None:
        """A 3xx with Location from the backend becomes 502 and the Location is not followed or passed on."""
        self.backend.code = 302
        self.backend.headers = {"Location": "https://evil.test/steal"}
        code, headers, body = self.call(self.front(), "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual((code, json.loads(body)["message"]),
                         (502, "the backend attempted to redirect this request, which is not permitted"))
        self.assertIsNone(headers.getRawHeaders("location"))
        self.assertEqual(len(self.backend.requests), 1)

    def test_upgrade_refused(self) -> None:
        """Connection upgrades are refused with a Status before reaching the backend."""
        code, _, body = self.call(self.front(), "GET", "/apis/example.grafana.app/v0alpha1/x",
                                  headers={"Connection": "Upgrade", "Upgrade": "websocket"})
        self.assertEqual((code, json.loads(body)["reason"]), (400, "BadRequest"))
        self.assertEqual(self.backend.requests, [])

    def test_unreachable_is_503_and_triggers_recheck(self) -> None:
        """A connection failure answers 503 `error trying to reach service: …` and asks for a re-probe."""
        code, _, body = self.call(self.front(agent_for=lambda backend: Refusing()), "GET",
                                  "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual((code, json.loads(body)["message"]),
                         (503, "error trying to reach service: connect: connection refused"))
        self.assertEqual(self.unreachable, [NAME])

    def test_discovery_timeout(self) -> None:
        """A backend that hangs on /apis/<g>/<v> is cut off after 5 s with a 503, and its recheck asked for."""
        self.backend.hang = True
        client = self.front()
        pending = client.get(BASE)
        self.clock.advance(DISCOVERY_TIMEOUT - 0.1)
        self.flush(client)
        self.assertNoResult(pending)
        self.clock.advance(0.1)
        self.flush(client)
        response = self.successResultOf(pending)
        body = json.loads(self.successResultOf(client.content(response)))
        self.assertEqual((response.code, body["message"]),
                         (503, "error trying to reach service: context deadline exceeded"))
        self.assertEqual(self.unreachable, [NAME])

    def test_hanging_backend_times_out(self) -> None:
        """A request to a backend that never answers is a 504 Timeout Status after 60 s, or after ?timeout=."""
        self.backend.hang = True
        client = self.front()
        pending = client.get(BASE + "/namespaces/x/dummy")
        self.clock.advance(REQUEST_TIMEOUT - 1)
        self.flush(client)
        self.assertNoResult(pending)
        self.clock.advance(1)
        self.flush(client)
        response = self.successResultOf(pending)
        body = json.loads(self.successResultOf(client.content(response)))
        self.assertEqual((response.code, body["reason"], body["message"]),
                         (504, "Timeout", "request did not complete within the allotted timeout"))
        pending = client.get(BASE + "/namespaces/x/dummy?timeout=10s")
        self.clock.advance(9)
        self.flush(client)
        self.assertNoResult(pending)
        self.clock.advance(1)
        self.flush(client)
        self.assertEqual(self.successResultOf(pending).code, 504)
        self.assertEqual(self.unreachable, [])

    def test_timed_out_request_cancels_upstream(self) -> None:
        """When time is up the upstream request is cancelled, not left running."""
        self.backend.hang = True
        client = self.front()
        pending = client.get(BASE + "/namespaces/x/dummy")
        finished: list[object] = []
        self.backend.hold[0].notifyFinish().addBoth(finished.append)  # type: ignore[attr-defined]
        self.clock.advance(REQUEST_TIMEOUT)
        self.flush(client)
        self.assertEqual(self.successResultOf(pending).code, 504)
        self.assertEqual(len(finished), 1)

    def test_one_timer_per_proxied_request(self) -> None:
        """A proxied request runs exactly one timer (the Site's), shortened to 5 s for discovery, never a second."""
        self.backend.hang = True
        client = self.front()
        client.get(BASE + "/namespaces/x/dummy")
        self.assertEqual(len(self.backend.hold), 1)
        calls = self.clock.getDelayedCalls()
        self.assertEqual([call.getTime() for call in calls], [REQUEST_TIMEOUT])
        self.clock.advance(REQUEST_TIMEOUT)
        self.flush(client)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client.get(BASE)
        self.assertEqual(len(self.backend.hold), 2)
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls()],
                         [REQUEST_TIMEOUT + DISCOVERY_TIMEOUT])

    def test_watch_has_no_timeout(self) -> None:
        """A watch through the proxy is long-running: no timer runs and no request timeout applies."""
        self.backend.hang = True
        client = self.front()
        pending = client.get(BASE + "/namespaces/x/dummy?watch=true")
        self.assertEqual(len(self.backend.hold), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for _ in range(10):
            self.clock.advance(60)
        self.flush(client)
        self.assertNoResult(pending)

    def test_waiting_for_a_slot_counts_towards_the_timeout(self) -> None:
        """A request that waited for a free slot still ends 60 s after it arrived, not 60 s after it was sent."""
        self.backend.hang = True
        client = self.front(max_in_flight=1)
        first = client.get(BASE + "/namespaces/x/dummy/a")
        self.clock.advance(10)
        second = client.get(BASE + "/namespaces/x/dummy/b")
        self.clock.advance(40)
        held = self.backend.hold[0]
        held.write(b"{}")
        held.finish()
        self.flush(client)
        self.successResultOf(first)
        self.assertEqual(len(self.backend.hold), 2)
        self.clock.advance(REQUEST_TIMEOUT - 40 - 0.1)
        self.flush(client)
        self.assertNoResult(second)
        self.clock.advance(0.1)
        self.flush(client)
        self.assertEqual(self.successResultOf(second).code, 504)

    def test_streams_before_the_backend_finishes(self) -> None:
        """Watch events reach the client as the backend writes them, before its response ends."""
        class Streaming(Resource):
            isLeaf = True

            def __init__(self) -> None:
                super().__init__()
                self.held: list[IRequest] = []

            def render(self, request: IRequest) -> int:
                request.setHeader(b"Content-Type", b"application/json")
                request.write(b'{"type":"ADDED","object":{}}\\n')
                self.held.append(request)
                return NOT_DONE_YET

        streaming = Streaming()
        self.upstream = RequestTraversalAgent(streaming)
        client = self.front()
        response = self.successResultOf(client.get(BASE + "/namespaces/x/dummy?watch=true", unbuffered=True))
        chunks: list[bytes] = []
        finished = treq.collect(response, chunks.append)
        self.flush(client)
        self.assertEqual(b"".join(chunks), b'{"type":"ADDED","object":{}}\\n')
        self.assertNoResult(finished)
        streaming.held[0].write(b'{"type":"MODIFIED","object":{}}\\n')
        self.flush(client)
        self.assertEqual(b"".join(chunks), b'{"type":"ADDED","object":{}}\\n{"type":"MODIFIED","object":{}}\\n')
        streaming.held[0].finish()
        self.flush(client)
        self.successResultOf(finished)

    def test_concurrency_cap_per_backend(self) -> None:
        """Beyond the cap, requests wait for a free slot instead of opening more connections; watches are not capped."""
        self.backend.hang = True
        client = self.front(max_in_flight=1)
        first = client.get(BASE + "/namespaces/x/dummy/a")
        second = client.get(BASE + "/namespaces/x/dummy/b")
        self.assertEqual(len(self.backend.hold), 1)
        client.get(BASE + "/namespaces/x/dummy?watch=true")
        self.assertEqual(len(self.backend.hold), 2)
        held = self.backend.hold[0]
        held.write(b"{}")
        held.finish()
        self.flush(client)
        self.successResultOf(first)
        self.assertEqual(len(self.backend.hold), 3)
        self.assertEqual(self.backend.hold[2].uri, b"/apis/example.grafana.app/v0alpha1/namespaces/x/dummy/b")
        self.assertNoResult(second)

    def test_cap_shared_when_the_proxy_is_rebuilt(self) -> None:
        """The slots of an APIService are shared by the proxies made for it as its route is rebuilt."""
        self.backend.hang = True
        client = self.front(max_in_flight=1)
        client.get(BASE + "/namespaces/x/dummy/a")
        moved = {**EXTERNALNAME, "spec": {"host": "moved.test"}}
        self.successResultOf(Deferred.fromCoroutine(self.store.update(EXTERNALNAMES, "grafana", "example-apiserver",
                                                                      copy.deepcopy(moved))))
        self.assertEqual([b.host for b in self.backends], ["backend.test", "moved.test"])
        client.get(BASE + "/namespaces/x/dummy/b")
        self.assertEqual(len(self.backend.hold), 1)

    def test_client_disconnect_cancels_upstream(self) -> None:
        """When the client goes away, the upstream request is cancelled."""
        self.backend.hang = True
        client = self.front()
        pending = client.get(BASE + "/namespaces/x/dummy?watch=true")
        self.assertEqual(len(self.backend.hold), 1)
        finished: list[object] = []
        self.backend.hold[0].notifyFinish().addBoth(finished.append)  # type: ignore[attr-defined]
        pending.cancel()
        self.flush(client)
        self.failureResultOf(pending)
        self.assertEqual(len(finished), 1)

    def test_response_headers_copied_without_hop_by_hop(self) -> None:
        """Backend status and headers are passed on, minus hop-by-hop and CORS headers."""
        self.backend.code = 404
        self.backend.headers = {"Content-Type": "application/json", "X-Backend": "yes", "Keep-Alive": "timeout=5",
                                "Access-Control-Allow-Origin": "*"}
        code, headers, _ = self.call(self.front(), "GET", "/apis/example.grafana.app/v0alpha1/missing")
        self.assertEqual(code, 404)
        self.assertEqual(headers.getRawHeaders("x-backend"), ["yes"])
        self.assertIsNone(headers.getRawHeaders("keep-alive"))
        self.assertIsNone(headers.getRawHeaders("access-control-allow-origin"))

    def test_forwarded_for_is_the_client_address(self) -> None:
        """The backend sees the client's address in X-Forwarded-For, after any it was sent."""
        self.call(self.front(), "GET", "/apis/example.grafana.app/v0alpha1/dummy",
                  headers={"X-Forwarded-For": "10.0.0.1"})
        self.assertEqual(self.backend.requests[0][2].getRawHeaders("x-forwarded-for"), ["10.0.0.1, 127.0.0.1"])


class ProxyMetricsTests(SynchronousTestCase):
    """Upstream latency and errors are counted per APIService."""

    setUp = ProxyTests.setUp
    drain = ProxyTests.drain
    agent_for = ProxyTests.agent_for
    create = ProxyTests.create
    front = ProxyTests.front
    call = ProxyTests.call
    flush = ProxyTests.flush

    def values(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = self.metrics.render()[0].decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def test_latency_and_errors(self) -> None:
        """Each answer adds one latency observation; a redirect and a timeout count as upstream errors."""
        client = self.front()
        self.call(client, "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.backend.code = 302
        self.backend.headers = {"Location": "https://evil.test/"}
        self.call(client, "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.backend.hang = True
        pending = client.get(BASE + "/dummy")
        self.clock.advance(REQUEST_TIMEOUT)
        self.flush(client)
        self.assertEqual(self.successResultOf(pending).code, 504)
        values = self.values()
        name = ("apiservice", NAME)
        self.assertEqual(values[("grafana_aggregator_proxy_upstream_duration_seconds_count", (name,))], 2.0)
        self.assertEqual(values[("grafana_aggregator_proxy_upstream_errors_total", (name, ("reason", "redirect")))],
                         1.0)
        self.assertEqual(values[("grafana_aggregator_proxy_upstream_errors_total", (name, ("reason", "timeout")))],
                         1.0)

    def test_unreachable_counted(self) -> None:
        """A backend that cannot be reached counts an `unreachable` error and no latency."""
        self.call(self.front(agent_for=lambda backend: Refusing()), "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        values = self.values()
        name = ("apiservice", NAME)
        self.assertEqual(values[("grafana_aggregator_proxy_upstream_errors_total", (name, ("reason", "unreachable")))],
                         1.0)
        self.assertEqual(values.get(("grafana_aggregator_proxy_upstream_duration_seconds_count", (name,))), 0.0)


class HelperTests(SynchronousTestCase):
    """Pure helpers of the proxy."""

    def test_escape_extra_key(self) -> None:
        """Extra keys are percent-encoded except RFC 7230 token characters; '%' itself is encoded."""
        self.assertEqual(escape_extra_key("authentication.kubernetes.io/credential-id"),
                         "authentication.kubernetes.io%2Fcredential-id")
        self.assertEqual(escape_extra_key("a b%c"), "a%20b%25c")

    def test_is_discovery_path(self) -> None:
        """Only /apis/<g>/<v> (with or without a trailing slash) is a discovery path."""
        self.assertTrue(is_discovery_path("/apis/g/v"))
        self.assertTrue(is_discovery_path("/apis/g/v/?timeout=32s"))
        self.assertFalse(is_discovery_path("/apis/g/v/dummy"))
        self.assertFalse(is_discovery_path("/api/v1"))

    def test_forwarded_for_appended(self) -> None:
        """An incoming X-Forwarded-For is kept and the client address appended."""
        headers = forward_headers(Headers({"X-Forwarded-For": ["10.0.0.1"]}), ALICE, "127.0.0.1", "b:1", "/p")
        self.assertEqual(headers.getRawHeaders("x-forwarded-for"), ["10.0.0.1, 127.0.0.1"])
