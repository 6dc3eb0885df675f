"""The `/api` and `/apis` trees: discovery from the routing table, and each group-version handed to its route.

`/api` lists the core version `v1` without resources (so kubectl can map `kind: List` files).

Every APIService — local or remote, available or not — is listed, ordered by kube's priority rules;
a remote group-version lists its resources only while its APIService is Available.  Below
`/apis/<group>/<version>` a request goes to the route's local handler, to its backend through the
proxy, or gets the 503 of a backend that cannot be used now, without contacting it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from ..aggregation.proxy import service_unavailable
from ..aggregation.routing import Route, RoutingTable
from ..apimachinery.discovery import (
    AGGREGATED_KIND,
    CORE_VERSIONS,
    DISCOVERY_GROUP,
    aggregated_core_groups,
    aggregated_groups,
    aggregated_list,
    api_group,
    core_resource_list,
    legacy_core_versions,
    legacy_group_list,
    legacy_groups,
    negotiate_discovery,
    sorted_by_group_and_version,
)
from ..apimachinery.negotiation import Output, negotiate_output
from ..apimachinery.resource import ApiResource, StatusResource
from ..apimachinery.resourcerequest import respond
from ..apimachinery.status import (
    StatusError,
    encode_json,
    internal_error,
    not_found_path,
    not_installed_yet,
    write_json,
    write_status,
)
from .site import api_call, is_long_running


def _not_acceptable() -> StatusError:
    return StatusError(406, f"only the following media types are accepted: application/json, "
                            f"application/json;g={DISCOVERY_GROUP};v=v2;as={AGGREGATED_KIND}", "NotAcceptable")


def _etag(data: bytes) -> bytes:
    """The ETag of an encoded document (its order is deterministic, so equal documents hash equal)."""
    return f'"{hashlib.sha512(data).hexdigest().upper()}"'.encode()


def _write(request: IRequest, data: bytes) -> None:
    request.setHeader(b"Content-Length", b"%d" % len(data))
    request.write(data)
    request.finish()


def _server_address(request: IRequest) -> str:
    """The address this connection reached the server at, as `host:port` (kube's serverAddressByClientCIDRs)."""
    local = request.getHost()
    host, port = getattr(local, "host", ""), getattr(local, "port", None)
    if not host or port is None:  # not an IP socket (a UNIX socket from systemd): what the client asked for
        header = request.getHeader(b"host")
        return header.decode("latin-1") if header else ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CoreResource(ApiResource):
    """`/api` and `/api/<version>`: the core group, in whichever discovery form the client asked for.

    The aggregator lists `v1` with no resources: kubectl maps the kind `List` (what `kubectl get -o yaml`
    writes) only for a discovered `v1`, so `apply`, `create` and `delete -f` of such a file need it.
    A server without a core group (the example backend) passes no versions: `/api` is then an empty list.
    """

    isLeaf = True

    def __init__(self, emulated_minor: int, versions: Sequence[str] = CORE_VERSIONS):
        super().__init__()
        self._emulated_minor = emulated_minor
        self._versions = tuple(versions)

    async def handle(self, request: IRequest) -> None:
        path = [p.decode("utf-8", "replace") for p in (request.postpath or []) if p]
        if path:
            if len(path) == 1 and path[0] in self._versions:
                self._resource_list(request, path[0])
                return
            raise not_found_path()
        accept = request.getHeader(b"accept")
        negotiated = negotiate_discovery(accept.decode("latin-1") if accept else None, self._emulated_minor)
        if negotiated is None:
            raise _not_acceptable()
        if negotiated.form == "aggregated":
            body = aggregated_list(negotiated.version, aggregated_core_groups(self._versions))
        else:
            body = legacy_core_versions(self._versions, _server_address(request))
        data = write_json(request, 200, body)
        request.setHeader(b"Content-Type", negotiated.content_type)
        request.setHeader(b"Vary", b"Accept")
        _write(request, data)

    @staticmethod
    def _resource_list(request: IRequest, version: str) -> None:
        """`/api/<version>`: its APIResourceList, in JSON or YAML (a Table request gets JSON, as kube does)."""
        accept = request.getHeader(b"accept")
        output = negotiate_output(accept.decode("latin-1") if accept else None)
        if output is None:
            raise StatusError(406, "only the following media types are accepted: application/json, "
                                   "application/yaml", "NotAcceptable")
        if output.form == "table":
            output = Output("json")
        respond(request, 200, core_resource_list(version), output)


class ApisResource(ApiResource):
    """`/apis` (merged discovery) and, below it, `/apis/<group>[/<version>[/…]]`."""

    def __init__(self, routing: RoutingTable, emulated_minor: int):
        super().__init__()
        self.routing = routing
        self._emulated_minor = emulated_minor
        #: Encoded discovery documents by (form, version): (generation, body, ETag).
        self._documents: dict[tuple[str, str], tuple[Hashable, bytes, bytes]] = {}

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        if path == b"":
            return self
        return GroupResource(self.routing, path.decode("utf-8", "replace"))

    def _document(self, form: str, version: str) -> tuple[bytes, bytes]:
        """The encoded `/apis` document in a form, and its ETag; rebuilt only after something changed."""
        generation = self.routing.generation
        key = (form, version)
        cached = self._documents.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1], cached[2]
        apiservices = self.routing.apiservices()
        if form == "aggregated":
            body = aggregated_list(version, aggregated_groups(apiservices, self.routing.resources_for))
            data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
            etag = _etag(data)
        else:
            data, etag = encode_json(legacy_group_list(legacy_groups(apiservices))), b""
        self._documents[key] = (generation, data, etag)
        return data, etag

    async def handle(self, request: IRequest) -> None:
        if not self.routing.synced():
            raise not_installed_yet()
        accept = request.getHeader(b"accept")
        negotiated = negotiate_discovery(accept.decode("latin-1") if accept else None, self._emulated_minor)
        if negotiated is None:
            raise _not_acceptable()
        data, etag = self._document(negotiated.form, negotiated.version)
        if negotiated.form == "aggregated":
            request.setHeader(b"ETag", etag)
            request.setHeader(b"Vary", b"Accept")
            request.setHeader(b"Cache-Control", b"public")
            request.setHeader(b"Content-Type", negotiated.content_type)
            if request.getHeader(b"if-none-match") == etag:
                request.setResponseCode(304)
                request.finish()
                return
            request.setResponseCode(200)
        else:
            request.setResponseCode(200)
            request.setHeader(b"Cache-Control", b"no-cache, private")
            request.setHeader(b"Vary", b"Accept")
        request.setHeader(b"Content-Type", negotiated.content_type)
        _write(request, data)


class GroupResource(ApiResource):
    """`/apis/<group>`: the APIGroup; its children are the group's versions, each handed to its route."""

    def __init__(self, routing: RoutingTable, group: str):
        super().__init__()
        self._routing = routing
        self._group = group

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        version = path.decode("utf-8", "replace")
        route = self._routing.lookup(self._group, version)
        if route is None:
            return StatusResource(not_installed_yet() if not self._routing.synced() else not_found_path())
        if route.local is not None:
            return route.local
        return ProxiedResource(route, self._routing)

    async def handle(self, request: IRequest) -> None:
        buckets = [b for b in sorted_by_group_and_version(self._routing.apiservices())
                   if b[0]["spec"]["group"] == self._group]
        if not buckets:
            raise not_installed_yet() if not self._routing.synced() else not_found_path()
        data = write_json(request, 200, {"kind": "APIGroup", "apiVersion": "v1", **api_group(buckets[0])})
        _write(request, data)


def _unavailable() -> StatusError:
    """kube-aggregator's fast 503 for an APIService that is not Available."""
    return StatusError(503, "the server is currently unable to handle the request", "ServiceUnavailable",
                       {"causes": [{"reason": "UnexpectedServerResponse", "message": "service unavailable"}]})


class ProxiedResource(Resource):
    """Everything under a remote group-version: its backend's answer, or a 503 when it cannot be used now."""

    isLeaf = True

    def __init__(self, route: Route, routing: RoutingTable | None = None):
        super().__init__()
        self._route = route
        self._routing = routing

    def render(self, request: IRequest) -> int:
        route = self._route
        call = api_call(request)
        call.proxied_to(route.name)
        proxy = route.proxy
        if proxy is None:
            return write_status(request, _unavailable())
        if not route.available:
            if route.unreachable_here is not None and self._routing is not None:
                # Another replica may reach it (the condition can be True): say that this one cannot, and count it.
                self._routing.refused_here(route.name)
                return write_status(request, service_unavailable(
                    f"replica {self._routing.replica} cannot reach the backend of APIService {route.name}: "
                    f"{route.unreachable_here}"))
            return write_status(request, service_unavailable())
        user = call.user
        if user is None:
            return write_status(request, internal_error("missing user"))
        proxy.forward(request, user, is_long_running(call.info), call.timer)
        return NOT_DONE_YET
