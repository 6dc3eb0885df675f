# -*- test-case-name: tests.test_workers -*-
"""The owner channel's trust rule: identity comes from headers on the private Unix socket, and only there.

A worker has already authenticated, impersonated and authorized the caller; it forwards the request
with the user it acts as in `X-Remote-*` headers (the proxy's own identity headers) and, when the
caller impersonates, the caller in `X-Aggregator-Impersonator-*` headers.  `ChannelAuthenticator`
believes those headers; it is wired only to the listener on the owner's Unix socket (mode 0600 in
a 0700 folder), never to the TLS listener, whose authenticators ignore them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from ..aggregation.proxy import escape_extra_key
from ..identity.auth import Authenticator, Credentials, UserInfo, header_values
from ..config.settings import RequestHeaderSettings
from ..web.root import AuthenticatingRoot, InFlight
from ..web.site import api_call

#: The identity headers a worker sets (what `aggregation.proxy.forward_headers` writes for the user).
CHANNEL_IDENTITY = RequestHeaderSettings(
    username_headers=("X-Remote-User",), uid_headers=("X-Remote-Uid",), group_headers=("X-Remote-Group",),
    extra_headers_prefixes=("X-Remote-Extra-",))
#: Who authenticated, when the forwarded request impersonates someone (the user headers carry the impersonated).
IMPERSONATOR = RequestHeaderSettings(
    username_headers=("X-Aggregator-Impersonator-User",), uid_headers=("X-Aggregator-Impersonator-Uid",),
    group_headers=("X-Aggregator-Impersonator-Group",),
    extra_headers_prefixes=("X-Aggregator-Impersonator-Extra-",))
_IMPERSONATOR_PREFIX = b"x-aggregator-impersonator-"
#: The Host the client sent to the worker (the proxy replaces Host); the owner channel puts it back.
FORWARDED_HOST = b"X-Aggregator-Host"


def _read_user(headers: Headers, settings: RequestHeaderSettings) -> UserInfo | None:
    """The user named by one set of identity headers (read as kube's request-header authenticator reads them)."""
    name = next((v for h in settings.username_headers for v in header_values(headers, h) if v), "")
    if not name:
        return None
    uid = next((v for h in settings.uid_headers for v in header_values(headers, h) if v), "")
    groups = tuple(v for h in settings.group_headers for v in header_values(headers, h) if v)
    extra: dict[str, list[str]] = {}
    prefixes = tuple(p.lower() for p in settings.extra_headers_prefixes)
    for raw_name, values in headers.getAllRawHeaders():
        lower = raw_name.decode("latin-1").lower()
        for prefix in prefixes:
            if lower.startswith(prefix) and len(lower) > len(prefix):
                try:
                    key = unquote(lower[len(prefix):], errors="strict")
                except UnicodeDecodeError:
                    key = lower[len(prefix):]
                extra.setdefault(key, []).extend(v.decode("utf-8", "replace") for v in values)
    return UserInfo(name=name, uid=uid, groups=groups, extra={k: tuple(v) for k, v in extra.items()})


class ChannelAuthenticator(Authenticator):
    """The user a worker forwarded, exactly as it sent it (no group is added); None (401) without one."""

    def __init__(self) -> None:
        super().__init__([], anonymous=False)

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        return _read_user(credentials.headers, CHANNEL_IDENTITY)


def remove_impersonator_headers(headers: Headers) -> None:
    """Drop every `X-Aggregator-Impersonator-*` header (a client's copy must never reach the channel)."""
    for name, _ in list(headers.getAllRawHeaders()):
        if name.lower().startswith(_IMPERSONATOR_PREFIX):
            headers.removeHeader(name)


def set_impersonator_headers(headers: Headers, impersonator: UserInfo | None) -> None:
    """Replace the impersonator headers with those of `impersonator` (none when the caller did not impersonate)."""
    remove_impersonator_headers(headers)
    if impersonator is None:
        return
    headers.setRawHeaders("X-Aggregator-Impersonator-User", [impersonator.name])
    if impersonator.uid:
        headers.setRawHeaders("X-Aggregator-Impersonator-Uid", [impersonator.uid])
    if impersonator.groups:
        headers.setRawHeaders("X-Aggregator-Impersonator-Group", list(impersonator.groups))
    for key, values in sorted(impersonator.extra.items()):
        headers.setRawHeaders(f"X-Aggregator-Impersonator-Extra-{escape_extra_key(key)}", list(values))


class ChannelRoot(AuthenticatingRoot):
    """The owner channel's root: the forwarded user is admitted (and authorized again), the impersonator noted."""

    def __init__(self, tree: Any, in_flight: InFlight | None = None):
        super().__init__(tree, ChannelAuthenticator(), peer_certificates=lambda request: (), in_flight=in_flight)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        self._take_forwarded(request)
        return super().getChildWithDefault(name, request)

    def render(self, request: IRequest) -> bytes | int:
        self._take_forwarded(request)
        return super().render(request)

    @staticmethod
    def _take_forwarded(request: IRequest) -> None:
        headers = request.requestHeaders
        host = headers.getRawHeaders(FORWARDED_HOST)
        if host:
            headers.setRawHeaders(b"host", host[:1])
            headers.removeHeader(FORWARDED_HOST)
        impersonator = _read_user(headers, IMPERSONATOR)
        remove_impersonator_headers(headers)
        if impersonator is not None:
            api_call(request).impersonator = impersonator
