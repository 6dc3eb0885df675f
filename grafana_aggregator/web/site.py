"""The Site: connections with deadlines and kube's header limits, and requests with one timer and one Status path.

Every request carries one `ApiCall` component: what it asks for (its RequestInfo, worked out once),
who asks (set by the root), the accounting ticket, and the APIService whose backend serves it.  The
parts of the HTTP surface share per-request state through it, never through ad-hoc attributes.

Hostile clients are bounded here, before any resource sees a request:

- **Deadlines count from the first byte.**  The request line and headers must arrive within
  `header_timeout` of the request's first byte (Go's ReadHeaderTimeout), the whole request within
  `read_timeout`; bytes dribbled one at a time, or lines ended by a bare LF, do not extend them.
- **Connections are counted** per client address and in total; past a limit a new connection is
  closed at once (before the TLS handshake), and the refusals are logged once per burst.
- **Framing errors are 400s.**  What Go's HTTP server refuses before a handler runs (a malformed
  request line or target, a bad `Content-Length`, a chunk size of 2^63 or more, and Twisted's own
  400s) is refused here too, with a 400 `Status` naming what is wrong (Go writes a bare
  `400 Bad Request`) and `Connection: close`; the reason is also logged.  A request target must be origin-form (`/...`), absolute-form (`https://host/...`, routed
  by its path) or `*` (which Twisted answers itself: 200 to OPTIONS, else 405).
- **Bodies that announce too much** (a `Content-Length`, or chunk sizes adding up to more than
  `max_body_bytes`) get kube's 413 Status at once, before the body is read, and the connection is
  closed; `100 Continue` is not sent for them.
- **Dot segments** (`.`, `..`, also percent-encoded or hidden behind `%2F`) in a path are refused
  with a 400 Status before routing and authorisation.  kube-apiserver routes such a path as it came
  and its proxy forwards it unchanged; this server never lets a path mean something else to a backend.

After such an early answer the connection lingers for half a second (Go's rstAvoidanceDelay),
discarding input, so a client still sending its body reads the answer rather than a reset.
"""

from __future__ import annotations

import heapq
import io
import itertools
import math
import re
import tempfile
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

from attrs import define, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel, _ChunkedTransferDecoder, _MalformedChunkedDataError
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import Attribute, Interface, implementer

from ..aggregation.twisted_seam import raise_buffer
from ..apimachinery.requestinfo import RequestInfo, request_info
from ..config.settings import REQUEST_TIMEOUT
from ..apimachinery.status import StatusError, encode_json, internal_error, timeout_status, write_status
from ..identity.auth import UserInfo

_log = Logger()


@frozen
class Limits:
    """What one client may ask of the server: sizes, times and concurrency (kube-apiserver's defaults)."""

    #: Concurrent non-long-running requests (kube: --max-requests-inflight / --max-mutating-requests-inflight).
    max_read_only_in_flight: int = 400
    max_mutating_in_flight: int = 200
    #: A non-long-running request must be answered within this many seconds (kube: --request-timeout).
    request_timeout: float = REQUEST_TIMEOUT
    #: The request line and headers must arrive within this many seconds (Go's ReadHeaderTimeout in kube).
    header_timeout: float = 32.0
    #: The whole request (headers and body) must arrive within this many seconds.
    read_timeout: float = 60.0
    #: A connection with no request in progress is closed after this many seconds (kube: IdleTimeout 90 s).
    idle_timeout: float = 90.0
    max_header_bytes: int = 1024 * 1024
    max_headers: int = 500
    #: Bodies larger than this are refused (413) before being read; local kinds allow 3 MiB (kube's limit).
    max_body_bytes: int = 64 * 1024 * 1024
    #: Open connections, in all and from one client address; past either, new connections are closed at once.
    max_connections: int = 8192
    max_connections_per_client: int = 1024


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def time_allowed(info: RequestInfo, query: str, default: float) -> float | None:
    """How long a request may take: None when it is long-running, else `?timeout=` (a Go duration) capped at default."""
    if is_long_running(info):
        return None
    if "timeout" not in query:
        return default
    for text in parse_qs(query, keep_blank_values=True).get("timeout", []):
        match = _DURATION.match(text.strip())
        if match:
            return min(default, float(match.group(1)) * _UNITS[match.group(2)])
    return default


def is_long_running(info: RequestInfo) -> bool:
    """Watches (and proxy/exec-style subresources) are long-running: no timeout, not counted in flight."""
    return info.verb in ("watch", "proxy") or info.subresource in ("exec", "attach", "portforward", "log", "proxy")


class Deadline:
    """One deadline in `Deadlines`: the part of a DelayedCall the Site uses (`active`, `cancel`)."""

    __slots__ = ("_owner", "function")

    def __init__(self, owner: Deadlines, function: Callable[[], object]):
        self._owner = owner
        self.function: Callable[[], object] | None = function

    def active(self) -> bool:
        """Whether it has neither fired nor been cancelled."""
        return self.function is not None

    def cancel(self) -> None:
        """Never fire (as DelayedCall.cancel, but cancelling twice is harmless)."""
        if self.function is not None:
            self.function = None
            self._owner._cancelled()


class Deadlines:
    """The deadlines of every request and connection of a Site, on one reactor timer.

    Each request schedules a header deadline and a request deadline and nearly always cancels both.
    Here that costs a tuple on a heap and a flag; the reactor holds a single delayed call, for the
    soonest deadline, instead of a DelayedCall per deadline that its heap orders by Python comparisons.
    Deadlines fire when `clock.callLater` calls would, in the order they fall due.
    """

    #: Cancelled deadlines are dropped from the heap once they outnumber the live ones (and there are this many).
    _COMPACT_AT = 64

    def __init__(self, clock: IReactorTime):
        self._clock = clock
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._live = 0
        self._call: IDelayedCall | None = None
        self._armed_for = math.inf

    def callLater(self, delay: float, function: Callable[[], object]) -> Deadline:
        """Call `function` after `delay` seconds, unless the returned Deadline is cancelled first."""
        when = self._clock.seconds() + delay
        deadline = Deadline(self, function)
        heapq.heappush(self._heap, (when, next(self._order), deadline))
        self._live += 1
        if when < self._armed_for:
            self._arm(when)
        return deadline

    def _arm(self, when: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._armed_for = when
        self._call = self._clock.callLater(max(0.0, when - self._clock.seconds()), self._fire)

    def _cancelled(self) -> None:
        self._live -= 1
        if not self._live:
            # Nothing left to wait for: no delayed call stays in the reactor.
            self._heap.clear()
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
            self._armed_for = math.inf
        elif len(self._heap) > self._COMPACT_AT and len(self._heap) > 2 * self._live:
            self._heap = [entry for entry in self._heap if entry[2].function is not None]
            heapq.heapify(self._heap)

    def _fire(self) -> None:
        self._call = None
        self._armed_for = math.inf
        # A deadline computed as now + delay may differ from the reactor's own sum in the last bit.
        now = self._clock.seconds() + 1e-9
        # self._heap each time: a function may add deadlines, or cancel some (and so compact the heap).
        while self._heap and self._heap[0][0] <= now:
            deadline = heapq.heappop(self._heap)[2]
            function, deadline.function = deadline.function, None
            if function is None:
                continue
            self._live -= 1
            try:
                function()
            except Exception:
                _log.failure("a request or connection deadline failed")
        heap = self._heap
        while heap and heap[0][2].function is None:
            heapq.heappop(heap)
        # A function may have armed the call for a later deadline than the soonest one left.
        if heap and heap[0][0] < self._armed_for:
            self._arm(heap[0][0])


def _nothing() -> None:
    pass


class RequestTimer:
    """The one deadline of a request: the Site's 504 by default, or what the resource serving it asks for.

    The deadline counts from the request's arrival.  A resource calls `limit` while it serves the
    request (before or after `start`), and only one delayed call ever exists for it: a request never
    runs two timers.
    """

    def __init__(self, clock: IReactorTime, seconds: float | None, on_expiry: Callable[[], None],
                 timers: Deadlines | None = None):
        self._clock = clock
        #: Where the delayed call is scheduled: the Site's Deadlines, or the clock itself.
        self._timers: Any = timers if timers is not None else clock
        self._deadline = None if seconds is None else clock.seconds() + seconds
        self._on_expiry = on_expiry
        self._call: IDelayedCall | Deadline | None = None
        self._done = False

    def limit(self, seconds: float | None, on_expiry: Callable[[], None]) -> None:
        """From now on, end the request by calling `on_expiry`, and within `seconds` from now if that is sooner
        than its own deadline (None keeps the deadline)."""
        self._on_expiry = on_expiry
        if seconds is None or self._deadline is None:
            return
        deadline = self._clock.seconds() + seconds
        if deadline < self._deadline:
            self._deadline = deadline
            if self._call is not None:
                # Sooner: a new call rather than reset(), which would make the reactor search its whole heap.
                self._call.cancel()
                self._call = None
                self.start()

    def start(self) -> None:
        """Start counting, unless the request has no limit or is already over."""
        if self._call is None and self._deadline is not None and not self._done:
            self._call = self._timers.callLater(max(0.0, self._deadline - self._clock.seconds()), self._expire)

    def stop(self, _result: object = None) -> None:
        """The request is over: never expire (a `when_over` hook: the request's outcome is ignored)."""
        self._done = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        # The expiry callback is the request's own method: dropping it breaks the request → call → timer → request
        # cycle, so a finished request is freed by reference counting, not left to the garbage collector.
        self._on_expiry = _nothing

    def _expire(self) -> None:
        self._call = None
        self._done = True
        self._on_expiry()


class IApiCall(Interface):
    """What the HTTP surface knows of one request; kept on the request as a component."""

    info = Attribute("The RequestInfo of the request.")


@implementer(IApiCall)
@define(eq=False)
class ApiCall:
    """One request as the HTTP surface sees it."""

    info: RequestInfo
    #: The raw query string.
    query: str
    #: The caller the request acts as, once the root has admitted it (the impersonated user, if any).
    user: UserInfo | None = None
    #: Who authenticated, when the request impersonates someone else (`user` is then the impersonated one).
    impersonator: UserInfo | None = None
    #: The APIService whose backend serves the request, once it is routed to one (for metrics and the access log).
    upstream: str | None = None
    #: The Site's request accounting and this request's ticket, when the Site keeps metrics.
    accounting: Any = None
    ticket: Any = None
    #: The deadline, when the Site enforces one (not for long-running requests).
    timer: RequestTimer | None = None


    def proxied_to(self, apiservice: str) -> None:
        """The request goes to this APIService's backend (component `aggregator` in metrics and the access log)."""
        self.upstream = apiservice
        if self.accounting is not None and self.ticket is not None:
            self.accounting.mark_proxied(self.ticket, apiservice)


#: RequestInfo (and the decoded query) of recent request lines: clients repeat the same few URIs, and a
#: RequestInfo is immutable.  Bounded: emptied when full.
_REQUEST_INFOS: dict[tuple[bytes, bytes], tuple[RequestInfo, str]] = {}
_REQUEST_INFOS_LIMIT = 4096


def _classify(method: bytes, uri: bytes) -> tuple[RequestInfo, str]:
    key = (method, uri)
    known = _REQUEST_INFOS.get(key)
    if known is None:
        path, _, query = uri.partition(b"?")
        decoded_query = query.decode("utf-8", "replace")
        known = (request_info(method.decode("ascii", "replace"), path.decode("utf-8", "replace"), decoded_query),
                 decoded_query)
        if len(_REQUEST_INFOS) >= _REQUEST_INFOS_LIMIT:
            _REQUEST_INFOS.clear()
        _REQUEST_INFOS[key] = known
    return known


def api_call(request: IRequest) -> ApiCall:
    """The ApiCall of a request, made from its method and URI the first time it is asked for."""
    call: ApiCall | None = getattr(request, "_api_call", None)  # an ApiRequest keeps it at hand
    if call is not None:
        return call
    call = request.getComponent(IApiCall)  # type: ignore[attr-defined]
    if call is None:
        info, decoded_query = _classify(request.method, request.uri)
        call = ApiCall(info, decoded_query)
        request.setComponent(IApiCall, call)  # type: ignore[attr-defined]
    if isinstance(request, ApiRequest):
        request._api_call = call
    return call


def when_over(request: IRequest, hook: Callable[[object], None]) -> None:
    """Call `hook` with `notifyFinish`'s outcome once the request is over, through the request's shared hooks when
    it is one of this Site's (`ApiRequest.when_over`), else through a `notifyFinish` of its own."""
    shared = getattr(request, "when_over", None)
    if shared is not None:
        shared(hook)
    else:
        request.notifyFinish().addBoth(hook)  # type: ignore[attr-defined]


def request_user(request: IRequest) -> UserInfo | None:
    """The authenticated caller of a request that went through the root, if any."""
    return api_call(request).user


def malformed_answer(reason: str) -> bytes:
    """The whole answer to a request that cannot be read as HTTP: a 400 Status naming what is wrong, then close.

    The only Status written below the request layer (there is no request to hand to `write_status`).
    """
    body = encode_json(StatusError(400, f"the request cannot be read: {reason}", "BadRequest").to_status())
    return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body


#: A request body larger than this is read from the socket in steps of BODY_READ_SIZE.
LARGE_BODY = 1024 * 1024
BODY_READ_SIZE = 256 * 1024
#: Bodies Twisted would keep in memory (a known length under 100,000 bytes); larger ones, and bodies of unknown
#: length, are spooled to a temporary file.
IN_MEMORY_BODY = 100_000
#: The spool file's buffer: a body arrives one TLS record (16 KiB) at a time, and an unbuffered spool wrote each
#: record with its own write(2).
SPOOL_BUFFER = 256 * 1024
#: After an early answer, seconds the connection stays open, its input discarded, before it is closed (Go's
#: rstAvoidanceDelay): a client still sending its body then reads the answer rather than a connection reset.
LINGER = 0.5
#: The largest Content-Length or chunk size Go accepts (strconv.ParseUint(…, 10, 63)); larger is malformed.
MAX_LENGTH = 2**63 - 1
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?]*(?P<rest>[/?].*)?", re.DOTALL)


def origin_form(target: bytes) -> bytes | None:
    """A request target as `/path?query` (absolute-form reduced to its path), `*` as it is; None when it is
    none of origin-form, absolute-form and `*` (what Go's url.ParseRequestURI refuses)."""
    if target.startswith(b"/") or target == b"*":
        return target
    match = _ABSOLUTE_FORM.fullmatch(target)
    if match is None:
        return None
    rest = match.group("rest") or b""
    return rest if rest.startswith(b"/") else b"/" + rest


def has_dot_segment(path: bytes) -> bool:
    """Whether a path has a `.` or `..` segment once percent-decoded (`%2e%2e`, or `..` between encoded slashes)."""
    if b"%" not in path and b"/." not in path and not path.startswith(b"."):
        # Without percent-encoding, a dot segment starts right after a slash (or at the very start).
        return False
    for segment in path.split(b"/"):
        if (b"." in segment or b"%" in segment) and any(
                piece in (b".", b"..") for piece in unquote_to_bytes(segment).split(b"/")):
            return True
    return False


def dot_segment_refused() -> StatusError:
    """400 for a path with dot segments: refused before routing, never forwarded to a backend."""
    return StatusError(400, 'the request path must not contain "." or ".." segments (also percent-encoded)',
                       "BadRequest")


class ApiRequest(server.Request):
    """A request with kube-apiserver's limits: body size, one request timer, and JSON Status for every failure."""

    _too_large = False
    _timed_out = False
    #: The chunk sizes of a chunked body, added up as they are announced.
    _announced = 0
    #: The body bytes received so far (counted, as asking the spool file costs an lseek(2) per chunk).
    _received = 0
    #: The request's ApiCall, once made (also its IApiCall component).
    _api_call: ApiCall | None = None
    #: What runs once the request is over (see `when_over`).
    _over_hooks: list[Callable[[object], None]] | None = None

    def when_over(self, hook: Callable[[object], None]) -> None:
        """Call `hook` once the request is over: with None when it was answered, with a Failure when its
        connection was lost first (as `notifyFinish` fires).  Every part of the server that must know shares
        one `notifyFinish` Deferred; hooks run in the order they were added."""
        hooks = self._over_hooks
        if hooks is None:
            hooks = self._over_hooks = []
            self.notifyFinish().addBoth(self._run_over_hooks)
        hooks.append(hook)

    def _run_over_hooks(self, result: object) -> None:
        hooks, self._over_hooks = self._over_hooks or [], []
        for hook in hooks:
            try:
                hook(result)
            except Exception:
                _log.failure("a hook at the end of {method} {uri} failed", method=self.method, uri=self.uri)

    def _limits(self) -> Limits:
        channel = self.channel
        return channel.limits if isinstance(channel, ApiChannel) else Limits()

    @property
    def body_refused(self) -> bool:
        """Whether the body is too large: it is not kept, and the request is answered 413."""
        return self._too_large

    def refuse_body(self) -> None:
        """The body is too large: drop what was kept, never ask for the rest (`100 Continue`), answer 413."""
        self._too_large = True
        content = self.content
        if content is not None:
            content.close()
        self.content = io.BytesIO()
        self.requestHeaders.removeHeader(b"expect")

    def chunk_announced(self, length: int) -> bool:
        """Whether a body chunk of this size still fits in the body limit, with the chunks announced before it."""
        self._announced += length
        return self._announced <= self._limits().max_body_bytes

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limits().max_body_bytes:
            self.refuse_body()
            return
        if length is not None and length > LARGE_BODY:
            # A large body arrives in larger reads (Twisted reads 64 KiB at a time).
            raise_buffer(self.channel, BODY_READ_SIZE)
        if length is not None and length < IN_MEMORY_BODY:
            self.content = io.BytesIO()
        else:
            self.content = tempfile.TemporaryFile(buffering=SPOOL_BUFFER)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self._limits().max_body_bytes:
            self.refuse_body()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        channel = self.channel
        api_channel = channel if isinstance(channel, ApiChannel) else None
        if api_channel is not None:
            api_channel.request_complete()
        call = api_call(self)
        site = api_channel.site if api_channel is not None else None
        accounting = site.accounting if isinstance(site, ApiSite) else None
        info = call.info
        long_running = is_long_running(info)
        if accounting is not None:
            call.accounting = accounting
            # info.path is the request's path, decoded as the accounting wants it.
            call.ticket = accounting.begin(self.method.decode("ascii", "replace"), info.path, call.query,
                                           long_running, info)
            self.when_over(self._account)
        if self._answered_early():
            return
        clock = api_channel.clock if api_channel is not None else None
        if clock is not None and not long_running:
            timer = call.timer = RequestTimer(clock, time_allowed(info, call.query, self._limits().request_timeout),
                                              self._time_out, api_channel.timers if api_channel is not None else None)
            self.when_over(timer.stop)
        super().process()
        if call.timer is not None and not self.finished:
            call.timer.start()

    def _answered_early(self) -> bool:
        """Answer what is refused before routing: a body too large, a path with dot segments."""
        if self._too_large:
            limit = self._limits().max_body_bytes
            self.setHeader(b"Connection", b"close")
            if isinstance(self.channel, ApiChannel):
                self.channel.persistent = False
            write_status(self, StatusError(413, f"Request entity too large: limit is {limit}", "RequestEntityTooLarge"))
            return True
        if has_dot_segment(self.path):
            write_status(self, dot_segment_refused())
            return True
        return False

    def _account(self, result: object) -> None:
        call = api_call(self)
        accounting = call.accounting
        user, impersonator = call.user, call.impersonator
        accounting.end(call.ticket, self.code, self.sentLength, user.name if user is not None else "", call.upstream,
                       impersonator.name if impersonator is not None else "")

    def _time_out(self) -> None:
        if self.finished or self._disconnected:
            return
        if self.startedWriting:
            self.loseConnection()
            return
        write_status(self, timeout_status())
        self._timed_out = True

    def write(self, data: bytes) -> None:
        if self._timed_out:
            return
        super().write(data)

    def finish(self) -> None:
        if self._timed_out:
            return
        super().finish()

    def processingFailed(self, reason: Failure) -> Any:
        _log.failure("unhandled error answering {method} {uri}", reason, method=self.method, uri=self.uri)
        if self.finished or self.startedWriting:
            self.loseConnection()
            return None
        write_status(self, internal_error())
        return reason


class _BoundedChunkedDecoder(_ChunkedTransferDecoder):
    """Twisted's decoder of a chunked body, which also refuses a chunk size above Go's limit (a malformed
    request) and tells each chunk size as it is read, so that a body announcing too much is refused unread.

    `announced(size)` answers whether the chunk may be read; once it says no, the decoder stops.
    """

    def __init__(self, data: Callable[[bytes], None], finish: Callable[[bytes], None],
                 announced: Callable[[int], bool]):
        super().__init__(data, finish)
        self._announced = announced
        self.stopped = False

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        if not super()._dataReceived_CHUNK_LENGTH():
            return False
        if self.length > MAX_LENGTH:
            raise _MalformedChunkedDataError("chunk length too large")
        if not self._announced(self.length):
            self.stopped = True
        return not self.stopped

    def _dataReceived_BODY(self) -> bool:
        return super()._dataReceived_BODY() and not self.stopped

    def dataReceived(self, data: bytes) -> None:
        if not self.stopped:
            super().dataReceived(data)


class ApiChannel(HTTPChannel):
    """An HTTP/1.1 connection with deadlines for slow clients (slowloris), kube's header limits, Go's answers to
    malformed requests, and early refusals of bodies that announce too much."""

    limits: Limits = Limits()
    clock: IReactorTime | None = None
    #: The Site's Deadlines (on `clock`), for the per-request deadlines.
    timers: Any = None
    #: The client certificate chain of the connection, once the root has read it (see root.transport_chain).
    peer_chain: Any = None
    site: Any = None
    #: Called once when the connection is lost (the Site counts open connections).
    on_lost: Callable[[], None] | None = None
    _deadline: IDelayedCall | Deadline | None = None
    #: When the first byte of the request being read arrived, by the clock.
    _started = 0.0
    #: The request was answered early and the connection is closing: input is ignored.
    _discarding = False
    #: The request was refused as malformed: it is never processed.
    _refused = False
    #: The body of the request being read was refused (413) while it arrived.
    _body_refused = False
    _linger: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.totalHeadersSize = self.limits.max_header_bytes
        self.maxHeaders = self.limits.max_headers
        # Longer than the header budget, so an oversized header line gets the 400 of the size check.
        self.MAX_LENGTH = self.limits.max_header_bytes * 2
        self.timeOut = int(self.limits.idle_timeout)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._discarding:
            return
        if data and self._deadline is None and self.line_mode and not self._handlingRequest and self.clock is not None:
            # The first byte of a request: its headers must be in within the header timeout from now (Go's
            # ReadHeaderTimeout), however the bytes are spread out and whatever ends their lines.
            self._started = self.clock.seconds()
            self._deadline = (self.timers or self.clock).callLater(self.limits.header_timeout, self._too_slow)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._discarding:
            return
        # Twisted keeps the request line's target in `_path` from the request line until the request is received.
        request_line = "_path" not in self.__dict__
        super().lineReceived(line)
        if request_line and "_path" in self.__dict__ and not self._discarding:
            target = origin_form(self._path)
            if target is None:
                self.malformed("the request target is neither a path nor an absolute URI")
            else:
                self._path = target

    def headerReceived(self, line: bytes) -> bool:
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"content-length":
            digits = value.strip(b" \t")
            if digits.isdigit():
                # Twisted takes any run of digits (and int() fails past 4300 of them); Go stops at 2^63 - 1.
                digits = digits.lstrip(b"0") or b"0"
                if len(digits) > len(str(MAX_LENGTH)) or int(digits) > MAX_LENGTH:
                    self.malformed("the Content-Length is 2^63 or more")
                    return False
                line = name + b": " + digits
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        if self._discarding:
            return
        request = self.requests[-1]
        if isinstance(request, ApiRequest):
            if request.body_refused:
                # The Content-Length is over the limit: answer 413 now, without reading the body, and close.
                self._cancel_deadline()
                self.persistent = False
                self._discarding = True
                self.length = 0
                return
            decoder = self._transferDecoder
            if type(decoder) is _ChunkedTransferDecoder:
                self._transferDecoder = _BoundedChunkedDecoder(request.handleContentChunk, self._finishRequestBody,
                                                               self._chunk_announced)
        if self._deadline is not None and self.clock is not None:
            # The headers are in; a body, if one follows, gets what is left of the read timeout.  A new call
            # rather than reset(): moving a call sooner makes the reactor search its whole timer heap.
            self._cancel_deadline()
            if self.length != 0:
                left = self.limits.read_timeout - (self.clock.seconds() - self._started)
                self._deadline = (self.timers or self.clock).callLater(max(0.0, left), self._too_slow)

    def _chunk_announced(self, length: int) -> bool:
        request = self.requests[-1]
        if not isinstance(request, ApiRequest) or request.chunk_announced(length):
            return True
        request.refuse_body()
        self._body_refused = True
        return False

    def rawDataReceived(self, data: bytes) -> None:
        if self._discarding:
            return
        super().rawDataReceived(data)
        if self._body_refused and not self._discarding:
            # A chunk announced more than the limit: answer 413 now (the request is processed with no body).
            self._body_refused = False
            self._cancel_deadline()
            self.persistent = False
            self._discarding = True
            self.allContentReceived()

    def allContentReceived(self) -> None:
        if self._refused:
            return
        super().allContentReceived()

    def malformed(self, reason: str) -> None:
        """Answer a request that cannot be read as HTTP with a 400 Status, and close the connection."""
        if self._discarding:
            return
        self._discarding = self._refused = True
        self._cancel_deadline()
        transport: Any = self.transport
        _log.info("refused a malformed request from {peer}: {reason}", peer=str(transport.getPeer()), reason=reason)
        transport.write(malformed_answer(reason))
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's own refusals (a malformed request line, header or chunk, a body framed two ways, too many
        # header bytes) answer the same 400.
        self.malformed("malformed request line, headers or body framing")

    def loseConnection(self) -> None:
        if self._discarding and self.clock is not None and self.transport is not None:
            if self._linger is None:
                self._linger = self.clock.callLater(LINGER, self._close)
            return
        super().loseConnection()

    def _close(self) -> None:
        self._linger = None
        HTTPChannel.loseConnection(self)

    def request_complete(self) -> None:
        """The whole request has arrived: no more read deadline."""
        self._cancel_deadline()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        transport: Any = self.transport
        if transport is None:
            return
        _log.info("dropping a client too slow to send its request: {peer}", peer=str(transport.getPeer()))
        transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()
        super().connectionLost(reason)


class _Refused(Protocol):
    """A connection past the Site's limits: closed as soon as it is made (before any TLS handshake)."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()


def _client_of(addr: Any) -> str:
    host = getattr(addr, "host", None)
    return str(host) if host else type(addr).__name__


class ApiSite(server.Site):
    """The Site: JSON errors, no tracebacks, request limits, connection deadlines and connection limits."""

    def __init__(self, root: IResource, limits: Limits, clock: IReactorTime | None, accounting: Any = None):
        super().__init__(root, timeout=limits.idle_timeout)
        self.requestFactory = ApiRequest
        self.displayTracebacks = False
        self.limits = limits
        self.clock = clock
        #: The deadlines of requests and connections, on one reactor timer.
        self.deadlines = Deadlines(clock) if clock is not None else None
        #: A metrics.RequestAccounting: every request is counted, timed and logged once.
        self.accounting = accounting
        self.noisy = False
        #: Open connections in all, and per client address.
        self.open_connections = 0
        self._open: dict[str, int] = {}
        #: Connections refused since the last accepted one: per client address, and "" for the total limit.
        self._refused: dict[str, int] = {}

    def log(self, request: Any) -> None:
        """The access log is written by the request accounting, with named fields."""
        if self.accounting is None:
            super().log(request)

    def buildProtocol(self, addr: Any) -> Any:
        client = _client_of(addr)
        limits = self.limits
        if self.open_connections >= limits.max_connections:
            return self._refuse("", client, self.open_connections, "max_connections", limits.max_connections)
        open_here = self._open.get(client, 0)
        if open_here >= limits.max_connections_per_client:
            return self._refuse(client, client, open_here, "max_connections_per_client",
                                limits.max_connections_per_client)
        self._end_burst("")
        self._end_burst(client)
        self.open_connections += 1
        self._open[client] = open_here + 1
        channel: Any = ApiChannel()
        channel.factory = self
        channel.requestFactory = self.requestFactory
        channel.site = self
        channel.limits = self.limits
        channel.clock = self.clock
        channel.timers = self.deadlines
        channel.on_lost = lambda: self._closed(client)
        if self.clock is not None:
            channel.callLater = self.clock.callLater
        return channel

    def _refuse(self, burst: str, client: str, open_now: int, setting: str, limit: int) -> Protocol:
        refused = self._refused.get(burst, 0)
        if not refused:
            _log.warn("refusing new connections from {client} until one closes: {open} open, {setting} is {limit}",
                      client=burst or "any client", open=open_now, setting=setting, limit=limit)
        self._refused[burst] = refused + 1
        return _Refused()

    def _end_burst(self, burst: str) -> None:
        refused = self._refused.pop(burst, 0)
        if refused:
            _log.info("accepting connections from {client} again; {refused} were refused",
                      client=burst or "any client", refused=refused)

    def _closed(self, client: str) -> None:
        self.open_connections -= 1
        left = self._open.get(client, 1) - 1
        if left > 0:
            self._open[client] = left
        else:
            self._open.pop(client, None)
            # No connection left from this client: its burst of refusals is over (the map stays small).
            self._end_burst(client)


def build_site(root: IResource, limits: Limits | None = None, clock: IReactorTime | None = None,
               accounting: Any = None) -> server.Site:
    """A Site serving the given root with JSON errors, no tracebacks, and (given a clock) kube's limits."""
    return ApiSite(root, limits or Limits(), clock, accounting)
