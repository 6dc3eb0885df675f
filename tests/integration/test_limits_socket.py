"""Request limits over a real loopback socket: request timeout, body size, header size and slow clients."""

from __future__ import annotations

import json

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from grafana_aggregator.web.site import Limits, build_site


class Hanging(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> int:
        return NOT_DONE_YET


class Echo(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        assert request.content is not None
        return b"got %d bytes" % len(request.content.read())


class Recorder(Protocol):
    """Collects what the server sends and notices when it closes the connection."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self.closed.callback(None)


LIMITS = Limits(request_timeout=0.3, header_timeout=0.3, read_timeout=0.6, max_header_bytes=2048,
                max_body_bytes=1000, idle_timeout=5)


class LimitsOverSocketTests(TestCase):
    """The Site enforces kube-like limits with the real reactor as its clock."""

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]
        root = Resource()
        root.putChild(b"hang", Hanging())
        root.putChild(b"echo", Echo())
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(build_site(root, LIMITS, reactor))
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.port = port.getHost().port
        self.client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    async def test_hanging_handler_is_504(self) -> None:
        """A handler that never answers is answered 504 Timeout after the request timeout."""
        response = await self.client.get(self.base + "/hang")
        body = json.loads(await treq.content(response))
        self.assertEqual((response.code, body["reason"], body["message"]),
                         (504, "Timeout", "request did not complete within the allotted timeout"))

    async def test_body_too_large_is_413(self) -> None:
        """A body over the limit is refused with 413 without being read; one under it is served."""
        response = await self.client.post(self.base + "/echo", data=b"x" * 1001)
        body = json.loads(await treq.content(response))
        self.assertEqual((response.code, body["reason"]), (413, "RequestEntityTooLarge"))
        response = await self.client.post(self.base + "/echo", data=b"x" * 1000)
        self.assertEqual((response.code, await treq.content(response)), (200, b"got 1000 bytes"))

    async def test_oversized_headers_refused(self) -> None:
        """Headers beyond the size limit are refused with 400 and the connection is closed."""
        recorder = Recorder()
        protocol = await TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(_Factory(recorder))
        protocol.transport.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"y" * 3000 + b"\r\n")
        await recorder.closed
        self.assertTrue(recorder.data.startswith(b"HTTP/1.1 400 Bad Request"), recorder.data)

    async def test_slow_headers_dropped(self) -> None:
        """A client that starts a request and never finishes its headers (slowloris) is disconnected."""
        recorder = Recorder()
        protocol = await TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(_Factory(recorder))
        protocol.transport.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Slow: 1\r\n")
        await recorder.closed
        self.assertEqual(recorder.data, b"")

    async def test_slow_body_dropped(self) -> None:
        """A client that sends its headers but trickles its body past the read timeout is disconnected."""
        recorder = Recorder()
        protocol = await TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(_Factory(recorder))
        protocol.transport.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        await recorder.closed
        self.assertEqual(recorder.data, b"")


class _Factory:
    """A one-protocol client factory."""

    def __init__(self, protocol: Protocol):
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self._protocol

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def startedConnecting(self, connector: object) -> None:
        pass
