# -*- test-case-name: tests.integration.test_hostile_clients -*-
"""Hostile clients against the real TLS listener on 127.0.0.1: dribblers, liars about sizes, connection hogs.

The Site from `build_site` is served through the daemon's TLS endpoint (`TLSServerEndpoint`,
`ServingTLS`) with short limits; each client is a raw TLS connection writing bytes by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from twisted.internet import reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from grafana_aggregator.tls.certificates import ServingTLS, TLSServerEndpoint, load_key_pair
from grafana_aggregator.web.site import Limits, build_site

from ..test_http_hardening import assert_bad_request_status

from ..support import CertificateAuthority

LIMITS = Limits(header_timeout=0.5, read_timeout=1.0, idle_timeout=30.0, max_body_bytes=1000,
                max_connections=50, max_connections_per_client=2)


class Hello(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return b"hello"


class Client(Protocol):
    """A raw client: collects what the server sends and notices when the connection ends."""

    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.lost = True

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether the condition becomes true within the given seconds (checked every 20 ms)."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await deferLater(reactor, 0.02, lambda: None)
    return condition()


class HostileClientTests(TestCase):
    """The listener bounds what a client can hold: time, body size, request shape and connections."""

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]
        folder = os.path.abspath(self.mktemp())
        self.ca = CertificateAuthority("server-ca")
        cert, key = self.ca.server().write(folder, "server")
        root = Resource()
        root.putChild(b"hello", Hello())
        site = build_site(root, LIMITS, reactor)
        endpoint = TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                     ServingTLS(load_key_pair(cert, key)))
        port = await endpoint.listen(site)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.clients: list[Client] = []
        self.addCleanup(self.disconnect_all)

    async def disconnect_all(self) -> None:
        for client in self.clients:
            if not client.lost and client.transport is not None:
                client.transport.abortConnection()
        await wait_until(lambda: all(c.lost for c in self.clients), 5)

    async def connect(self) -> Client:
        options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(self.ca.issued.cert_pem))
        client = Client()
        self.clients.append(client)
        await connectProtocol(wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)), client)
        return client

    async def served(self, client: Client) -> bool:
        """Whether a GET on this connection is answered (the TLS handshake went through)."""
        client.send(b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n")
        return await wait_until(lambda: client.data.endswith(b"hello") or client.lost, 5) and not client.lost

    async def test_dribbler_dropped(self) -> None:
        """A client sending an endless request line a byte every 50 ms is cut off after the header timeout."""
        client = await self.connect()
        client.send(b"GET /")
        for _ in range(80):
            if client.lost:
                break
            client.send(b"a")
            await deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(client.lost, "the dribbling client is still connected after 4 s")
        self.assertEqual(client.data, b"")

    async def test_bare_lf_dribbler_dropped(self) -> None:
        """A client whose lines end in a bare LF, trickled out, is cut off after the header timeout too."""
        client = await self.connect()
        client.send(b"GET /hello HTTP/1.1\nHost: a\n")
        for _ in range(60):
            if client.lost:
                break
            client.send(b"X-A: b\n")
            await deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(client.lost, "the client is still connected after 3 s")

    async def test_announced_body_over_limit(self) -> None:
        """A Content-Length over the limit gets kube's 413 before any body is sent, then the connection closes."""
        client = await self.connect()
        client.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n")
        self.assertTrue(await wait_until(lambda: client.lost, 5))
        head, _, body = client.data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), head)
        self.assertEqual(json.loads(body)["message"], "Request entity too large: limit is 1000")

    async def test_body_streamed_anyway_still_gets_413(self) -> None:
        """A client that streams a body it announced as too large reads the 413 rather than a reset."""
        client = await self.connect()
        client.send(b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1_000_000)
        self.assertTrue(await wait_until(lambda: client.lost, 5))
        self.assertTrue(client.data.startswith(b"HTTP/1.1 413 "), client.data[:100])

    async def test_relative_target_refused(self) -> None:
        """A request target without its leading slash gets a 400 Status and the connection closes."""
        client = await self.connect()
        client.send(b"GET xhello HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(await wait_until(lambda: client.lost, 5))
        assert_bad_request_status(self, client.data)

    async def test_connections_past_the_per_client_limit_closed(self) -> None:
        """A client's third connection is closed before its TLS handshake; once one closes, a new one is served."""
        first, second = await self.connect(), await self.connect()
        self.assertTrue(await self.served(first))
        self.assertTrue(await self.served(second))
        third = await self.connect()
        self.assertFalse(await self.served(third))
        self.assertEqual(third.data, b"")
        assert first.transport is not None
        first.transport.loseConnection()
        self.assertTrue(await wait_until(lambda: first.lost, 5))
        await deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(await self.served(await self.connect()))
