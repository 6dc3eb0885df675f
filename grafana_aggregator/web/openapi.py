"""`/openapi/v2` (JSON, or protobuf for kubectl 1.27/1.28) and `/openapi/v3` (index and group-version documents).

The local documents are built once from the kinds served here; remote backends' documents (from a
`RemoteOpenAPI`, or anything shaped like it) are merged in: their group-versions join the v3 index
and are served here, and their filtered Swagger parts join `/openapi/v2` (local names win a clash).
What is served is rebuilt only when the remote side's `generation` changes.  Every document has an
ETag, so kubectl's `If-None-Match` revalidation costs a 304.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..apimachinery.resource import ApiResource
from ..apimachinery.status import StatusError, not_found_path
from ..apimachinery.discovery import parse_accept
from ..apimachinery.openapi import (
    V2_PROTOBUF_ACCEPT,
    V2_PROTOBUF_CONTENT_TYPE,
    canonical_json,
    document_hash,
    encode_openapi_v2_protobuf,
    group_version_key,
    kinds_by_group_version,
    swagger_v2,
    v3_documents,
)
from ..apimachinery.strategy import KindInfo

JSON = dict[str, Any]

#: Seconds a request waits for remote documents that are loading.
LOADING_WAIT = 1.0
#: The Swagger 2.0 sections merged from remote parts.
_V2_SECTIONS = ("paths", "definitions", "parameters", "responses")


class RemoteDocuments(Protocol):
    """The remote side of the OpenAPI documents, as `aggregation.remote_openapi.RemoteOpenAPI` keeps it."""

    @property
    def generation(self) -> int:
        """Changes whenever `v3_documents()` or `v2_parts()` would return something else."""

    def v3_documents(self) -> dict[str, JSON]:
        """Remote group-version documents keyed `apis/<g>/<v>`."""

    def v2_parts(self) -> list[JSON]:
        """Remote Swagger 2.0 parts (`paths`, `definitions`, optionally `parameters`, `responses`), in merge order."""

    def still_loading(self) -> list[str]:
        """The group-version keys whose documents are on their way (their APIServices just turned Available)."""

    def settled(self) -> Deferred[None]:
        """Fires when nothing is loading."""


class _Document:
    """One served document: its bytes, content type, hash and ETag."""

    def __init__(self, data: bytes, content_type: str, etag: str):
        self.data = data
        self.content_type = content_type.encode()
        self.hash = etag
        self.etag = f'"{etag}"'.encode()


def _json_document(document: JSON) -> _Document:
    data = canonical_json(document)
    return _Document(data, "application/json", document_hash(document))


def merge_swagger(local: JSON, parts: Sequence[JSON]) -> JSON:
    """The local Swagger 2.0 document with remote parts merged in; the first to name a path or definition wins."""
    merged = dict(local)
    for section in _V2_SECTIONS:
        values = dict(local.get(section) or {})
        for part in parts:
            for name, value in (part.get(section) or {}).items():
                values.setdefault(name, value)
        if values or section in local:
            merged[section] = dict(sorted(values.items()))
    return merged


class OpenAPIResource(ApiResource):
    """`/openapi/v2`, `/openapi/v3` and `/openapi/v3/<apis/g/v>`.

    While remote documents are loading (an APIService just turned Available), a request waits for them
    up to LOADING_WAIT seconds; past that it is answered with what is there and a Warning naming what
    is still loading, and a document still loading is a 503.
    """

    isLeaf = True

    def __init__(self, groups: Sequence[object], emulated_version: tuple[int, int],
                 remote: RemoteDocuments | None = None, clock: IReactorTime | None = None):
        super().__init__()
        self._clock = clock
        self._title_version = f"v{emulated_version[0]}.{emulated_version[1]}.0"
        self._kinds: list[KindInfo] = []
        self._swagger: JSON | None = None
        #: Counts the local group-versions added after start: the merged documents are rebuilt when it changes.
        self._local_generation = 0
        self._build_local([k.info for g in groups for k in getattr(g, "kinds")])
        self._remote = remote
        #: Remote v3 documents as last served: the source dict (by identity) and its serialization.
        self._remote_v3: dict[str, tuple[JSON, _Document]] = {}
        self._v2_generation: tuple[int, int] | None = None
        self._v3_generation: tuple[int, int] | None = None
        self._v2_json = self._v2_protobuf = self._v3_index = _Document(b"", "application/json", "")
        self._v3: dict[str, _Document] = {}
        self._current_v2()
        self._current_v3()

    def _build_local(self, kinds: list[KindInfo], changed: tuple[str, str] | None = None) -> None:
        """Take kinds as the local ones: rebuild the v3 document of the changed group-version only (all of them
        without one), and the Swagger 2.0 document, which holds every kind, when it is next asked for; so
        installing a CRD costs the same with 100 installed as with none."""
        self._kinds = kinds
        self._swagger = None
        if changed is None:
            self._local_v3 = {key: _json_document(doc) for key, doc in v3_documents(kinds).items()}
            return
        local_v3 = dict(self._local_v3)
        local_v3.pop(group_version_key(*changed), None)
        documents = v3_documents(k for k in kinds if (k.group, k.version) == changed)
        local_v3.update((key, _json_document(doc)) for key, doc in documents.items())
        self._local_v3 = local_v3

    def _local_swagger(self) -> JSON:
        if self._swagger is None:
            self._swagger = swagger_v2(kinds_by_group_version(self._kinds), title="Kubernetes",
                                       version=self._title_version)
        return self._swagger

    def add_group(self, group: object) -> None:
        """Document a group-version served in this process from now on (installed after start), in place of
        what was documented for that group-version before."""
        infos = [k.info for k in getattr(group, "kinds")]
        key = (getattr(group, "group"), getattr(group, "version"))
        self._build_local([*(k for k in self._kinds if (k.group, k.version) != key), *infos], key)
        self._local_generation += 1

    def remove_group(self, group: str, version: str) -> None:
        """Stop documenting a group-version served in this process (its last kind is gone)."""
        key = (group, version)
        self._build_local([k for k in self._kinds if (k.group, k.version) != key], key)
        self._local_generation += 1

    def _generation(self) -> tuple[int, int]:
        return self._local_generation, self._remote.generation if self._remote is not None else 0

    def _current_v2(self) -> None:
        """Rebuild the merged `/openapi/v2` (JSON and protobuf) if the remote side changed since."""
        generation = self._generation()
        if generation == self._v2_generation:
            return
        parts = self._remote.v2_parts() if self._remote is not None else []
        local = self._local_swagger()
        swagger = merge_swagger(local, parts) if parts else local
        self._v2_json = _json_document(swagger)
        self._v2_protobuf = _Document(encode_openapi_v2_protobuf(swagger), V2_PROTOBUF_CONTENT_TYPE,
                                      self._v2_json.hash + "-PB")
        self._v2_generation = generation

    def _current_v3(self) -> None:
        """Rebuild the `/openapi/v3` index and documents if the remote side changed since."""
        generation = self._generation()
        if generation == self._v3_generation:
            return
        remote = self._remote.v3_documents() if self._remote is not None else {}
        served: dict[str, tuple[JSON, _Document]] = {}
        for key, document in remote.items():
            if key in self._local_v3:
                continue
            previous = self._remote_v3.get(key)
            served[key] = previous if previous is not None and previous[0] is document \
                else (document, _json_document(document))
        self._remote_v3 = served
        self._v3 = {**{key: served[key][1] for key in served}, **self._local_v3}
        index = {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={self._v3[key].hash}"}
                           for key in sorted(self._v3)}}
        self._v3_index = _json_document(index)
        self._v3_generation = generation

    async def _settled(self) -> list[str]:
        """Wait (a little) for remote documents that are loading; what is still loading after that."""
        remote = self._remote
        if remote is None or not remote.still_loading():
            return []
        if self._clock is not None:
            try:
                await remote.settled().addTimeout(LOADING_WAIT, self._clock)
            except TimeoutError:
                pass
        return remote.still_loading()

    async def handle(self, request: IRequest) -> None:
        loading = await self._settled()
        path = [p.decode("utf-8", "replace") for p in (request.postpath or [])]
        while path and path[-1] == "":
            path.pop()
        document: _Document | None = None
        if path == ["v2"]:
            self._current_v2()
            accept = request.getHeader(b"accept")
            wanted = [f"{m.type}/{m.subtype}" for m in parse_accept(accept.decode("latin-1"))] if accept else []
            protobuf = any(w in V2_PROTOBUF_ACCEPT for w in wanted)
            document = self._v2_protobuf if protobuf else self._v2_json
        elif path == ["v3"]:
            self._current_v3()
            document = self._v3_index
        elif len(path) > 1 and path[0] == "v3":
            self._current_v3()
            document = self._v3.get("/".join(path[1:]))
        if document is None:
            key = "/".join(path[1:])
            if key in loading:
                raise StatusError(503, f"the OpenAPI document of {key} is still loading, please try again",
                                  "ServiceUnavailable", {"retryAfterSeconds": 1})
            raise not_found_path()
        if loading:
            request.responseHeaders.addRawHeader(
                b"Warning", f'299 - "the OpenAPI documents of {", ".join(loading)} are still loading"'.encode())
        request.setHeader(b"ETag", document.etag)
        request.setHeader(b"Vary", b"Accept")
        request.setHeader(b"Content-Type", document.content_type)
        hashed = request.args.get(b"hash", [b""])[0] if request.args else b""
        if hashed and f'"{hashed.decode("latin-1")}"'.encode() == document.etag:
            request.setHeader(b"Cache-Control", b"public, immutable")
        else:
            request.setHeader(b"Cache-Control", b"no-cache, private")
        if request.getHeader(b"if-none-match") == document.etag:
            request.setResponseCode(304)
            request.finish()
            return
        request.setResponseCode(200)
        request.setHeader(b"Content-Length", b"%d" % len(document.data))
        request.write(document.data)
        request.finish()
