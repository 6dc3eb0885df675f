"""Tests for L{grafana_aggregator.web.openapi}: local and remote documents under `/openapi/v2` and `/openapi/v3`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

import grafana_aggregator.web.openapi
from grafana_aggregator.aggregation.remote_openapi import RemoteOpenAPI
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
from grafana_aggregator.web.openapi import LOADING_WAIT, OpenAPIResource

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

    def still_loading(self) -> list[str]:
        return []

    def settled(self) -> Deferred[None]:
        return succeed(None)


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


class LoadingTests(SynchronousTestCase):
    """Requests while remote documents are loading wait for them a moment, then answer with what there is."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.remote = RemoteOpenAPI()
        self.client = StubTreq(self.root(OpenAPIResource([example_group_version()], EMULATED_VERSION,
                                                         remote=self.remote, clock=self.clock)))

    def root(self, resource: OpenAPIResource) -> Resource:
        root = Resource()
        root.putChild(b"openapi", resource)
        return root

    def begin_loading(self, name: str = "v1.remote.grafana.app", group: str = "remote.grafana.app") -> None:
        """What the controller does when an APIService turns Available and its fetch starts."""
        self.remote.loading(name, group, "v1")

    def arrive(self, name: str = "v1.remote.grafana.app") -> None:
        """What the controller does when that fetch brings the documents."""
        documents = self.remote.documents(name, "remote.grafana.app", "v1")
        documents.v3, documents.v2 = REMOTE_V3, REMOTE_V2
        documents.changes += 1
        self.remote.loaded(name)

    def answer(self, pending: Deferred[Any]) -> tuple[int, list[str] | None, bytes]:
        self.client.flush()
        response = self.successResultOf(pending)
        return response.code, response.headers.getRawHeaders("warning"), self.successResultOf(
            self.client.content(response))

    def test_waits_and_serves_the_loaded_document(self) -> None:
        """A request while a document loads waits for it, then is answered with it and without a Warning."""
        self.begin_loading()
        index = self.client.get(f"{BASE}/v3")
        document = self.client.get(f"{BASE}/v3/{REMOTE_KEY}")
        v2 = self.client.get(f"{BASE}/v2", headers={"Accept": "application/json"})
        self.clock.advance(LOADING_WAIT / 2)
        self.assertNoResult(index)
        self.assertNoResult(document)
        self.assertNoResult(v2)
        self.arrive()
        code, warning, body = self.answer(index)
        self.assertEqual((code, warning), (200, None))
        self.assertEqual(json.loads(body), openapi_v3_index({**v3_documents(local_kinds()), REMOTE_KEY: REMOTE_V3}))
        self.assertEqual(self.answer(document), (200, None, canonical_json(REMOTE_V3)))
        code, warning, body = self.answer(v2)
        self.assertEqual((code, warning), (200, None))
        self.assertIn(REMOTE_PREFIX + "/things", json.loads(body)["paths"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answers_with_a_warning_after_the_wait(self) -> None:
        """After LOADING_WAIT the answer is what there is, with a Warning naming what is still loading."""
        self.begin_loading()
        self.begin_loading("v1.other.grafana.app", "other.grafana.app")
        pending = self.client.get(f"{BASE}/v3")
        self.clock.advance(LOADING_WAIT - 0.01)
        self.assertNoResult(pending)
        self.clock.advance(0.01)
        code, warning, body = self.answer(pending)
        self.assertEqual((code, warning), (200, [
            '299 - "the OpenAPI documents of apis/other.grafana.app/v1, apis/remote.grafana.app/v1 are still '
            'loading"']))
        self.assertEqual(body, canonical_json(openapi_v3_index(v3_documents(local_kinds()))))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_loading_document_is_503(self) -> None:
        """A group-version document still loading after the wait is a 503 that says to retry; an unknown one is a 404."""
        self.begin_loading()
        pending = self.client.get(f"{BASE}/v3/{REMOTE_KEY}")
        unknown = self.client.get(f"{BASE}/v3/apis/unknown.grafana.app/v1")
        self.clock.advance(LOADING_WAIT)
        code, warning, body = self.answer(pending)
        status = json.loads(body)
        self.assertEqual((code, status["reason"], status["message"], status["details"]),
                         (503, "ServiceUnavailable",
                          f"the OpenAPI document of {REMOTE_KEY} is still loading, please try again",
                          {"retryAfterSeconds": 1}))
        self.assertEqual(self.answer(unknown)[0], 404)

    def test_loaded_document_with_others_loading(self) -> None:
        """A document already there is served after the wait, with the Warning about the others."""
        self.arrive()
        self.begin_loading("v1.other.grafana.app", "other.grafana.app")
        pending = self.client.get(f"{BASE}/v3/{REMOTE_KEY}")
        self.clock.advance(LOADING_WAIT)
        self.assertEqual(self.answer(pending), (200, [
            '299 - "the OpenAPI documents of apis/other.grafana.app/v1 are still loading"'], canonical_json(REMOTE_V3)))

    def test_nothing_loading_answers_at_once(self) -> None:
        """With nothing loading, requests are answered at once and no timer is started."""
        self.arrive()
        pending = self.client.get(f"{BASE}/v3/{REMOTE_KEY}")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.answer(pending), (200, None, canonical_json(REMOTE_V3)))

    def test_without_a_clock_does_not_wait(self) -> None:
        """Without a clock there is no waiting: the answer comes at once, with the Warning."""
        self.begin_loading()
        client = StubTreq(self.root(OpenAPIResource([], EMULATED_VERSION, remote=self.remote)))
        response = self.successResultOf(client.get(f"{BASE}/v3"))
        self.assertEqual((response.code, response.headers.getRawHeaders("warning")),
                         (200, ['299 - "the OpenAPI documents of apis/remote.grafana.app/v1 are still loading"']))
