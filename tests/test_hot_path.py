"""Per-request work done once: shared deadlines, one finish notification, and results remembered per caller or URI.

Speed itself is measured by `make bench`; these tests pin the behaviour the savings rely on.
"""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, Cooperator
from twisted.internet.testing import MemoryReactorClock
from twisted.web._newclient import LengthEnforcingConsumer, TransportProxyProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from grafana_aggregator.apimachinery.requestinfo import request_info
from grafana_aggregator.aggregation.proxy import (
    RELAY_BUFFER,
    RequestNames,
    _BodyRelay,
    _LargeBodyProducer,
    identity_headers,
    relayed_response_header,
)
from grafana_aggregator.identity.auth import (
    Authenticator,
    Credentials,
    TokenAuthenticator,
    UserInfo,
    rules_for,
)
from grafana_aggregator.identity.impersonation import asks_to_impersonate
from grafana_aggregator.web.metrics import Metrics, RequestAccounting
from grafana_aggregator.web.root import transport_chain
from tests.support import CycleCheck
from grafana_aggregator.web.site import (
    BODY_READ_SIZE,
    SPOOL_BUFFER,
    ApiChannel,
    ApiRequest,
    Deadlines,
    Limits,
    api_call,
    build_site,
    has_dot_segment,
)


class Holding(Resource):
    """Holds every request it is given (NOT_DONE_YET), after registering two `when_over` hooks on it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[IRequest] = []
        self.outcomes: list[tuple[str, object]] = []

    def render(self, request: IRequest) -> int:
        over = getattr(request, "when_over")
        over(lambda result: self.outcomes.append(("first", result)))
        over(lambda result: self.outcomes.append(("second", result)))
        self.held.append(request)
        return NOT_DONE_YET


class SiteTests(SynchronousTestCase):
    """Requests through the daemon's Site on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Holding()
        self.client = StubTreq(self.resource)
        self.agent: RequestTraversalAgent = self.client._agent
        self.agent._serverFactory = build_site(self.resource, Limits(), self.clock)

    def test_deadlines_of_requests_in_flight_share_one_reactor_call(self) -> None:
        """Three requests waiting for their answers hold one reactor call for their deadlines, not three."""
        self.client.get("https://agg.test/one")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.client.get("https://agg.test/two")
        self.client.get("https://agg.test/three")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for request in self.resource.held:
            request.finish()  # type: ignore[attr-defined]
        self.agent.flush()

    def test_finished_request_leaves_no_cycle(self) -> None:
        """A request answered before its deadline is freed by reference counting: its timer lets go of it."""
        with CycleCheck("ApiRequest", "RequestTimer") as check:
            for path in ("one", "two"):
                self.client.get(f"https://agg.test/{path}")
            for request in self.resource.held:
                request.finish()  # type: ignore[attr-defined]
            self.agent.flush()
            self.resource.held.clear()
        self.assertEqual(check.counts, {"ApiRequest": 0, "RequestTimer": 0})

    def test_request_timeout_still_answers_504(self) -> None:
        """The shared deadlines fire at the request timeout, to the second."""
        answer = self.client.get("https://agg.test/slow")
        self.clock.advance(Limits().request_timeout - 1)
        self.assertNoResult(answer)
        self.clock.advance(1)
        self.agent.flush()
        self.assertEqual(self.successResultOf(answer).code, 504)

    def test_hooks_share_one_notify_finish(self) -> None:
        """Every hook of a request hangs off one notifyFinish Deferred and runs in order with its outcome."""
        self.client.get("https://agg.test/x")
        request = self.resource.held[0]
        self.assertEqual(len(request.notifications), 1)  # type: ignore[attr-defined]
        request.finish()  # type: ignore[attr-defined]
        self.agent.flush()
        self.assertEqual(self.resource.outcomes, [("first", None), ("second", None)])

    def test_hooks_see_a_lost_connection(self) -> None:
        """When the client goes away first, each hook gets the Failure notifyFinish would give."""
        self.client.get("https://agg.test/x")
        request = self.resource.held[0]
        request.connectionLost(Failure(ConnectionError("gone")))  # type: ignore[attr-defined]
        self.assertEqual([name for name, _ in self.resource.outcomes], ["first", "second"])
        self.assertTrue(all(isinstance(result, Failure) for _, result in self.resource.outcomes))

    def test_request_info_shared_by_identical_requests(self) -> None:
        """Two requests with the same method and URI share one RequestInfo (it is immutable); each has its ApiCall."""
        self.client.get("https://agg.test/apis/g.example/v1/namespaces/a/things?limit=5")
        self.client.get("https://agg.test/apis/g.example/v1/namespaces/a/things?limit=5")
        first, second = (api_call(request) for request in self.resource.held)
        self.assertIsNot(first, second)
        self.assertIs(first.info, second.info)
        self.assertEqual((first.info.verb, first.info.namespace, first.query), ("list", "a", "limit=5"))
        for request in self.resource.held:
            request.finish()  # type: ignore[attr-defined]
        self.agent.flush()


class DeadlinesTests(SynchronousTestCase):
    """Many deadlines on one reactor call, firing when clock.callLater calls would."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock)
        self.fired: list[str] = []

    def test_fire_in_order_at_their_times(self) -> None:
        """Deadlines fire at their times, soonest first, through one reactor call at a time."""
        self.deadlines.callLater(3, lambda: self.fired.append("c"))
        self.deadlines.callLater(1, lambda: self.fired.append("a"))
        self.deadlines.callLater(2, lambda: self.fired.append("b"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(0.5)
        self.assertEqual(self.fired, ["a"])
        self.clock.pump([0.5, 1])
        self.assertEqual(self.fired, ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled_never_fire_and_leave_no_call(self) -> None:
        """A cancelled deadline never fires; with none left, the reactor holds no call for them."""
        first = self.deadlines.callLater(1, lambda: self.fired.append("first"))
        second = self.deadlines.callLater(2, lambda: self.fired.append("second"))
        first.cancel()
        self.assertEqual((first.active(), second.active()), (False, True))
        self.clock.advance(1.5)
        self.assertEqual(self.fired, [])
        second.cancel()
        second.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(self.fired, [])

    def test_sooner_deadline_moves_the_call(self) -> None:
        """A deadline sooner than all others is armed at once."""
        self.deadlines.callLater(60, lambda: self.fired.append("late"))
        self.deadlines.callLater(5, lambda: self.fired.append("soon"))
        self.clock.advance(5)
        self.assertEqual(self.fired, ["soon"])

    def test_deadline_added_while_firing(self) -> None:
        """A deadline added by a firing one, later than another still pending, does not delay that one."""
        self.deadlines.callLater(1, lambda: self.deadlines.callLater(60, lambda: self.fired.append("added")))
        self.deadlines.callLater(10, lambda: self.fired.append("pending"))
        self.clock.advance(1)
        self.clock.advance(9)
        self.assertEqual(self.fired, ["pending"])
        self.clock.advance(51)
        self.assertEqual(self.fired, ["pending", "added"])

    def test_many_cancelled_are_dropped(self) -> None:
        """Cancelled deadlines do not pile up while one long deadline stays."""
        self.deadlines.callLater(1000, lambda: None)
        for _ in range(1000):
            self.deadlines.callLater(60, lambda: None).cancel()
        self.assertLess(len(self.deadlines._heap), 200)

    def test_failing_function_is_logged_and_others_fire(self) -> None:
        """An exception in one deadline is logged; the deadlines after it still fire."""
        def boom() -> None:
            raise RuntimeError("boom")
        self.deadlines.callLater(1, boom)
        self.deadlines.callLater(1, lambda: self.fired.append("after"))
        self.clock.advance(1)
        self.assertEqual(self.fired, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class DotSegmentTests(SynchronousTestCase):
    """The quick answer for paths without dot segments agrees with the full check."""

    def test_dots_inside_names_are_not_segments(self) -> None:
        self.assertFalse(has_dot_segment(b"/apis/bench.grafana.app/v0alpha1/things/a.b"))
        self.assertFalse(has_dot_segment(b"/apis/x/.hidden"))

    def test_dot_segments(self) -> None:
        for path in (b"/apis/./x", b"/apis/../x", b"..", b".", b"/a/..", b"/a/%2e%2E/b", b"/a%2F..%2Fb"):
            self.assertTrue(has_dot_segment(path), path)


class AuthenticationCacheTests(SynchronousTestCase):
    """A caller's token is checked once; later requests get the same user."""

    def test_same_user_object_for_a_token(self) -> None:
        """The same Authorization value gives the identical completed user (with system:authenticated)."""
        authenticator = Authenticator([TokenAuthenticator({"tok": UserInfo(name="alice", groups=("dev",))})],
                                      anonymous=False)
        credentials = Credentials(headers=Headers({b"Authorization": [b"Bearer tok"]}))
        first = authenticator.authenticate(credentials)
        self.assertIs(authenticator.authenticate(credentials), first)
        assert first is not None
        self.assertEqual(first.groups, ("dev", "system:authenticated"))

    def test_wrong_tokens_still_refused(self) -> None:
        """After a valid token was remembered, other values are still checked and refused."""
        authenticator = Authenticator([TokenAuthenticator({"tok": UserInfo(name="alice")})], anonymous=True)
        good = Credentials(headers=Headers({b"Authorization": [b"Bearer tok"]}))
        self.assertIsNotNone(authenticator.authenticate(good))
        for value in (b"Bearer tok2", b"Bearer to", b"Basic tok"):
            credentials = Credentials(headers=Headers({b"Authorization": [value]}))
            result = authenticator.authenticate(credentials)
            self.assertTrue(result is None or result.is_anonymous, value)
        spelled = Credentials(headers=Headers({b"Authorization": [b"bearer  tok "]}))
        result = authenticator.authenticate(spelled)
        self.assertEqual(result.name if result else None, "alice")

    def test_rules_worked_out_once_per_groups(self) -> None:
        """Users with the same groups share their rules."""
        self.assertIs(rules_for(UserInfo(name="a", groups=("g", "system:authenticated"))),
                      rules_for(UserInfo(name="b", groups=("g", "system:authenticated"))))

    def test_impersonation_headers_spotted(self) -> None:
        """Only a request with an Impersonate-* header is read for impersonation."""
        self.assertFalse(asks_to_impersonate(Headers({b"Authorization": [b"x"], b"X-Remote-User": [b"y"]})))
        for name in (b"Impersonate-User", b"IMPERSONATE-GROUP", b"impersonate-extra-scopes", b"Impersonate-Uid"):
            self.assertTrue(asks_to_impersonate(Headers({name: [b"v"]})), name)


class ProxyCacheTests(SynchronousTestCase):
    """What the proxy works out once per caller and per header name."""

    def test_identity_headers_once_per_user(self) -> None:
        """The X-Remote-* headers of a user are built once, with values folded as Headers folds them."""
        user = UserInfo(name="al\nice", uid="u", groups=("a", "b"), extra={"k/x": ("v",)})
        headers = identity_headers(user)
        self.assertIs(identity_headers(UserInfo(name="al\nice", uid="u", groups=("a", "b"), extra={"k/x": ("v",)})),
                      headers)
        self.assertEqual(headers, [(b"X-Remote-User", [b"al ice"]), (b"X-Remote-Uid", [b"u"]),
                                   (b"X-Remote-Group", [b"a", b"b"]), (b"X-Remote-Extra-K%2fx", [b"v"])])

    def test_request_names(self) -> None:
        """Each name is classified once, by its CGI spelling, with the configured names."""
        names = RequestNames(frozenset({"x-custom-user", "x-team-"}))
        self.assertEqual([names.classify(n)[1] for n in (b"Accept", b"X_Custom_User", b"X-Team-A", b"X-Forwarded-For",
                                                          b"X_Forwarded_For", b"Authorization", b"Impersonate_User")],
                         [0, 1, 1, 2, 1, 1, 1])

    def test_relayed_response_headers(self) -> None:
        self.assertEqual([relayed_response_header(n) for n in (b"Content-Type", b"Connection",
                                                               b"Access-Control-Allow-Origin", b"Transfer-Encoding")],
                         [True, False, False, False])


class AccountingTests(SynchronousTestCase):
    """Metric children are resolved once per kind of request."""

    def test_kind_shared_and_counted(self) -> None:
        """Requests of one kind share their labels; each is still counted under its own code."""
        metrics = Metrics()
        accounting = RequestAccounting(metrics, Clock(), Logger("test.access"))
        info = request_info("GET", "/apis/g/v1/things", "")
        first = accounting.begin("GET", "/apis/g/v1/things", "", False, info)
        second = accounting.begin("GET", "/apis/g/v1/things", "", False, info)
        self.assertIs(first.kind, second.kind)
        accounting.end(first, 200, 1, "alice", None)
        accounting.end(second, 404, 1, "alice", None)
        text = metrics.render()[0].decode()
        for code in ("200", "404"):
            self.assertIn(f'apiserver_request_total{{code="{code}",component="apiserver",group="g",resource="things",'
                          f'scope="cluster",subresource="",verb="LIST",version="v1"}} 1.0', text)



class LargeBodyBufferTests(SynchronousTestCase):
    """Large bodies move through larger socket reads and queues on both connections."""

    def sockets(self) -> tuple[FileDescriptor, FileDescriptor]:
        reactor = MemoryReactorClock()
        return FileDescriptor(reactor), FileDescriptor(reactor)

    def request_over(self, client: FileDescriptor) -> ApiRequest:
        """A request whose channel's TCP transport is `client`."""
        channel = SimpleNamespace(transport=SimpleNamespace(transport=client),
                                  site=SimpleNamespace(_parsePOSTFormSubmission=False), getPeer=lambda: None,
                                  getHost=lambda: None)
        return ApiRequest(channel)

    def relay(self, large: bool) -> tuple[FileDescriptor, FileDescriptor]:
        client, backend = self.sockets()
        request = SimpleNamespace(channel=SimpleNamespace(transport=SimpleNamespace(transport=client)),
                                  registerProducer=lambda producer, streaming: None)
        exchange = SimpleNamespace(request=request)
        relay = _BodyRelay(exchange, large)  # type: ignore[arg-type]
        relay.makeConnection(TransportProxyProducer(SimpleNamespace(transport=backend)))
        return client, backend

    def test_large_response_raises_both_buffers(self) -> None:
        """Relaying a large (or unsized) response body, the backend's reads and the client's queue grow."""
        client, backend = self.relay(large=True)
        self.assertEqual((client.bufferSize, backend.bufferSize), (RELAY_BUFFER, RELAY_BUFFER))

    def test_small_response_keeps_buffers(self) -> None:
        client, backend = self.relay(large=False)
        self.assertEqual((client.bufferSize, backend.bufferSize), (2**16, 2**16))

    def test_large_upload_raises_backend_buffer(self) -> None:
        """A large request body is written to a backend connection that queues more before pausing it."""
        _, backend = self.sockets()
        producer = _LargeBodyProducer(io.BytesIO(b"x" * 10), cooperator=Cooperator(scheduler=lambda work: None))
        consumer = LengthEnforcingConsumer(producer, SimpleNamespace(transport=backend), Deferred())
        producer.startProducing(consumer)
        producer.stopProducing()
        self.assertEqual(backend.bufferSize, RELAY_BUFFER)

    def test_large_request_body_read_in_larger_steps(self) -> None:
        """A request announcing a large body has its client's socket read in larger steps; a small one not."""
        for length, expected in ((2 * 1024 * 1024, BODY_READ_SIZE), (1000, 2**16)):
            client, _ = self.sockets()
            request = self.request_over(client)
            request.gotLength(length)
            assert request.content is not None
            request.content.close()
            self.assertEqual(client.bufferSize, expected)

    def test_large_request_body_spooled_in_large_writes(self) -> None:
        """A large body arrives one TLS record at a time; the spool file writes it in SPOOL_BUFFER steps, not one
        write(2) per record, and the bytes read back are the bytes received."""
        client, _ = self.sockets()
        request = self.request_over(client)
        request.gotLength(2 * 1024 * 1024)
        content = request.content
        assert content is not None
        self.addCleanup(content.close)
        record = 16 * 1024
        chunks = [bytes([n]) * record for n in range(SPOOL_BUFFER // record - 1)]
        for chunk in chunks:
            request.handleContentChunk(chunk)
        self.assertEqual(os.fstat(content.fileno()).st_size, 0, "records were written one by one")
        more = [b"z" * record] * 2
        for chunk in more:
            request.handleContentChunk(chunk)
        self.assertGreater(os.fstat(content.fileno()).st_size, 0)
        content.seek(0)
        self.assertEqual(content.read(), b"".join(chunks + more))
        self.assertFalse(request.body_refused)

    def test_small_request_body_kept_in_memory(self) -> None:
        """A body announced under Twisted's 100,000-byte threshold stays in memory, as Twisted keeps it."""
        client, _ = self.sockets()
        request = self.request_over(client)
        request.gotLength(99_999)
        self.assertIsInstance(request.content, io.BytesIO)


class PeerChainTests(SynchronousTestCase):
    """A connection's client certificate chain is read once, not per request."""

    def test_read_once_per_connection(self) -> None:
        handles: list[int] = []
        channel = ApiChannel()
        channel.transport = SimpleNamespace(getHandle=lambda: handles.append(1))  # type: ignore[assignment]
        for _ in range(3):
            self.assertEqual(list(transport_chain(SimpleNamespace(channel=channel))), [])  # type: ignore[arg-type]
        self.assertEqual(len(handles), 1)
        other = ApiChannel()
        other.transport = SimpleNamespace(getHandle=lambda: handles.append(2))  # type: ignore[assignment]
        transport_chain(SimpleNamespace(channel=other))  # type: ignore[arg-type]
        self.assertEqual(handles, [1, 2])
