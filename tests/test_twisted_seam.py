"""The Twisted internals the proxy's hot path relies on: trusted headers, backend requests, socket buffers.

These tests pin what the seam assumes of Twisted, so that an upgrade that changes it fails here first.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import TransportProxyProducer
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from grafana_aggregator.aggregation.twisted_seam import (
    BackendRequests,
    canonical_name,
    host_value,
    raise_buffer,
    sanitize,
    set_trusted,
    socket_transport,
    trusted_headers,
)


class HeaderTests(SynchronousTestCase):
    """Headers filled directly hold exactly what Twisted's own setters would store."""

    def test_trusted_headers_equal_set_raw_headers(self) -> None:
        """Canonical names and sanitised values stored directly make the same Headers as setRawHeaders."""
        expected = Headers()
        expected.setRawHeaders(b"x-remote-user", [b"alice"])
        expected.setRawHeaders("X-Remote-Group", ["dev", "ops"])
        built = trusted_headers([(canonical_name(b"x-remote-user"), [b"alice"]),
                                 (canonical_name("X-Remote-Group"), [b"dev", b"ops"])])
        self.assertEqual(built, expected)
        self.assertEqual(built.getRawHeaders("x-remote-group"), ["dev", "ops"])

    def test_sanitize_matches_twisted(self) -> None:
        """A value with line breaks is folded as setRawHeaders folds it (no header injection)."""
        headers = Headers()
        headers.setRawHeaders(b"X-Test", [b"a\r\nEvil: 1\nb\rc"])
        self.assertEqual([sanitize(b"a\r\nEvil: 1\nb\rc")], headers.getRawHeaders(b"X-Test"))

    def test_canonical_name(self) -> None:
        """Names are keyed as Twisted keys them; a name that is no token is refused."""
        self.assertEqual((canonical_name("x-remote-user"), canonical_name(b"content-md5")),
                         (b"X-Remote-User", b"Content-MD5"))
        self.assertRaises(ValueError, canonical_name, b"bad name")

    def test_set_trusted_replaces(self) -> None:
        """set_trusted replaces a header's values, as setRawHeaders does."""
        headers = Headers({b"Content-Length": [b"1"]})
        set_trusted(headers, b"Content-Length", [b"2"])
        self.assertEqual(headers.getRawHeaders(b"content-length"), [b"2"])


class _Pool:
    """A connection pool whose one connection records the requests it is asked to send."""

    persistent = True

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.sent: list[Any] = []

    def getConnection(self, key: Any, endpoint: Any) -> Deferred[Any]:
        self.keys.append(key)
        pool = self

        class Connection:
            def request(self, request: Any) -> Deferred[Any]:
                pool.sent.append(request)
                return Deferred()

        return succeed(Connection())


class BackendRequestsTests(SynchronousTestCase):
    """Requests to one backend are what Agent.request sends, with the URL worked out once."""

    def setUp(self) -> None:
        self.pool = _Pool()
        self.agent = Agent(MemoryReactorClock(), pool=self.pool)  # type: ignore[arg-type]
        self.endpoints = 0
        original = self.agent._getEndpoint

        def counting(uri: Any) -> Any:
            self.endpoints += 1
            return original(uri)

        self.agent._getEndpoint = counting  # type: ignore[method-assign]

    def test_target_sent_as_given_with_one_endpoint(self) -> None:
        """Plain targets are sent unchanged, keyed by the backend, with one endpoint made for all of them."""
        requests = BackendRequests(self.agent, b"https://backend.test:7443")
        for target in (b"/apis/g/v1/things?watch=1&x=%2F", b"/apis/g/v1"):
            requests.request(b"GET", target, Headers({b"Host": [b"backend.test:7443"]}), None)
        self.assertEqual([r.uri for r in self.pool.sent], [b"/apis/g/v1/things?watch=1&x=%2F", b"/apis/g/v1"])
        self.assertEqual(self.pool.keys, [(b"https", b"backend.test", 7443)] * 2)
        self.assertEqual(self.endpoints, 1)
        self.assertEqual(self.pool.sent[0].headers.getRawHeaders(b"host"), [b"backend.test:7443"])

    def test_unusual_targets_go_through_agent_request(self) -> None:
        """Targets Agent.request would render differently (`;`, `#`, `//`, a bare `?`) take its own path."""
        requests = BackendRequests(self.agent, b"https://backend.test:7443")
        made = self.endpoints
        for target in (b"/a;p=1", b"/a#f", b"//a", b"/a?"):
            requests.request(b"GET", target, Headers(), None)
        self.assertEqual(self.endpoints - made, 4)
        self.assertEqual([r.uri for r in self.pool.sent], [b"/a;p=1", b"/a", b"//a", b"/a"])

    def test_invalid_target_and_method_raise_value_error(self) -> None:
        """A target or method Agent refuses raises ValueError as Agent.request does (the proxy answers 400)."""
        requests = BackendRequests(self.agent, b"https://backend.test:7443")
        self.assertRaises(ValueError, requests.request, b"GET", b"/a b", Headers(), None)
        self.assertRaises(ValueError, requests.request, b"G ET", b"/a", Headers(), None)

    def test_other_agents_get_whole_urls(self) -> None:
        """An agent that is not Twisted's Agent (a test double, a wrapper) is asked with the whole URL."""
        asked: list[tuple[bytes, bytes]] = []

        class Other:
            def request(self, method: bytes, uri: bytes, headers: Any = None, producer: Any = None) -> Any:
                asked.append((method, uri))
                return Deferred()

        BackendRequests(Other(), b"https://b:1").request(b"GET", b"/x", Headers(), None)  # type: ignore[arg-type]
        self.assertEqual(asked, [(b"GET", b"https://b:1/x")])

    def test_host_value(self) -> None:
        """The Host value is Agent's: no default port, brackets for IPv6."""
        self.assertEqual([host_value(b"https://b.test"), host_value(b"https://b.test:8443"),
                          host_value(b"https://[::1]:8443")], [b"b.test", b"b.test:8443", b"[::1]:8443"])


class SocketBufferTests(SynchronousTestCase):
    """The TCP transport under the HTTP, TLS and client wrappers is found, and its buffer only grows."""

    def test_finds_the_socket_transport(self) -> None:
        """Through `.transport` links (channel → TLS → TCP) and a TransportProxyProducer."""
        tcp = FileDescriptor(MemoryReactorClock())
        channel = SimpleNamespace(transport=SimpleNamespace(transport=tcp))
        self.assertIs(socket_transport(channel), tcp)
        self.assertIs(socket_transport(TransportProxyProducer(SimpleNamespace(transport=tcp))), tcp)
        self.assertIsNone(socket_transport(SimpleNamespace(transport=None)))
        self.assertIsNone(socket_transport(None))

    def test_raise_buffer(self) -> None:
        """The buffer is raised to the size asked, never lowered; without a TCP transport nothing happens."""
        tcp = FileDescriptor(MemoryReactorClock())
        self.assertEqual(tcp.bufferSize, 2**16)
        self.assertTrue(raise_buffer(SimpleNamespace(transport=tcp), 2**18))
        self.assertEqual(tcp.bufferSize, 2**18)
        raise_buffer(SimpleNamespace(transport=tcp), 2**10)
        self.assertEqual(tcp.bufferSize, 2**18)
        self.assertFalse(raise_buffer(SimpleNamespace(), 2**18))
