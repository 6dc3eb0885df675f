"""Remote backends' OpenAPI documents: fetching, filtering and keeping them (RemoteOpenAPI, OpenAPIFetcher),
and the controller that keeps every Available remote APIService's documents current and says which are loading."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from grafana_aggregator.aggregation.remote_openapi import FETCH_TIMEOUT, RemoteOpenAPI, filter_swagger
from grafana_aggregator.aggregation.upstream import Backend
from grafana_aggregator.apimachinery.openapi import (
    document_hash,
    kinds_by_group_version,
    openapi_v3_index,
    swagger_v2,
    v3_documents,
)
from grafana_aggregator.controllers.remote_openapi import INITIAL_BACKOFF, REFRESH_INTERVAL, RemoteOpenAPIController
from grafana_aggregator.example.server import EMULATED_VERSION, example_group_version
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.web.openapi import OpenAPIResource

JSON = dict[str, Any]

GROUP, VERSION = "example.grafana.app", "v0alpha1"
KEY = f"apis/{GROUP}/{VERSION}"
OTHER_KEY = "apis/other.grafana.app/v1"
PREFIX = f"/apis/{GROUP}/{VERSION}"
NAMESPACE = "grafana_aggregator.controllers.remote_openapi"
EXAMPLE_NAME = f"{VERSION}.{GROUP}"


def ref(name: str) -> JSON:
    return {"$ref": "#/definitions/" + name}


def operation(operation_id: str, schema: JSON, **extra: Any) -> JSON:
    return {"get": {"operationId": operation_id, "responses": {"200": {"description": "OK", "schema": schema}},
                    **extra}}


def v3_document(path: str) -> JSON:
    return {"openapi": "3.0.0", "info": {"title": "Example", "version": "v1.33.0"},
            "paths": {path: {"get": {"operationId": "list"}}}, "components": {"schemas": {}}}


OWN_V3 = v3_document(PREFIX + "/dummies")
OTHER_V3 = v3_document("/apis/other.grafana.app/v1/things")

SWAGGER: JSON = {
    "swagger": "2.0",
    "info": {"title": "Example", "version": "v1.33.0"},
    "paths": {
        PREFIX + "/": operation("getExampleAPIResources", ref("meta.APIResourceList")),
        PREFIX + "/dummies": operation("listDummies", ref("example.DummyList"),
                                       parameters=[{"$ref": "#/parameters/limit-1"}]),
        f"/apis/{GROUP}/v0alpha10/others": operation("listOthers", ref("other.Thing")),
        "/apis/other.grafana.app/v1/things": operation("listThings", ref("other.Thing")),
        "/version": operation("getVersion", ref("version.Info")),
    },
    "definitions": {
        "example.Dummy": {"type": "object", "properties": {"metadata": ref("meta.ObjectMeta")}},
        "example.DummyList": {"type": "object", "properties": {"items": {"type": "array", "items": ref("example.Dummy")},
                                                               "metadata": ref("meta.ListMeta")}},
        "meta.APIResourceList": {"type": "object"},
        "meta.ListMeta": {"type": "object"},
        "meta.ObjectMeta": {"type": "object", "properties": {"creationTimestamp": ref("meta.Time")}},
        "meta.Time": {"type": "string", "format": "date-time"},
        "other.Thing": {"type": "object", "properties": {"metadata": ref("meta.ObjectMeta")}},
        "version.Info": {"type": "object"},
    },
    "parameters": {"limit-1": {"in": "query", "name": "limit", "type": "integer"},
                   "watch-2": {"in": "query", "name": "watch", "type": "boolean"}},
}

#: SWAGGER filtered to PREFIX + "/": its two paths and, transitively, what they reference.
OWN_V2 = {
    "paths": {PREFIX + "/": SWAGGER["paths"][PREFIX + "/"], PREFIX + "/dummies": SWAGGER["paths"][PREFIX + "/dummies"]},
    "definitions": {name: SWAGGER["definitions"][name] for name in (
        "example.Dummy", "example.DummyList", "meta.APIResourceList", "meta.ListMeta", "meta.ObjectMeta", "meta.Time")},
    "parameters": {"limit-1": SWAGGER["parameters"]["limit-1"]},
}


class FakeOpenAPIBackend(Resource):
    """A backend's `/openapi/v3` (index and documents) and `/openapi/v2`, with ETags; it records what it is asked."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.v3: dict[str, JSON] = {KEY: OWN_V3, OTHER_KEY: OTHER_V3}
        self.v2: JSON = SWAGGER
        self.code: int | None = None
        self.hang = False
        #: (uri, If-None-Match) of every request.
        self.seen: list[tuple[str, str | None]] = []
        #: (X-Remote-User, X-Remote-Group, Accept) of every request.
        self.identities: list[tuple[str | None, str | None, str | None]] = []
        #: Called with the URI of every request, as it arrives.
        self.on_request: Callable[[str], None] = lambda uri: None

    def render(self, request: IRequest) -> bytes | int:
        def header(name: bytes) -> str | None:
            value = request.getHeader(name)
            return value.decode() if value is not None else None

        self.seen.append((request.uri.decode(), header(b"if-none-match")))
        self.on_request(request.uri.decode())
        self.identities.append((header(b"x-remote-user"), header(b"x-remote-group"), header(b"accept")))
        if self.hang:
            return NOT_DONE_YET
        if self.code is not None:
            request.setResponseCode(self.code)
            return b"backend failure"
        path = request.path.decode()
        document: JSON | None
        etag: str | None = None
        if path == "/openapi/v3":
            document = openapi_v3_index(self.v3)
        elif path.startswith("/openapi/v3/"):
            document = self.v3.get(path.removeprefix("/openapi/v3/"))
            etag = f'"{document_hash(document)}"' if document is not None else None
        elif path == "/openapi/v2":
            document, etag = self.v2, f'"{document_hash(self.v2)}"'
        else:
            document = None
        if document is None:
            request.setResponseCode(404)
            return b"not found"
        if etag is not None:
            request.setHeader(b"ETag", etag.encode())
            if header(b"if-none-match") == etag:
                request.setResponseCode(304)
                return b""
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(document).encode()


def apiservice(name: str, group: str, version: str, service: str, available: bool = True) -> JSON:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"name": service, "namespace": "grafana", "port": 7443}},
            "status": {"conditions": [{"type": "Available", "status": "True" if available else "False"}]}}


def externalname(name: str, host: str) -> JSON:
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": name, "namespace": "grafana"}, "spec": {"host": host}}


EXAMPLE = apiservice(f"{VERSION}.{GROUP}", GROUP, VERSION, "example")


class FilterSwaggerTests(SynchronousTestCase):
    """Filtering a Swagger 2.0 document to one group-version."""

    def test_paths_and_reference_closure(self) -> None:
        """Only paths under the prefix stay, with the definitions and parameters they reference, transitively."""
        self.assertEqual(filter_swagger(SWAGGER, PREFIX + "/"), OWN_V2)

    def test_dangling_and_foreign_references(self) -> None:
        """References to undefined names and to other documents are ignored; nothing else is kept."""
        swagger = {"paths": {PREFIX + "/a": operation("a", {"allOf": [ref("missing"), {"$ref": "other.json#/x"}]})},
                   "definitions": {"unused": {"type": "object"}}}
        self.assertEqual(filter_swagger(swagger, PREFIX + "/"),
                         {"paths": {PREFIX + "/a": swagger["paths"][PREFIX + "/a"]}, "definitions": {}})


class RemoteOpenAPITests(SynchronousTestCase):
    """The controller fetching, keeping and dropping remote backends' OpenAPI documents into a RemoteOpenAPI."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.clock = Clock()
        self.informer = Informer(self.store, (APISERVICES, EXTERNALNAMES), self.clock)
        self.informer.startService()
        self.addCleanup(self.informer.stopService)
        self.backends: dict[str, Resource] = {"backend.test": FakeOpenAPIBackend()}
        self.asked: list[Backend] = []

        def client_for(backend: Backend) -> StubTreq:
            self.asked.append(backend)
            return StubTreq(self.backends[backend.host])

        self.remote = RemoteOpenAPI()
        self.unreachable: list[str] = []
        self.controller = RemoteOpenAPIController(self.informer, self.remote, client_for, self.clock,
                                                  on_unreachable=self.unreachable.append)
        self.events = EventLoggingObserver()
        globalLogPublisher.addObserver(self.events)
        self.addCleanup(globalLogPublisher.removeObserver, self.events)

    @property
    def backend(self) -> FakeOpenAPIBackend:
        backend = self.backends["backend.test"]
        assert isinstance(backend, FakeOpenAPIBackend)
        return backend

    def create(self, collection: Any, namespace: str, obj: JSON) -> None:
        self.successResultOf(Deferred.fromCoroutine(
            self.store.create(collection, namespace, obj["metadata"]["name"], copy.deepcopy(obj))))

    def update(self, obj: JSON) -> None:
        self.successResultOf(Deferred.fromCoroutine(
            self.store.update(APISERVICES, "", obj["metadata"]["name"], copy.deepcopy(obj))))

    def start(self) -> None:
        self.controller.startService()
        self.addCleanup(self.controller.stopService)

    def failures(self) -> list[str]:
        """The APIServices whose fetch failing was logged, once per outage each."""
        return [event["apiservice"] for event in self.events
                if event.get("log_namespace") == NAMESPACE and "error" in event]

    def test_fetches_own_group_version(self) -> None:
        """At start the backend's v3 index, its own group-version's document and its v2 are fetched as the aggregator."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})
        self.assertEqual(self.remote.v2_parts(), [OWN_V2])
        self.assertEqual(self.remote.generation, 2)
        self.assertEqual(self.backend.seen, [("/openapi/v3", None), (f"/openapi/v3/{KEY}", None),
                                             ("/openapi/v2", None)])
        self.assertEqual(self.backend.identities,
                         [("system:kube-aggregator", "system:masters", "application/json")] * 3)
        self.assertEqual([b.url for b in self.asked], ["https://backend.test:7443"])

    def test_created_after_start(self) -> None:
        """An Available APIService created while the controller runs is fetched at once."""
        self.start()
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})

    def test_example_backend(self) -> None:
        """From the example backend come its own v3 document and its v2 filtered to example.grafana.app/v0alpha1."""
        root = Resource()
        root.putChild(b"openapi", OpenAPIResource([example_group_version()], EMULATED_VERSION))
        self.backends["example.test"] = root
        self.create(EXTERNALNAMES, "grafana", externalname("example", "example.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        kinds = [kind.info for kind in example_group_version().kinds]
        swagger = swagger_v2(kinds_by_group_version(kinds), title="Kubernetes", version="v1.33.0")
        self.assertEqual(self.remote.v3_documents(), {KEY: v3_documents(kinds)[KEY]})
        self.assertEqual(self.remote.v2_parts(), [filter_swagger(swagger, PREFIX + "/")])

    def test_unchanged_hash_not_fetched_again(self) -> None:
        """While the index hash stays, only the index and v2 (with its ETag) are asked; a new hash fetches the document."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        del self.backend.seen[:]
        self.clock.advance(REFRESH_INTERVAL)
        v2_etag = f'"{document_hash(SWAGGER)}"'
        self.assertEqual(self.backend.seen, [("/openapi/v3", None), ("/openapi/v2", v2_etag)])
        self.assertEqual(self.remote.generation, 2)
        changed = v3_document(PREFIX + "/gadgets")
        self.backend.v3 = {KEY: changed, OTHER_KEY: OTHER_V3}
        del self.backend.seen[:]
        self.clock.advance(REFRESH_INTERVAL)
        self.assertEqual(self.backend.seen, [("/openapi/v3", None), (f"/openapi/v3/{KEY}", f'"{document_hash(OWN_V3)}"'),
                                             ("/openapi/v2", v2_etag)])
        self.assertEqual(self.remote.v3_documents(), {KEY: changed})
        self.assertEqual(self.remote.generation, 3)

    def test_changed_v2_replaces_the_part(self) -> None:
        """A backend whose v2 changed (a new ETag) has its filtered part replaced; an unchanged one is a 304."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        swagger = copy.deepcopy(SWAGGER)
        del swagger["paths"][PREFIX + "/dummies"]
        self.backend.v2 = swagger
        self.clock.advance(REFRESH_INTERVAL)
        self.assertEqual(self.remote.v2_parts(), [filter_swagger(swagger, PREFIX + "/")])
        self.assertNotEqual(self.remote.v2_parts(), [OWN_V2])
        self.assertEqual(self.remote.generation, 3)

    def test_other_group_versions_ignored(self) -> None:
        """Group-versions the backend lists besides the APIService's own are neither fetched nor kept."""
        self.backend.v3 = {OTHER_KEY: OTHER_V3}
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.assertEqual(self.remote.v3_documents(), {})
        self.assertEqual(self.backend.seen, [("/openapi/v3", None), ("/openapi/v2", None)])

    def test_failure_keeps_last_documents(self) -> None:
        """A failing backend keeps its last good documents (kube's LastSuccess) and is reported once per outage."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.backend.code = 500
        self.clock.pump([REFRESH_INTERVAL] * 3)
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})
        self.assertEqual(self.remote.v2_parts(), [OWN_V2])
        self.assertEqual(self.remote.generation, 2)
        self.assertEqual(self.failures(), [EXAMPLE_NAME])
        [failure] = [event for event in self.events if event.get("log_namespace") == NAMESPACE and "error" in event]
        self.assertIn("http error 500", failure["error"])
        self.backend.code = None
        self.clock.advance(REFRESH_INTERVAL)
        self.backend.code = 500
        self.clock.advance(REFRESH_INTERVAL)
        self.assertEqual(self.failures(), [EXAMPLE_NAME, EXAMPLE_NAME])

    def test_bad_answer_is_not_unreachable(self) -> None:
        """A backend answering OpenAPI requests with an error is not reported unreachable: it answered."""
        self.backend.code = 500
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.assertEqual(self.failures(), [EXAMPLE_NAME])
        self.assertEqual(self.unreachable, [])

    def test_no_answer_is_reported_unreachable(self) -> None:
        """A backend that cannot be reached for its documents is reported, so its availability is probed again."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)

        def refused(backend: Backend) -> Any:
            class Refusing:
                def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
                    return fail(ConnectionRefusedError("backend.test", 7443))
            return Refusing()

        self.controller = RemoteOpenAPIController(self.informer, self.remote, refused, self.clock,
                                                  on_unreachable=self.unreachable.append)
        self.start()
        self.assertEqual(self.unreachable, [EXAMPLE_NAME])
        self.assertEqual(self.remote.v3_documents(), {})

    def test_failure_retried_with_backoff(self) -> None:
        """A failed fetch is retried after 1 s, 2 s, 4 s … (not only at the next refresh), until it succeeds."""
        self.backend.code = 500
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        attempts = [len(self.backend.seen)]
        for delay in (INITIAL_BACKOFF, 2 * INITIAL_BACKOFF, 4 * INITIAL_BACKOFF):
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(self.backend.seen), attempts[-1])
            self.clock.advance(0.01)
            attempts.append(len(self.backend.seen))
        self.assertEqual(len(set(attempts)), 4)
        self.assertEqual(self.remote.v3_documents(), {})
        self.backend.code = None
        self.clock.advance(8 * INITIAL_BACKOFF)
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})
        fetched = len(self.backend.seen)
        self.clock.advance(REFRESH_INTERVAL - 15 * INITIAL_BACKOFF - 0.01)
        self.assertEqual(len(self.backend.seen), fetched)

    def test_unavailable_kept_and_deleted_dropped(self) -> None:
        """An unavailable APIService is not asked and keeps its documents; a deleted one's are dropped."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        del self.backend.seen[:]
        self.update(apiservice(EXAMPLE_NAME, GROUP, VERSION, "example", available=False))
        self.clock.advance(REFRESH_INTERVAL)
        self.assertEqual(self.backend.seen, [])
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})
        self.successResultOf(Deferred.fromCoroutine(self.store.delete(APISERVICES, "", EXAMPLE_NAME)))
        self.assertEqual((self.remote.v3_documents(), self.remote.v2_parts(), self.remote.generation), ({}, [], 3))

    def test_turning_local_drops(self) -> None:
        """An APIService turned Local has its remote documents dropped and is not asked again."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        local = copy.deepcopy(EXAMPLE)
        local["spec"]["service"] = None
        self.update(local)
        del self.backend.seen[:]
        self.clock.advance(REFRESH_INTERVAL)
        self.assertEqual((self.remote.v3_documents(), self.remote.v2_parts(), self.backend.seen), ({}, [], []))

    def test_becoming_available_fetches_at_once(self) -> None:
        """An APIService is fetched as soon as it turns Available, without waiting for the next tick."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", apiservice(EXAMPLE_NAME, GROUP, VERSION, "example", available=False))
        self.start()
        self.assertEqual(self.backend.seen, [])
        self.update(EXAMPLE)
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})

    def test_externalname_change_fetches_from_new_host(self) -> None:
        """A moved ExternalName is fetched from its new host at once, without the old backend's ETags."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        moved = FakeOpenAPIBackend()
        self.backends["moved.test"] = moved
        self.successResultOf(Deferred.fromCoroutine(self.store.update(
            EXTERNALNAMES, "grafana", "example", externalname("example", "moved.test"))))
        self.assertEqual(moved.seen, [("/openapi/v3", None), (f"/openapi/v3/{KEY}", None), ("/openapi/v2", None)])
        self.assertEqual(self.remote.generation, 2)

    def test_slow_backend_does_not_block_others(self) -> None:
        """A backend that never answers times out on its own while the others are fetched and refreshed on time."""
        slow = FakeOpenAPIBackend()
        slow.hang = True
        self.backends["slow.test"] = slow
        self.create(EXTERNALNAMES, "grafana", externalname("slow", "slow.test"))
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", apiservice("v1.aaa.grafana.app", "aaa.grafana.app", "v1", "slow"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})
        self.assertEqual(slow.seen, [("/openapi/v3", None)])
        self.clock.advance(FETCH_TIMEOUT - 0.01)
        self.assertEqual(self.failures(), [])
        self.clock.advance(0.01)
        self.assertEqual(self.failures(), ["v1.aaa.grafana.app"])
        self.clock.advance(INITIAL_BACKOFF)
        self.assertEqual(slow.seen, [("/openapi/v3", None), ("/openapi/v3", None)])
        del self.backend.seen[:]
        self.clock.advance(REFRESH_INTERVAL - FETCH_TIMEOUT - INITIAL_BACKOFF)
        self.assertEqual([uri for uri, _ in self.backend.seen], ["/openapi/v3", "/openapi/v2"])
        self.assertEqual(self.remote.v3_documents(), {KEY: OWN_V3})

    def test_merge_order_by_priority(self) -> None:
        """v2 parts come by their group's groupPriorityMinimum, highest first, then by APIService name."""
        other = FakeOpenAPIBackend()
        self.backends["other.test"] = other
        low = apiservice("v1.other.grafana.app", "other.grafana.app", "v1", "other")
        low["spec"]["groupPriorityMinimum"] = 10
        self.create(EXTERNALNAMES, "grafana", externalname("other", "other.test"))
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", low)
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.assertEqual([sorted(part["paths"]) for part in self.remote.v2_parts()],
                         [[PREFIX + "/", PREFIX + "/dummies"], ["/apis/other.grafana.app/v1/things"]])
        low["spec"]["groupPriorityMinimum"] = 2000
        self.update(low)
        self.assertEqual([sorted(part["paths"]) for part in self.remote.v2_parts()],
                         [["/apis/other.grafana.app/v1/things"], [PREFIX + "/", PREFIX + "/dummies"]])


class LoadingTests(SynchronousTestCase):
    """Which remote documents are on their way: from the moment an APIService turns Available until its fetch ends."""

    setUp = RemoteOpenAPITests.setUp
    backend = RemoteOpenAPITests.backend
    create = RemoteOpenAPITests.create
    update = RemoteOpenAPITests.update
    start = RemoteOpenAPITests.start

    def unavailable_then_started(self) -> None:
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", apiservice(EXAMPLE_NAME, GROUP, VERSION, "example", available=False))
        self.start()
        self.assertEqual(self.remote.still_loading(), [])
        self.successResultOf(self.remote.settled())

    def test_loading_from_the_status_write_until_fetched(self) -> None:
        """Loading is set before the backend is asked, and cleared when the documents are in, before the write returns."""
        self.unavailable_then_started()
        loading_when_asked: list[list[str]] = []
        self.backend.on_request = lambda uri: loading_when_asked.append(self.remote.still_loading())
        self.update(EXAMPLE)
        self.assertEqual(loading_when_asked, [[KEY]] * 3)
        self.assertEqual((self.remote.still_loading(), self.remote.v3_documents()), ([], {KEY: OWN_V3}))
        self.successResultOf(self.remote.settled())

    def test_loading_while_the_backend_is_slow(self) -> None:
        """While the fetch is in flight the group-version is loading and settled() waits; it fires when the fetch ends."""
        self.unavailable_then_started()
        self.backend.hang = True
        self.update(EXAMPLE)
        self.assertEqual(self.remote.still_loading(), [KEY])
        settled = self.remote.settled()
        self.clock.advance(FETCH_TIMEOUT - 0.01)
        self.assertNoResult(settled)
        self.clock.advance(0.01)
        self.successResultOf(settled)
        self.assertEqual(self.remote.still_loading(), [])

    def test_loaded_when_the_fetch_fails(self) -> None:
        """A failed fetch ends the loading too (the documents will not come soon); its retries do not load again."""
        self.unavailable_then_started()
        self.backend.code = 500
        waiting: list[Deferred[None]] = []
        self.backend.on_request = lambda uri: waiting.append(self.remote.settled())
        self.update(EXAMPLE)
        self.assertEqual(len(waiting), 2)
        for waiter in waiting:
            self.successResultOf(waiter)
        self.assertEqual((self.remote.still_loading(), self.remote.v3_documents()), ([], {}))
        self.backend.hang = True
        self.clock.advance(INITIAL_BACKOFF)
        self.assertEqual(len(waiting), 3)
        self.successResultOf(waiting[2])
        self.assertEqual(self.remote.still_loading(), [])

    def test_loading_at_start(self) -> None:
        """APIServices already Available when the controller starts are loading until their first fetch ends."""
        self.backend.hang = True
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.assertEqual(self.remote.still_loading(), [KEY])
        self.clock.advance(FETCH_TIMEOUT)
        self.assertEqual(self.remote.still_loading(), [])

    def test_back_with_documents_is_not_loading(self) -> None:
        """An APIService that turns Available again with documents kept is fetched but not marked loading."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.create(APISERVICES, "", EXAMPLE)
        self.start()
        self.update(apiservice(EXAMPLE_NAME, GROUP, VERSION, "example", available=False))
        self.backend.hang = True
        del self.backend.seen[:]
        self.update(EXAMPLE)
        self.assertEqual(self.backend.seen, [("/openapi/v3", None)])
        self.assertEqual(self.remote.still_loading(), [])
        self.successResultOf(self.remote.settled())

    def test_deleted_while_loading(self) -> None:
        """An APIService deleted while its documents load is no longer loading."""
        self.unavailable_then_started()
        self.backend.hang = True
        self.update(EXAMPLE)
        settled = self.remote.settled()
        self.successResultOf(Deferred.fromCoroutine(self.store.delete(APISERVICES, "", EXAMPLE_NAME)))
        self.successResultOf(settled)
        self.assertEqual(self.remote.still_loading(), [])

    def test_many_turning_available_at_once(self) -> None:
        """Every APIService that turned Available is listed as loading, also those whose fetch starts a turn later."""
        self.create(EXTERNALNAMES, "grafana", externalname("example", "backend.test"))
        self.backend.hang = True
        names = [f"v1.g{index:03}.grafana.app" for index in range(101)]
        for name in names:
            self.create(APISERVICES, "", apiservice(name, name.split(".", 1)[1], "v1", "example"))
        self.start()
        self.assertEqual(len(self.remote.still_loading()), 101)


class RemoteOpenAPIWiringTests(SynchronousTestCase):
    """An OpenAPIResource fed by a RemoteOpenAPI that the controller fills."""

    def test_remote_backend_listed_and_served(self) -> None:
        """A fetched remote group-version is listed in the index and served from the cache."""
        store = MemoryStore()
        clock = Clock()
        informer = Informer(store, (APISERVICES, EXTERNALNAMES), clock)
        informer.startService()
        self.addCleanup(informer.stopService)
        backend = FakeOpenAPIBackend()

        def client_for(target: Backend) -> StubTreq:
            return StubTreq(backend)

        remote = RemoteOpenAPI()
        controller = RemoteOpenAPIController(informer, remote, client_for, clock)
        resource = OpenAPIResource([], EMULATED_VERSION, remote=remote, clock=clock)
        controller.startService()
        self.addCleanup(controller.stopService)
        for collection, namespace, obj in (
                (EXTERNALNAMES, "grafana", externalname("example", "backend.test")),
                (APISERVICES, "", EXAMPLE)):
            self.successResultOf(Deferred.fromCoroutine(store.create(collection, namespace, obj["metadata"]["name"],
                                                                     copy.deepcopy(obj))))
        root = Resource()
        root.putChild(b"openapi", resource)
        client: Any = StubTreq(root)
        response = self.successResultOf(client.get("https://agg.test/openapi/v3"))
        self.assertEqual(self.successResultOf(client.json_content(response)), openapi_v3_index({KEY: OWN_V3}))
        response = self.successResultOf(client.get(f"https://agg.test/openapi/v3/{KEY}"))
        self.assertEqual(json.loads(self.successResultOf(client.content(response))), OWN_V3)
        self.assertEqual(len(backend.seen), 3)
