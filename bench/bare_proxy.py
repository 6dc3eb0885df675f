"""The floor of a proxy in one CPython process: a bare Twisted reverse proxy doing only the aggregator's essential job.

TLS from the client, a bearer token looked up in a dict, the client's identity and hop-by-hop headers
dropped, `X-Remote-User`/`X-Remote-Group` set, mutual TLS to the backend (verified against a CA) over a
persistent pool, the request body sent on and the response streamed back; no routing, metrics, logging,
limits or timeouts.
`make bench` runs it beside the aggregator so that the aggregator's own cost per request shows as a ratio.
Usage: bare_proxy.py PORT BACKEND_HOST BACKEND_PORT CERT KEY CA CLIENT_CERT CLIENT_KEY TOKEN
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IRequest, IResponse
from zope.interface import implementer

#: Request headers never forwarded: hop-by-hop ones and the client's credentials.
DROPPED = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                     b"upgrade", b"authorization", b"host", b"content-length"})
#: Identity a client must not be able to assert.
IDENTITY_PREFIXES = (b"x-remote-", b"impersonate-")
USERS = {b"bench": (b"bench-admin", [b"system:masters", b"system:authenticated"])}


@implementer(IPolicyForHTTPS)
class FixedPolicy:
    """The same client TLS options for every connection to the one backend."""

    def __init__(self, options: Any):
        self._options = options

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return self._options


class BodyRelay(Protocol):
    """Streams the backend's body to the client and ends the client's response with it."""

    def __init__(self, request: Any):
        self._request = request

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if not self._request._disconnected:
            self._request.finish()


def _body(request: Any) -> FileBodyProducer | None:
    """The request's body (twisted.web has read it whole, in memory or a spool file), sent on as it is."""
    content = request.content
    content.seek(0, 2)
    size = content.tell()
    content.seek(0)
    return FileBodyProducer(content) if size else None


class BareProxy(resource.Resource):
    """Every path, forwarded to the backend as the user its token names."""

    isLeaf = True

    def __init__(self, agent: Agent, base: bytes, tokens: dict[bytes, tuple[bytes, list[bytes]]]):
        super().__init__()
        self._agent = agent
        self._base = base
        self._tokens = tokens

    def render(self, request: Any) -> bytes | int:
        authorization = request.requestHeaders.getRawHeaders(b"authorization", [b""])[0]
        user = self._tokens.get(authorization.removeprefix(b"Bearer "))
        if user is None:
            request.setResponseCode(401)
            return b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}'
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            lowered = name.lower()
            if lowered not in DROPPED and not lowered.startswith(IDENTITY_PREFIXES):
                headers.setRawHeaders(name, values)
        headers.setRawHeaders(b"x-remote-user", [user[0]])
        headers.setRawHeaders(b"x-remote-group", user[1])
        answered = self._agent.request(request.method, self._base + request.uri, headers, _body(request))

        def relay(response: IResponse) -> None:
            request.setResponseCode(response.code)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in DROPPED:
                    request.responseHeaders.setRawHeaders(name, values)
            response.deliverBody(BodyRelay(request))

        def failed(failure: Failure, request: IRequest = request) -> None:
            if not request._disconnected:  # type: ignore[attr-defined]
                request.setResponseCode(502)
                request.finish()

        answered.addCallbacks(relay, failed)
        return server.NOT_DONE_YET


def main(port: str, host: str, backend_port: str, cert: str, key: str, ca: str, client_cert: str, client_key: str,
         token: str) -> None:
    with open(cert) as c, open(key) as k:
        serving = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
    with open(client_cert) as c, open(client_key) as k:
        client = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
    with open(ca) as handle:
        authority = ssl.Certificate.loadPEM(handle.read())
    options = ssl.optionsForClientTLS(host, trustRoot=authority, clientCertificate=client)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 128
    agent = Agent(reactor, contextFactory=FixedPolicy(options), pool=pool)
    tokens = {token.encode(): USERS[b"bench"]}
    site = server.Site(BareProxy(agent, f"https://{host}:{backend_port}".encode(), tokens))
    site.log = lambda request: None  # type: ignore[method-assign]
    site.noisy = False
    reactor.listenSSL(int(port), site, serving.options(), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(*sys.argv[1:])
