"""`/openapi/v2` (JSON, or protobuf for kubectl 1.27/1.28) and `/openapi/v3` (index and group-version documents).

The documents are built once from the kinds served here and answered with ETags, so kubectl's
`If-None-Match` revalidation costs a 304.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from .apimachinery.status import method_not_allowed, not_found_path, write_status
from .discovery import parse_accept
from .openapi import (
    V2_PROTOBUF_ACCEPT,
    V2_PROTOBUF_CONTENT_TYPE,
    canonical_json,
    document_hash,
    encode_openapi_v2_protobuf,
    kinds_by_group_version,
    openapi_v3_index,
    swagger_v2,
    v3_documents,
)
from .registry.base import KindInfo


class _Document:
    """One served document: its bytes, content type and ETag."""

    def __init__(self, data: bytes, content_type: str, etag: str):
        self.data = data
        self.content_type = content_type.encode()
        self.etag = f'"{etag}"'.encode()


class OpenAPIResource(Resource):
    """`/openapi/v2`, `/openapi/v3` and `/openapi/v3/<apis/g/v>`."""

    isLeaf = True

    def __init__(self, groups: Sequence[object], emulated_version: tuple[int, int]):
        super().__init__()
        kinds: list[KindInfo] = [k.info for g in groups for k in getattr(g, "kinds")]
        title_version = f"v{emulated_version[0]}.{emulated_version[1]}.0"
        swagger = swagger_v2(kinds_by_group_version(kinds), title="Kubernetes", version=title_version)
        self._v2_json = _Document(canonical_json(swagger), "application/json", document_hash(swagger))
        protobuf = encode_openapi_v2_protobuf(swagger)
        self._v2_protobuf = _Document(protobuf, V2_PROTOBUF_CONTENT_TYPE, document_hash(swagger) + "-PB")
        documents = v3_documents(kinds)
        self._v3 = {key: _Document(canonical_json(doc), "application/json", document_hash(doc))
                    for key, doc in documents.items()}
        index = openapi_v3_index(documents)
        self._v3_index = _Document(canonical_json(index), "application/json", document_hash(index))

    def render(self, request: IRequest) -> bytes:
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            return write_status(request, method_not_allowed(method, request.path.decode("utf-8", "replace")))
        path = [p.decode("utf-8", "replace") for p in (request.postpath or [])]
        while path and path[-1] == "":
            path.pop()
        document: _Document | None = None
        if path == ["v2"]:
            accept = request.getHeader(b"accept")
            wanted = [f"{m.type}/{m.subtype}" for m in parse_accept(accept.decode("latin-1"))] if accept else []
            protobuf = any(w in V2_PROTOBUF_ACCEPT for w in wanted)
            document = self._v2_protobuf if protobuf else self._v2_json
        elif path == ["v3"]:
            document = self._v3_index
        elif len(path) > 1 and path[0] == "v3":
            document = self._v3.get("/".join(path[1:]))
        if document is None:
            return write_status(request, not_found_path())
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
            return b""
        request.setResponseCode(200)
        return document.data
