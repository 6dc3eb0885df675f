"""The `/api` and `/apis` trees: discovery built from the APIServices in storage, and routing to group-versions.

Every APIService — local or remote, available or not — is listed, ordered by kube's priority rules.
`/apis/<group>/<version>` goes to the in-process handler of a local group; remote group-versions are
answered by the handler given for them (the proxy, once it exists).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from ..apimachinery.resource import AsyncResource
from ..apimachinery.rest import GroupVersionResource
from ..apimachinery.status import StatusError, encode_json, method_not_allowed, not_found_path, write_json, write_status
from ..apimachinery.discovery import (
    AGGREGATED_KIND,
    DISCOVERY_GROUP,
    aggregated_groups,
    aggregated_list,
    aggregated_resources,
    api_group,
    api_resource_list,
    legacy_core_versions,
    legacy_group_list,
    legacy_groups,
    negotiate_discovery,
    sorted_by_group_and_version,
)
from ..apimachinery.strategy import KindInfo, Strategy
from ..storage import Collection, IStore

APISERVICES = Collection("apiregistration.k8s.io", "apiservices")


@frozen
class LocalGroupVersion:
    """A group-version served in this process, with its kinds."""

    group: str
    version: str
    kinds: tuple[Strategy, ...]

    @property
    def infos(self) -> list[KindInfo]:
        return [k.info for k in self.kinds]


def _not_acceptable() -> StatusError:
    return StatusError(406, f"only the following media types are accepted: application/json, "
                            f"application/json;g={DISCOVERY_GROUP};v=v2;as={AGGREGATED_KIND}", "NotAcceptable")


def _etag(data: bytes) -> bytes:
    """The ETag of an encoded document (its order is deterministic, so equal documents hash equal)."""
    return f'"{hashlib.sha512(data).hexdigest().upper()}"'.encode()


class CoreResource(Resource):
    """`/api`: there is no core group, so an empty list in whichever form the client asked for."""

    isLeaf = True

    def __init__(self, emulated_minor: int):
        super().__init__()
        self._emulated_minor = emulated_minor

    def render(self, request: IRequest) -> bytes:
        if [p for p in (request.postpath or []) if p]:
            return write_status(request, not_found_path())
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            return write_status(request, method_not_allowed(method, request.path.decode("utf-8", "replace")))
        accept = request.getHeader(b"accept")
        negotiated = negotiate_discovery(accept.decode("latin-1") if accept else None, self._emulated_minor)
        if negotiated is None:
            return write_status(request, _not_acceptable())
        body = aggregated_list(negotiated.version, []) if negotiated.form == "aggregated" else legacy_core_versions()
        data = write_json(request, 200, body)
        request.setHeader(b"Content-Type", negotiated.content_type)
        request.setHeader(b"Vary", b"Accept")
        return data


class ApisResource(AsyncResource):
    """`/apis` (merged discovery) and the routing of `/apis/<group>[/<version>[/…]]`."""

    def __init__(
        self,
        store: IStore,
        local: list[LocalGroupVersion],
        clock: IReactorTime,
        emulated_minor: int,
        remote: Callable[[str, str], IResource | None] = lambda group, version: None,
        remote_resources: Callable[[str, str], list[dict[str, Any]] | None] = lambda group, version: None,
        installed: Callable[[], bool] = lambda: True,
        watches: set[Any] | None = None,
        generation: Callable[[], Hashable | None] = lambda: None,
        indexed: Callable[[], list[dict[str, Any]]] = lambda: [],
    ):
        super().__init__()
        self._store = store
        self._emulated_minor = emulated_minor
        self._remote = remote
        self._remote_resources = remote_resources
        #: Whether every known group-version has been installed (until then unknown paths are 503, not 404).
        self.installed = installed
        self._local: dict[tuple[str, str], LocalGroupVersion] = {(g.group, g.version): g for g in local}
        self._handlers: dict[tuple[str, str], GroupVersionResource] = {}
        #: Every open watch stream of the local groups (ended cleanly at shutdown).
        self.watches: set[Any] = watches if watches is not None else set()
        #: A token that changes whenever the APIServices or the remote resources do; None until the watch-fed
        #: index is synced, and until then the APIServices are read from storage and nothing is cached.
        self._generation = generation
        #: The APIServices as the synced index holds them.
        self._indexed = indexed
        #: Encoded discovery documents by (form, version): (token, body, ETag).
        self._documents: dict[tuple[str, str], tuple[Hashable, bytes, bytes]] = {}
        for gv in local:
            self._handlers[(gv.group, gv.version)] = GroupVersionResource(
                gv.group, gv.version, list(gv.kinds), store, clock,
                resource_list=lambda gv=gv: api_resource_list(gv.group, gv.version, gv.infos),  # type: ignore[misc]
                watches=self.watches)

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        if path == b"":
            return self
        return _GroupResource(self, path.decode("utf-8", "replace"))

    async def apiservices(self) -> list[dict[str, Any]]:
        """Every APIService: from the index once it is synced (not to be changed), else from storage."""
        if self._generation() is not None:
            return self._indexed()
        return (await self._store.list(APISERVICES, "")).items

    async def _document(self, form: str, version: str) -> tuple[bytes, bytes]:
        """The encoded `/apis` document in a form, and its ETag; rebuilt only after something changed."""
        generation = self._generation()
        key = (form, version)
        if generation is not None:
            cached = self._documents.get(key)
            if cached is not None and cached[0] == generation:
                return cached[1], cached[2]
            apiservices = self._indexed()
        else:
            apiservices = (await self._store.list(APISERVICES, "")).items
        if form == "aggregated":
            body = aggregated_list(version, aggregated_groups(apiservices, self.resources_for))
            data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
            etag = _etag(data)
        else:
            data, etag = encode_json(legacy_group_list(legacy_groups(apiservices))), b""
        if generation is not None:
            self._documents[key] = (generation, data, etag)
        return data, etag

    def resources_for(self, group: str, version: str) -> list[dict[str, Any]] | None:
        """Aggregated-discovery resources of a group-version: known for local ones, unknown (None) for remote."""
        local = self._local.get((group, version))
        if local is not None:
            return aggregated_resources(local.infos)
        return self._remote_resources(group, version)

    def handler_for(self, group: str, version: str) -> IResource | None:
        """The resource serving a group-version, if this process serves or proxies it."""
        local = self._handlers.get((group, version))
        if local is not None:
            return local
        return self._remote(group, version)

    async def handle(self, request: IRequest) -> None:
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            raise method_not_allowed(method, request.path.decode("utf-8", "replace"))
        accept = request.getHeader(b"accept")
        negotiated = negotiate_discovery(accept.decode("latin-1") if accept else None, self._emulated_minor)
        if negotiated is None:
            raise _not_acceptable()
        data, etag = await self._document(negotiated.form, negotiated.version)
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
        request.setHeader(b"Content-Length", str(len(data)).encode())
        if method != "HEAD":
            request.write(data)
        request.finish()


class _GroupResource(AsyncResource):
    """`/apis/<group>`: the APIGroup; its children are the group's versions."""

    def __init__(self, apis: ApisResource, group: str):
        super().__init__()
        self._apis = apis
        self._group = group

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            return self
        handler = self._apis.handler_for(self._group, path.decode("utf-8", "replace"))
        if handler is None:
            return _UnavailableOrMissing(self._apis, self._group, path.decode("utf-8", "replace"))
        return handler

    async def handle(self, request: IRequest) -> None:
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            raise method_not_allowed(method, request.path.decode("utf-8", "replace"))
        buckets = [b for b in sorted_by_group_and_version(await self._apis.apiservices())
                   if b[0]["spec"]["group"] == self._group]
        if not buckets:
            raise not_found_path()
        body = {"kind": "APIGroup", "apiVersion": "v1", **api_group(buckets[0])}
        data = write_json(request, 200, body)
        if method != "HEAD":
            request.write(data)
        request.finish()


class _UnavailableOrMissing(AsyncResource):
    """A group-version nobody here serves: 503 while an APIService names it, else 404."""

    isLeaf = True

    def __init__(self, apis: ApisResource, group: str, version: str):
        super().__init__()
        self._apis = apis
        self._group = group
        self._version = version

    async def handle(self, request: IRequest) -> None:
        for apiservice in await self._apis.apiservices():
            spec = apiservice.get("spec", {})
            if spec.get("group") == self._group and spec.get("version") == self._version and spec.get("service"):
                raise StatusError(503, "the server is currently unable to handle the request", "ServiceUnavailable",
                                  {"causes": [{"reason": "UnexpectedServerResponse", "message": "service unavailable"}]})
        if not self._apis.installed():
            raise not_installed_yet()
        raise not_found_path()


def not_installed_yet() -> StatusError:
    """kube's answer while starting, instead of a 404 that controllers would take for "gone"."""
    return StatusError(503, "the request has been made before all known HTTP paths have been installed, please try "
                            "again", "ServiceUnavailable", {"retryAfterSeconds": 5})


__all__ = ["APISERVICES", "ApisResource", "CoreResource", "LocalGroupVersion"]
