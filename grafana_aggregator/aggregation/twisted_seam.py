# -*- test-case-name: tests.test_twisted_seam -*-
"""The Twisted internals the proxy's hot path relies on, in one small place with tests of their own.

- **Trusted headers.**  `Headers.setRawHeaders` re-encodes each name and rewrites each value (its
  line-folding sanitiser) on every call.  Names and values copied from another `Headers` (a parsed
  request or response) are already canonical and sanitised, and identity values are sanitised once
  and cached, so the proxy stores them directly into the `Headers`' dictionary here.
- **Requests to one backend.**  `Agent.request` parses the URL, builds a new endpoint and re-renders
  the request target for every request; `BackendRequests` does that once per backend and hands each
  request to the agent's `_requestWithEndpoint` with the client's target as it came (falling back to
  `Agent.request` for any target the two could render differently, and for agents that are no `Agent`).
- **Socket buffers.**  A TCP transport reads at most `bufferSize` bytes per read and pauses its
  producer once that much is queued for writing; `socket_transport` finds the TCP transport under
  Twisted's TLS and HTTP client wrappers so that a large body can be relayed in larger steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import re

from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred
from twisted.web._newclient import LengthEnforcingConsumer, TransportProxyProducer
from twisted.web.client import URI, Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse

#: A request target that `Agent.request` would send exactly as it is (its own check, plus no `;`, `#`, `//`).
_PLAIN_TARGET = re.compile(rb"\A/(?!/)[\x21-\x22\x24-\x3a\x3c-\x7e]*\Z")


def sanitize(value: bytes) -> bytes:
    """A header value as `Headers.setRawHeaders` stores it: line breaks folded into single spaces."""
    return b" ".join(value.splitlines())


def canonical_name(name: str | bytes) -> bytes:
    """A header name as `Headers` keys it (`x-remote-user` → `X-Remote-User`); raises for a name that is no token."""
    probe = Headers()
    probe.setRawHeaders(name, [])
    return next(iter(probe.getAllRawHeaders()))[0]


def trusted_headers(items: Iterable[tuple[bytes, list[bytes]]]) -> Headers:
    """A `Headers` holding these canonical names and sanitised values as they are (no per-value work)."""
    headers = Headers()
    raw: dict[bytes, list[bytes]] = headers._rawHeaders
    raw.update(items)
    return headers


def set_trusted(headers: Headers, name: bytes, values: list[bytes]) -> None:
    """Set a header whose canonical name and sanitised values come from another `Headers` (or `sanitize`)."""
    headers._rawHeaders[name] = values


def socket_transport(transport: Any) -> Any | None:
    """The TCP transport (a `FileDescriptor`, with its `bufferSize`) under an HTTP channel, Twisted's TLS wrapper,
    the HTTP client's `TransportProxyProducer` (which a response body's protocol gets as its transport) or its
    `LengthEnforcingConsumer` (which a request body's producer writes to)."""
    for _ in range(8):
        if transport is None:
            return None
        if isinstance(transport, FileDescriptor):
            return transport
        if isinstance(transport, TransportProxyProducer):
            transport = transport._producer
        elif isinstance(transport, LengthEnforcingConsumer):
            transport = transport._consumer
        else:
            transport = getattr(transport, "transport", None)
    return None


def raise_buffer(transport: Any, size: int) -> bool:
    """Let the TCP transport under `transport` read and queue up to `size` bytes at a time; False when none is found."""
    tcp = socket_transport(transport)
    if tcp is None:
        return False
    if tcp.bufferSize < size:
        tcp.bufferSize = size
    return True


def host_value(url: bytes) -> bytes:
    """The `Host` header `Agent` sends for a URL (`host`, `host:port`, `[v6]:port`), worked out once per backend."""
    parsed = URI.fromBytes(url)
    value: bytes = Agent._computeHostValue(None, parsed.scheme, parsed.host, parsed.port)  # type: ignore[arg-type]
    return value


class BackendRequests:
    """Requests to one base URL (a backend) through an agent, with the per-request URL work of `Agent` done once."""

    def __init__(self, agent: IAgent, base_url: bytes):
        self._agent = agent
        self._base_url = base_url
        self._direct = type(agent) is Agent
        parsed = URI.fromBytes(base_url)
        self._parts = (parsed.scheme, parsed.netloc, parsed.host, parsed.port)
        self._key = (parsed.scheme, parsed.host, parsed.port)
        self._endpoint = agent._getEndpoint(parsed) if self._direct else None  # type: ignore[attr-defined]

    def request(self, method: bytes, target: bytes, headers: Headers,
                producer: IBodyProducer | None) -> Deferred[IResponse]:
        """`agent.request(method, base_url + target, headers, producer)`; raises ValueError as it does."""
        if not self._direct or (target.endswith(b"?") or not _PLAIN_TARGET.match(target)):
            return self._agent.request(method, self._base_url + target, headers, producer)
        path, _, query = target.partition(b"?")
        scheme, netloc, host, port = self._parts
        parsed = URI(scheme, netloc, host, port, path, b"", query, b"")
        agent: Any = self._agent
        result: Deferred[IResponse] = agent._requestWithEndpoint(self._key, self._endpoint, method, parsed, headers,
                                                                 producer, target)
        return result
