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
from .twisted_seam import (BackendRequests, canonical_name, host_value, raise_buffer, sanitize, set_trusted,
                           trusted_headers)
from .upstream import DISCOVERY_TIMEOUT, Backend, describe_failure, is_malformed_response, public_reason

_log = Logger()

#: Request bodies up to this size are sent from memory; larger ones are streamed from Twisted's spool file.
SMALL_BODY = 1024 * 1024
#: A large request body is read from the spool file in steps of this size (Twisted's 64 KiB costs a turn each).
UPLOAD_READ_SIZE = 256 * 1024
#: While a large response body is relayed, both sockets read and queue this much at a time (Twisted's 64 KiB
#: paused and resumed the backend every 64 KiB: two epoll calls and a reactor turn each time).
RELAY_BUFFER = 256 * 1024
_CONTENT_LENGTH = b"Content-Length"
_HOST = b"Host"

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


#: What `forward_headers` does with a client header, by its name as the client's Headers keep it.
_FORWARD, _DROP, _FORWARDED_FOR = 0, 1, 2
#: Whether a backend's response header is relayed, by its canonical name (bounded like RequestNames).
_RESPONSE_NAMES: dict[bytes, bool] = {}
_NAMES_LIMIT = 10000
#: The identity headers of recent callers, as canonical names and sanitised values (bounded).
_IDENTITY: dict[UserInfo, list[tuple[bytes, list[bytes]]]] = {}
_X_FORWARDED_FOR = canonical_name("X-Forwarded-For")
_X_FORWARDED_PROTO = canonical_name("X-Forwarded-Proto")
_X_FORWARDED_HOST = canonical_name("X-Forwarded-Host")
_X_FORWARDED_URI = canonical_name("X-Forwarded-Uri")


class RequestNames:
    """What happens to each client header name on its way to a backend, worked out once per name.

    `extra_stripped` holds configured identity header names; one ending in `-` is a prefix.  The
    answers are kept per canonical name (bounded: emptied when full, as Twisted bounds its own).
    """

    def __init__(self, extra_stripped: frozenset[str] = frozenset()):
        self.spelt = frozenset(header_spelling(name) for name in extra_stripped)
        self.prefixes = _STRIPPED_PREFIXES + tuple(name for name in self.spelt if name.endswith("-"))
        self._known: dict[bytes, tuple[str, int]] = {}

    def classify(self, raw_name: bytes) -> tuple[str, int]:
        """The name as a CGI-style backend spells it, and whether it is forwarded, dropped or an X-Forwarded-For."""
        known = self._known.get(raw_name)
        if known is not None:
            return known
        lowered = raw_name.decode("latin-1").lower()
        name = header_spelling(lowered)
        if name in HOP_BY_HOP or name in _STRIPPED or name in self.spelt or name.startswith(self.prefixes):
            action = _DROP
        elif name in _SET_HERE:
            action = _FORWARDED_FOR if lowered == "x-forwarded-for" else _DROP
        else:
            action = _FORWARD
        if len(self._known) >= _NAMES_LIMIT:
            self._known.clear()
        known = self._known[raw_name] = (name, action)
        return known


def relayed_response_header(raw_name: bytes) -> bool:
    """Whether a backend's response header goes to the client: not hop-by-hop, not `Access-Control-Allow-*`."""
    known = _RESPONSE_NAMES.get(raw_name)
    if known is None:
        name = raw_name.decode("latin-1").lower()
        known = not (name in HOP_BY_HOP or name.startswith("access-control-allow-"))
        if len(_RESPONSE_NAMES) >= _NAMES_LIMIT:
            _RESPONSE_NAMES.clear()
        _RESPONSE_NAMES[raw_name] = known
    return known


def _text(value: str) -> list[bytes]:
    return [sanitize(value.encode("utf-8"))]


def identity_headers(user: UserInfo) -> list[tuple[bytes, list[bytes]]]:
    """The `X-Remote-*` headers of a caller, worked out once per caller (users are immutable)."""
    known = _IDENTITY.get(user)
    if known is not None:
        return known
    headers = [(canonical_name("X-Remote-User"), _text(user.name))]
    if user.uid:
        headers.append((canonical_name("X-Remote-Uid"), _text(user.uid)))
    if user.groups:
        headers.append((canonical_name("X-Remote-Group"), [sanitize(g.encode("utf-8")) for g in user.groups]))
    for key, extra_values in sorted(user.extra.items()):
        headers.append((canonical_name(f"X-Remote-Extra-{escape_extra_key(key)}"),
                        [sanitize(v.encode("utf-8")) for v in extra_values]))
    if len(_IDENTITY) >= 1000:
        _IDENTITY.clear()
    _IDENTITY[user] = headers
    return headers


def _utf8_of_latin1(value: bytes) -> bytes:
    """A raw value as it reads once decoded as Latin-1 and stored as text (what the headers always carried)."""
    return value if value.isascii() else value.decode("latin-1").encode("utf-8")


def forward_headers(incoming: Headers, user: UserInfo, client_ip: str, backend_host: str, path: str,
                    extra_stripped: frozenset[str] = frozenset()) -> Headers:
    """The headers sent to a backend: the client's, minus credentials, identity and hop-by-hop ones, plus the caller's identity.

    Names are compared as a CGI-style backend reads them (`header_spelling`).  `extra_stripped` holds
    configured identity header names; one ending in `-` is a prefix (`X-Grafana-Extra-`).
    """
    return _forward_headers(incoming, user, client_ip.encode("utf-8"), sanitize(backend_host.encode("utf-8")),
                            _utf8_of_latin1(path.encode("latin-1")), RequestNames(extra_stripped))


def _forward_headers(incoming: Headers, user: UserInfo, client_ip: bytes, backend_host: bytes, path: bytes,
                     names: RequestNames) -> Headers:
    connection = incoming.getRawHeaders(b"connection")
    connection_named: set[str] = set()
    if connection:
        connection_named = {header_spelling(token.strip()) for value in connection
                            for token in value.decode("latin-1").split(",")}
    items: list[tuple[bytes, list[bytes]]] = []
    forwarded_for: list[bytes] | None = None
    for raw_name, values in incoming.getAllRawHeaders():
        name, action = names.classify(raw_name)
        if action == _DROP or (connection_named and name in connection_named):
            continue
        if action == _FORWARD:
            items.append((raw_name, list(values)))
        else:
            if forwarded_for is None:
                forwarded_for = []
            forwarded_for.extend(values)
    # Fresh lists: the cached ones must never be reached through a Headers that someone appends to.
    items.extend([(name, list(values)) for name, values in identity_headers(user)])
    if forwarded_for:
        joined = ", ".join([*(v.decode("latin-1") for v in forwarded_for), client_ip.decode("utf-8")])
        items.append((_X_FORWARDED_FOR, [sanitize(joined.encode("utf-8"))]))
    else:
        items.append((_X_FORWARDED_FOR, [sanitize(client_ip)]))
    items.append((_X_FORWARDED_PROTO, [b"https"]))
    items.append((_X_FORWARDED_HOST, [backend_host]))
    items.append((_X_FORWARDED_URI, [sanitize(path)]))
    return trusted_headers(items)


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

    def __init__(self, exchange: _Exchange, large: bool):
        self._exchange: _Exchange | None = exchange
        self._request = exchange.request
        self._large = large
        self.transport: Any = None

    def connectionMade(self) -> None:
        self._request.registerProducer(self.transport, True)  # type: ignore[attr-defined]
        if self._large:
            # Larger reads from the backend and a larger queue to the client: far fewer pauses, polls and reads.
            raise_buffer(self.transport, RELAY_BUFFER)
            raise_buffer(getattr(self._request, "channel", None), RELAY_BUFFER)

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        try:
            self._request.unregisterProducer()  # type: ignore[attr-defined]
        except Exception:
            pass
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            # Dropped first: the exchange refers to this relay, and a finished exchange is then freed by reference
            # counting rather than left as a cycle for the garbage collector.
            exchange.body_over(reason)

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
        self._names = RequestNames(extra_stripped)
        self._base_url = backend.url.encode("ascii")
        self._requests = BackendRequests(agent, self._base_url)
        #: The Host header Twisted's Agent would add (by copying every header) when it is missing.
        self._host = host_value(self._base_url)
        self._forwarded_host = f"{backend.host}:{backend.port}"
        self._forwarded_host_value = sanitize(self._forwarded_host.encode("utf-8"))

    def forward(self, request: IRequest, user: UserInfo, long_running: bool, deadline: Deadline | None) -> None:
        """Answer the request with the backend's response (or a Status); returns at once, the request goes on."""
        exchange = _Exchange(self, request, user, deadline)
        shared = getattr(request, "when_over", None)  # the Site's one notifyFinish per request, when it has one
        if shared is not None:
            shared(exchange.request_over)
        else:
            request.notifyFinish().addBoth(exchange.request_over)  # type: ignore[attr-defined]
        try:
            exchange.start(long_running)
        except Exception:
            exchange.crashed(Failure())

    def _count_error(self, reason: str) -> None:
        if self._meter is not None:
            self._meter.count_error(reason)

    def _failed(self, failure: Failure, request: IRequest, gone: bool) -> None:
        _log.failure("proxying to {apiservice} failed", failure, apiservice=self.name)
        if not gone:
            if request.startedWriting:  # type: ignore[attr-defined]
                request.loseConnection()  # type: ignore[attr-defined]
            else:
                write_status(request, internal_error("the proxy failed (see the server log)"))


class _Exchange:
    """One proxied request, from the client's request to the backend's last byte, as plain callbacks.

    The limiter's slot (when one was taken) is released once, by `end`, whichever way the exchange ends.
    """

    def __init__(self, proxy: Proxy, request: IRequest, user: UserInfo, deadline: Deadline | None):
        self.proxy = proxy
        self.request = request
        self.user = user
        self.deadline = deadline
        #: The client's request is over (answered, or the client went away).
        self.gone = False
        #: The request's deadline passed while the backend was being asked.
        self.expired = False
        self.discovery = False
        self.sent = 0.0
        self.upstream: defer.Deferred[IResponse] | None = None
        self.relay: _BodyRelay | None = None
        self._release: Callable[[], None] | None = None
        #: The response headers before the backend's were copied in (restored for a 502 on a malformed body).
        self._before: list[tuple[bytes, list[bytes]]] = []

    def request_over(self, result: object) -> None:
        """The client's request finished or its connection was lost; a lost client cancels the backend request."""
        self.gone = True
        if isinstance(result, Failure):
            if self.relay is not None:
                self.relay.abort()
            elif self.upstream is not None:
                self.upstream.cancel()

    def end(self) -> None:
        """The exchange is over: give back the limiter's slot (once)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def crashed(self, failure: Failure) -> None:
        self.end()
        self.proxy._failed(failure, self.request, self.gone)

    def start(self, long_running: bool) -> None:
        request = self.request
        connection = request.requestHeaders.getRawHeaders(b"connection")
        if connection and any(b"upgrade" in v.lower() for v in connection):
            write_status(request, StatusError(400, "connection upgrades (exec, attach, port-forward, websockets) are "
                                                   "not supported through this aggregator", "BadRequest"))
            return
        limiter = self.proxy._limiter
        if limiter is None or long_running:
            # Watches are long-running: they would hold a slot for as long as they stay open.
            self.send()
            return
        if limiter.tokens:
            # A free slot: take it as acquire() would, without a Deferred to carry it.
            limiter.tokens -= 1
            self._acquired(limiter)
            return
        limiter.acquire().addCallback(self._acquired).addErrback(self.crashed)

    def _acquired(self, limiter: defer.DeferredSemaphore) -> None:
        self._release = limiter.release
        if self.gone:
            self.end()
            return
        self.send()

    def send(self) -> None:
        """Send the request to the backend; its answer (or failure) comes to `responded` or `not_responded`."""
        proxy, request = self.proxy, self.request
        uri = request.uri
        raw_path = uri.split(b"?", 1)[0]
        path = raw_path.decode("latin-1")
        headers = _forward_headers(request.requestHeaders, self.user, _client_ip(request).encode("utf-8"),
                                   proxy._forwarded_host_value, _utf8_of_latin1(raw_path), proxy._names)
        producer: IBodyProducer | None = None
        body = request.content
        if body is not None:
            body.seek(0, 2)
            size = body.tell()
            body.seek(0)
            if size > SMALL_BODY:
                producer = _LargeBodyProducer(body, readSize=UPLOAD_READ_SIZE)
            elif size:
                producer = _BytesProducer(body.read())
        set_trusted(headers, _HOST, [proxy._host])
        try:
            upstream = proxy._requests.request(request.method, uri, headers, producer)
        except ValueError as error:
            write_status(request, StatusError(400, f"the request cannot be forwarded: {error}", "BadRequest"))
            self.end()
            return
        self.upstream = upstream
        self.discovery = is_discovery_path(path)
        if self.deadline is not None:
            self.deadline.limit(DISCOVERY_TIMEOUT if self.discovery else None, self.time_out)
        self.sent = proxy._clock.seconds()
        upstream.addCallbacks(self.responded, self.not_responded).addErrback(self.crashed)

    def time_out(self) -> None:
        self.expired = True
        if self.relay is not None:
            self.relay.abort()
        elif self.upstream is not None:
            self.upstream.cancel()

    def not_responded(self, failure: Failure) -> None:
        try:
            self._not_responded(failure.value or Exception(failure.getErrorMessage()))
        finally:
            self.end()

    def _not_responded(self, error: BaseException) -> None:
        if self.gone:
            return
        proxy, request, expired = self.proxy, self.request, self.expired
        if not expired and is_malformed_response(error):
            proxy._count_error("malformed")
            _log.info("backend of {apiservice} sent a malformed response: {reason}", apiservice=proxy.name,
                      reason=describe_failure(error))
            write_status(request, bad_gateway(MALFORMED_RESPONSE))
            return
        proxy._count_error("timeout" if expired else "unreachable")
        if expired and not self.discovery:
            write_status(request, timeout_status())
            return
        reason = "context deadline exceeded" if expired else public_reason(error)
        _log.info("backend of {apiservice} unreachable: {reason}", apiservice=proxy.name,
                  reason="context deadline exceeded" if expired else describe_failure(error))
        proxy._on_unreachable(proxy.name)
        write_status(request, service_unavailable(f"error trying to reach service: {reason}"))

    def responded(self, response: IResponse) -> None:
        proxy, request = self.proxy, self.request
        if proxy._meter is not None:
            proxy._meter.observe(proxy._clock.seconds() - self.sent)
        if self.gone:
            response.deliverBody(_Discard())
            self.end()
            return
        if response.version[0] != b"HTTP" or not 100 <= response.code <= 999:
            # Twisted's client takes any protocol name and any number; Go's refuses them.
            proxy._count_error("malformed")
            _log.info("backend of {apiservice} sent a malformed status line: {version!r} {code}",
                      apiservice=proxy.name, version=response.version, code=response.code)
            response.deliverBody(_Discard())
            write_status(request, bad_gateway(MALFORMED_RESPONSE))
            self.end()
            return
        if 300 <= response.code < 400 and response.headers.getRawHeaders(b"location"):
            proxy._count_error("redirect")
            response.deliverBody(_Discard())
            write_status(request, bad_gateway("the backend attempted to redirect this request, which is not "
                                              "permitted"))
            self.end()
            return
        headers = request.responseHeaders
        self._before = list(headers.getAllRawHeaders())
        # A reply without Content-Type is relayed without one, not labelled text/html by Twisted.
        request.defaultContentType = None  # type: ignore[attr-defined]
        request.setResponseCode(response.code, response.phrase)
        for raw_name, values in response.headers.getAllRawHeaders():
            if relayed_response_header(raw_name):
                set_trusted(headers, raw_name, list(values))
        length = response.length
        # Twisted's client keeps Content-Length out of the headers; without it the body would be re-chunked.
        if (isinstance(length, int) and request.method != b"HEAD"
                and response.code not in (204, 304) and response.code >= 200):
            set_trusted(headers, _CONTENT_LENGTH, [b"%d" % length])
        large = not isinstance(length, int) or length > RELAY_BUFFER
        self.relay = _BodyRelay(self, large)
        response.deliverBody(self.relay)

    def body_over(self, reason: Failure) -> None:
        """The backend's body ended (or broke off): finish the client's answer."""
        try:
            self._body_over(reason)
        except Exception:
            self.crashed(Failure())
        else:
            self.end()

    def _body_over(self, reason: Failure) -> None:
        request = self.request
        if reason.check(ResponseDone, PotentialDataLoss):
            if not self.gone and not request.finished:  # type: ignore[attr-defined]
                request.finish()
            return
        if self.gone:
            return
        proxy, error = self.proxy, reason.value or Exception(reason.getErrorMessage())
        if not self.expired and not request.startedWriting and is_malformed_response(error):  # type: ignore[attr-defined]
            # The body's framing was broken before any of it was relayed: the answer can still be a 502.
            proxy._count_error("malformed")
            _log.info("backend of {apiservice} sent a malformed response body: {reason}",
                      apiservice=proxy.name, reason=describe_failure(error))
            request.responseHeaders = trusted_headers(self._before)
            write_status(request, bad_gateway(MALFORMED_RESPONSE))
            return
        _log.info("backend of {apiservice} broke off its response: {error}", apiservice=proxy.name,
                  error="timed out" if self.expired else describe_failure(error))
        request.loseConnection()  # type: ignore[attr-defined]


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


class _LargeBodyProducer(FileBodyProducer):
    """A large request body from Twisted's spool file, written in bigger steps to a backend connection that queues
    more before pausing it (Twisted's 64 KiB paused it after every read)."""

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        raise_buffer(consumer, RELAY_BUFFER)
        done: defer.Deferred[None] = super().startProducing(consumer)
        return done


class _Discard(StreamProtocol):
    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        pass


def _client_ip(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", "") or "")
