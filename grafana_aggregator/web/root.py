"""The top of the served tree: authentication, impersonation, authorization and admission, then the served paths.

`AuthenticatingRoot` admits each request (401, 400/403 for impersonation, 403 or 429 Status otherwise)
and records on the request's ApiCall who it acts as and, when it impersonates someone, who
authenticated; `build_tree` assembles the paths below it from already-built resources.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from .. import __version__
from ..apimachinery.resource import ApiResource, StatusResource
from ..apimachinery.status import StatusError, not_found_path, unauthorized, write_json, write_status
from ..identity.auth import Authenticator, Credentials, authorize, forbidden_details
from ..identity.impersonation import impersonate, remove_impersonation_headers
from ..tls.certificates import peer_chain
from .health import ENDPOINTS, HealthChecks, HealthResource
from .discovery import CoreResource
from .site import ApiChannel, Limits, api_call, is_long_running, when_over


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


class VersionResource(ApiResource):
    """`/version`."""

    isLeaf = True

    def __init__(self, info: dict[str, str]):
        super().__init__()
        self._info = info

    async def handle(self, request: IRequest) -> None:
        if [p for p in (request.postpath or []) if p]:
            raise not_found_path()
        data = write_json(request, 200, self._info)
        request.setHeader(b"Content-Length", b"%d" % len(data))
        request.write(data)
        request.finish()


class Router(Resource):
    """The served paths; anything unknown is a 404 Status."""

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        return StatusResource(not_found_path())

    def render(self, request: IRequest) -> int:
        return write_status(request, not_found_path())


PeerChain = Callable[[IRequest], Sequence[x509.Certificate]]


def transport_chain(request: IRequest) -> Sequence[x509.Certificate]:
    """The client certificate chain of the request's TLS connection (empty without one).

    Read once per connection and kept on its channel: the handshake is over before any request is
    read, and the peer's certificate cannot change afterwards (no renegotiation is accepted).
    """
    channel = getattr(request, "channel", None)
    known: Sequence[x509.Certificate] | None = getattr(channel, "peer_chain", None)
    if known is not None:
        return known
    chain = peer_chain(getattr(channel, "transport", None))
    if isinstance(channel, ApiChannel):
        channel.peer_chain = chain
    return chain


_READ_ONLY = (b"GET", b"HEAD", b"OPTIONS")


class InFlight:
    """Counts requests being served, to refuse overload (429) and to wait for them at shutdown."""

    def __init__(self, limits: Limits):
        self._max_read_only = limits.max_read_only_in_flight
        self._max_mutating = limits.max_mutating_in_flight
        self.read_only = 0
        self.mutating = 0
        self._idle: list[Deferred[None]] = []

    def admit(self, method: bytes) -> bool:
        """Count a request in, unless its class is full.

        Unlike kube-apiserver, system:masters are not exempt: here they do nearly all the real work,
        so exempting them would leave nothing protected.  Health probes and watches are exempt.
        """
        read_only = method in _READ_ONLY
        if read_only and self.read_only >= self._max_read_only:
            return False
        if not read_only and self.mutating >= self._max_mutating:
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


def too_many_requests() -> StatusError:
    """kube's 429 from its max-in-flight filter."""
    return StatusError(429, "Too many requests, please try again later.", "TooManyRequests", {"retryAfterSeconds": 1})


@implementer(IResource)
class AuthenticatingRoot:
    """Authenticates each request, applies its impersonation, and authorizes it before the tree below sees it.

    In kube-apiserver's order: authentication (401), impersonation (400 / 403: the caller must be allowed
    to impersonate), then authorization of the user the request acts as (403; 401 for a caller that is
    anonymous by its own lack of credentials), then the in-flight limits (429).
    """

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

    def render(self, request: IRequest) -> bytes | int:
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
        call = api_call(request)
        call.user = user
        try:
            impersonated = impersonate(user, request.requestHeaders)
        except StatusError as refusal:
            return refusal
        if impersonated is not None:
            remove_impersonation_headers(request.requestHeaders)
            call.impersonator, call.user = user, impersonated
            user = impersonated
        info = call.info
        decision = authorize(user, info)
        if not decision.allowed:
            if user.is_anonymous and call.impersonator is None:
                return unauthorized()
            return StatusError(403, decision.reason, "Forbidden", forbidden_details(info) or {})
        if self._in_flight is not None and not is_long_running(info) and not _is_probe(info.path):
            if not self._in_flight.admit(request.method):
                return too_many_requests()
            in_flight, method = self._in_flight, request.method
            when_over(request, lambda _: in_flight.release(method))
        return None


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
