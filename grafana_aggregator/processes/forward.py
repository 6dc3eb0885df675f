# -*- test-case-name: tests.test_workers -*-
"""A worker's served tree: remote group-versions proxied here, everything else forwarded to the owner.

The worker's routing table (built from the owner's APIServices by its own informer) knows the remote
group-versions; their requests go to their backends from this process, exactly as in the owner.
Anything else — local kinds, discovery, OpenAPI, reviews, health, metrics, and any remote request
while the table is not synced yet — is forwarded to the owner by the same `Proxy` machinery, over
the owner channel, with the caller (and the impersonator, if any) in headers.  Bodies and watch
streams pass through unbuffered.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from ..aggregation.proxy import Proxy
from ..aggregation.routing import RoutingTable
from ..aggregation.upstream import Backend
from ..apimachinery.status import internal_error, write_status
from ..web.discovery import ProxiedResource
from ..web.site import api_call, is_long_running
from .channel import FORWARDED_HOST, set_impersonator_headers

#: Where forwarded requests go, as the proxy names it (the agent sends them to the owner's Unix socket).
OWNER = Backend(host="owner.channel", port=80, names=(), ca_bundle=None, insecure=False)


class ForwardToOwner(Resource):
    """Forwards the whole request to the owner, as the caller, and relays the answer (a leaf: the path is kept)."""

    isLeaf = True

    def __init__(self, owner: Proxy, long_running: set[Any] | None = None):
        super().__init__()
        self._owner = owner
        self._long_running = long_running

    def render(self, request: IRequest) -> int:
        call = api_call(request)
        user = call.user
        if user is None:
            return write_status(request, internal_error("missing user"))
        set_impersonator_headers(request.requestHeaders, call.impersonator)
        # The proxy sends its own Host; the client's goes along for the owner (legacy discovery names it).
        request.requestHeaders.setRawHeaders(FORWARDED_HOST, request.requestHeaders.getRawHeaders(b"host", [])[:1])
        long_running = is_long_running(call.info)
        if long_running and self._long_running is not None:
            # Watches forwarded to the owner: at shutdown the worker waits for the owner to end them.
            streams = self._long_running
            streams.add(request)
            request.notifyFinish().addBoth(lambda _: streams.discard(request))  # type: ignore[attr-defined]
        self._owner.forward(request, user, long_running, call.timer)
        return NOT_DONE_YET


class _Group(Resource):
    """`/apis/<group>`: a remote version's route is proxied here; anything else goes to the owner."""

    def __init__(self, routing: RoutingTable, group: str, forward: ForwardToOwner):
        super().__init__()
        self._routing = routing
        self._group = group
        self._forward = forward

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        route = self._routing.lookup(self._group, path.decode("utf-8", "replace")) if path else None
        if route is not None and route.remote and route.proxy is not None:
            return ProxiedResource(route)
        # The whole URI is forwarded: what traversal consumed does not matter.
        return self._forward

    def render(self, request: IRequest) -> int:
        return self._forward.render(request)


class _Apis(Resource):
    """`/apis`: discovery goes to the owner; each group's versions are looked up in the routing table."""

    def __init__(self, routing: RoutingTable, forward: ForwardToOwner):
        super().__init__()
        self._routing = routing
        self._forward = forward

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if not path:
            return self._forward
        return _Group(self._routing, path.decode("utf-8", "replace"), self._forward)

    def render(self, request: IRequest) -> int:
        return self._forward.render(request)


class WorkerTree(Resource):
    """The worker's paths below authentication: `/apis/<remote group>/<version>/…` proxied, the rest forwarded."""

    def __init__(self, routing: RoutingTable, forward: ForwardToOwner):
        super().__init__()
        self._routing = routing
        self._forward = forward

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"apis":
            return _Apis(self._routing, self._forward)
        return self._forward

    def render(self, request: IRequest) -> int:
        return self._forward.render(request)
