"""Connections to backend API servers: where an APIService points, and mutual-TLS HTTP clients to reach it.

Both the proxy and the availability controller use these clients, so a probe travels exactly the
path a proxied request does.  The backend is verified with the APIService's caBundle, else the
configured default bundle, else the system roots, and its certificate must be valid for the
ExternalName host or for `<service>.<namespace>.svc`; verification is skipped only when the
APIService says `insecureSkipTLSVerify`.  Redirects are never followed (CVE-2022-3172).

What went wrong reaching a backend is told two ways: `describe_failure` gives the whole story (addresses,
exception texts) for the log, `public_reason` a fixed phrase in Go's words for the client, which never
shows a backend's address, bytes it sent or Python's text.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol, ParseError
from twisted.web.http import _MalformedChunkedDataError
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import IAgent, IPolicyForHTTPS
from zope.interface import implementer

from ..tls.certificates import KeyPair

_log = Logger()

#: Concurrent (non-watch) requests to one backend; more wait for a free slot.
MAX_CONNECTIONS_PER_BACKEND = 64
#: How long establishing a TCP connection to a backend may take.
CONNECT_TIMEOUT = 5.0
#: How long a backend may take to answer a discovery request, `/apis/<group>/<version>` (kube's 5 s, k/k#82146):
#: both proxied ones and the availability probe.
DISCOVERY_TIMEOUT = 5.0
#: Seconds an idle pooled connection to a backend is kept.
IDLE_CONNECTION_TIMEOUT = 90

#: Told the host and port of a backend that closed an idle pooled connection (its process may have died).
ClosedListener = Callable[[str, int], None]


def describe_failure(error: BaseException) -> str:
    """What went wrong with a request to a backend, for logs and Status messages (Twisted's wrapped reasons unwrapped)."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(str(r.value) or type(r.value).__name__ for r in reasons)
    return str(error) or type(error).__name__


def _reasons(error: BaseException) -> list[BaseException]:
    """The exceptions behind one failure: Twisted wraps a request's failures in ResponseFailed and the like."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        found: list[BaseException] = []
        for reason in reasons:
            value = reason.value if isinstance(reason, Failure) else reason
            if isinstance(value, BaseException):
                found.append(value)
        return found or [error]
    return [error]


def is_malformed_response(error: BaseException) -> bool:
    """Whether a backend answered something that is not HTTP: a bad status line, header or chunk."""
    return any(isinstance(reason, (ParseError, _MalformedChunkedDataError, ValueError))
               for reason in _reasons(error))


#: The fixed phrases (Go's words for the same failures) a client may be told, by the exception behind them.
_PUBLIC_REASONS: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((net_error.ConnectionRefusedError,), "connect: connection refused"),
    ((net_error.DNSLookupError,), "no such host"),
    ((net_error.TimeoutError, net_error.TCPTimedOutError), "i/o timeout"),
    ((net_error.NoRouteError,), "connect: no route to host"),
    ((net_error.ConnectionDone, net_error.ConnectionLost, net_error.ConnectionClosed), "EOF"),
)


def public_reason(error: BaseException) -> str:
    """Why a backend could not be reached, in a fixed phrase safe to show a client (details go to the log)."""
    reasons = _reasons(error)
    for reason in reasons:
        if isinstance(reason, BackendCertificateError) or (
                isinstance(reason, SSL.Error) and "certificate verify failed" in str(reason)):
            return "tls: failed to verify certificate"
    for reason in reasons:
        if isinstance(reason, SSL.Error):
            return "tls: handshake failure"
    for kinds, phrase in _PUBLIC_REASONS:
        if any(isinstance(reason, kinds) for reason in reasons):
            return phrase
    return "connection failed"


class BackendCertificateError(Exception):
    """The backend's certificate is not valid for any of the names it must have."""


class BackendUnresolvable(Exception):
    """The APIService names no usable backend (its ExternalName is missing or has no host)."""


@frozen
class Backend:
    """Where one remote APIService's requests go, and how its certificate is checked."""

    host: str
    port: int
    #: Names the serving certificate may be valid for (the ExternalName host, `<svc>.<ns>.svc`).
    names: tuple[str, ...]
    ca_bundle: bytes | None
    insecure: bool

    @property
    def url(self) -> str:
        """The base URL (scheme, host and port) of the backend."""
        try:
            is_v6 = ipaddress.ip_address(self.host).version == 6
        except ValueError:
            is_v6 = False
        return f"https://[{self.host}]:{self.port}" if is_v6 else f"https://{self.host}:{self.port}"


def resolve_backend(apiservice: dict[str, Any], externalname: dict[str, Any] | None) -> Backend:
    """The backend of a remote APIService given its ExternalName; BackendUnresolvable when there is none."""
    spec = apiservice.get("spec", {})
    service = spec.get("service") or {}
    name, namespace = service.get("name", ""), service.get("namespace", "")
    if externalname is None:
        raise BackendUnresolvable(f'service/{name} in "{namespace}" is not present')
    host = (externalname.get("spec") or {}).get("host") or ""
    if not host:
        raise BackendUnresolvable(f'service/{name} in "{namespace}" has no host')
    ca_text = spec.get("caBundle")
    ca_bundle = base64.b64decode(ca_text) if ca_text else None
    return Backend(host=host, port=int(service.get("port") or 443), names=(host, f"{name}.{namespace}.svc"),
                   ca_bundle=ca_bundle, insecure=bool(spec.get("insecureSkipTLSVerify")))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class BackendTLS:
    """Client TLS to one backend: the proxy certificate, the backend's CA, and a check of its names."""

    def __init__(self, backend: Backend, trust: Sequence[x509.Certificate] | None, client: KeyPair | None):
        options: dict[str, Any] = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2, "acceptableProtocols": [b"http/1.1"]}
        if client is not None:
            options["privateKey"] = crypto.PKey.from_cryptography_key(client.key)  # type: ignore[arg-type]
            options["certificate"] = crypto.X509.from_cryptography(client.chain[0])
            options["extraCertChain"] = [crypto.X509.from_cryptography(c) for c in client.chain[1:]]
        if not backend.insecure:
            if trust:
                options["trustRoot"] = ssl.trustRootFromCertificates(
                    [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in trust])
            else:
                options["trustRoot"] = ssl.platformTrust()
        self._context = ssl.CertificateOptions(**options).getContext()
        self._names = backend.names
        self._sni = None if _is_ip(backend.host) else backend.host.encode("idna")
        self._verify = not backend.insecure
        self._context.set_info_callback(self._info)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        connection.set_connect_state()
        return connection

    def _info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        if not (where & SSL.SSL_CB_HANDSHAKE_DONE) or not self._verify:
            return
        for name in self._names:
            try:
                if _is_ip(name):
                    verify_ip_address(connection, name)
                else:
                    verify_hostname(connection, name)
                return
            except VerificationError:
                continue
            except Exception:
                break
        protocol = connection.get_app_data()
        names = " or ".join(self._names)
        protocol.failVerification(Failure(BackendCertificateError(f"x509: certificate is not valid for {names}")))


@implementer(IPolicyForHTTPS)
class _FixedPolicy:
    def __init__(self, creator: BackendTLS):
        self._creator = creator

    def creatorForNetloc(self, hostname: bytes, port: int) -> BackendTLS:
        return self._creator


class _WatchedClientProtocol(HTTP11ClientProtocol):
    """A backend connection that tells its pool when it is lost while idle (the backend closed it)."""

    def __init__(self, quiescent: Callable[[HTTP11ClientProtocol], None],
                 lost_while_idle: Callable[[HTTP11ClientProtocol], None]):
        super().__init__(quiescent)
        self._lost_while_idle = lost_while_idle

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        idle = self.state == "QUIESCENT"
        super().connectionLost(reason)
        if idle:
            self._lost_while_idle(self)


class _WatchingClientFactory(_HTTP11ClientFactory):
    """Twisted's per-connection client factory with watched connections, and without its "Starting/Stopping
    factory" log lines (two for every connection: every availability probe opens some)."""

    noisy = False

    def __init__(self, quiescent: Callable[[HTTP11ClientProtocol], None], metadata: str,
                 lost_while_idle: Callable[[HTTP11ClientProtocol], None]):
        super().__init__(quiescent, metadata)
        self._lost_while_idle = lost_while_idle

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return _WatchedClientProtocol(self._quiescentCallback, self._lost_while_idle)


class _RetirablePool(HTTPConnectionPool):
    """A connection pool that tells when a backend closes an idle connection, and that can be retired.

    A connection the pool itself closes (idle timeout, overflow, retiring, closing) has left its list
    of idle connections before it is lost, so only the backend's closes are reported.  Once retired,
    the pool closes each connection as soon as its request is done.
    """

    retired = False

    def __init__(self, reactor: IReactorTime, on_closed: Callable[[str, int], None]):
        super().__init__(reactor, persistent=True)
        self._on_closed = on_closed

    def _factory(  # type: ignore[override]
            self, quiescent: Callable[[HTTP11ClientProtocol], None], metadata: str) -> _WatchingClientFactory:
        """Twisted's hook for the factory of each new connection."""
        return _WatchingClientFactory(quiescent, metadata, self._lost_while_idle)

    def _lost_while_idle(self, protocol: HTTP11ClientProtocol) -> None:
        for key, connections in self._connections.items():
            if protocol in connections:
                connections.remove(protocol)
                timeout = self._timeouts.pop(protocol, None)
                if timeout is not None and timeout.active():
                    timeout.cancel()
                host = key[1].decode("ascii", "replace").strip("[]") if isinstance(key[1], bytes) else str(key[1])
                self._on_closed(host, int(key[2]))
                return

    def close_idle(self) -> Deferred[None]:
        """Close the idle connections (a probe failed: none of them is to be trusted)."""
        closed: Deferred[None] = self.closeCachedConnections()
        return closed

    def retire(self) -> Deferred[None]:
        """Close the idle connections now, and the busy ones when their responses end (never mid-request)."""
        self.retired = True
        closed: Deferred[None] = self.closeCachedConnections()
        return closed

    def _putConnection(self, key: Any, connection: Any) -> None:
        if self.retired:
            connection.transport.loseConnection()
            return
        super()._putConnection(key, connection)


def _log_close_failure(failure: Failure) -> None:
    _log.failure("closing a retired backend connection pool failed", failure)


@frozen
class _Client:
    """One TLS configuration's pooled agent, and the treq client over it."""

    treq: HTTPClient
    agent: IAgent
    pool: _RetirablePool


#: Backends remembered for the fast lookup; past this many (APIServices keep changing) it starts over.
_BY_BACKEND_LIMIT = 4096


class UpstreamClients:
    """HTTP clients to backends, one pooled client per distinct TLS configuration (never shared across them)."""

    def __init__(self, reactor: IReactorTime, proxy_client: KeyPair | None,
                 default_trust: Sequence[x509.Certificate] | None, max_connections_per_backend: int = MAX_CONNECTIONS_PER_BACKEND):
        self._reactor = reactor
        self._proxy_client = proxy_client
        self._default_trust = list(default_trust) if default_trust else None
        self._max = max_connections_per_backend
        self._clients: dict[tuple[Any, ...], _Client] = {}
        #: The same clients by Backend, so that a proxied request finds its pool without parsing the caBundle.
        self._by_backend: dict[Backend, _Client] = {}
        self._closed_listeners: list[ClosedListener] = []

    def add_closed_listener(self, listener: ClosedListener) -> None:
        """Call `listener(host, port)` whenever a backend closes an idle pooled connection."""
        self._closed_listeners.append(listener)

    def _closed(self, host: str, port: int) -> None:
        for listener in list(self._closed_listeners):
            try:
                listener(host, port)
            except Exception:
                _log.failure("a listener of closed backend connections failed")

    def close_idle(self, backend: Backend) -> None:
        """Close the idle connections to a backend (kube's CloseIdleConnectionsFor after a failed probe)."""
        entry = self._by_backend.get(backend)
        if entry is not None:
            entry.pool.close_idle().addErrback(_log_close_failure)

    @property
    def proxy_client(self) -> KeyPair | None:
        """The client certificate presented to backends by connections made from now on."""
        return self._proxy_client

    def replace_proxy_client(self, pair: KeyPair | None) -> None:
        """Present this client certificate from now on: later requests and probes get new pools.

        The pools made with the previous certificate are retired: idle connections close at once,
        busy ones when their response ends, so no request is cut off.
        """
        self._proxy_client = pair
        retiring = [entry.pool for entry in self._clients.values()]
        self._clients.clear()
        self._by_backend.clear()
        for pool in retiring:
            pool.retire().addErrback(_log_close_failure)
        _log.info("backend client certificate replaced; {pools} connection pools retired", pools=len(retiring))

    def client_for(self, backend: Backend) -> HTTPClient:
        """The treq client for a backend (created on first use, then reused with its connection pool).

        For the aggregator's own requests (probes, discovery, OpenAPI), made as its own identity.
        """
        return self._client(backend).treq

    def agent_for(self, backend: Backend) -> IAgent:
        """The bare pooled agent of a backend, for proxied requests.

        treq's client keeps a cookie jar and decodes gzip; a proxy must do neither, or one caller's
        cookies would reach the backend on another caller's request.
        """
        return self._client(backend).agent

    def _client(self, backend: Backend) -> _Client:
        entry = self._by_backend.get(backend)
        if entry is not None:
            return entry
        trust = self._default_trust
        if backend.ca_bundle:
            try:
                trust = x509.load_pem_x509_certificates(backend.ca_bundle)
            except ValueError:
                raise BackendUnresolvable("the APIService's caBundle holds no PEM certificate") from None
        key = (backend.names, backend.host, backend.insecure,
               hashlib.sha256(b"".join(c.public_bytes(Encoding.DER) for c in trust or [])).hexdigest())
        entry = self._clients.get(key)
        if entry is None:
            pool = _RetirablePool(self._reactor, self._closed)
            pool.maxPersistentPerHost = self._max
            pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT
            pool.retryAutomatically = False
            tls = BackendTLS(backend, trust, self._proxy_client)
            agent = Agent(self._reactor, _FixedPolicy(tls), connectTimeout=CONNECT_TIMEOUT, pool=pool)
            entry = self._clients[key] = _Client(HTTPClient(agent), agent, pool)
        if len(self._by_backend) >= _BY_BACKEND_LIMIT:
            self._by_backend.clear()
        self._by_backend[backend] = entry
        return entry

    async def close(self) -> None:
        """Close every pooled connection."""
        for entry in list(self._clients.values()):
            await entry.pool.closeCachedConnections()
        self._clients.clear()
        self._by_backend.clear()
