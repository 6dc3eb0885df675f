# -*- test-case-name: tests.test_http_hardening -*-
"""Hostile clients and broken backends, on the wire: the real Site over in-memory transports, the proxy over raw bytes.

The Site's tests speak HTTP/1.1 bytes to a channel from `build_site` on a StringTransport, with a
MemoryReactorClock for every deadline; the proxy's tests serve `/apis` through the Site (StubTreq) and
answer from a backend connection whose bytes the test writes itself.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from attrs import evolve
from OpenSSL import SSL
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IRequest
from twisted.web.resource import Resource
from zope.interface import implementer

from grafana_aggregator.aggregation.proxy import MALFORMED_RESPONSE, forward_headers
from grafana_aggregator.aggregation.routing import ProxyMaker
from grafana_aggregator.config.settings import ConfigError, load_settings
from grafana_aggregator.identity.auth import UserInfo
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import load_runtime, make_service
from grafana_aggregator.web.site import LINGER, Limits, build_site

from .support import serve_apis
from .test_proxy import ALICE, BASE, EXTERNALNAME, CallerRoot, apiservice, behind_site

LIMITS = Limits(header_timeout=10.0, read_timeout=20.0, idle_timeout=100.0, max_body_bytes=1000)


class Hello(Resource):
    """Answers `hello`, and remembers each request it served (method, URI, body)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.served: list[tuple[bytes, bytes, bytes]] = []

    def render(self, request: IRequest) -> bytes:
        assert request.content is not None
        self.served.append((request.method, request.uri, request.content.read()))
        return b"hello"


class Wire:
    """One client connection to the served Site, on an in-memory transport."""

    def __init__(self, site: Any, host: str = "10.0.0.1"):
        address = IPv4Address("TCP", host, 40000)
        self.transport = StringTransport(peerAddress=address)
        self.protocol = site.buildProtocol(address)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def received(self) -> bytes:
        return self.transport.value()  # type: ignore[no-any-return]

    @property
    def aborted(self) -> bool:
        """Whether the server cut the connection off (abortConnection)."""
        return bool(self.transport.disconnected)

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionRefusedError("gone")))


def status_of(received: bytes) -> tuple[int, dict[str, Any]]:
    """The code and JSON body of the one response in `received`."""
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


class SiteTestCase(SynchronousTestCase):
    """A Site with short, round limits over a MemoryReactorClock, serving `/hello`."""

    limits = LIMITS

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.hello = Hello()
        root = Resource()
        root.putChild(b"hello", self.hello)
        self.site = build_site(root, self.limits, self.clock)

    def wire(self, host: str = "10.0.0.1") -> Wire:
        return Wire(self.site, host)


class HeaderDeadlineTests(SiteTestCase):
    """The request line and headers must arrive within header_timeout of the request's first byte."""

    def test_dribbled_request_line_cut_off(self) -> None:
        """A request line sent one byte a second is cut off header_timeout after its first byte."""
        wire = self.wire()
        line = b"GET /hello HTTP/1.1\r\n"
        for byte in line[:9]:
            wire.send(bytes([byte]))
            self.clock.advance(1)
        self.assertFalse(wire.aborted)
        wire.send(line[9:10])
        self.clock.advance(1)
        self.assertTrue(wire.aborted)
        self.assertEqual(wire.received, b"")

    def test_bare_lf_lines_cut_off(self) -> None:
        """Lines ended by a bare LF (which never complete a line for the parser) do not escape the deadline."""
        wire = self.wire()
        wire.send(b"GET /hello HTTP/1.1\nHost: a\n")
        for _ in range(9):
            self.clock.advance(1)
            wire.send(b"X")
        self.assertFalse(wire.aborted)
        self.clock.advance(1)
        self.assertTrue(wire.aborted)

    def test_counted_from_the_first_byte(self) -> None:
        """The deadline starts at the first byte, not at the first complete line."""
        wire = self.wire()
        wire.send(b"GET /hel")
        self.clock.advance(9.5)
        wire.send(b"lo HTTP/1.1\r\nHost: a\r\n")
        self.clock.advance(0.5)
        self.assertTrue(wire.aborted)
        self.assertEqual(self.hello.served, [])

    def test_whole_request_within_read_timeout_of_first_byte(self) -> None:
        """Headers and body together must arrive within read_timeout of the first byte."""
        wire = self.wire()
        wire.send(b"P")
        self.clock.advance(9)
        wire.send(b"OST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        for _ in range(10):
            self.clock.advance(1)
            wire.send(b"x")
        self.clock.advance(0.5)
        self.assertFalse(wire.aborted)
        self.clock.advance(0.5)
        self.assertTrue(wire.aborted)

    def test_next_request_gets_its_own_deadline(self) -> None:
        """A served request leaves no deadline behind; the next request on the connection starts its own."""
        wire = self.wire()
        wire.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(b"hello", wire.received)
        self.clock.advance(50)
        self.assertFalse(wire.aborted)
        wire.send(b"GET /hel")
        self.clock.advance(9.9)
        self.assertFalse(wire.aborted)
        self.clock.advance(0.1)
        self.assertTrue(wire.aborted)


class BodyLimitTests(SiteTestCase):
    """Bodies announcing more than max_body_bytes get kube's 413 before they are read."""

    def assert_413_now(self, wire: Wire) -> None:
        code, body = status_of(wire.received)
        self.assertEqual((code, body["reason"], body["message"]),
                         (413, "RequestEntityTooLarge", "Request entity too large: limit is 1000"))
        self.assertIn(b"\r\nConnection: close\r\n", wire.received)
        self.assertEqual(self.hello.served, [])
        self.assertFalse(wire.closing)
        self.clock.advance(LINGER)
        self.assertTrue(wire.closing)

    def test_content_length_over_limit(self) -> None:
        """A Content-Length over the limit is answered 413 at once, with no body sent, and the connection closed."""
        wire = self.wire()
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n")
        self.assert_413_now(wire)

    def test_no_continue_for_a_body_over_limit(self) -> None:
        """`Expect: 100-continue` with a body over the limit gets the 413, never `100 Continue`."""
        wire = self.wire()
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        self.assertNotIn(b"100 Continue", wire.received)
        self.assert_413_now(wire)

    def test_body_sent_anyway_is_ignored(self) -> None:
        """The body that follows a refused Content-Length is discarded, never parsed as a request."""
        wire = self.wire()
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 1050\r\n\r\n"
                  + b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n" + b"x" * 1000)
        self.assert_413_now(wire)
        self.assertEqual(wire.received.count(b"HTTP/1.1 "), 1)

    def test_chunk_over_limit(self) -> None:
        """A chunk whose size is over the limit is answered 413 as soon as its size line arrives."""
        wire = self.wire()
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n")
        self.assert_413_now(wire)

    def test_chunks_adding_up_over_limit(self) -> None:
        """Chunks whose sizes add up to more than the limit are refused at the size line that crosses it."""
        wire = self.wire()
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n" + b"x" * 600
                  + b"\r\n258\r\n")
        self.assert_413_now(wire)

    def test_body_at_limit_served(self) -> None:
        """A body of exactly the limit, in chunks or with a Content-Length, is served."""
        wire = self.wire()
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1f4\r\n" + b"x" * 500
                  + b"\r\n1f4\r\n" + b"y" * 500 + b"\r\n0\r\n\r\n")
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"z" * 1000)
        self.assertEqual([body for _, _, body in self.hello.served], [b"x" * 500 + b"y" * 500, b"z" * 1000])


def assert_bad_request_status(case: SynchronousTestCase, answer: bytes, context: object = None) -> None:
    """The answer is a whole 400 response carrying kube's BadRequest Status, and the connection is to close."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    case.assertEqual(lines[0], b"HTTP/1.1 400 Bad Request", context)
    case.assertIn(b"Connection: close", lines[1:], context)
    case.assertIn(b"Content-Type: application/json", lines[1:], context)
    case.assertIn(b"Content-Length: %d" % len(body), lines[1:], context)
    status = json.loads(body)
    case.assertEqual((status["kind"], status["code"], status["reason"]), ("Status", 400, "BadRequest"), context)
    case.assertTrue(status["message"].startswith("the request cannot be read: "), status["message"])


class MalformedFramingTests(SiteTestCase):
    """What Go's server refuses before any handler runs is refused here too: a 400 Status, and the connection closed."""

    def assert_go_400(self, request: bytes) -> None:
        wire = self.wire()
        wire.send(request)
        assert_bad_request_status(self, wire.received, request)
        self.assertEqual(self.hello.served, [])
        self.clock.advance(LINGER)
        self.assertTrue(wire.closing)

    def test_absurd_content_length(self) -> None:
        """A Content-Length of 2^63 or more, however many digits, is a 400 at once."""
        for value in (b"9223372036854775808", b"99999999999999999999999", b"1" * 5000):
            self.assert_go_400(b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\n")

    def test_content_lengths_twisted_refuses(self) -> None:
        """Non-numeric, signed, hex, empty, listed, repeated or chunk-combined lengths are the same Go 400."""
        for headers in (b"Content-Length: abc", b"Content-Length: -1", b"Content-Length: +5", b"Content-Length: 0x10",
                        b"Content-Length: ", b"Content-Length: 1, 1", b"Content-Length: 1\r\nContent-Length: 1",
                        b"Content-Length: 3\r\nTransfer-Encoding: chunked"):
            self.assert_go_400(b"POST /hello HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n\r\nabc")

    def test_leading_zeros_accepted(self) -> None:
        """A Content-Length with leading zeros, even thousands of them, is its number (Go's ParseUint)."""
        wire = self.wire()
        wire.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"0" * 5000 + b"3\r\n\r\nabc")
        self.assertEqual(self.hello.served, [(b"POST", b"/hello", b"abc")])

    def test_absurd_chunk_size(self) -> None:
        """A chunk size of 2^63 or more is a 400 at once, whatever the body limit."""
        for size in (b"8000000000000000", b"1" + b"0" * 30):
            self.assert_go_400(b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n")

    def test_malformed_chunk_size(self) -> None:
        """A chunk size that is not hex (Twisted's own refusal) is the same Go 400."""
        self.assert_go_400(b"POST /hello HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")

    def test_relative_targets_refused(self) -> None:
        """A target that is neither a path nor an absolute URI is a 400, never routed minus its first character."""
        for target in (b"xhello", b"hello", b"host:443", b"?hello"):
            self.assert_go_400(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_bare_lf_in_header_value_refused(self) -> None:
        """A bare LF inside a header value (request smuggling, Twisted #12754) is the same Go 400."""
        self.assert_go_400(b"POST /hello HTTP/1.1\r\nHost: v\r\nFoo: x\nContent-Length: 30\r\n\r\n"
                           b"GET /hello HTTP/1.1\r\nHost: b\r\n\r\n")


class TargetTests(SiteTestCase):
    """Absolute-form targets are routed by their path, `*` stays Twisted's, dot segments are refused."""

    def test_absolute_form_routed_by_path(self) -> None:
        """`GET http://host/hello?x=1` is served as `/hello?x=1`."""
        wire = self.wire()
        wire.send(b"GET http://agg.test:6443/hello?x=1 HTTP/1.1\r\nHost: agg.test\r\n\r\n")
        self.assertEqual(self.hello.served, [(b"GET", b"/hello?x=1", b"")])
        self.assertTrue(wire.received.startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_options_asterisk(self) -> None:
        """`OPTIONS *` is still answered 200 with an empty body and no content type (as Go's server does)."""
        wire = self.wire()
        wire.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        head, _, body = wire.received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertIn(b"\r\nContent-Length: 0", head)
        self.assertNotIn(b"content-type", head.lower())
        self.assertEqual(body, b"")

    def test_dot_segments_refused(self) -> None:
        """`.` and `..` segments, also percent-encoded or behind an encoded slash, are a 400 Status before routing."""
        for path in (b"/hello/../x", b"/hello/%2e%2E/x", b"/hello/./x", b"/hello/a%2F..%2Fb", b"/hello/..",
                     b"/hello/%2E", b"/./hello"):
            wire = self.wire()
            wire.send(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            code, body = status_of(wire.received)
            self.assertEqual((code, body["reason"], body["message"]), (400, "BadRequest", 'the request path must not '
                             'contain "." or ".." segments (also percent-encoded)'), path)
            wire.close()
        self.assertEqual(self.hello.served, [])

    def test_dots_inside_names_served(self) -> None:
        """Dots that are part of a segment (`v1.example.com`, `..a`, `.well`) are ordinary characters."""
        wire = self.wire()
        for path in (b"/hello/v1.example.com", b"/hello/..a", b"/hello/.well", b"/hello/a..?x=.."):
            wire.send(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual([uri for _, uri, _ in self.hello.served],
                         [b"/hello/v1.example.com", b"/hello/..a", b"/hello/.well", b"/hello/a..?x=.."])


class ConnectionLimitTests(SiteTestCase):
    """Connections past max_connections_per_client or max_connections are closed as soon as they are made."""

    limits = evolve(LIMITS, max_connections=3, max_connections_per_client=2)

    def test_per_client_limit(self) -> None:
        """A client's third connection is aborted at once; another client is still accepted."""
        first, second, third = self.wire("10.0.0.1"), self.wire("10.0.0.1"), self.wire("10.0.0.1")
        self.assertEqual((first.aborted, second.aborted, third.aborted), (False, False, True))
        other = self.wire("10.0.0.2")
        self.assertFalse(other.aborted)
        other.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(b"hello", other.received)

    def test_total_limit(self) -> None:
        """Past max_connections every new connection is aborted, until one closes."""
        wires = [self.wire("10.0.0.1"), self.wire("10.0.0.2"), self.wire("10.0.0.3")]
        self.assertTrue(self.wire("10.0.0.4").aborted)
        wires[0].close()
        self.assertFalse(self.wire("10.0.0.4").aborted)

    def test_closed_connections_free_their_place(self) -> None:
        """Once a client's connection closes, its next one is accepted."""
        first, _ = self.wire(), self.wire()
        self.assertTrue(self.wire().aborted)
        first.close()
        self.assertFalse(self.wire().aborted)

    def test_logged_once_per_burst(self) -> None:
        """A burst of refused connections is logged once when it starts and once when it ends, with the count."""
        log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        first, _ = self.wire(), self.wire()
        for _ in range(5):
            self.wire()
        first.close()
        self.wire()
        formats = [event["log_format"] for event in log if "connections" in event.get("log_format", "")]
        self.assertEqual(len(formats), 2, formats)
        started = next(event for event in log if event.get("log_format", "").startswith("refusing"))
        ended = next(event for event in log if event.get("log_format", "").startswith("accepting"))
        self.assertEqual((started["client"], started["setting"], started["limit"]),
                         ("10.0.0.1", "max_connections_per_client", 2))
        self.assertEqual(ended["refused"], 5)


@implementer(IStreamClientEndpoint)
class RawBackend:
    """The backend's side of each connection the proxy makes: the test writes its bytes."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)

    def answer(self, data: bytes) -> None:
        """Send bytes from the backend on its latest connection."""
        self.connections[-1][0].dataReceived(data)


@implementer(IAgentEndpointFactory)
class _Endpoints:
    def __init__(self, backend: RawBackend):
        self._backend = backend

    def endpointForURI(self, uri: Any) -> RawBackend:
        return self._backend


class Failing:
    """An agent whose every request fails with the given error."""

    def __init__(self, error: BaseException):
        self.error = error

    def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        failed: Deferred[Any] = Deferred()
        failed.errback(self.error)
        return failed


class ProxyWireTests(SynchronousTestCase):
    """A remote group-version proxied, through the Site, to a backend answering raw bytes."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = RawBackend()
        self.agent = Agent.usingEndpointFactory(self.clock, _Endpoints(self.backend),
                                                pool=HTTPConnectionPool(self.clock, persistent=False))
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def front(self, agent: Any = None) -> StubTreq:
        store = MemoryStore()
        for collection, namespace, obj in ((EXTERNALNAMES, "grafana", EXTERNALNAME), (APISERVICES, "", apiservice())):
            self.successResultOf(Deferred.fromCoroutine(
                store.create(collection, namespace, obj["metadata"]["name"], copy.deepcopy(obj))))
        proxies = ProxyMaker(self.clock, lambda backend: agent or self.agent)
        tree = Resource()
        tree.putChild(b"apis", serve_apis(store, self.clock, proxy_for=proxies).apis)
        root = CallerRoot(tree, ALICE)
        client = StubTreq(root)
        behind_site(client._agent, root, self.clock)
        return client

    def answered(self, raw: bytes) -> tuple[int, Headers, bytes]:
        """What the client gets when the backend answers `raw` to a GET."""
        client = self.front()
        made = len(self.backend.connections)
        pending = client.get(BASE + "/namespaces/n/things")
        client.flush()
        self.assertEqual(len(self.backend.connections), made + 1)
        self.backend.answer(raw)
        client.flush()
        response = self.successResultOf(pending)
        body = self.successResultOf(client.content(response))
        return response.code, response.headers, body

    def assert_malformed(self, raw: bytes) -> None:
        code, headers, body = self.answered(raw)
        status = json.loads(body)
        self.assertEqual((code, status["reason"], status["message"], headers.getRawHeaders("content-type")),
                         (502, "BadGateway", MALFORMED_RESPONSE, ["application/json"]), raw)
        self.assertNotIn(b"secret", body)

    def test_bad_status_line_is_502(self) -> None:
        """A status line that is not HTTP is a 502 with a fixed message, never the bytes the backend sent."""
        self.assert_malformed(b"secret garbage\r\n\r\n")

    def test_bad_status_code_is_502(self) -> None:
        """A status code that is not a number from 100 to 999 is a 502."""
        self.assert_malformed(b"HTTP/1.1 secret OK\r\n\r\n")
        self.assert_malformed(b"HTTP/1.1 42 secret\r\nContent-Length: 0\r\n\r\n")

    def test_bad_protocol_name_is_502(self) -> None:
        """A status line of another protocol than HTTP is a 502."""
        self.assert_malformed(b"SECRET/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    def test_bad_header_is_502(self) -> None:
        """A header line without a colon, or conflicting lengths, is a 502."""
        self.assert_malformed(b"HTTP/1.1 200 OK\r\nsecret header\r\n\r\n")
        self.assert_malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nsecret")

    def test_bad_chunking_is_502(self) -> None:
        """A chunked body whose first size line is not hex is a 502 (nothing of it was relayed yet)."""
        self.assert_malformed(b"HTTP/1.1 200 OK\r\nContent-Type: text/secret\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"zz\r\nsecret\r\n")

    def test_details_of_a_malformed_reply_logged(self) -> None:
        """What was wrong with the backend's reply goes to the log."""
        self.answered(b"secret garbage\r\n\r\n")
        events = [e for e in self.log if "malformed" in e.get("log_format", "")]
        self.assertEqual(len(events), 1)
        self.assertIn("garbage", events[0]["reason"])

    def test_no_content_type_stays_none(self) -> None:
        """A reply without Content-Type reaches the client without one, not labelled text/html."""
        code, headers, body = self.answered(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual((code, headers.getRawHeaders("content-type"), body), (200, None, b"hi"))

    def test_content_type_relayed(self) -> None:
        """A reply's own Content-Type is relayed as it is."""
        code, headers, _ = self.answered(b"HTTP/1.1 200 OK\r\nContent-Type: application/yaml\r\n"
                                         b"Content-Length: 2\r\n\r\nhi")
        self.assertEqual((code, headers.getRawHeaders("content-type")), (200, ["application/yaml"]))

    def unreachable(self, error: BaseException) -> str:
        client = self.front(Failing(error))
        response = self.successResultOf(client.get(BASE + "/namespaces/n/things"))
        body = json.loads(self.successResultOf(client.content(response)))
        self.assertEqual((response.code, body["reason"]), (503, "ServiceUnavailable"))
        message: str = body["message"]
        self.assertNotIn("10.9.8.7", message)
        return message

    def test_unreachable_messages_are_fixed(self) -> None:
        """A backend that cannot be reached gets a fixed phrase in Go's words, never its address or Python's text."""
        tls = SSL.Error([("SSL routines", "", "certificate verify failed: 10.9.8.7")])
        cases = [
            (ConnectionRefusedError("10.9.8.7:7443"), "connect: connection refused"),
            (DNSLookupError("backend.10.9.8.7.test"), "no such host"),
            (ResponseNeverReceived([Failure(tls)]), "tls: failed to verify certificate"),
            (ResponseNeverReceived([Failure(SSL.Error([("SSL routines", "", "wrong version 10.9.8.7")]))]),
             "tls: handshake failure"),
            (RuntimeError("surprise at 10.9.8.7"), "connection failed"),
        ]
        for error, phrase in cases:
            self.assertEqual(self.unreachable(error), f"error trying to reach service: {phrase}")

    def test_unreachable_details_logged(self) -> None:
        """The address and error text of an unreachable backend go to the log."""
        self.unreachable(ConnectionRefusedError("10.9.8.7:7443"))
        events = [e for e in self.log if "unreachable" in e.get("log_format", "")]
        self.assertIn("10.9.8.7:7443", events[0]["reason"])


class HeaderSpellingTests(SynchronousTestCase):
    """Identity headers are dropped however a CGI-style backend would spell them: any case, `_` for `-`."""

    def test_underscore_spellings_dropped(self) -> None:
        """X_Remote_*, Impersonate_*, configured names and prefixes with underscores never reach the backend."""
        incoming = Headers()
        for name in ("X_Remote_User", "x-remote_group", "X_REMOTE_EXTRA_scopes", "x_remote-uid", "Impersonate_User",
                     "IMPERSONATE_GROUP", "impersonate-extra_scopes", "X_Custom_User", "x-custom_user",
                     "X_Grafana_Extra_Team", "X-Grafana-Extra_Org", "X_Forwarded_Host", "X_Forwarded_For",
                     "Proxy_Authorization", "AUTHORIZATION"):
            incoming.addRawHeader(name, "forged")
        incoming.addRawHeader("X-Custom-Kept", "yes")
        outgoing = forward_headers(incoming, UserInfo(name="alice", groups=("dev",)), "10.0.0.1", "backend:443",
                                   "/apis/g/v", frozenset({"x-custom-user", "x-grafana-extra-"}))
        sent = {name.decode().lower(): values for name, values in outgoing.getAllRawHeaders()}
        self.assertEqual(sent, {
            "x-custom-kept": [b"yes"], "x-remote-user": [b"alice"], "x-remote-group": [b"dev"],
            "x-forwarded-for": [b"10.0.0.1"], "x-forwarded-proto": [b"https"], "x-forwarded-host": [b"backend:443"],
            "x-forwarded-uri": [b"/apis/g/v"],
        })

    def test_connection_named_headers_any_spelling(self) -> None:
        """A header the client names in Connection is dropped in either spelling."""
        incoming = Headers({"Connection": ["X_Hop"], "X-Hop": ["1"], "x_hop": ["2"]})
        outgoing = forward_headers(incoming, UserInfo(name="alice"), "10.0.0.1", "b:1", "/")
        self.assertIsNone(outgoing.getRawHeaders("x-hop"))
        self.assertIsNone(outgoing.getRawHeaders("x_hop"))


class SettingsTests(SynchronousTestCase):
    """The connection limits are settings, with defaults, flags, and errors naming the key."""

    def test_defaults(self) -> None:
        """By default 8192 connections in all and 1024 per client address are allowed."""
        settings = load_settings(None)
        self.assertEqual((settings.max_connections, settings.max_connections_per_client), (8192, 1024))

    def test_flags(self) -> None:
        """--max-connections and --max-connections-per-client set them."""
        settings = load_settings(None, {"max-connections": "10", "max-connections-per-client": "3"})
        self.assertEqual((settings.max_connections, settings.max_connections_per_client), (10, 3))

    def test_zero_refused(self) -> None:
        """A limit below 1 is an error naming the flag."""
        with self.assertRaises(ConfigError) as caught:
            load_settings(None, {"max-connections-per-client": "0"})
        self.assertEqual(str(caught.exception), "invalid value for --max-connections-per-client: 0 must be at least 1")

    def test_served_site_has_them(self) -> None:
        """make_service gives the served Site the configured connection limits."""
        folder = os.path.abspath(self.mktemp())
        reactor = MemoryReactorClock()
        settings = load_settings(None, {"data-dir": os.path.join(folder, "data"), "secure-port": "16443",
                                        "bind-address": "127.0.0.1", "max-connections": "7",
                                        "max-connections-per-client": "5"})
        top = make_service(settings, load_runtime(settings), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        site = reactor.tcpServers[0][1].wrappedFactory
        self.assertEqual((site.limits.max_connections, site.limits.max_connections_per_client), (7, 5))
