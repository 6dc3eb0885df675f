"""The aggregation proxy: a remote group-version's requests, streamed to its backend with the caller's identity.

Behaviour follows kube-aggregator's proxy handler: an APIService that is not Available is answered
503 without contacting the backend; the caller's credentials and any identity headers it sent are
stripped and replaced by `X-Remote-*` headers for the authenticated user, over mutual TLS with the
proxy client certificate; redirects are refused (502); connection upgrades are refused; discovery
requests (`/apis/<g>/<v>`) time out after 5 s; bodies stream both ways with back-pressure, and a
client that goes away cancels the upstream request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IRequest, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from ..apimachinery.status import StatusError, encode_json
from ..identity.auth import UserInfo
from ..registry.apiservice import is_available
from .upstream import Backend, BackendUnresolvable, resolve_backend

_log = Logger()

#: A proxied request that is not a watch must complete within this many seconds (kube's --request-timeout).
REQUEST_TIMEOUT = 60.0
#: Request bodies up to this size are sent from memory; larger ones are streamed from Twisted's spool file.
SMALL_BODY = 1024 * 1024
#: Discovery requests to a backend (`/apis/<group>/<version>`) must answer within this many seconds.
DISCOVERY_TIMEOUT = 5.0

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade",
})
#: Request headers that carry credentials or identity and must never reach a backend from the client.
_STRIPPED_PREFIXES = ("x-remote-", "impersonate-")
_STRIPPED = frozenset({"authorization", "host", "content-length"})
#: Characters kept as they are in an extra key (RFC 7230 token characters, minus '%').
_TOKEN_SAFE = "!#$&'*+-.^_`|~"


def escape_extra_key(key: str) -> str:
    """Percent-encode an extra key for an `X-Remote-Extra-` header name, as client-go does."""
    return quote(key, safe=_TOKEN_SAFE)


def forward_headers(incoming: Headers, user: UserInfo, client_ip: str, backend_host: str, path: str,
                    extra_stripped: frozenset[str] = frozenset()) -> Headers:
    """The headers sent to a backend: the client's, minus credentials, identity and hop-by-hop ones, plus the caller's identity."""
    connection_named = {
        token.strip().lower()
        for value in incoming.getRawHeaders("connection", [])
        for token in value.split(",")
    }
    outgoing = Headers()
    forwarded_for: list[str] = []
    for raw_name, values in incoming.getAllRawHeaders():
        name = raw_name.decode("latin-1").lower()
        if (name in HOP_BY_HOP or name in _STRIPPED or name in connection_named or name in extra_stripped
                or name.startswith(_STRIPPED_PREFIXES)):
            continue
        if name == "x-forwarded-for":
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


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def request_timeout(request: IRequest, default: float) -> float | None:
    """How long a proxied request may take: None for watches, else `?timeout=` (a Go duration) capped at default."""
    query = parse_qs(request.uri.partition(b"?")[2].decode("latin-1"), keep_blank_values=True)
    path = request.uri.split(b"?", 1)[0].decode("latin-1")
    watch = query.get("watch", [None])[0]
    if (watch is not None and watch.lower() not in ("0", "false")) or "/watch/" in path:
        return None
    for text in query.get("timeout", []):
        match = _DURATION.match(text.strip())
        if match:
            return min(default, float(match.group(1)) * _UNITS[match.group(2)])
    return default


def is_discovery_path(path: str) -> bool:
    """Whether a path is a group-version's discovery document, `/apis/<g>/<v>` (trailing slash allowed)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    return len(parts) == 3 and parts[0] == "apis"


def _status(request: IRequest, error: StatusError) -> None:
    body = encode_json(error.to_status())
    request.setResponseCode(error.code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.write(body)
    request.finish()


def service_unavailable(message: str = "service unavailable") -> StatusError:
    """503 as the aggregator answers for a backend it cannot use."""
    return StatusError(503, message, "ServiceUnavailable")


class _BodyRelay(Protocol):
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


class ProxyResource(Resource):
    """Everything under `/apis/<group>/<version>` of one remote APIService."""

    isLeaf = True

    def __init__(
        self,
        apiservice: dict[str, Any],
        externalname: dict[str, Any] | None,
        agent_for: Callable[[Backend], IAgent],
        clock: IReactorTime,
        user_of: Callable[[IRequest], UserInfo | None],
        on_unreachable: Callable[[str], None] = lambda name: None,
        extra_stripped: frozenset[str] = frozenset(),
        request_timeout: float = REQUEST_TIMEOUT,
        metrics: Any = None,
        limiter: defer.DeferredSemaphore | None = None,
    ):
        super().__init__()
        self._apiservice = apiservice
        self._externalname = externalname
        self._agent_for = agent_for
        # An instance serves one version of the APIService and its ExternalName, so the backend is worked out once.
        self._backend: Backend | None = None
        self._base_url = b""
        self._unresolvable = BackendUnresolvable()
        try:
            self._backend = resolve_backend(apiservice, externalname)
            self._base_url = self._backend.url.encode("ascii")
        except BackendUnresolvable as error:
            self._unresolvable = error
        self._clock = clock
        self._user_of = user_of
        self._on_unreachable = on_unreachable
        self._extra_stripped = extra_stripped
        self._request_timeout = request_timeout
        self._metrics = metrics
        #: Caps the concurrent non-watch requests to this APIService's backend (shared by its resources).
        self._limiter = limiter

    def serves(self, apiservice: dict[str, Any], externalname: dict[str, Any] | None) -> bool:
        """Whether this proxy was made for exactly these objects (the index replaces an object when it changes)."""
        return self._apiservice is apiservice and self._externalname is externalname

    @property
    def name(self) -> str:
        return str(self._apiservice.get("metadata", {}).get("name", ""))

    def render(self, request: IRequest) -> int:
        defer.Deferred.fromCoroutine(self._proxy(request)).addErrback(self._failed, request)
        return NOT_DONE_YET

    def _count_error(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.count_upstream_error(self.name, reason)

    def _failed(self, failure: Failure, request: IRequest) -> None:
        _log.failure("proxying to {apiservice} failed", failure, apiservice=self.name)
        if not request.finished and not getattr(request, "_disconnected", False):  # type: ignore[attr-defined]
            if request.startedWriting:  # type: ignore[attr-defined]
                request.loseConnection()  # type: ignore[attr-defined]
            else:
                _status(request, StatusError(500, "Internal error occurred: the proxy failed (see the server log)"))

    async def _proxy(self, request: IRequest) -> None:
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))  # type: ignore[attr-defined]
        request.upstream = self.name  # type: ignore[attr-defined]
        accounting = getattr(getattr(getattr(request, "channel", None), "site", None), "accounting", None)
        ticket = getattr(request, "accounting_ticket", None)
        if accounting is not None and ticket is not None:
            accounting.mark_proxied(ticket, self.name)
        if not is_available(self._apiservice):
            _status(request, service_unavailable())
            return
        if any("upgrade" in v.lower() for v in request.requestHeaders.getRawHeaders("connection", [])):
            _status(request, StatusError(400, "connection upgrades (exec, attach, port-forward, websockets) are not "
                                              "supported through this aggregator", "BadRequest"))
            return
        user = self._user_of(request)
        if user is None:
            _status(request, StatusError(500, "Internal error occurred: missing user"))
            return
        backend = self._backend
        try:
            if backend is None:
                raise self._unresolvable
            agent = self._agent_for(backend)
        except BackendUnresolvable as error:
            _log.info("no backend for {apiservice}: {error}", apiservice=self.name, error=str(error))
            _status(request, service_unavailable())
            return
        limiter = self._limiter
        if limiter is None or request_timeout(request, self._request_timeout) is None:
            # Watches are long-running: they would hold a slot for as long as they stay open.
            await self._forward(request, user, backend, agent, gone)
            return
        await limiter.acquire()
        try:
            if not gone:
                await self._forward(request, user, backend, agent, gone)
        finally:
            limiter.release()

    async def _forward(self, request: IRequest, user: UserInfo, backend: Backend, agent: IAgent,
                       gone: list[bool]) -> None:
        """Send the request to the backend and relay its answer."""
        uri = request.uri.decode("latin-1")
        path = uri.split("?", 1)[0]
        headers = forward_headers(request.requestHeaders, user, _client_ip(request), f"{backend.host}:{backend.port}",
                                  path, self._extra_stripped)
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
            upstream = agent.request(request.method, self._base_url + request.uri, headers, producer)
        except ValueError as error:
            _status(request, StatusError(400, f"the request cannot be forwarded: {error}", "BadRequest"))
            return
        request.notifyFinish().addErrback(lambda _: upstream.cancel())  # type: ignore[attr-defined]
        discovery = is_discovery_path(path)
        limit = DISCOVERY_TIMEOUT if discovery else request_timeout(request, self._request_timeout)
        expired: list[bool] = []
        relay: _BodyRelay | None = None

        def time_out() -> None:
            expired.append(True)
            if relay is None:
                upstream.cancel()
            else:
                relay.abort()

        timer = self._clock.callLater(limit, time_out) if limit is not None else None
        sent = self._clock.seconds()
        try:
            response: IResponse = await upstream
        except Exception as error:
            if timer is not None and timer.active():
                timer.cancel()
            if gone:
                return
            self._count_error("timeout" if expired else "unreachable")
            if expired and not discovery:
                _status(request, StatusError(504, "request did not complete within the allotted timeout", "Timeout",
                                             {}))
                return
            reason = _describe(error, timed_out=bool(expired))
            _log.info("backend of {apiservice} unreachable: {reason}", apiservice=self.name, reason=reason)
            self._on_unreachable(self.name)
            _status(request, service_unavailable(f"error trying to reach service: {reason}"))
            return
        if self._metrics is not None:
            self._metrics.observe_upstream(self.name, self._clock.seconds() - sent)
        if gone:
            if timer is not None and timer.active():
                timer.cancel()
            response.deliverBody(_Discard())
            return
        if 300 <= response.code < 400 and response.headers.getRawHeaders("location"):
            self._count_error("redirect")
            if timer is not None and timer.active():
                timer.cancel()
            response.deliverBody(_Discard())
            _status(request, StatusError(502, "the backend attempted to redirect this request, which is not permitted",
                                         "BadGateway"))
            return
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
            if not gone:
                _log.info("backend of {apiservice} broke off its response: {error}", apiservice=self.name,
                          error="timed out" if expired else str(error))
                request.loseConnection()  # type: ignore[attr-defined]
            return
        finally:
            if timer is not None and timer.active():
                timer.cancel()
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


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        pass


def _client_ip(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", "") or "")


def _describe(error: Exception, timed_out: bool) -> str:
    if timed_out:
        return "context deadline exceeded"
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) or type(r.value).__name__ for r in reasons)
    return str(error) or type(error).__name__
