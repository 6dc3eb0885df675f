"""The HTTP face of the daemon: the Site, the authenticating root, and the tree of served paths.

`build_site` assembles everything from already-built collaborators, so tests serve the real tree
through StubTreq or a real socket without starting twistd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import Attribute, Interface, implementer

from . import __version__
from .apimachinery.requestinfo import request_info
from .apimachinery.status import StatusError, method_not_allowed, not_found_path, unauthorized, write_json, write_status
from .auth import Authenticator, Credentials, UserInfo, authorize, forbidden_details
from .apis import CoreResource
from .health import ENDPOINTS, HealthChecks, HealthResource
from .tls import peer_chain

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

    def __init__(self, tree: Resource, authenticator: Authenticator, peer_certificates: PeerChain = transport_chain):
        self._tree = tree
        self._authenticator = authenticator
        self._peer_certificates = peer_certificates

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
        path, _, query = request.uri.partition(b"?")
        info = request_info(request.method.decode("ascii", "replace"), path.decode("utf-8", "replace"),
                            query.decode("utf-8", "replace"))
        decision = authorize(user, info)
        if not decision.allowed:
            if user.is_anonymous:
                return unauthorized()
            return StatusError(403, decision.reason, "Forbidden", forbidden_details(info) or {})
        return None


class ApiRequest(server.Request):
    """A request whose unexpected failures are answered with a 500 Status instead of an HTML traceback."""

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
               openapi: Resource | None = None) -> Router:
    """The served paths, before authentication."""
    tree = Router()
    tree.putChild(b"version", VersionResource(version_info(emulated_version)))
    for endpoint in ENDPOINTS:
        tree.putChild(endpoint.encode(), HealthResource(endpoint, health))
    tree.putChild(b"api", CoreResource(emulated_minor=emulated_version[1]))
    tree.putChild(b"apis", apis)
    if openapi is not None:
        tree.putChild(b"openapi", openapi)
    return tree


def build_site(root: IResource) -> server.Site:
    """A Site serving the given root with JSON errors and no tracebacks."""
    site = server.Site(root)
    site.requestFactory = ApiRequest
    site.displayTracebacks = False
    return site
