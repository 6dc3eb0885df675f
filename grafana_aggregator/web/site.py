"""The Site: connections with deadlines and kube's header limits, and requests with one timer and one Status path.

Every request carries one `ApiCall` component: what it asks for (its RequestInfo, worked out once),
who asks (set by the root), the accounting ticket, and the APIService whose backend serves it.  The
parts of the HTTP surface share per-request state through it, never through ad-hoc attributes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from attrs import define, frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import Attribute, Interface, implementer

from ..apimachinery.requestinfo import RequestInfo, request_info
from ..config.settings import REQUEST_TIMEOUT
from ..apimachinery.status import StatusError, internal_error, timeout_status, write_status
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


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def time_allowed(info: RequestInfo, query: str, default: float) -> float | None:
    """How long a request may take: None when it is long-running, else `?timeout=` (a Go duration) capped at default."""
    if is_long_running(info):
        return None
    for text in parse_qs(query, keep_blank_values=True).get("timeout", []):
        match = _DURATION.match(text.strip())
        if match:
            return min(default, float(match.group(1)) * _UNITS[match.group(2)])
    return default


def is_long_running(info: RequestInfo) -> bool:
    """Watches (and proxy/exec-style subresources) are long-running: no timeout, not counted in flight."""
    return info.verb in ("watch", "proxy") or info.subresource in ("exec", "attach", "portforward", "log", "proxy")


class RequestTimer:
    """The one deadline of a request: the Site's 504 by default, or what the resource serving it asks for.

    The deadline counts from the request's arrival.  A resource calls `limit` while it serves the
    request (before or after `start`), and only one delayed call ever exists for it: a request never
    runs two timers.
    """

    def __init__(self, clock: IReactorTime, seconds: float | None, on_expiry: Callable[[], None]):
        self._clock = clock
        self._deadline = None if seconds is None else clock.seconds() + seconds
        self._on_expiry = on_expiry
        self._call: IDelayedCall | None = None
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
            self._call = self._clock.callLater(max(0.0, self._deadline - self._clock.seconds()), self._expire)

    def stop(self) -> None:
        """The request is over: never expire."""
        self._done = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

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


def api_call(request: IRequest) -> ApiCall:
    """The ApiCall of a request, made from its method and URI the first time it is asked for."""
    call: ApiCall | None = request.getComponent(IApiCall)  # type: ignore[attr-defined]
    if call is None:
        path, _, query = request.uri.partition(b"?")
        decoded_query = query.decode("utf-8", "replace")
        info = request_info(request.method.decode("ascii", "replace"), path.decode("utf-8", "replace"),
                            decoded_query)
        call = ApiCall(info, decoded_query)
        request.setComponent(IApiCall, call)  # type: ignore[attr-defined]
    return call


def request_user(request: IRequest) -> UserInfo | None:
    """The authenticated caller of a request that went through the root, if any."""
    return api_call(request).user


class ApiRequest(server.Request):
    """A request with kube-apiserver's limits: body size, one request timer, and JSON Status for every failure."""

    _too_large = False
    _timed_out = False

    def _limits(self) -> Limits:
        channel = self.channel
        return channel.limits if isinstance(channel, ApiChannel) else Limits()

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limits().max_body_bytes:
            self._too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        super().handleContentChunk(data)
        content = self.content
        if content is not None and content.tell() > self._limits().max_body_bytes:
            self._too_large = True
            content.seek(0)
            content.truncate()

    def process(self) -> None:
        channel = self.channel
        if isinstance(channel, ApiChannel):
            channel.request_complete()
        if self._too_large:
            limit = self._limits().max_body_bytes
            self.setHeader(b"Connection", b"close")
            write_status(self, StatusError(413, f"Request entity too large: limit is {limit}", "RequestEntityTooLarge"))
            return
        call = api_call(self)
        site = channel.site if isinstance(channel, ApiChannel) else None
        accounting = site.accounting if isinstance(site, ApiSite) else None
        long_running = is_long_running(call.info)
        if accounting is not None:
            path, _, _ = self.uri.partition(b"?")
            call.accounting = accounting
            call.ticket = accounting.begin(self.method.decode("ascii", "replace"), path.decode("utf-8", "replace"),
                                           call.query, long_running, call.info)
            self.notifyFinish().addBoth(self._account, accounting, call)
        clock = channel.clock if isinstance(channel, ApiChannel) else None
        if clock is not None and not long_running:
            timer = call.timer = RequestTimer(clock, time_allowed(call.info, call.query,
                                                                  self._limits().request_timeout), self._time_out)
            self.notifyFinish().addBoth(lambda _: timer.stop())
        super().process()
        if call.timer is not None and not self.finished:
            call.timer.start()

    def _account(self, result: object, accounting: Any, call: ApiCall) -> None:
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


class ApiChannel(HTTPChannel):
    """An HTTP/1.1 connection with deadlines for slow clients (slowloris) and kube's header limits."""

    limits: Limits = Limits()
    clock: IReactorTime | None = None
    site: Any = None
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.totalHeadersSize = self.limits.max_header_bytes
        self.maxHeaders = self.limits.max_headers
        # Longer than the header budget, so an oversized header line gets the 400 of the size check.
        self.MAX_LENGTH = self.limits.max_header_bytes * 2
        self.timeOut = int(self.limits.idle_timeout)
        super().connectionMade()

    def lineReceived(self, line: bytes) -> None:
        if self._deadline is None and self.clock is not None and line:
            self._deadline = self.clock.callLater(self.limits.header_timeout, self._too_slow)
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        if self._deadline is not None and self._deadline.active() and self.clock is not None:
            # The headers are in; a body, if one follows, gets what is left of the read timeout.  A new call
            # rather than reset(): moving a call sooner makes the reactor search its whole timer heap.
            self._deadline.cancel()
            self._deadline = None
            if self.length != 0:
                self._deadline = self.clock.callLater(max(0.0, self.limits.read_timeout - self.limits.header_timeout),
                                                      self._too_slow)

    def request_complete(self) -> None:
        """The whole request has arrived: no more read deadline."""
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
        self.request_complete()
        super().connectionLost(reason)


class ApiSite(server.Site):
    """The Site: JSON errors, no tracebacks, request limits and connection deadlines."""

    def __init__(self, root: IResource, limits: Limits, clock: IReactorTime | None, accounting: Any = None):
        super().__init__(root, timeout=limits.idle_timeout)
        self.requestFactory = ApiRequest
        self.displayTracebacks = False
        self.limits = limits
        self.clock = clock
        #: A metrics.RequestAccounting: every request is counted, timed and logged once.
        self.accounting = accounting
        self.noisy = False

    def log(self, request: Any) -> None:
        """The access log is written by the request accounting, with named fields."""
        if self.accounting is None:
            super().log(request)

    def buildProtocol(self, addr: Any) -> Any:
        channel: Any = ApiChannel()
        channel.factory = self
        channel.requestFactory = self.requestFactory
        channel.site = self
        channel.limits = self.limits
        channel.clock = self.clock
        if self.clock is not None:
            channel.callLater = self.clock.callLater
        return channel


def build_site(root: IResource, limits: Limits | None = None, clock: IReactorTime | None = None,
               accounting: Any = None) -> server.Site:
    """A Site serving the given root with JSON errors, no tracebacks, and (given a clock) kube's limits."""
    return ApiSite(root, limits or Limits(), clock, accounting)
