"""The HTTP face of the daemon: the Site, the authenticating root, and the tree of served paths.

`build_site` assembles everything from already-built collaborators, so tests serve the real tree
through StubTreq or a real socket without starting twistd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import io

from attrs import frozen
from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import Attribute, Interface, implementer

from .. import __version__
from ..apimachinery.requestinfo import RequestInfo, request_info
from ..apimachinery.status import (
    StatusError,
    encode_json,
    method_not_allowed,
    not_found_path,
    unauthorized,
    write_json,
    write_status,
)
from ..identity.auth import Authenticator, Credentials, UserInfo, authorize, forbidden_details
from .discovery import CoreResource
from .health import ENDPOINTS, HealthChecks, HealthResource
from ..tls.certificates import peer_chain

_log = Logger()


class IRequestUser(Interface):
    """The authenticated caller of a request, kept on the request as a component."""

    user = Attribute("The UserInfo of the caller.")


@implementer(IRequestUser)
class RequestUser:
    """Holder of the caller, stored with `request.setComponent(IRequestUser, …)`."""

    def __init__(self, user: UserInfo):
        self.user = user


def request_user(request: IRequest) -> UserInfo | None:
    """The authenticated caller of a request that went through the root, if any."""
    holder = request.getComponent(IRequestUser)  # type: ignore[attr-defined]
    return holder.user if holder is not None else None


def version_info(emulated: tuple[int, int]) -> dict[str, str]:
    """`/version` in kube's shape; major/minor are the emulated Kubernetes version (it picks kubectl's binary)."""
    major, minor = emulated
    return {
        "major": str(major),
        "minor": str(minor),
        "gitVersion": f"v{major}.{minor}.0+grafana.aggregator.{__version__}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }


class VersionResource(Resource):
    """`/version`."""

    isLeaf = True

    def __init__(self, info: dict[str, str]):
        super().__init__()
        self._info = info

    def render(self, request: IRequest) -> bytes:
        method = request.method.decode("ascii", "replace")
        if [p for p in (request.postpath or []) if p]:
            return write_status(request, not_found_path())
        if method not in ("GET", "HEAD"):
            return write_status(request, method_not_allowed(method, request.path.decode("utf-8", "replace")))
        return write_json(request, 200, self._info)


class StatusResource(Resource):
    """Answers every request below it with one Status error."""

    isLeaf = True

    def __init__(self, error: StatusError):
        super().__init__()
        self._error = error

    def render(self, request: IRequest) -> bytes:
        return write_status(request, self._error)


class Router(Resource):
    """The served paths; anything unknown is a 404 Status."""

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        return StatusResource(not_found_path())

    def render(self, request: IRequest) -> bytes:
        return write_status(request, not_found_path())


PeerChain = Callable[[IRequest], Sequence[x509.Certificate]]


def transport_chain(request: IRequest) -> Sequence[x509.Certificate]:
    """The client certificate chain of the request's TLS connection (empty without one)."""
    channel = getattr(request, "channel", None)
    return peer_chain(getattr(channel, "transport", None))


@implementer(IResource)
class AuthenticatingRoot:
    """Authenticates and authorizes each request before the tree below sees it (401 / 403 Status otherwise)."""

    isLeaf = False

    def __init__(self, tree: Resource, authenticator: Authenticator, peer_certificates: PeerChain = transport_chain,
                 in_flight: InFlight | None = None):
        self._tree = tree
        self._authenticator = authenticator
        self._peer_certificates = peer_certificates
        self._in_flight = in_flight

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        refusal = self._admit(request)
        if refusal is not None:
            return StatusResource(refusal)
        return self._tree.getChildWithDefault(name, request)  # type: ignore[no-any-return]

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("children belong to the wrapped tree")

    def render(self, request: IRequest) -> bytes:
        refusal = self._admit(request)
        if refusal is not None:
            return write_status(request, refusal)
        return self._tree.render(request)  # type: ignore[no-any-return]

    def _admit(self, request: IRequest) -> StatusError | None:
        channel = getattr(request, "channel", None)
        credentials = Credentials(
            headers=request.requestHeaders,
            peer_chain=self._peer_certificates(request),
            connection=getattr(channel, "transport", None),
        )
        user = self._authenticator.authenticate(credentials)
        if user is None:
            return unauthorized()
        request.setComponent(IRequestUser, RequestUser(user))  # type: ignore[attr-defined]
        info = info_of(request)
        decision = authorize(user, info)
        if not decision.allowed:
            if user.is_anonymous:
                return unauthorized()
            return StatusError(403, decision.reason, "Forbidden", forbidden_details(info) or {})
        if self._in_flight is not None and not is_long_running(request) and not _is_probe(info.path):
            if not self._in_flight.admit(request.method):
                return StatusError(429, "Too many requests, please try again later.", "TooManyRequests",
                                   {"retryAfterSeconds": 1})
            in_flight, method = self._in_flight, request.method
            request.notifyFinish().addBoth(lambda _: in_flight.release(method))  # type: ignore[attr-defined]
        return None


@frozen
class Limits:
    """What one client may ask of the server: sizes, times and concurrency (kube-apiserver's defaults)."""

    #: Concurrent non-long-running requests (kube: --max-requests-inflight / --max-mutating-requests-inflight).
    max_read_only_in_flight: int = 400
    max_mutating_in_flight: int = 200
    #: A non-long-running request must be answered within this many seconds (kube: --request-timeout).
    request_timeout: float = 60.0
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


_READ_ONLY = (b"GET", b"HEAD", b"OPTIONS")


class InFlight:
    """Counts requests being served, to refuse overload (429) and to wait for them at shutdown."""

    def __init__(self, limits: Limits):
        self._limits = limits
        self.read_only = 0
        self.mutating = 0
        self._idle: list[Deferred[None]] = []

    def admit(self, method: bytes) -> bool:
        """Count a request in, unless its class is full.

        Unlike kube-apiserver, system:masters are not exempt: here they do nearly all the real work,
        so exempting them would leave nothing protected.  Health probes and watches are exempt.
        """
        read_only = method in _READ_ONLY
        if read_only and self.read_only >= self._limits.max_read_only_in_flight:
            return False
        if not read_only and self.mutating >= self._limits.max_mutating_in_flight:
            return False
        if read_only:
            self.read_only += 1
        else:
            self.mutating += 1
        return True

    def release(self, method: bytes) -> None:
        """Count a request out."""
        if method in _READ_ONLY:
            self.read_only -= 1
        else:
            self.mutating -= 1
        if self.read_only + self.mutating == 0:
            waiting, self._idle = self._idle, []
            for waiter in waiting:
                waiter.callback(None)

    def idle(self) -> Deferred[None]:
        """Fires when no counted request is in flight."""
        waiter: Deferred[None] = Deferred()
        if self.read_only + self.mutating == 0:
            waiter.callback(None)
        else:
            self._idle.append(waiter)
        return waiter


def _is_probe(path: str) -> bool:
    return path.split("/")[1] in ("healthz", "livez", "readyz") if path.startswith("/") else False


def info_of(request: IRequest) -> RequestInfo:
    """The RequestInfo of a request, worked out once and kept on the request."""
    info: RequestInfo | None = getattr(request, "api_request_info", None)
    if info is None:
        path, _, query = request.uri.partition(b"?")
        info = request_info(request.method.decode("ascii", "replace"), path.decode("utf-8", "replace"),
                            query.decode("utf-8", "replace"))
        request.api_request_info = info  # type: ignore[attr-defined]
    return info


def is_long_running(request: IRequest) -> bool:
    """Watches (and proxy/exec-style subresources) are long-running: no timeout, not counted in flight."""
    info = info_of(request)
    return info.verb in ("watch", "proxy") or info.subresource in ("exec", "attach", "portforward", "log", "proxy")


class ApiRequest(server.Request):
    """A request with kube-apiserver's limits: body size, request timeout, and JSON Status for every failure."""

    _too_large = False
    _timed_out = False
    _timer: IDelayedCall | None = None
    #: The metrics ticket of this request, when the site keeps metrics (the proxy marks it as proxied).
    accounting_ticket: Any = None
    #: What `info_of` worked out about this request.
    api_request_info: RequestInfo | None = None

    def _limits(self) -> Limits:
        return getattr(self.channel, "limits", None) or Limits()

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
        if channel is not None and hasattr(channel, "request_complete"):
            channel.request_complete()
        if self._too_large:
            limit = self._limits().max_body_bytes
            self.setHeader(b"Connection", b"close")
            body = write_status(self, StatusError(413, f"Request entity too large: limit is {limit}",
                                                  "RequestEntityTooLarge"))
            self.setHeader(b"Content-Length", str(len(body)).encode())
            self.write(body)
            self.finish()
            return
        site = getattr(channel, "site", None)
        accounting = getattr(site, "accounting", None)
        long_running = is_long_running(self)
        if accounting is not None:
            path, _, query = self.uri.partition(b"?")
            ticket = accounting.begin(self.method.decode("ascii", "replace"), path.decode("utf-8", "replace"),
                                      query.decode("utf-8", "replace"), long_running, info_of(self))
            self.accounting_ticket = ticket

            def account(result: object) -> None:
                user = request_user(self)
                accounting.end(ticket, self.code, self.sentLength, user.name if user is not None else "",
                               getattr(self, "upstream", None))

            self.notifyFinish().addBoth(account)
        clock = getattr(channel, "clock", None)
        if clock is not None and not long_running:
            self._timer = clock.callLater(self._limits().request_timeout, self._time_out)
            self.notifyFinish().addBoth(self._cancel_timer)
        super().process()

    def _cancel_timer(self, result: object) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _time_out(self) -> None:
        if self.finished or self._disconnected:
            return
        if self.startedWriting:
            self.loseConnection()
            return
        self._timed_out = True
        body = encode_json(StatusError(504, "request did not complete within the allotted timeout", "Timeout",
                                       {}).to_status())
        self.setResponseCode(504)
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Content-Length", str(len(body)).encode())
        server.Request.write(self, body)
        server.Request.finish(self)

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
        body = write_status(self, StatusError(500, "Internal error occurred: unexpected server error (see the server log)"))
        self.setHeader(b"Content-Length", str(len(body)).encode())
        self.write(body)
        self.finish()
        return reason


def build_tree(*, health: HealthChecks, emulated_version: tuple[int, int], apis: Resource,
               openapi: Resource | None = None, metrics: Resource | None = None) -> Router:
    """The served paths, before authentication."""
    tree = Router()
    tree.putChild(b"version", VersionResource(version_info(emulated_version)))
    for endpoint in ENDPOINTS:
        tree.putChild(endpoint.encode(), HealthResource(endpoint, health))
    tree.putChild(b"api", CoreResource(emulated_minor=emulated_version[1]))
    tree.putChild(b"apis", apis)
    if openapi is not None:
        tree.putChild(b"openapi", openapi)
    if metrics is not None:
        tree.putChild(b"metrics", metrics)
    return tree


class ApiChannel(HTTPChannel):
    """An HTTP/1.1 connection with deadlines for slow clients (slowloris) and kube's header limits."""

    limits: Limits = Limits()
    clock: IReactorTime | None = None
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
