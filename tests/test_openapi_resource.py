"""Tests for L{grafana_aggregator.web.openapi}: local and remote documents under `/openapi/v2` and `/openapi/v3`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

import grafana_aggregator.web.openapi
from grafana_aggregator.controllers.apiservice_index import APISERVICES, EXTERNALNAMES, APIServiceIndex
from grafana_aggregator.controllers.remote_openapi import RemoteOpenAPI
from grafana_aggregator.example.server import EMULATED_VERSION, example_group_version
from grafana_aggregator.apimachinery.openapi import (
    V2_PROTOBUF_ACCEPT,
    V2_PROTOBUF_CONTENT_TYPE,
    canonical_json,
    decode_openapi_v2_protobuf,
    document_hash,
    encode_openapi_v2_protobuf,
    kinds_by_group_version,
    openapi_v3_index,
    swagger_v2,
    v3_documents,
)
from grafana_aggregator.web.openapi import OpenAPIResource
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.aggregation.upstream import Backend

from .test_remote_openapi import KEY as REMOTE_EXAMPLE_KEY
from .test_remote_openapi import OWN_V3, FakeOpenAPIBackend, apiservice, externalname

JSON = dict[str, Any]

BASE = "https://agg.test/openapi"
REMOTE_KEY = "apis/remote.grafana.app/v1"
REMOTE_PREFIX = "/apis/remote.grafana.app/v1"
REMOTE_V3: JSON = {"openapi": "3.0.0", "info": {"title": "Remote", "version": "v1"},
                   "paths": {REMOTE_PREFIX + "/things": {"get": {"operationId": "listThings"}}},
                   "components": {"schemas": {}}}
META_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
REMOTE_V2: JSON = {
    "paths": {REMOTE_PREFIX + "/things": {"get": {"operationId": "listThings", "responses": {
        "200": {"description": "OK", "schema": {"$ref": "#/definitions/remote.Thing"}}}}}},
    "definitions": {"remote.Thing": {"type": "object", "properties": {"at": {"$ref": f"#/definitions/{META_TIME}"}}},
                    META_TIME: {"type": "string", "description": "the remote's own Time"}},
    "parameters": {"limit-1": {"in": "query", "name": "limit", "type": "integer"}},
}


class FakeRemote:
    """Remote documents set by the test; `generation` is bumped by hand."""

    def __init__(self) -> None:
        self.generation = 0
        self.v3: dict[str, JSON] = {}
        self.v2: list[JSON] = []

    def v3_documents(self) -> dict[str, JSON]:
        return dict(self.v3)

    def v2_parts(self) -> list[JSON]:
        return list(self.v2)


def local_kinds() -> list[Any]:
    return [kind.info for kind in example_group_version().kinds]


def local_swagger() -> JSON:
    return swagger_v2(kinds_by_group_version(local_kinds()), title="Kubernetes", version="v1.33.0")


class OpenAPIResourceTests(SynchronousTestCase):
    """Serving local and remote OpenAPI documents."""

    def setUp(self) -> None:
        self.remote = FakeRemote()
        self.remote.v3 = {REMOTE_KEY: REMOTE_V3}
        self.remote.v2 = [REMOTE_V2]
        self.remote.generation = 1
        self.client = self.serve(OpenAPIResource([example_group_version()], EMULATED_VERSION, remote=self.remote))

    def serve(self, resource: OpenAPIResource) -> Any:
        root = Resource()
        root.putChild(b"openapi", resource)
        return StubTreq(root)

    def get(self, path: str, headers: dict[str, str] | None = None,
            client: Any = None) -> tuple[int, dict[str, str], bytes]:
        client = client or self.client
        response = self.successResultOf(client.get(BASE + path, headers=headers or {}))
        body = self.successResultOf(client.content(response))
        wanted = ("etag", "content-type", "cache-control")
        found = {name: (response.headers.getRawHeaders(name) or [""])[0] for name in wanted}
        return response.code, {name: value for name, value in found.items() if value}, body

    def merged(self) -> JSON:
        local = local_swagger()
        return {**local,
                "paths": dict(sorted({**REMOTE_V2["paths"], **local["paths"]}.items())),
                "definitions": dict(sorted({**REMOTE_V2["definitions"], **local["definitions"]}.items())),
                "parameters": REMOTE_V2["parameters"]}

    def test_without_remote(self) -> None:
        """Without a remote side the index lists the local group-versions only, as before."""
        client = self.serve(OpenAPIResource([example_group_version()], EMULATED_VERSION))
        code, _, body = self.get("/v3", client=client)
        self.assertEqual((code, body), (200, canonical_json(openapi_v3_index(v3_documents(local_kinds())))))

    def test_index_lists_local_and_remote(self) -> None:
        """The v3 index lists local and remote group-versions, each with its own hash."""
        code, headers, body = self.get("/v3")
        expected = openapi_v3_index({**v3_documents(local_kinds()), REMOTE_KEY: REMOTE_V3})
        self.assertEqual((code, body), (200, canonical_json(expected)))
        self.assertEqual(headers["etag"], f'"{document_hash(expected)}"')

    def test_remote_document_with_etag(self) -> None:
        """A remote group-version's document is served with its hash as ETag, immutable when asked by hash."""
        digest = document_hash(REMOTE_V3)
        self.assertEqual(self.get(f"/v3/{REMOTE_KEY}?hash={digest}"), (200, {
            "etag": f'"{digest}"', "content-type": "application/json", "cache-control": "public, immutable"},
            canonical_json(REMOTE_V3)))

    def test_remote_document_not_modified(self) -> None:
        """A remote document asked with its ETag in If-None-Match is a 304 without a body."""
        etag = f'"{document_hash(REMOTE_V3)}"'
        code, headers, body = self.get(f"/v3/{REMOTE_KEY}", {"If-None-Match": etag})
        self.assertEqual((code, headers["etag"], body), (304, etag, b""))

    def test_local_wins_v3_key(self) -> None:
        """A remote document for a locally served group-version does not replace the local one."""
        local_key = "apis/example.grafana.app/v0alpha1"
        self.remote.v3 = {local_key: REMOTE_V3}
        self.remote.generation += 1
        code, _, body = self.get(f"/v3/{local_key}")
        self.assertEqual((code, body), (200, canonical_json(v3_documents(local_kinds())[local_key])))

    def test_v2_merged_json(self) -> None:
        """`/openapi/v2` as JSON is the local Swagger with the remote paths, definitions and parameters; local wins."""
        code, headers, body = self.get("/v2", {"Accept": "application/json"})
        merged = self.merged()
        self.assertEqual((code, headers["content-type"], headers["etag"], body),
                         (200, "application/json", f'"{document_hash(merged)}"', canonical_json(merged)))
        self.assertEqual(merged["definitions"][META_TIME], local_swagger()["definitions"][META_TIME])

    def test_v2_merged_protobuf(self) -> None:
        """`/openapi/v2` as protobuf decodes to the merged document."""
        code, headers, body = self.get("/v2", {"Accept": V2_PROTOBUF_ACCEPT[0]})
        merged = self.merged()
        self.assertEqual((code, headers["content-type"], headers["etag"]),
                         (200, V2_PROTOBUF_CONTENT_TYPE, f'"{document_hash(merged)}-PB"'))
        self.assertEqual(decode_openapi_v2_protobuf(body),
                         decode_openapi_v2_protobuf(encode_openapi_v2_protobuf(merged)))
        self.assertIn(REMOTE_PREFIX + "/things", decode_openapi_v2_protobuf(body)["paths"])

    def test_rebuilt_only_on_generation_change(self) -> None:
        """Nothing is recomputed until the remote generation changes; then both documents follow."""
        encoded: list[JSON] = []
        original: Callable[[JSON], bytes] = getattr(grafana_aggregator.web.openapi, "encode_openapi_v2_protobuf")

        def counting(document: JSON) -> bytes:
            encoded.append(document)
            return original(document)

        self.patch(grafana_aggregator.web.openapi, "encode_openapi_v2_protobuf", counting)
        first_v2 = self.get("/v2")
        first_v3 = self.get("/v3")
        self.remote.v2 = []
        self.remote.v3 = {}
        self.assertEqual((self.get("/v2"), self.get("/v3"), len(encoded)), (first_v2, first_v3, 0))
        self.remote.generation += 1
        self.assertEqual(self.get("/v2")[2], canonical_json(local_swagger()))
        self.assertEqual(self.get("/v3")[2], canonical_json(openapi_v3_index(v3_documents(local_kinds()))))
        self.assertEqual(self.get(f"/v3/{REMOTE_KEY}")[0], 404)
        self.assertEqual(len(encoded), 1)


class RemoteOpenAPIWiringTests(SynchronousTestCase):
    """An OpenAPIResource fed by a RemoteOpenAPI."""

    def test_remote_backend_listed_and_served(self) -> None:
        """A fetched remote group-version is listed in the index and served from the cache."""
        store = MemoryStore()
        index = APIServiceIndex(store)
        index.startService()
        backend = FakeOpenAPIBackend()

        def client_for(target: Backend) -> StubTreq:
            return StubTreq(backend)

        remote = RemoteOpenAPI(index, client_for, Clock())
        resource = OpenAPIResource([], EMULATED_VERSION, remote=remote)
        remote.startService()
        self.addCleanup(remote.stopService)
        for collection, namespace, obj in (
                (EXTERNALNAMES, "grafana", externalname("example", "backend.test")),
                (APISERVICES, "", apiservice("v0alpha1.example.grafana.app", "example.grafana.app", "v0alpha1",
                                             "example"))):
            self.successResultOf(Deferred.fromCoroutine(store.create(collection, namespace, obj["metadata"]["name"],
                                                                     obj)))
        root = Resource()
        root.putChild(b"openapi", resource)
        client: Any = StubTreq(root)
        response = self.successResultOf(client.get(f"{BASE}/v3"))
        self.assertEqual(self.successResultOf(client.json_content(response)),
                         openapi_v3_index({REMOTE_EXAMPLE_KEY: OWN_V3}))
        response = self.successResultOf(client.get(f"{BASE}/v3/{REMOTE_EXAMPLE_KEY}"))
        self.assertEqual(self.successResultOf(client.content(response)), canonical_json(OWN_V3))
        self.assertEqual(len(backend.seen), 3)
