"""The aggregation proxy: a remote group-version's requests, streamed to its backend with the caller's identity.

Behaviour follows kube-aggregator's proxy handler: the caller's credentials and any identity headers it sent are
stripped and replaced by `X-Remote-*` headers for the authenticated user, over mutual TLS with the
proxy client certificate; redirects are refused (502); connection upgrades are refused; discovery
requests (`/apis/<g>/<v>`) time out after 5 s; bodies stream both ways with back-pressure, and a
client that goes away cancels the upstream request.

Stricter than kube-aggregator, whose 503 quotes Go's dial error (`dial tcp 10.0.0.7:443: connect:
connection refused`): a client is told only a fixed phrase (`error trying to reach service: connect:
connection refused`), never a backend's address, bytes it sent or an exception's text; the details go
to the log.  A backend reply that is not HTTP (a bad status line, header or chunk framing, found before
anything was relayed) is a 502 with a fixed message.  A reply without `Content-Type` is relayed without
one (Twisted would label it `text/html`).  Identity headers are matched the way a CGI-style backend
reads them, any case and with `_` for `-`: `X_Remote_User` is dropped like `X-Remote-User`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IRequest, IResponse
from zope.interface import implementer

from ..apimachinery.status import StatusError, internal_error, timeout_status, write_status
from ..identity.auth import UserInfo
from .upstream import DISCOVERY_TIMEOUT, Backend, describe_failure, is_malformed_response, public_reason

_log = Logger()

#: Request bodies up to this size are sent from memory; larger ones are streamed from Twisted's spool file.
SMALL_BODY = 1024 * 1024

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade",
})
#: Request headers that carry credentials or identity and must never reach a backend from the client.
_STRIPPED_PREFIXES = ("x-remote-", "impersonate-")
_STRIPPED = frozenset({"authorization", "host", "content-length"})
#: Headers the proxy sets itself: a client's copy in another spelling (`X_Forwarded_Host`) is dropped.
_SET_HERE = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-uri"})
#: The message of a 502 for a backend reply that is not HTTP.
MALFORMED_RESPONSE = "the backend sent a malformed HTTP response"
#: Characters kept as they are in an extra key (RFC 7230 token characters, minus '%').
_TOKEN_SAFE = "!#$&'*+-.^_`|~"


def escape_extra_key(key: str) -> str:
    """Percent-encode an extra key for an `X-Remote-Extra-` header name, as client-go does."""
    return quote(key, safe=_TOKEN_SAFE)


def header_spelling(name: str) -> str:
    """A header name as a CGI-style backend reads it: case and `_` versus `-` do not matter."""
    return name.lower().replace("_", "-")


def forward_headers(incoming: Headers, user: UserInfo, client_ip: str, backend_host: str, path: str,
                    extra_stripped: frozenset[str] = frozenset()) -> Headers:
    """The headers sent to a backend: the client's, minus credentials, identity and hop-by-hop ones, plus the caller's identity.

    Names are compared as a CGI-style backend reads them (`header_spelling`).  `extra_stripped` holds
    configured identity header names; one ending in `-` is a prefix (`X-Grafana-Extra-`).
    """
    connection_named = {
        header_spelling(token.strip())
        for value in incoming.getRawHeaders("connection", [])
        for token in value.split(",")
    }
    spelt = {header_spelling(name) for name in extra_stripped}
    stripped_names = spelt | connection_named
    stripped_prefixes = _STRIPPED_PREFIXES + tuple(name for name in spelt if name.endswith("-"))
    outgoing = Headers()
    forwarded_for: list[str] = []
    for raw_name, values in incoming.getAllRawHeaders():
        lowered = raw_name.decode("latin-1").lower()
        name = header_spelling(lowered)
        if (name in HOP_BY_HOP or name in _STRIPPED or name in stripped_names or name.startswith(stripped_prefixes)):
            continue
        if name in _SET_HERE:
            if lowered == "x-forwarded-for":
                forwarded_for.extend(v.decode("latin-1") for v in values)
            continue
        outgoing.setRawHeaders(raw_name, list(values))
    outgoing.setRawHeaders("X-Remote-User", [user.name])
    if user.uid:
        outgoing.setRawHeaders("X-Remote-Uid", [user.uid])
    if user.groups:
        outgoing.setRawHeaders("X-Remote-Group", list(user.groups))
    for key, extra_values in sorted(user.extra.items()):
        outgoing.setRawHeaders(f"X-Remote-Extra-{escape_extra_key(key)}", list(extra_values))
    outgoing.setRawHeaders("X-Forwarded-For", [", ".join([*forwarded_for, client_ip])] if forwarded_for else [client_ip])
    outgoing.setRawHeaders("X-Forwarded-Proto", ["https"])
    outgoing.setRawHeaders("X-Forwarded-Host", [backend_host])
    outgoing.setRawHeaders("X-Forwarded-Uri", [path])
    return outgoing


def is_discovery_path(path: str) -> bool:
    """Whether a path is a group-version's discovery document, `/apis/<g>/<v>` (trailing slash allowed)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    return len(parts) == 3 and parts[0] == "apis"


def service_unavailable(message: str = "service unavailable") -> StatusError:
    """503 as the aggregator answers for a backend it cannot use."""
    return StatusError(503, message, "ServiceUnavailable")


def bad_gateway(message: str) -> StatusError:
    """502 for a backend answer that cannot be relayed (a redirect, a reply that is not HTTP)."""
    return StatusError(502, message, "BadGateway")


class Deadline(Protocol):
    """The one timer of a request (the Site's RequestTimer): the proxy sets what happens when time is up."""

    def limit(self, seconds: float | None, on_expiry: Callable[[], None]) -> None:
        """Call `on_expiry` after `seconds` (at most the request's own limit; None keeps that limit)."""


class UpstreamMeter(Protocol):
    """The metrics of one APIService's backend, their labelled children resolved once."""

    def observe(self, seconds: float) -> None:
        """Record how long one proxied request took to get its response headers."""

    def count_error(self, reason: str) -> None:
        """Count one proxied request that failed upstream (`timeout`, `unreachable`, `redirect`)."""


class _BodyRelay(StreamProtocol):
    """Relays a backend response body to the client, with back-pressure, until either side ends."""

    def __init__(self, request: IRequest, done: defer.Deferred[None]):
        self._request = request
        self._done = done
        self.transport: Any = None

    def connectionMade(self) -> None:
        self._request.registerProducer(self.transport, True)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        try:
            self._request.unregisterProducer()  # type: ignore[attr-defined]
        except Exception:
            pass
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(None)
        else:
            self._done.errback(reason)

    def abort(self) -> None:
        """Stop the backend response (the client went away)."""
        if self.transport is not None:
            self.transport.stopProducing()


class Proxy:
    """Forwards the requests of one remote APIService to its backend, worked out once for that backend.

    :param name: the APIService's name (for logs and the availability recheck).
    :param backend: where its requests go.
    :param agent: the pooled agent of that backend.
    :param limiter: caps the concurrent non-watch requests to the backend (shared by the APIService's routes).
    :param meter: the backend's metrics, if kept.
    :param on_unreachable: called with the name when the backend could not be reached.
    :param extra_stripped: configured identity header names never forwarded from a client.
    """

    def __init__(self, name: str, backend: Backend, agent: IAgent, clock: IReactorTime, *,
                 limiter: defer.DeferredSemaphore | None = None, meter: UpstreamMeter | None = None,
                 on_unreachable: Callable[[str], None] = lambda name: None,
                 extra_stripped: frozenset[str] = frozenset()):
        self.name = name
        self.backend = backend
        self._agent = agent
        self._clock = clock
        self._limiter = limiter
        self._meter = meter
        self._on_unreachable = on_unreachable
        self._extra_stripped = extra_stripped
        self._base_url = backend.url.encode("ascii")
        self._forwarded_host = f"{backend.host}:{backend.port}"

    def forward(self, request: IRequest, user: UserInfo, long_running: bool, deadline: Deadline | None) -> None:
        """Answer the request with the backend's response (or a Status); returns at once, the request goes on."""
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))  # type: ignore[attr-defined]
        defer.Deferred.fromCoroutine(self._proxy(request, user, long_running, deadline, gone)).addErrback(
            self._failed, request, gone)

    def _count_error(self, reason: str) -> None:
        if self._meter is not None:
            self._meter.count_error(reason)

    def _failed(self, failure: Failure, request: IRequest, gone: list[bool]) -> None:
        _log.failure("proxying to {apiservice} failed", failure, apiservice=self.name)
        if not gone:
            if request.startedWriting:  # type: ignore[attr-defined]
                request.loseConnection()  # type: ignore[attr-defined]
            else:
                write_status(request, internal_error("the proxy failed (see the server log)"))

    async def _proxy(self, request: IRequest, user: UserInfo, long_running: bool, deadline: Deadline | None,
                     gone: list[bool]) -> None:
        if any("upgrade" in v.lower() for v in request.requestHeaders.getRawHeaders("connection", [])):
            write_status(request, StatusError(400, "connection upgrades (exec, attach, port-forward, websockets) are "
                                                   "not supported through this aggregator", "BadRequest"))
            return
        limiter = self._limiter
        if limiter is None or long_running:
            # Watches are long-running: they would hold a slot for as long as they stay open.
            await self._forward(request, user, deadline, gone)
            return
        await limiter.acquire()
        try:
            if not gone:
                await self._forward(request, user, deadline, gone)
        finally:
            limiter.release()

    async def _forward(self, request: IRequest, user: UserInfo, deadline: Deadline | None,
                       gone: list[bool]) -> None:
        """Send the request to the backend and relay its answer."""
        uri = request.uri.decode("latin-1")
        path = uri.split("?", 1)[0]
        headers = forward_headers(request.requestHeaders, user, _client_ip(request), self._forwarded_host, path,
                                  self._extra_stripped)
        producer: IBodyProducer | None = None
        body = request.content
        if body is not None:
            body.seek(0, 2)
            size = body.tell()
            body.seek(0)
            if size > SMALL_BODY:
                producer = FileBodyProducer(body)
            elif size:
                producer = _BytesProducer(body.read())
        try:
            upstream = self._agent.request(request.method, self._base_url + request.uri, headers, producer)
        except ValueError as error:
            write_status(request, StatusError(400, f"the request cannot be forwarded: {error}", "BadRequest"))
            return
        request.notifyFinish().addErrback(lambda _: upstream.cancel())  # type: ignore[attr-defined]
        discovery = is_discovery_path(path)
        expired: list[bool] = []
        relay: _BodyRelay | None = None

        def time_out() -> None:
            expired.append(True)
            if relay is None:
                upstream.cancel()
            else:
                relay.abort()

        if deadline is not None:
            deadline.limit(DISCOVERY_TIMEOUT if discovery else None, time_out)
        sent = self._clock.seconds()
        try:
            response: IResponse = await upstream
        except Exception as error:
            if gone:
                return
            if not expired and is_malformed_response(error):
                self._count_error("malformed")
                _log.info("backend of {apiservice} sent a malformed response: {reason}", apiservice=self.name,
                          reason=describe_failure(error))
                write_status(request, bad_gateway(MALFORMED_RESPONSE))
                return
            self._count_error("timeout" if expired else "unreachable")
            if expired and not discovery:
                write_status(request, timeout_status())
                return
            reason = "context deadline exceeded" if expired else public_reason(error)
            _log.info("backend of {apiservice} unreachable: {reason}", apiservice=self.name,
                      reason="context deadline exceeded" if expired else describe_failure(error))
            self._on_unreachable(self.name)
            write_status(request, service_unavailable(f"error trying to reach service: {reason}"))
            return
        if self._meter is not None:
            self._meter.observe(self._clock.seconds() - sent)
        if gone:
            response.deliverBody(_Discard())
            return
        if response.version[0] != b"HTTP" or not 100 <= response.code <= 999:
            # Twisted's client takes any protocol name and any number; Go's refuses them.
            self._count_error("malformed")
            _log.info("backend of {apiservice} sent a malformed status line: {version!r} {code}",
                      apiservice=self.name, version=response.version, code=response.code)
            response.deliverBody(_Discard())
            write_status(request, bad_gateway(MALFORMED_RESPONSE))
            return
        if 300 <= response.code < 400 and response.headers.getRawHeaders("location"):
            self._count_error("redirect")
            response.deliverBody(_Discard())
            write_status(request, bad_gateway("the backend attempted to redirect this request, which is not "
                                              "permitted"))
            return
        before = request.responseHeaders.copy()
        # A reply without Content-Type is relayed without one, not labelled text/html by Twisted.
        request.defaultContentType = None  # type: ignore[attr-defined]
        request.setResponseCode(response.code, response.phrase)
        for raw_name, values in response.headers.getAllRawHeaders():
            name = raw_name.decode("latin-1").lower()
            if name in HOP_BY_HOP or name.startswith("access-control-allow-"):
                continue
            request.responseHeaders.setRawHeaders(raw_name, list(values))
        # Twisted's client keeps Content-Length out of the headers; without it the body would be re-chunked.
        if (isinstance(response.length, int) and request.method != b"HEAD"
                and response.code not in (204, 304) and response.code >= 200):
            request.responseHeaders.setRawHeaders(b"Content-Length", [str(response.length).encode("ascii")])
        done: defer.Deferred[None] = defer.Deferred()
        relay = _BodyRelay(request, done)
        body_relay = relay
        request.notifyFinish().addErrback(lambda _: body_relay.abort())  # type: ignore[attr-defined]
        response.deliverBody(relay)
        try:
            await done
        except Exception as error:
            if gone:
                return
            if not expired and not request.startedWriting and is_malformed_response(error):  # type: ignore[attr-defined]
                # The body's framing was broken before any of it was relayed: the answer can still be a 502.
                self._count_error("malformed")
                _log.info("backend of {apiservice} sent a malformed response body: {reason}",
                          apiservice=self.name, reason=describe_failure(error))
                request.responseHeaders = before
                write_status(request, bad_gateway(MALFORMED_RESPONSE))
                return
            _log.info("backend of {apiservice} broke off its response: {error}", apiservice=self.name,
                      error="timed out" if expired else describe_failure(error))
            request.loseConnection()  # type: ignore[attr-defined]
            return
        if not gone and not request.finished:  # type: ignore[attr-defined]
            request.finish()


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory, written in one go (FileBodyProducer would take a reactor turn per chunk)."""

    def __init__(self, data: bytes):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(StreamProtocol):
    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        pass


def _client_ip(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", "") or "")
