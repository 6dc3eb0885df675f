"""The aggregation proxy with StubTreq on both sides: identity headers, stripping, errors, redirects, timeouts, cancellation."""

from __future__ import annotations

import gzip
import json
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from grafana_aggregator.identity.auth import UserInfo
from grafana_aggregator.aggregation.proxy import ProxyResource, escape_extra_key, forward_headers, is_discovery_path
from grafana_aggregator.aggregation.upstream import Backend

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


class ProxyTests(SynchronousTestCase):
    """ProxyResource in front of a fake backend."""

    def setUp(self) -> None:
        self.backend = Backend_()
        self.upstream = RequestTraversalAgent(self.backend)
        self.clock = Clock()
        self.backends: list[Backend] = []
        self.unreachable: list[str] = []

    def front(self, api: dict[str, Any] | None = None, externalname: dict[str, Any] | None = EXTERNALNAME,
              user: UserInfo | None = ALICE, client_for: Any = None, metrics: Any = None,
              limiter: Any = None) -> StubTreq:
        def client(backend: Backend) -> RequestTraversalAgent:
            self.backends.append(backend)
            return self.upstream

        proxy = ProxyResource(api or apiservice(), externalname, client_for or client, self.clock,
                              lambda request: user, on_unreachable=self.unreachable.append,
                              extra_stripped=frozenset({"x-custom-user"}), metrics=metrics, limiter=limiter)
        apis = Resource()
        group = Resource()
        apis.putChild(b"example.grafana.app", group)
        group.putChild(b"v0alpha1", proxy)
        root = Resource()
        root.putChild(b"apis", apis)
        self.root = root
        return StubTreq(root)

    def call(self, client: StubTreq, method: str, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        response = self.successResultOf(client.request(method, "https://agg.test" + path, **kwargs))
        body = self.successResultOf(client.content(response))
        return response.code, response.headers, body

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

    def test_backend_cookies_never_reach_another_caller(self) -> None:
        """A Set-Cookie from the backend is relayed to its caller, never remembered and sent on a later request."""
        self.backend.headers["Set-Cookie"] = "session=alice-secret; Path=/"
        code, headers, _ = self.call(self.front(), "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual((code, headers.getRawHeaders("set-cookie")), (200, ["session=alice-secret; Path=/"]))
        bob = UserInfo(name="bob", uid="u-2", groups=("system:authenticated",), extra={})
        self.call(self.front(user=bob), "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual(len(self.backend.requests), 2)
        self.assertIsNone(self.backend.requests[1][2].getRawHeaders("cookie"))

    def test_content_length_relayed(self) -> None:
        """A body of known length keeps its Content-Length instead of being re-sent chunked."""
        client = self.front()
        response = self.successResultOf(client.get("https://agg.test/apis/example.grafana.app/v0alpha1/dummy"))
        body = self.successResultOf(client.content(response))
        # The client's parser keeps Content-Length as the response length; a chunked answer has none.
        self.assertEqual((response.code, response.length), (200, len(body)))

    def test_encoded_body_passes_through(self) -> None:
        """A gzip response is relayed as the backend sent it; no Accept-Encoding is added for the caller."""
        self.backend.headers["Content-Encoding"] = "gzip"
        self.backend.body = gzip.compress(b'{"kind":"APIResourceList"}')
        self.front()
        front = RequestTraversalAgent(self.root)  # a bare agent: treq's own client would decode the answer
        response = self.successResultOf(front.request(b"GET", b"https://agg.test/apis/example.grafana.app/v0alpha1/dummy"))
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

    def test_missing_externalname_is_503(self) -> None:
        """Without the ExternalName there is no backend: 503."""
        code, _, _ = self.call(self.front(externalname=None), "GET", "/apis/example.grafana.app/v0alpha1")
        self.assertEqual(code, 503)

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
        class Refusing:
            def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
                from twisted.internet.error import ConnectionRefusedError

                failed: Deferred[Any] = Deferred()
                failed.errback(ConnectionRefusedError("Connection refused"))
                return failed

        code, _, body = self.call(self.front(client_for=lambda backend: Refusing()), "GET",
                                  "/apis/example.grafana.app/v0alpha1/dummy")
        self.assertEqual(code, 503)
        self.assertTrue(json.loads(body)["message"].startswith("error trying to reach service: "))
        self.assertEqual(self.unreachable, ["v0alpha1.example.grafana.app"])

    def test_discovery_timeout(self) -> None:
        """A backend that hangs on /apis/<g>/<v> is cut off after 5 s with a 503."""
        self.backend.hang = True
        client = self.front()
        pending = client.get("https://agg.test/apis/example.grafana.app/v0alpha1")
        self.assertNoResult(pending)
        self.clock.advance(5)
        self.upstream.flush()
        client.flush()
        response = self.successResultOf(pending)
        body = json.loads(self.successResultOf(client.content(response)))
        self.assertEqual((response.code, body["message"]), (503, "error trying to reach service: context deadline exceeded"))

    def test_hanging_backend_times_out(self) -> None:
        """A request to a backend that never answers is a 504 Timeout Status after 60 s, or after ?timeout=."""
        self.backend.hang = True
        client = self.front()
        pending = client.get("https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy")
        self.clock.advance(59)
        self.assertNoResult(pending)
        self.clock.advance(1)
        self.upstream.flush()
        client.flush()
        response = self.successResultOf(pending)
        body = json.loads(self.successResultOf(client.content(response)))
        self.assertEqual((response.code, body["reason"], body["message"]),
                         (504, "Timeout", "request did not complete within the allotted timeout"))
        pending = client.get("https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy?timeout=10s")
        self.clock.advance(10)
        self.upstream.flush()
        client.flush()
        self.assertEqual(self.successResultOf(pending).code, 504)

    def test_watch_has_no_timeout(self) -> None:
        """A watch through the proxy is long-running: no request timeout applies."""
        self.backend.hang = True
        client = self.front()
        pending = client.get("https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy?watch=true")
        for _ in range(10):
            self.clock.advance(60)
        self.upstream.flush()
        client.flush()
        self.assertNoResult(pending)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_streams_before_the_backend_finishes(self) -> None:
        """Watch events reach the client as the backend writes them, before its response ends."""
        class Streaming(Resource):
            isLeaf = True

            def __init__(self) -> None:
                super().__init__()
                self.held: list[IRequest] = []

            def render(self, request: IRequest) -> int:
                request.setHeader(b"Content-Type", b"application/json")
                request.write(b'{"type":"ADDED","object":{}}\n')
                self.held.append(request)
                return NOT_DONE_YET

        streaming = Streaming()
        self.upstream = RequestTraversalAgent(streaming)
        client = self.front()
        response = self.successResultOf(client.get(
            "https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy?watch=true", unbuffered=True))
        chunks: list[bytes] = []
        import treq

        finished = treq.collect(response, chunks.append)
        self.upstream.flush()
        client.flush()
        self.assertEqual(b"".join(chunks), b'{"type":"ADDED","object":{}}\n')
        self.assertNoResult(finished)
        streaming.held[0].write(b'{"type":"MODIFIED","object":{}}\n')
        self.upstream.flush()
        client.flush()
        self.assertEqual(b"".join(chunks), b'{"type":"ADDED","object":{}}\n{"type":"MODIFIED","object":{}}\n')
        streaming.held[0].finish()
        self.upstream.flush()
        client.flush()
        self.successResultOf(finished)

    def test_concurrency_cap_per_backend(self) -> None:
        """Beyond the cap, requests wait for a free slot instead of opening more connections; watches are not capped."""
        from twisted.internet.defer import DeferredSemaphore

        self.backend.hang = True
        client = self.front(limiter=DeferredSemaphore(1))
        first = client.get("https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy/a")
        second = client.get("https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy/b")
        self.assertEqual(len(self.backend.hold), 1)
        client.get("https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy?watch=true")
        self.assertEqual(len(self.backend.hold), 2)
        held = self.backend.hold[0]
        held.write(b"{}")
        held.finish()
        self.upstream.flush()
        client.flush()
        self.successResultOf(first)
        self.assertEqual(len(self.backend.hold), 3)
        self.assertNoResult(second)

    def test_client_disconnect_cancels_upstream(self) -> None:
        """When the client goes away, the upstream request is cancelled."""
        self.backend.hang = True
        client = self.front()
        pending = client.get("https://agg.test/apis/example.grafana.app/v0alpha1/namespaces/x/dummy?watch=true")
        self.assertEqual(len(self.backend.hold), 1)
        upstream_request = self.backend.hold[0]
        finished: list[object] = []
        upstream_request.notifyFinish().addBoth(finished.append)  # type: ignore[attr-defined]
        pending.cancel()
        client.flush()
        self.upstream.flush()
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


class ProxyMetricsTests(SynchronousTestCase):
    """Upstream latency and errors are counted per APIService."""

    setUp = ProxyTests.setUp
    front = ProxyTests.front
    call = ProxyTests.call

    def test_latency_and_errors(self) -> None:
        """A proxied answer adds one latency observation; a redirect counts as an upstream error."""
        from prometheus_client.parser import text_string_to_metric_families

        from grafana_aggregator.web.metrics import Metrics

        metrics = Metrics()
        self.call(self.front(metrics=metrics), "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        self.backend.code = 302
        self.backend.headers = {"Location": "https://evil.test/"}
        self.call(self.front(metrics=metrics), "GET", "/apis/example.grafana.app/v0alpha1/dummy")
        text = metrics.render()[0].decode()
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}
        name = ("apiservice", "v0alpha1.example.grafana.app")
        self.assertEqual(values[("grafana_aggregator_proxy_upstream_duration_seconds_count", (name,))], 2.0)
        self.assertEqual(values[("grafana_aggregator_proxy_upstream_errors_total", (name, ("reason", "redirect")))],
                         1.0)


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
