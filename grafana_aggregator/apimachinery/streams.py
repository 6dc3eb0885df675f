"""Long chunked response bodies (watch streams) written to many connections at once, below `Request.write`.

One change reaches every open watch in the same reactor turn: a thousand watches mean a thousand
writes of the same event.  Through twisted.web each costs `Request.write` (chunk framing), a
`callLater(0)` in Twisted's TLS layer (`BufferingTLSTransport` aggregates small writes), the
encryption a turn later, and the send a turn after that, once the reactor's poll reports the socket
writable.  Here:

- **Framed once.**  The caller passes the event already framed as an HTTP/1.1 chunk (`chunk()`),
  the same bytes for every stream.
- **Batched, after the writer's answer.**  A stream queues what it is given; one `StreamBatch` per
  clock writes every stream with something queued, two reactor turns later (one timer, not one per
  connection): the request that made the change gets its answer out first, and a burst of changes
  made in one turn costs one encryption and one `send` per connection.
- **Written through.**  Each stream's share is encrypted and handed to its socket at once
  (`DirectWriter`), after what twisted.web buffered in the TLS layer, so the bytes keep their order;
  the client starts reading the first connection while the daemon writes the next.

The direct path is a seam over Twisted internals (`direct_writer`): it applies only to a chunked
HTTP/1.1 response over Twisted's `BufferingTLSTransport` whose small-write buffer and socket look as
expected.  Anything else (plain HTTP, HTTP/1.0, in-memory transports, another Twisted) goes through
`Request.write` at once, as before.

**A client that does not read.**  The stream is the request's push producer: the connection pauses
it when its send buffer is full (64 KiB in userspace, after the kernel's).  What is written while
paused counts as the stream's backlog; past `max_backlog` bytes the stream stops writing and tells
its owner (`on_overflow`), which ends the response, as kube-apiserver closes a watcher whose buffer
is full.  The client then reads what was sent, the end of the stream, and watches again from the last
resourceVersion it saw.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol
from twisted.web.iweb import IRequest
from zope.interface import implementer

_log = Logger()

#: Bytes a stream may be given while its connection can take no more before it is ended (its owner is told).
MAX_BACKLOG = 1024 * 1024


def chunk(data: bytes) -> bytes:
    """The data framed as one HTTP/1.1 chunk (`<size in hex>CRLF<data>CRLF`)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class DirectWriter:
    """Writes framed bytes of a chunked body straight to a TLS connection: encrypted now, and handed to the socket
    now rather than on the reactor's next poll."""

    def __init__(self, tls: BufferingTLSTransport, flush_buffered: Callable[[], None], socket: FileDescriptor):
        self._tls = tls
        self._flush_buffered = flush_buffered
        self._socket = socket

    def write(self, data: bytes) -> None:
        """Encrypt the data after what twisted.web left in the TLS layer's small-write buffer (so the bytes keep
        their order), then send what the socket takes; the rest goes when it is writable, as usual."""
        self._flush_buffered()
        TLSMemoryBIOProtocol.write(self._tls, data)
        socket = self._socket
        if socket.connected and not socket.disconnecting and not getattr(socket, "_writeDisconnecting", True):
            # Not while closing: then doWrite's result is for the reactor.  A send that fails leaves the data and
            # the registration for writing in place: the reactor sees the error itself on its next poll.
            socket.doWrite()


def direct_writer(request: IRequest) -> DirectWriter | None:
    """A writer of the request's chunked body straight to its TLS connection, or None when the response is not a
    chunked body over Twisted's buffering TLS transport as this module knows it (the body then goes through
    `Request.write`).  Ask for it once the response headers are written."""
    req: Any = request
    if not getattr(req, "chunked", False) or getattr(req, "method", b"HEAD") == b"HEAD" or getattr(req, "finished", 1):
        return None
    tls = getattr(getattr(req, "channel", None), "transport", None)
    if not isinstance(tls, BufferingTLSTransport) or tls.disconnecting:
        return None
    flush_buffered = getattr(getattr(tls, "_aggregator", None), "flush", None)
    socket = getattr(tls, "transport", None)
    if not callable(flush_buffered) or not isinstance(socket, FileDescriptor):
        return None
    if not all(hasattr(socket, name) for name in ("connected", "disconnecting", "_writeDisconnecting", "doWrite")):
        return None
    return DirectWriter(tls, flush_buffered, socket)


class StreamBatch:
    """The streams with something queued, written together by one delayed call two reactor turns later."""

    def __init__(self, clock: IReactorTime):
        self._clock = clock
        self._streams: list[ChunkedStream] = []
        self._call: IDelayedCall | None = None

    def add(self, stream: ChunkedStream) -> None:
        """Write this stream with the others once the writes of this turn (the answer to the change) are out."""
        self._streams.append(stream)
        if self._call is None:
            self._call = self._clock.callLater(0, self._after_turn)

    def _after_turn(self) -> None:
        # Twisted's TLS layer sends what twisted.web wrote in the turn of the change one turn later: go after it.
        self._call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write what every stream queued; a stream whose write fails is logged and its connection closed."""
        self._call = None
        streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.flush()
            except Exception:
                _log.failure("writing a stream's queued chunks failed; closing its connection")
                stream.abort()


_batches: weakref.WeakKeyDictionary[IReactorTime, StreamBatch] = weakref.WeakKeyDictionary()


def batch_for(clock: IReactorTime) -> StreamBatch:
    """The one batch of the streams timed by this clock."""
    batch = _batches.get(clock)
    if batch is None:
        batch = _batches[clock] = StreamBatch(clock)
    return batch


@implementer(IPushProducer)
class ChunkedStream:
    """The chunked body of one long response, once its headers are written: chunks go out through the clock's
    batch (or through `Request.write` where the direct path does not apply), with a bounded backlog."""

    def __init__(self, request: IRequest, clock: IReactorTime, on_overflow: Callable[[int], None],
                 max_backlog: int = MAX_BACKLOG):
        self._request: Any = request
        self._on_overflow = on_overflow
        self._max_backlog = max_backlog
        self._direct = direct_writer(request)
        self._batch = batch_for(clock)
        self._queued: list[bytes] = []
        self._paused = False
        #: Bytes given while paused since the connection last drained.
        self.backlog = 0
        self._closed = False
        request.registerProducer(self, True)  # type: ignore[attr-defined]

    @property
    def direct(self) -> bool:
        """Whether chunks bypass `Request.write` (batched, written to the TLS connection)."""
        return self._direct is not None

    def write(self, data: bytes, framed: bytes | None = None) -> None:
        """Send data as one chunk; `framed` is the same data already framed by `chunk()` (shared between streams)."""
        if self._closed:
            return
        if self._paused:
            self.backlog += len(data)
            if self.backlog > self._max_backlog:
                # The client has not taken what it was sent: stop here; the owner ends the response and the client
                # resumes from the last event it read.
                self.close()
                self._on_overflow(self.backlog)
                return
        if self._direct is None:
            self._request.write(data)
            return
        self._request.sentLength += len(data)
        if not self._queued:
            self._batch.add(self)
        self._queued.append(framed if framed is not None else chunk(data))

    def flush(self) -> None:
        """Write what is queued now (the batch does it two turns after the first write)."""
        queued = self._queued
        if not queued or self._closed or self._direct is None:
            return
        data = queued[0] if len(queued) == 1 else b"".join(queued)
        queued.clear()
        self._direct.write(data)

    def finish(self) -> None:
        """Write what is queued, stop producing and end the response (the last chunk)."""
        if not self._closed:
            self.flush()
        self.close()
        request = self._request
        if not request.finished and request.channel is not None:
            request.finish()

    def close(self) -> None:
        """Write nothing more (the connection is gone or the stream is over); queued chunks are dropped."""
        if self._closed:
            return
        self._closed = True
        self._queued.clear()
        request = self._request
        if request.producer is self and request.channel is not None:
            request.unregisterProducer()

    def abort(self) -> None:
        """Close the stream and drop its connection (a write failed: what the client has is not a clean stream)."""
        self.close()
        channel = self._request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    # IPushProducer: the connection tells the stream when its send buffer is full and when it has drained.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self.backlog = 0

    def stopProducing(self) -> None:
        self._closed = True
        self._queued.clear()
