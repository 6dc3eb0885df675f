"""Watch-stream bodies below `Request.write` (`apimachinery/streams.py`): the direct path over real TLS on
127.0.0.1, the fallback through `Request.write`, the batch, the bounded backlog and disconnects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from grafana_aggregator.apimachinery import streams
from grafana_aggregator.apimachinery.streams import ChunkedStream, StreamBatch, chunk, direct_writer

from .support import CertificateAuthority

EVENT = b'{"type":"MODIFIED","object":{}}\n'


class _Streaming(Resource):
    """Starts a chunked response and hands the request and its stream to the test (`started` fires)."""

    isLeaf = True

    def __init__(self, max_backlog: int = streams.MAX_BACKLOG):
        super().__init__()
        self.started: Deferred[tuple[Request, ChunkedStream]] = Deferred()
        self.overflows: list[int] = []
        self._max_backlog = max_backlog

    def render_GET(self, request: Request) -> object:
        request.setHeader(b"Content-Type", b"application/json")
        request.write(b"")
        request.write(b"first, through twisted.web\n")
        stream = ChunkedStream(request, reactor, self.overflows.append, self._max_backlog)  # type: ignore[arg-type]
        self.started.callback((request, stream))
        return NOT_DONE_YET


class _Reader(Protocol):
    """A raw HTTP/1.1 client: sends one request and keeps every byte of the response; can stop reading."""

    def __init__(self, request: bytes):
        self.request = request
        self.data = b""
        self.lost: Deferred[None] = Deferred()
        self.got: list[tuple[bytes, Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for wanted, deferred in list(self.got):
            if self.data.endswith(wanted):
                self.got.remove((wanted, deferred))
                deferred.callback(None)

    def wait_for(self, tail: bytes) -> Deferred[None]:
        """Fires once the bytes received so far end with tail."""
        deferred: Deferred[None] = Deferred()
        if self.data.endswith(tail):
            deferred.callback(None)
        else:
            self.got.append((tail, deferred))
        return deferred

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)

    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1]


def _request(version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET /stream " + version + b"\r\nHost: 127.0.0.1\r\n\r\n"


class _Served:
    """A twisted.web Site on 127.0.0.1:0, over TLS (as the daemon listens) or plain TCP."""

    def __init__(self, case: TestCase, resource: Resource, tls: bool = True):
        self.tls = tls
        site = Site(resource)
        self.ca = CertificateAuthority("streams-ca")
        if tls:
            issued = self.ca.server()
            options = ssl.PrivateCertificate.loadPEM(issued.cert_pem + issued.key_pem).options()
            factory: Any = TLSMemoryBIOFactory(options, False, site)
        else:
            factory = site
        self.port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        case.addCleanup(self.port.stopListening)

    async def connect(self, case: TestCase, request: bytes) -> _Reader:
        port = self.port.getHost().port  # type: ignore[attr-defined]
        if self.tls:
            creator = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(self.ca.issued.cert_pem))
            endpoint: Any = SSL4ClientEndpoint(reactor, "127.0.0.1", port, creator)
        else:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        reader = _Reader(request)
        await connectProtocol(endpoint, reader)

        def close() -> Deferred[None]:
            if reader.transport is not None and reader.transport.connected:  # type: ignore[attr-defined]
                reader.transport.abortConnection()  # type: ignore[attr-defined]
            return reader.lost

        case.addCleanup(close)
        return reader


def _turns(count: int = 3) -> Deferred[None]:
    """Let the reactor run a few turns (the batch writes two turns after the first write)."""
    deferred: Deferred[None] = Deferred()

    def step(left: int) -> None:
        if left:
            reactor.callLater(0, step, left - 1)  # type: ignore[attr-defined]
        else:
            deferred.callback(None)

    step(count)
    return deferred


class DirectPathTests(TestCase):
    """Over Twisted's TLS transport on a real socket, chunks go below `Request.write`, in order."""

    async def test_exact_bytes_in_order(self) -> None:
        """Chunks written through the stream, flushed at once or by the batch, come out between twisted.web's own
        writes (the headers and a first chunk before, the last chunk after) exactly as framed."""
        resource = _Streaming()
        served = _Served(self, resource)
        reader = await served.connect(self, _request())
        request, stream = await resource.started
        self.assertTrue(stream.direct)
        stream.write(b"two\n")
        # Written now, in the same turn as twisted.web's buffered first chunk: that one must go first.
        stream.flush()
        # Handed to the kernel now, not on the reactor's next poll.
        self.assertNotIn(request.channel.transport.transport, reactor.getWriters())  # type: ignore[attr-defined]
        stream.write(EVENT, chunk(EVENT))
        stream.write(b"four\n")
        await _turns()
        self.assertNotIn(b"0\r\n\r\n", reader.data)
        stream.write(b"five\n")
        stream.finish()
        await reader.wait_for(b"0\r\n\r\n")
        self.assertEqual(reader.body(), chunk(b"first, through twisted.web\n") + chunk(b"two\n") + chunk(EVENT)
                         + chunk(b"four\n") + chunk(b"five\n") + b"0\r\n\r\n")
        self.assertEqual(request.sentLength, len(b"first, through twisted.web\ntwo\n" + EVENT + b"four\nfive\n"))

    async def test_client_that_stops_reading_is_ended(self) -> None:
        """A client that reads nothing while events pile up gets its stream ended past the backlog: once it reads
        again it has every chunk up to the cut, in order, then a clean end of the body."""
        resource = _Streaming(max_backlog=256 * 1024)
        served = _Served(self, resource)
        reader = await served.connect(self, _request())
        request, stream = await resource.started
        reader.transport.pauseProducing()  # type: ignore[union-attr]
        payload = b"x" * 16_000 + b"\n"
        written = 0
        for _ in range(3000):  # 48 MB at most: more than the kernel's buffers on loopback
            if resource.overflows:
                break
            stream.write(payload)
            written += 1
            if written % 16 == 0:
                await _turns(1)
        self.assertEqual(len(resource.overflows), 1, "the stream was never ended")
        self.assertGreater(resource.overflows[0], 256 * 1024)
        stream.finish()
        stream.write(payload)  # ignored: the stream has ended
        reader.transport.resumeProducing()  # type: ignore[union-attr]
        await reader.wait_for(b"0\r\n\r\n")
        body = reader.body()
        head = chunk(b"first, through twisted.web\n")
        self.assertTrue(body.startswith(head))
        rest = body[len(head):-len(b"0\r\n\r\n")]
        self.assertEqual(rest, chunk(payload) * (len(rest) // len(chunk(payload))))
        self.assertLess(len(rest) // len(chunk(payload)), written)

    async def test_disconnect_before_the_batch(self) -> None:
        """A client that goes away while chunks are queued for it costs nothing: the batch skips its stream and
        nothing is logged."""
        resource = _Streaming()
        served = _Served(self, resource)
        reader = await served.connect(self, _request())
        request, stream = await resource.started
        finished = request.notifyFinish()
        stream.write(b"queued\n")
        reader.transport.abortConnection()  # type: ignore[union-attr]
        self.failureResultOf(await _settled(finished))
        stream.write(b"after\n")
        await _turns()
        stream.finish()
        self.assertFalse(request.finished)

    async def test_http10_falls_back(self) -> None:
        """An HTTP/1.0 response is not chunked: the stream writes through `Request.write`, unframed."""
        resource = _Streaming()
        served = _Served(self, resource)
        reader = await served.connect(self, _request(b"HTTP/1.0"))
        request, stream = await resource.started
        self.assertFalse(stream.direct)
        stream.write(b"two\n")
        stream.finish()
        await reader.lost
        self.assertEqual(reader.body(), b"first, through twisted.web\ntwo\n")

    async def test_plain_tcp_falls_back(self) -> None:
        """Without TLS the stream writes through `Request.write`, with the same bytes on the wire."""
        resource = _Streaming()
        served = _Served(self, resource, tls=False)
        reader = await served.connect(self, _request())
        request, stream = await resource.started
        self.assertFalse(stream.direct)
        stream.write(b"two\n", chunk(b"two\n"))
        stream.finish()
        await reader.wait_for(b"0\r\n\r\n")
        self.assertEqual(reader.body(), chunk(b"first, through twisted.web\n") + chunk(b"two\n") + b"0\r\n\r\n")

    async def test_other_twisted_internals_fall_back(self) -> None:
        """When the TLS transport's small-write buffer is not what the seam expects, it declines the direct path."""
        resource = _Streaming()
        served = _Served(self, resource)
        await served.connect(self, _request())
        request, stream = await resource.started
        tls = request.channel.transport
        self.assertIsNotNone(direct_writer(request))
        original = tls._aggregator  # type: ignore[union-attr]
        tls._aggregator = object()  # type: ignore[union-attr]
        try:
            self.assertIsNone(direct_writer(request))
        finally:
            tls._aggregator = original  # type: ignore[union-attr]
        socket = tls.transport  # type: ignore[union-attr]
        tls.transport = StringTransport()  # type: ignore[union-attr]
        try:
            self.assertIsNone(direct_writer(request))
        finally:
            tls.transport = socket  # type: ignore[union-attr]
        stream.finish()


async def _settled(deferred: Deferred[Any]) -> Deferred[Any]:
    """A Deferred already fired with what deferred fires with (so failureResultOf can look at it)."""
    result: list[Any] = []
    deferred.addBoth(result.append)
    while not result:
        await deferLater(reactor, 0.01, lambda: None)  # type: ignore[arg-type]
    done: Deferred[Any] = Deferred()
    if isinstance(result[0], Failure):
        done.errback(result[0])
    else:
        done.callback(result[0])
    return done


def _memory_request() -> tuple[http.Request, StringTransport]:
    """A chunked HTTP/1.1 response in progress over an in-memory transport (as the unit tests' StubTreq has)."""
    transport = StringTransport()
    channel = HTTPChannel()
    channel.makeConnection(transport)
    request = http.Request(channel)
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.write(b"")
    return request, transport


class FallbackTests(SynchronousTestCase):
    """In-memory transports go through `Request.write`; the backlog bound holds on that path too."""

    def test_in_memory_writes_through(self) -> None:
        """Over an in-memory transport the chunks are written at once, through `Request.write`."""
        request, transport = _memory_request()
        stream = ChunkedStream(request, Clock(), self.fail)
        self.assertFalse(stream.direct)
        transport.clear()
        stream.write(EVENT, chunk(EVENT))
        self.assertEqual(transport.value(), chunk(EVENT))

    def test_backlog_past_the_limit_ends(self) -> None:
        """While the connection is paused the stream counts what it is given; past the limit it stops writing and
        tells its owner once, with the backlog."""
        request, transport = _memory_request()
        overflows: list[int] = []
        stream = ChunkedStream(request, Clock(), overflows.append, max_backlog=100)
        stream.pauseProducing()
        transport.clear()
        stream.write(b"a" * 60)
        stream.write(b"b" * 30)
        self.assertEqual(overflows, [])
        stream.write(b"c" * 20)
        stream.write(b"d" * 20)
        self.assertEqual(overflows, [110])
        self.assertEqual(transport.value(), chunk(b"a" * 60) + chunk(b"b" * 30))
        self.assertIsNone(request.producer)

    def test_resume_clears_the_backlog(self) -> None:
        """A connection that drains resets the count: a slow but reading client is never ended."""
        request, _ = _memory_request()
        stream = ChunkedStream(request, Clock(), self.fail, max_backlog=100)
        for _ in range(5):
            stream.pauseProducing()
            stream.write(b"a" * 90)
            stream.resumeProducing()
        self.assertEqual(stream.backlog, 0)

    def test_stop_producing_closes(self) -> None:
        """A connection lost (stopProducing) makes later writes and the end do nothing."""
        request, transport = _memory_request()
        stream = ChunkedStream(request, Clock(), self.fail)
        stream.stopProducing()
        transport.clear()
        stream.write(EVENT)
        self.assertEqual(transport.value(), b"")


class _Recording:
    """Stands in for a stream in the batch: records its flushes, or fails."""

    def __init__(self, log: list[str], name: str, error: Exception | None = None):
        self._log, self._name, self._error = log, name, error
        self.aborted = False

    def flush(self) -> None:
        if self._error is not None:
            raise self._error
        self._log.append(self._name)

    def abort(self) -> None:
        self.aborted = True


class _TurnClock:
    """A clock run a reactor turn at a time: a turn runs only the calls made before it started, as the reactor
    does."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def callLater(self, delay: float, f: Callable[..., object], *args: Any) -> IDelayedCall:
        self.calls.append((f, args))
        return Clock().callLater(delay, lambda: None)

    def seconds(self) -> float:
        return 0.0

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class BatchTests(SynchronousTestCase):
    """One delayed call writes every stream with something queued, after the turn that answered the change."""

    def test_written_after_the_next_turn(self) -> None:
        """Streams queued in one turn are written together two turns later, after the calls that turn scheduled
        (Twisted's TLS layer sends the answer to the change a turn after it is written)."""
        clock = _TurnClock()
        batch = StreamBatch(clock)  # type: ignore[arg-type]
        log: list[str] = []
        batch.add(_Recording(log, "a"))  # type: ignore[arg-type]
        batch.add(_Recording(log, "b"))  # type: ignore[arg-type]
        clock.callLater(0, log.append, "the answer")
        self.assertEqual(len(clock.calls), 2)
        clock.turn()
        self.assertEqual(log, ["the answer"])
        clock.turn()
        self.assertEqual(log, ["the answer", "a", "b"])
        self.assertEqual(clock.calls, [])

    def test_failing_stream_is_aborted(self) -> None:
        """A stream whose write raises is logged and its connection dropped; the others are still written."""
        clock = Clock()
        batch = StreamBatch(clock)
        log: list[str] = []
        broken = _Recording(log, "broken", RuntimeError("boom"))
        batch.add(broken)  # type: ignore[arg-type]
        batch.add(_Recording(log, "ok"))  # type: ignore[arg-type]
        clock.advance(0)
        self.assertEqual(log, ["ok"])
        self.assertTrue(broken.aborted)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_one_batch_per_clock(self) -> None:
        """Every stream timed by one clock shares its batch."""
        clock = Clock()
        self.assertIs(streams.batch_for(clock), streams.batch_for(clock))
        self.assertIsNot(streams.batch_for(clock), streams.batch_for(Clock()))

    def test_chunk(self) -> None:
        """A chunk is the size in hex, CRLF, the data, CRLF."""
        self.assertEqual(chunk(b"x" * 26), b"1a\r\n" + b"x" * 26 + b"\r\n")
