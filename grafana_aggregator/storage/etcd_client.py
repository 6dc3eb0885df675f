# -*- test-case-name: tests.test_etcd_client -*-
"""A Twisted-native etcd v3 client over etcd's JSON gateway (`/v3/kv/*`, `/v3/watch`, `/v3/maintenance/status`).

Why the JSON gateway: it ships in every etcd release (3.4 serves it at `/v3/`, as well as `/v3beta/`), it is
plain HTTP/1.1 that treq and Twisted's Agent speak without threads, and the HTTP client can be injected so
unit tests use StubTreq or fakes.  A gRPC client would need a thread pool (grpcio blocks) or an HTTP/2 gRPC
stack Twisted does not have; the gateway costs a JSON and base64 round trip, a few microseconds an object.

Failover: each call starts at the endpoint that answered last and moves on to the next when one cannot be
reached.  A read (range, status) is retried on the next endpoint after any transport failure.  A write (txn) is
retried only when its connection was never made (refused, unreachable, connect timeout), because then etcd
cannot have applied it; once it may have reached etcd, its outcome is unknown and the caller gets a
StorageUnavailableError rather than a second compare-and-swap that could answer AlreadyExists for its own write.

Every call has one deadline (across its retries): past it the caller gets a StorageTimeoutError (504), and an
etcd that cannot be reached at all gives a StorageUnavailableError (503).  A timeout also moves the client on, so
a member that hangs (stopped, partitioned: its connections open but never answered) costs one call, not every
call; calls failing together on one endpoint move on once.  Watches are streams re-established
on the next endpoint from the last revision seen plus one, so no event is missed or repeated.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, cast
from typing import Protocol as TypingProtocol

import treq
from attrs import define, field
from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import PotentialDataLoss
from twisted.web.client import ResponseDone, ResponseFailed
from OpenSSL.SSL import Error as SSLError
from treq.client import HTTPClient as HTTPClient_
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, trustRootFromCertificates
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import implementer

from .interface import ExpiredError, StorageFullError, StorageTimeoutError, StorageUnavailableError

_log = Logger()

#: Seconds a call to etcd may take, across its retries, before the caller gets a 504.
DEFAULT_TIMEOUT = 5.0
#: The gateway's path prefix in etcd 3.4 and later.
GATEWAY = "/v3/"
#: gRPC status codes etcd's gateway answers with.
_OUT_OF_RANGE = 11
_RESOURCE_EXHAUSTED = 8
#: Seconds before a broken watch stream is opened again, doubling up to the maximum.
WATCH_RETRY_FIRST = 0.05
WATCH_RETRY_MAX = 2.0


class HTTPClient(TypingProtocol):
    """What the client needs of treq's HTTPClient (StubTreq has it too)."""

    def post(self, url: str, /, **kwargs: Any) -> Deferred[Any]: ...


def b64(data: bytes) -> str:
    """etcd's JSON encoding of bytes."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Bytes from etcd's JSON encoding."""
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with prefix (prefix must not end in 0xff)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _never_sent(failure_value: BaseException) -> bool:
    """Whether a request failed before its connection existed, so etcd cannot have seen it."""
    return isinstance(failure_value, (ConnectError, ConnectingCancelledError, DNSLookupError))


@define
class EtcdClient:
    """Calls etcd's JSON gateway on `endpoints` (`http://host:port` or `https://...`), one deadline a call.

    :param http: treq's HTTPClient (with a TLS Agent for mutual TLS), or StubTreq in tests.
    :param clock: time for the deadlines and the watch retries.
    """

    endpoints: Sequence[str]
    http: HTTPClient
    clock: IReactorTime
    timeout: float = DEFAULT_TIMEOUT
    #: The connection pool behind http, closed by `close` (None when the caller owns it).
    pool: HTTPConnectionPool | None = None
    #: Index of the endpoint that answered last: every call starts there.
    _current: int = field(init=False, default=0)
    #: The watch streams open now (their members are checked by `check_watches`).
    _watches: set[EtcdWatch] = field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in self.endpoints]

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to first."""
        return self.endpoints[self._current]

    def rotate(self, failed: str | None = None) -> None:
        """Move on to the next endpoint (the current one failed); when failed is given, only if it is still the
        current one (calls that fail together move on once, not once each, which could lead back to it)."""
        if failed is None or failed == self.endpoint:
            self._current = (self._current + 1) % len(self.endpoints)

    async def range(self, key: bytes, range_end: bytes | None = None, revision: int = 0,
                    count_only: bool = False) -> dict[str, Any]:
        """The keys from key (to range_end), at revision (0: the latest); ExpiredError when it was compacted."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = str(revision)
        if count_only:
            body["count_only"] = True
        return await self.call("kv/range", body, idempotent=True)

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]]) -> dict[str, Any]:
        """One transaction: success's requests when every compare holds, failure's otherwise."""
        return await self.call("kv/txn", {"compare": compare, "success": success, "failure": failure},
                               idempotent=False)

    async def compact(self, revision: int) -> dict[str, Any]:
        """Drop the history before revision (tests and operators use it)."""
        return await self.call("kv/compaction", {"revision": str(revision), "physical": True}, idempotent=True)

    async def status(self) -> dict[str, Any]:
        """The member's status (its version, leader, revision): the health probe."""
        return await self.call("maintenance/status", {}, idempotent=True)

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of ttl seconds: (its ID, the TTL etcd granted, which may be longer)."""
        answer = await self.call("lease/grant", {"TTL": str(ttl)}, idempotent=True)
        return int(answer["ID"]), int(answer.get("TTL", 0))

    async def lease_keepalive(self, lease: int) -> int:
        """Renew a lease: the seconds it now has left, 0 when etcd no longer knows it (it expired)."""
        answer = await self.call("lease/keepalive", {"ID": str(lease)}, idempotent=True)
        return int((answer.get("result") or {}).get("TTL", 0))

    async def lease_revoke(self, lease: int) -> None:
        """End a lease now, deleting the keys attached to it (a lease etcd no longer knows is already gone)."""
        try:
            await self.call("lease/revoke", {"ID": str(lease)}, idempotent=True)
        except StorageUnavailableError as error:
            if "lease not found" not in str(error):
                raise

    async def close(self) -> None:
        """Close the pooled connections (the store calls it when it closes)."""
        if self.pool is not None:
            await self.pool.closeCachedConnections()

    async def call(self, method: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST body to the gateway's method, failing over as the module says, within one deadline."""
        data = json.dumps(body, separators=(",", ":")).encode("ascii")
        deadline = self.clock.seconds() + self.timeout
        problems: list[str] = []
        for _ in range(len(self.endpoints)):
            endpoint = self.endpoint
            remaining = deadline - self.clock.seconds()
            if remaining <= 0:
                break
            attempt = Deferred.fromCoroutine(self._post(f"{endpoint}{GATEWAY}{method}", data))
            attempt.addTimeout(remaining, self.clock, onTimeoutCancel=_timed_out)
            try:
                return await attempt
            except (DeferredTimeoutError, CancelledError):
                self.rotate(endpoint)  # a member that hangs (stopped, partitioned) is not asked first again
                raise StorageTimeoutError(f"etcd ({endpoint}) did not answer {method} within {self.timeout:g} s") from None
            except _GatewayError as error:
                if error.code == _OUT_OF_RANGE:
                    raise ExpiredError(f"too old resource version: {error.message}") from None
                if error.code == _RESOURCE_EXHAUSTED:
                    raise StorageFullError(f"etcd refuses writes: {error.message}") from None
                if error.status < 500 or not idempotent:
                    raise StorageUnavailableError(f"etcd ({endpoint}) refused {method}: {error.message}") from None
                problems.append(f"{endpoint}: {error.message}")
            except Exception as error:
                if not (idempotent or _never_sent(error)):
                    self.rotate(endpoint)
                    raise StorageUnavailableError(
                        f"etcd ({endpoint}) went away during {method}; its outcome is unknown: {_describe(error)}"
                    ) from None
                problems.append(f"{endpoint}: {_describe(error)}")
            self.rotate(endpoint)
        if not problems:
            raise StorageTimeoutError(f"etcd did not answer {method} within {self.timeout:g} s")
        raise StorageUnavailableError(f"etcd cannot be reached ({'; '.join(problems)})")

    async def _post(self, url: str, data: bytes) -> dict[str, Any]:
        response = await self.http.post(url, data=data, headers={b"Content-Type": [b"application/json"]})
        content = await treq.content(response)
        try:
            answer = json.loads(content)
        except ValueError:
            raise _GatewayError(response.code, 0, f"not JSON: {content[:200]!r}") from None
        if response.code != 200 or not isinstance(answer, dict) or "error" in answer:
            code = answer.get("code", 0) if isinstance(answer, dict) else 0
            message = answer.get("message") or answer.get("error") if isinstance(answer, dict) else str(answer)
            raise _GatewayError(response.code, code if isinstance(code, int) else 0, str(message))
        return answer

    def watch(self, key: bytes, range_end: bytes, start_revision: int,
              on_events: Callable[[list[dict[str, Any]], int], None],
              on_compacted: Callable[[int], None]) -> EtcdWatch:
        """Stream the changes of key..range_end from start_revision: see EtcdWatch."""
        watch = EtcdWatch(self, key, range_end, start_revision, on_events, on_compacted)
        self._watches.add(watch)
        watch.start()
        return watch

    async def check_watches(self, timeout: float) -> list[str]:
        """Ask each member a watch stream follows for its status; the streams of a member that does not answer
        within timeout open again on another endpoint, and those members are returned.

        A member that hangs (stopped, or cut off) keeps its connections open and sends nothing: a watch on it
        would stay silent, and a replica that only reads would never learn of other replicas' writes.
        """
        if len(self.endpoints) < 2:
            return []
        followed = sorted({w.endpoint for w in self._watches if w.connected and w.endpoint})
        silent = []
        for endpoint in followed:
            asking = Deferred.fromCoroutine(self._post(f"{endpoint}{GATEWAY}maintenance/status", b"{}"))
            asking.addTimeout(timeout, self.clock)
            try:
                await asking
            except Exception as error:
                silent.append(endpoint)
                for watch in [w for w in self._watches if w.endpoint == endpoint]:
                    _log.warn("etcd member {endpoint} does not answer ({why}): its watch stream opens again on "
                              "another member", endpoint=endpoint, why=_describe(error))
                    self.rotate(endpoint)
                    watch.restart()
        return silent


class _GatewayError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _timed_out(result: object, timeout: float) -> Any:
    """The deadline cancelled the attempt: a timeout, whatever the cancel became (treq's Agent wraps it in
    ResponseNeverReceived once the request was sent)."""
    raise DeferredTimeoutError(timeout, "etcd call")


def _describe(error: BaseException) -> str:
    if isinstance(error, ResponseFailed):
        return "; ".join(str(getattr(reason, "value", reason)) for reason in error.reasons) or "the response failed"
    return str(error) or type(error).__name__


@define(eq=False)
class EtcdWatch:
    """One watch stream: events go to on_events(events, revision) in order, each once.

    When the stream ends or fails it is opened again (after a short, growing pause, on the next endpoint) from
    the last revision delivered plus one.  When etcd has compacted that revision, on_compacted(compact_revision)
    is called and the watch stops: the caller must list again.  `revision` is the highest revision known to be
    fully delivered (the events' and etcd's progress notifications').
    """

    client: EtcdClient
    key: bytes
    range_end: bytes
    next_revision: int
    on_events: Callable[[list[dict[str, Any]], int], None]
    on_compacted: Callable[[int], None]
    #: Whether the stream is open and etcd said it created the watch.
    connected: bool = field(init=False, default=False)
    #: The endpoint the stream was opened on ("" before).
    endpoint: str = field(init=False, default="")
    _stopped: bool = field(init=False, default=False)
    _stream: Deferred[Any] | None = field(init=False, default=None)
    _retry: IDelayedCall | None = field(init=False, default=None)
    _delay: float = field(init=False, default=WATCH_RETRY_FIRST)
    _buffer: bytes = field(init=False, default=b"")
    _body: _StreamBody | None = field(init=False, default=None)

    def start(self) -> None:
        """Open the stream from next_revision."""
        self._retry = None
        self._buffer = b""
        self._body = None
        request = {"create_request": {"key": b64(self.key), "range_end": b64(self.range_end),
                                      "start_revision": str(self.next_revision), "prev_kv": True,
                                      "progress_notify": True}}
        self.endpoint = self.client.endpoint
        url = f"{self.endpoint}{GATEWAY}watch"
        posting = self.client.http.post(url, data=json.dumps(request).encode("ascii"),
                                        headers={b"Content-Type": [b"application/json"]})
        posting.addTimeout(self.client.timeout, self.client.clock)
        self._stream = posting
        posting.addCallback(self._opened)
        posting.addBoth(self._ended, url)

    def _opened(self, response: IResponse) -> Deferred[None]:
        if response.code != 200:
            raise StorageUnavailableError(f"etcd answered the watch with HTTP {response.code}")
        body = _StreamBody(self._received)
        self._body = body
        response.deliverBody(body)
        return body.done

    def _received(self, data: bytes) -> None:
        if self._stopped:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                self._message(json.loads(line))
        if self._buffer.strip():
            try:
                message = json.loads(self._buffer)
            except ValueError:
                return  # not complete yet
            self._buffer = b""
            self._message(message)

    def _message(self, message: dict[str, Any]) -> None:
        result = message.get("result")
        if not isinstance(result, dict):
            raise StorageUnavailableError(f"etcd ended the watch: {message.get('error', message)}")
        if result.get("compact_revision") and result.get("canceled"):
            self._stopped = True
            self.connected = False
            self.client._watches.discard(self)
            self.on_compacted(int(result["compact_revision"]))
            return
        if result.get("created"):
            self.connected = True
            self._delay = WATCH_RETRY_FIRST
            return
        events = result.get("events") or []
        if events:
            last = int(events[-1]["kv"]["mod_revision"])
            self.next_revision = last + 1
            self.on_events(events, last)
        else:
            # A progress notification: every change up to the header's revision has been delivered.
            revision = int(result.get("header", {}).get("revision", 0))
            if revision >= self.next_revision:
                self.next_revision = revision + 1
                self.on_events([], revision)

    def _ended(self, result: object, url: str) -> None:
        self._stream = None
        self.connected = False
        if self._stopped:
            return
        _log.warn("the etcd watch on {url} from revision {revision} ended ({why}); opening it again",
                  url=url, revision=self.next_revision,
                  why=_describe(result.value) if hasattr(result, "value") else "the stream closed")
        self.client.rotate(url[:-len(GATEWAY + "watch")])
        self._retry = self.client.clock.callLater(self._delay, self.start)
        self._delay = min(self._delay * 2, WATCH_RETRY_MAX)

    def restart(self) -> None:
        """Close the stream, which looks stalled (a member that hangs keeps the connection and sends nothing), so
        that it opens again on the next endpoint from the last revision delivered plus one."""
        if self._stopped:
            return
        if self._body is not None:
            self._body.close()
        elif self._stream is not None:
            self._stream.cancel()

    def stop(self) -> None:
        """Close the stream and open it no more."""
        self._stopped = True
        self.connected = False
        self.client._watches.discard(self)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._body is not None:
            self._body.close()
        if self._stream is not None:
            self._stream.cancel()


class _StreamBody(Protocol):
    """Hands a response body's data to a callback as it comes, and can close its connection."""

    def __init__(self, received: Callable[[bytes], None]):
        self._received = received
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        try:
            self._received(data)
        except Exception:
            self.done.errback(Failure())
            self.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            if reason.check(ResponseDone, PotentialDataLoss):
                self.done.callback(None)
            else:
                self.done.errback(reason)

    def close(self) -> None:
        """Stop the body (closing its connection)."""
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]


class _QuietClientFactory(_HTTP11ClientFactory):
    """Twisted's per-connection client factory without its "Starting/Stopping factory" lines (two a connection)."""

    noisy = False


@implementer(IPolicyForHTTPS)
class EtcdTLSPolicy:
    """TLS to etcd: its serving certificate checked against the CA bundle, our client certificate presented."""

    def __init__(self, ca_pem: bytes | None, client_pem: bytes | None):
        trust = None
        if ca_pem is not None:
            certificates = [Certificate.loadPEM(block) for block in _pem_blocks(ca_pem)]
            if not certificates:
                raise ValueError("the CA bundle holds no certificate")
            trust = trustRootFromCertificates(certificates)
        self._trust = trust
        self._client = PrivateCertificate.loadPEM(client_pem) if client_pem is not None else None

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust, clientCertificate=self._client)


def _pem_blocks(pem: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [block + end for block in pem.split(end) if b"-----BEGIN CERTIFICATE-----" in block]


def make_client(reactor: Any, endpoints: Sequence[str], *, cafile: str | None = None, certfile: str | None = None,
                keyfile: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> EtcdClient:
    """An EtcdClient over a pooled Agent, with mutual TLS when the files are given (OSError, ValueError if bad)."""
    ca_pem = client_pem = None
    if cafile:
        with open(cafile, "rb") as handle:
            ca_pem = handle.read()
    if certfile and keyfile:
        with open(certfile, "rb") as handle:
            client_pem = handle.read()
        with open(keyfile, "rb") as handle:
            client_pem += b"\n" + handle.read()
    try:
        policy = EtcdTLSPolicy(ca_pem, client_pem)
    except SSLError as error:
        raise ValueError(f"cannot load the etcd TLS files: {error}") from None
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    pool._factory = _QuietClientFactory
    agent = Agent(reactor, contextFactory=policy, pool=pool, connectTimeout=timeout)
    return EtcdClient(endpoints, cast(HTTPClient, HTTPClient_(agent)), reactor, timeout, pool)
