"""Reads through the served `/apis` tree: get, list, Tables, discovery and watches, and the Local APIService registration.

Each test wires the kinds and groups as the daemon does (`local_groups`) over a memory store and talks HTTP through StubTreq.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Coroutine
from typing import Any, cast

import yaml
from attrs import define, field
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from zope.interface import implementer

from grafana_aggregator.apimachinery import streams as streams_module
from grafana_aggregator.apimachinery import watch as watch_module
from grafana_aggregator.controllers.local_apiservices import LocalAPIServiceRegistration
from grafana_aggregator.apimachinery.strategy import CREATION_TIMESTAMP_DESCRIPTION, NAME_DESCRIPTION
from grafana_aggregator.storage import Collection, IWatch, WatchEvent
from grafana_aggregator.storage.memory import MemoryStore
from .support import serve_apis
from grafana_aggregator.tap import LOCAL_APISERVICES, local_groups

#: 2025-06-15T15:06:40Z, when every test starts.
EPOCH = 1_750_000_000.0
CREATED = "2025-06-15T15:06:40Z"

HOST = "https://agg.test"
APIREGISTRATION = f"{HOST}/apis/apiregistration.k8s.io/v1"
APISERVICES = f"{APIREGISTRATION}/apiservices"
SERVICE_GRAFANA = f"{HOST}/apis/service.grafana.app/v0alpha1"

APISERVICE_COLLECTION = Collection("apiregistration.k8s.io", "apiservices")
EXTERNALNAME_COLLECTION = Collection("service.grafana.app", "externalnames")

#: What `kubectl get` sends for human output (kubectl-wire.md section 3, shortened to v1).
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
TABLE_CONTENT_TYPE = ["application/json;as=Table;v=v1;g=meta.k8s.io"]
#: What kubectl 1.30 to 1.33 send on GET /apis.
AGGREGATED = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
AGGREGATED_CONTENT_TYPE = ["application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"]

LOCAL_CONDITION = {"type": "Available", "status": "True", "lastTransitionTime": CREATED, "reason": "Local",
                   "message": "Local APIServices are always available"}

NOT_FOUND_PATH = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "the server could not find the requested resource", "reason": "NotFound", "details": {},
                  "code": 404}

APISERVICE_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
    {"name": "Service", "type": "string", "format": "",
     "description": "The reference to the service that hosts this API endpoint.", "priority": 0},
    {"name": "Available", "type": "string", "format": "", "description": "Whether this service is available.",
     "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": CREATION_TIMESTAMP_DESCRIPTION, "priority": 0},
]
EXTERNALNAME_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
    {"name": "Host", "type": "string", "format": "",
     "description": "The DNS name or IP address of the backend that serves the APIService.", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": CREATION_TIMESTAMP_DESCRIPTION, "priority": 0},
]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
APISERVICE_KIND = {"group": "apiregistration.k8s.io", "version": "v1", "kind": "APIService"}
EXTERNALNAME_KIND = {"group": "service.grafana.app", "version": "v0alpha1", "kind": "ExternalName"}
CRD_KIND = {"group": "apiextensions.k8s.io", "version": "v1", "kind": "CustomResourceDefinition"}


def apiservice(name: str, group: str, version: str, group_priority: int = 1000, version_priority: int = 15,
               service: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """An APIService as the REST handler stores it: Local ones available, remote ones without conditions."""
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "creationTimestamp": CREATED, "generation": 1}
    if labels is not None:
        meta["labels"] = labels
    spec: dict[str, Any] = {"group": group, "version": version, "groupPriorityMinimum": group_priority,
                            "versionPriority": version_priority}
    if service is not None:
        spec["service"] = service
    status: dict[str, Any] = {} if service is not None else {"conditions": [dict(LOCAL_CONDITION)]}
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": meta, "spec": spec,
            "status": status}


def external_name(namespace: str, name: str, host: str) -> dict[str, Any]:
    """An ExternalName as the REST handler stores it."""
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                         "creationTimestamp": CREATED, "generation": 1},
            "spec": {"host": host}}


def new_apiservice(name: str, group: str, version: str, service: dict[str, Any] | None = None,
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The body a client POSTs to create an APIService."""
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    spec: dict[str, Any] = {"group": group, "version": version, "groupPriorityMinimum": 1000, "versionPriority": 15}
    if service is not None:
        spec["service"] = service
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": meta, "spec": spec}


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    """The PartialObjectMetadata of a Table row."""
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def names(body: dict[str, Any]) -> list[str]:
    """`namespace/name` of each item of a list body."""
    return [f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in body["items"]]


class Reply:
    """A complete HTTP response: code, headers and body."""

    def __init__(self, code: int, headers: Headers, body: bytes):
        self.code = code
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> list[str] | None:
        values = self.headers.getRawHeaders(name)
        return None if values is None else list(values)


class _Collector(Protocol):
    """Gathers a streamed body as it arrives and notes how it ended."""

    def __init__(self, watch: Watch):
        self._watch = watch

    def dataReceived(self, data: bytes) -> None:
        self._watch.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._watch.ended = reason


class Watch:
    """A watch request whose events are read as they arrive (the body is never buffered)."""

    def __init__(self, deferred: Deferred[IResponse]):
        self.response: IResponse | None = None
        self.data = b""
        self.ended: Failure | None = None
        self._collector = _Collector(self)
        deferred.addCallback(self._started)

    def _started(self, response: IResponse) -> None:
        self.response = response
        response.deliverBody(self._collector)

    def events(self) -> list[dict[str, Any]]:
        """Every event received so far."""
        return [json.loads(line) for line in self.data.splitlines()]

    def summary(self) -> list[tuple[str, str, str]]:
        """(type, name, resourceVersion) of every event received so far."""
        return [(e["type"], e["object"]["metadata"].get("name", ""), e["object"]["metadata"]["resourceVersion"])
                for e in self.events()]

    def disconnect(self) -> None:
        """Close the connection from the client side, as a client that goes away does."""
        cast(IPushProducer, self._collector.transport).stopProducing()


@implementer(IWatch)
class _TrackedWatch:
    """A store watch that remembers whether it was cancelled."""

    def __init__(self, inner: IWatch):
        self._inner = inner
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self._inner.cancel()


@define
class RecordingStore(MemoryStore):
    """A memory store that keeps every watch it hands out."""

    watches: list[_TrackedWatch] = field(factory=list)

    def watch(self, collection: Collection, namespace: str | None, resource_version: int,
              on_event: Callable[[WatchEvent], None]) -> IWatch:
        tracked = _TrackedWatch(super().watch(collection, namespace, resource_version, on_event))
        self.watches.append(tracked)
        return tracked


class Server:
    """The `/apis` tree wired as the daemon wires it, over a memory store, with a StubTreq client and a Clock."""

    def __init__(self, case: SynchronousTestCase, store: MemoryStore | None = None):
        self.case = case
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.strategy, groups = local_groups(self.now)
        self.store = store if store is not None else MemoryStore()
        root = Resource()
        self.served = serve_apis(self.store, self.clock, groups)
        root.putChild(b"apis", self.served.apis)
        self.client = StubTreq(root)

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """The result of a store coroutine (the memory store never waits)."""
        return self.case.successResultOf(Deferred.fromCoroutine(coroutine))

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Put an object straight into the store and return it as stored."""
        meta = obj["metadata"]
        collection = APISERVICE_COLLECTION if obj["kind"] == "APIService" else EXTERNALNAME_COLLECTION
        return self.run(self.store.create(collection, meta.get("namespace", ""), meta["name"], obj))  # type: ignore[no-any-return]

    def request(self, method: str, url: str, body: Any = None, accept: str | None = None,
                content_type: str = "application/json", headers: dict[str, str] | None = None) -> Reply:
        """Send a request, wait for the whole response and return it."""
        sent = dict(headers or {})
        if accept is not None:
            sent["Accept"] = accept
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = content_type
        deferred = self.client.request(method, url, data=data, headers=sent)
        self.client.flush()
        response = self.case.successResultOf(deferred)
        content = self.client.content(response)
        self.client.flush()
        return Reply(response.code, response.headers, self.case.successResultOf(content))

    def get(self, url: str, accept: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", url, accept=accept, headers=headers)

    def create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST an object, check it was created, and return it."""
        reply = self.request("POST", url, body)
        self.case.assertEqual(reply.code, 201, reply.body)
        return reply.json()  # type: ignore[no-any-return]

    def label(self, name: str, labels: dict[str, str | None]) -> dict[str, Any]:
        """Change an APIService's labels with a merge patch and return it."""
        reply = self.request("PATCH", f"{APISERVICES}/{name}", {"metadata": {"labels": labels}},
                             content_type="application/merge-patch+json")
        self.case.assertEqual(reply.code, 200, reply.body)
        return reply.json()  # type: ignore[no-any-return]

    def delete(self, name: str) -> None:
        """DELETE an APIService."""
        self.case.assertEqual(self.request("DELETE", f"{APISERVICES}/{name}").code, 200)

    def watch(self, url: str, accept: str | None = None) -> Watch:
        """Start a watch request and read what it sends so far."""
        watch = Watch(self.client.get(url, headers={"Accept": accept} if accept else {}, unbuffered=True))
        self.client.flush()
        return watch


class ObjectGetTests(SynchronousTestCase):
    """GET of one object: JSON, YAML, and the 404s."""

    def test_get_json(self) -> None:
        """A stored APIService comes back as stored, with its resourceVersion, as application/json."""
        server = Server(self)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        reply = server.get(f"{APISERVICES}/v1.a.example")
        self.assertEqual((reply.code, reply.header("content-type")), (200, ["application/json"]))
        self.assertEqual(reply.json(), {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1.a.example", "uid": "uid-v1.a.example", "creationTimestamp": CREATED,
                         "generation": 1, "resourceVersion": "1"},
            "spec": {"group": "a.example", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15},
            "status": {"conditions": [LOCAL_CONDITION]},
        })

    def test_get_after_create(self) -> None:
        """A GET returns exactly what the POST that created the object returned."""
        server = Server(self)
        created = server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        self.assertEqual(server.get(f"{APISERVICES}/v1.a.example").json(), created)

    def test_get_yaml(self) -> None:
        """With Accept: application/yaml the same object is sent as YAML."""
        server = Server(self)
        stored = server.seed(apiservice("v1.a.example", "a.example", "v1"))
        reply = server.get(f"{APISERVICES}/v1.a.example", accept="application/yaml")
        self.assertEqual((reply.code, reply.header("content-type")), (200, ["application/yaml"]))
        self.assertEqual(yaml.safe_load(reply.body), stored)

    def test_get_missing(self) -> None:
        """A missing APIService is kube's NotFound Status naming the resource, group and name."""
        reply = Server(self).get(f"{APISERVICES}/x")
        self.assertEqual((reply.code, reply.header("content-type")), (404, ["application/json"]))
        self.assertEqual(reply.json(), {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'apiservices.apiregistration.k8s.io "x" not found', "reason": "NotFound",
            "details": {"name": "x", "group": "apiregistration.k8s.io", "kind": "apiservices"}, "code": 404,
        })

    def test_get_namespaced(self) -> None:
        """An ExternalName is read under /namespaces/<ns>/; the same name in another namespace is not found."""
        server = Server(self)
        stored = server.seed(external_name("grafana", "backend", "backend.example.com"))
        reply = server.get(f"{SERVICE_GRAFANA}/namespaces/grafana/externalnames/backend")
        self.assertEqual((reply.code, reply.json()), (200, stored))
        missing = server.get(f"{SERVICE_GRAFANA}/namespaces/other/externalnames/backend")
        self.assertEqual((missing.code, missing.json()), (404, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'externalnames.service.grafana.app "backend" not found', "reason": "NotFound",
            "details": {"name": "backend", "group": "service.grafana.app", "kind": "externalnames"}, "code": 404,
        }))

    def test_get_namespaced_without_namespace(self) -> None:
        """An item path of a namespaced kind without /namespaces/<ns>/ is not served."""
        server = Server(self)
        server.seed(external_name("grafana", "backend", "backend.example.com"))
        reply = server.get(f"{SERVICE_GRAFANA}/externalnames/backend")
        self.assertEqual((reply.code, reply.json()), (404, NOT_FOUND_PATH))

    def test_get_cluster_scoped_under_namespace(self) -> None:
        """A cluster-scoped kind under /namespaces/<ns>/ is not served."""
        server = Server(self)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        reply = server.get(f"{APIREGISTRATION}/namespaces/default/apiservices/v1.a.example")
        self.assertEqual((reply.code, reply.json()), (404, NOT_FOUND_PATH))

    def test_protobuf_only_not_acceptable(self) -> None:
        """An Accept naming only protobuf is a 406 NotAcceptable Status listing what is offered."""
        server = Server(self)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        for url in (APISERVICES, f"{APISERVICES}/v1.a.example"):
            reply = server.get(url, accept="application/vnd.kubernetes.protobuf")
            self.assertEqual((reply.code, reply.json()), (406, {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "only the following media types are accepted: application/json, application/yaml, "
                           "application/json;as=Table;v=v1;g=meta.k8s.io",
                "reason": "NotAcceptable", "code": 406,
            }))


class ListTests(SynchronousTestCase):
    """LIST: the list object, namespaces, selectors, paging and resourceVersion handling."""

    def server_with_apiservices(self) -> Server:
        """Five APIServices (two labelled) at resourceVersion 5."""
        server = Server(self)
        server.seed(apiservice("v1.a.example", "a.example", "v1", labels={"tier": "web", "app": "a"}))
        server.seed(apiservice("v1.b.example", "b.example", "v1", labels={"tier": "db"}))
        server.seed(apiservice("v1.c.example", "c.example", "v1"))
        server.seed(apiservice("v1.d.example", "d.example", "v1", labels={"tier": "cache"}))
        server.seed(apiservice("v1.e.example", "e.example", "v1"))
        return server

    def server_with_external_names(self) -> Server:
        """Three ExternalNames in two namespaces."""
        server = Server(self)
        server.seed(external_name("ns2", "a", "a.example.com"))
        server.seed(external_name("ns1", "b", "b.example.com"))
        server.seed(external_name("ns1", "a", "c.example.com"))
        return server

    def list_names(self, server: Server, url: str) -> tuple[int, list[str] | dict[str, Any]]:
        """The code and item keys of a list, or the code and Status of a failed one."""
        reply = server.get(url)
        body = reply.json()
        return reply.code, names(body) if reply.code == 200 else body

    def test_list_object(self) -> None:
        """A list is an APIServiceList carrying the store's resourceVersion, with the items in name order."""
        server = self.server_with_apiservices()
        reply = server.get(APISERVICES)
        self.assertEqual((reply.code, reply.header("content-type")), (200, ["application/json"]))
        body = reply.json()
        self.assertEqual((body["kind"], body["apiVersion"], body["metadata"]),
                         ("APIServiceList", "apiregistration.k8s.io/v1", {"resourceVersion": "5"}))
        self.assertEqual(body["items"], [server.run(server.store.get(APISERVICE_COLLECTION, "", f"v1.{x}.example"))
                                         for x in "abcde"])

    def test_empty_list(self) -> None:
        """An empty collection lists no items at the store's resourceVersion."""
        server = Server(self)
        server.seed(external_name("ns1", "a", "a.example.com"))
        self.assertEqual(server.get(APISERVICES).json(), {
            "kind": "APIServiceList", "apiVersion": "apiregistration.k8s.io/v1", "metadata": {"resourceVersion": "1"},
            "items": []})

    def test_all_namespaces(self) -> None:
        """Without a namespace every ExternalName is listed, by namespace then name."""
        server = self.server_with_external_names()
        reply = server.get(f"{SERVICE_GRAFANA}/externalnames")
        body = reply.json()
        self.assertEqual((reply.code, body["kind"], body["apiVersion"], body["metadata"]),
                         (200, "ExternalNameList", "service.grafana.app/v0alpha1", {"resourceVersion": "3"}))
        self.assertEqual(names(body), ["ns1/a", "ns1/b", "ns2/a"])

    def test_one_namespace(self) -> None:
        """Under /namespaces/<ns>/ only that namespace's ExternalNames are listed."""
        server = self.server_with_external_names()
        self.assertEqual(self.list_names(server, f"{SERVICE_GRAFANA}/namespaces/ns1/externalnames"),
                         (200, ["ns1/a", "ns1/b"]))
        self.assertEqual(self.list_names(server, f"{SERVICE_GRAFANA}/namespaces/ns3/externalnames"), (200, []))

    def test_label_selector_equality(self) -> None:
        """`tier=web`, `tier==db` and `tier!=web` select by label value (`!=` includes unlabelled objects)."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier%3Dweb"), (200, ["/v1.a.example"]))
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier%3D%3Ddb"), (200, ["/v1.b.example"]))
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier!%3Dweb"),
                         (200, ["/v1.b.example", "/v1.c.example", "/v1.d.example", "/v1.e.example"]))
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier%3Dweb,app%3Da"),
                         (200, ["/v1.a.example"]))

    def test_label_selector_set_based(self) -> None:
        """`in`, `notin` and a bare key select by set membership and existence."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier+in+(web,db)"),
                         (200, ["/v1.a.example", "/v1.b.example"]))
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier+notin+(web,db)"),
                         (200, ["/v1.c.example", "/v1.d.example", "/v1.e.example"]))
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier"),
                         (200, ["/v1.a.example", "/v1.b.example", "/v1.d.example"]))

    def test_label_selector_not_exists(self) -> None:
        """`!tier` selects the objects without the label."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=!tier"),
                         (200, ["/v1.c.example", "/v1.e.example"]))

    def test_label_selector_invalid(self) -> None:
        """A malformed label selector is a 400 BadRequest Status with the parser's message."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?labelSelector=tier+web"), (400, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "unable to parse requirement: found 'web', expected: in, notin, =, ==, !=, gt, lt",
            "reason": "BadRequest", "code": 400}))

    def test_field_selector_name(self) -> None:
        """`metadata.name=X` lists that object only; `metadata.name!=X` every other one."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?fieldSelector=metadata.name%3Dv1.c.example"),
                         (200, ["/v1.c.example"]))
        self.assertEqual(self.list_names(server, f"{APISERVICES}?fieldSelector=metadata.name!%3Dv1.c.example"),
                         (200, ["/v1.a.example", "/v1.b.example", "/v1.d.example", "/v1.e.example"]))

    def test_field_selector_namespace(self) -> None:
        """`metadata.namespace=X` on the all-namespaces list keeps that namespace's ExternalNames."""
        server = self.server_with_external_names()
        self.assertEqual(self.list_names(server, f"{SERVICE_GRAFANA}/externalnames?fieldSelector=metadata.namespace%3Dns2"),
                         (200, ["ns2/a"]))
        self.assertEqual(
            self.list_names(server, f"{SERVICE_GRAFANA}/externalnames?fieldSelector=metadata.namespace%3Dns1,"
                                    f"metadata.name%3Db"),
            (200, ["ns1/b"]))

    def test_field_selector_namespace_cluster_scoped(self) -> None:
        """`metadata.namespace` is selectable on APIServices too (kube's ObjectMetaFieldsSet(meta, true)): all have ""."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?fieldSelector=metadata.namespace%3Ddefault"),
                         (200, []))


    def test_field_selector_unsupported(self) -> None:
        """A field other than metadata.name/namespace is a 400 naming the field label."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?fieldSelector=spec.group%3Da.example"), (400, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "field label not supported: spec.group", "reason": "BadRequest", "code": 400}))

    def test_paging(self) -> None:
        """limit=2 pages five objects in three pages linked by continue, all at the first page's resourceVersion."""
        server = self.server_with_apiservices()
        first = server.get(f"{APISERVICES}?limit=2").json()
        self.assertEqual(names(first), ["/v1.a.example", "/v1.b.example"])
        self.assertEqual((first["metadata"]["resourceVersion"], first["metadata"]["remainingItemCount"]), ("5", 3))
        server.seed(external_name("ns1", "a", "a.example.com"))
        second = server.get(f"{APISERVICES}?limit=2&continue={first['metadata']['continue']}").json()
        self.assertEqual(names(second), ["/v1.c.example", "/v1.d.example"])
        self.assertEqual((second["metadata"]["resourceVersion"], second["metadata"]["remainingItemCount"]), ("5", 1))
        third = server.get(f"{APISERVICES}?limit=2&continue={second['metadata']['continue']}").json()
        self.assertEqual((names(third), third["metadata"]), (["/v1.e.example"], {"resourceVersion": "5"}))

    def test_paging_snapshot(self) -> None:
        """The pages after the first show the collection as of the first page's resourceVersion, as etcd does."""
        server = self.server_with_apiservices()
        first = server.get(f"{APISERVICES}?limit=2").json()
        server.seed(apiservice("v1.f.example", "f.example", "v1"))
        rest = server.get(f"{APISERVICES}?continue={first['metadata']['continue']}").json()
        self.assertEqual((names(rest), rest["metadata"]),
                         (["/v1.c.example", "/v1.d.example", "/v1.e.example"], {"resourceVersion": "5"}))


    def test_paging_snapshot_expired(self) -> None:
        """A continue token whose snapshot the store no longer keeps is kube's 410 Expired, not a mixed list."""
        server = Server(self, MemoryStore(history_size=2))
        for name in "abcde":
            server.seed(apiservice(f"v1.{name}.example", f"{name}.example", "v1"))
        first = server.get(f"{APISERVICES}?limit=2").json()
        for name in "fgh":
            server.seed(apiservice(f"v1.{name}.example", f"{name}.example", "v1"))
        self.assertEqual(self.list_names(server, f"{APISERVICES}?limit=2&continue={first['metadata']['continue']}"),
                         (410, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "The provided continue parameter is too old to display a consistent list "
                                           "result. You can start a new list without the continue parameter.",
                                "reason": "Expired", "code": 410}))

    def test_paging_with_selector(self) -> None:
        """A paged list with a label selector has continue but no remainingItemCount (kube cannot count it)."""
        server = self.server_with_apiservices()
        body = server.get(f"{APISERVICES}?limit=1&labelSelector=tier").json()
        self.assertEqual((names(body), sorted(body["metadata"])),
                         (["/v1.a.example"], ["continue", "resourceVersion"]))


    def test_limit_larger_than_collection(self) -> None:
        """A limit above the number of items gives them all, without continue."""
        server = self.server_with_apiservices()
        self.assertEqual(server.get(f"{APISERVICES}?limit=500").json()["metadata"], {"resourceVersion": "5"})

    def test_garbage_continue(self) -> None:
        """A continue token the server did not issue is a 400."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?limit=2&continue=garbage"), (400, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "continue key is not valid: the continue token was not issued by this server",
            "reason": "BadRequest", "code": 400}))

    def test_resource_version_zero(self) -> None:
        """resourceVersion=0 lists everything at the current resourceVersion."""
        server = self.server_with_apiservices()
        body = server.get(f"{APISERVICES}?resourceVersion=0").json()
        self.assertEqual((body["metadata"], len(body["items"])), ({"resourceVersion": "5"}, 5))

    def test_resource_version_not_older_than(self) -> None:
        """An older resourceVersion with NotOlderThan is served from the current state."""
        server = self.server_with_apiservices()
        body = server.get(f"{APISERVICES}?resourceVersion=2&resourceVersionMatch=NotOlderThan").json()
        self.assertEqual((body["metadata"], len(body["items"])), ({"resourceVersion": "5"}, 5))

    def test_resource_version_match_without_resource_version(self) -> None:
        """resourceVersionMatch without resourceVersion is the 422 of ListOptions validation."""
        server = self.server_with_apiservices()
        message = "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        self.assertEqual(self.list_names(server, f"{APISERVICES}?resourceVersionMatch=Exact"), (422, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: {message}',
            "reason": "Invalid",
            "details": {"group": "meta.k8s.io", "kind": "ListOptions",
                        "causes": [{"reason": "FieldValueForbidden", "message": message,
                                    "field": "resourceVersionMatch"}]},
            "code": 422}))

    def test_resource_version_too_large(self) -> None:
        """A resourceVersion beyond the store's is kube's 504 Timeout with the ResourceVersionTooLarge cause."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?resourceVersion=99"), (504, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Too large resource version: 99, current: 5", "reason": "Timeout",
            "details": {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                        "retryAfterSeconds": 1},
            "code": 504}))

    def test_exact_old_resource_version(self) -> None:
        """An Exact list at an older resourceVersion (not kept) is 410 Expired."""
        server = self.server_with_apiservices()
        self.assertEqual(self.list_names(server, f"{APISERVICES}?resourceVersion=2&resourceVersionMatch=Exact"), (410, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "The resourceVersion for the provided list is too old.", "reason": "Expired", "code": 410}))

    def test_exact_current_resource_version(self) -> None:
        """An Exact list at the current resourceVersion is served."""
        server = self.server_with_apiservices()
        reply = server.get(f"{APISERVICES}?resourceVersion=5&resourceVersionMatch=Exact")
        self.assertEqual((reply.code, reply.json()["metadata"]), (200, {"resourceVersion": "5"}))


class TableTests(SynchronousTestCase):
    """Server-side printing: the meta.k8s.io/v1 Table of `kubectl get`."""

    def server(self) -> Server:
        """A Local APIService, a remote one without conditions, and a remote one failing discovery."""
        server = Server(self)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        server.seed(apiservice("v1.b.example", "b.example", "v1", service={"namespace": "grafana", "name": "b",
                                                                            "port": 443}))
        failing = server.seed(apiservice("v1.c.example", "c.example", "v1",
                                         service={"namespace": "grafana", "name": "c", "port": 8443}))
        failing["status"] = {"conditions": [{"type": "Available", "status": "False",
                                             "lastTransitionTime": CREATED, "reason": "FailedDiscoveryCheck",
                                             "message": "failing or missing response from https://c:8443"}]}
        server.run(server.store.update(APISERVICE_COLLECTION, "", "v1.c.example", failing))
        return server

    def test_list_table(self) -> None:
        """The list Table has kube-aggregator's columns and cells, the list's resourceVersion and a Table type."""
        server = self.server()
        reply = server.get(APISERVICES, accept=TABLE)
        self.assertEqual((reply.code, reply.header("content-type")), (200, TABLE_CONTENT_TYPE))
        body = reply.json()
        self.assertEqual((body["kind"], body["apiVersion"], body["metadata"]),
                         ("Table", "meta.k8s.io/v1", {"resourceVersion": "4"}))
        self.assertEqual(body["columnDefinitions"], APISERVICE_COLUMNS)
        self.assertEqual([row["cells"] for row in body["rows"]], [
            ["v1.a.example", "Local", "True", "0s"],
            ["v1.b.example", "grafana/b", "Unknown", "0s"],
            ["v1.c.example", "grafana/c", "False (FailedDiscoveryCheck)", "0s"],
        ])

    def test_age_follows_clock(self) -> None:
        """The Age cell is computed from the clock at each request."""
        server = self.server()
        server.clock.advance(300)
        self.assertEqual([row["cells"][3] for row in server.get(APISERVICES, accept=TABLE).json()["rows"]],
                         ["5m", "5m", "5m"])
        server.clock.advance(3 * 3600 + 1200)
        self.assertEqual(server.get(f"{APISERVICES}/v1.a.example", accept=TABLE).json()["rows"][0]["cells"],
                         ["v1.a.example", "Local", "True", "3h25m"])

    def test_rows_hold_partial_object_metadata(self) -> None:
        """By default each row's object is the PartialObjectMetadata of the item."""
        server = self.server()
        stored = server.run(server.store.list(APISERVICE_COLLECTION, "")).items
        rows = server.get(APISERVICES, accept=TABLE).json()["rows"]
        self.assertEqual([row["object"] for row in rows], [partial(obj) for obj in stored])
        explicit = server.get(f"{APISERVICES}?includeObject=Metadata", accept=TABLE).json()["rows"]
        self.assertEqual(explicit, rows)

    def test_include_object(self) -> None:
        """includeObject=Object puts the full object in each row (what `kubectl get --sort-by` needs)."""
        server = self.server()
        stored = server.run(server.store.list(APISERVICE_COLLECTION, "")).items
        rows = server.get(f"{APISERVICES}?includeObject=Object", accept=TABLE).json()["rows"]
        self.assertEqual([row["object"] for row in rows], stored)

    def test_include_no_object(self) -> None:
        """includeObject=None leaves the object out of each row."""
        rows = self.server().get(f"{APISERVICES}?includeObject=None", accept=TABLE).json()["rows"]
        self.assertEqual([sorted(row) for row in rows], [["cells"], ["cells"], ["cells"]])

    def test_single_object_table(self) -> None:
        """GET of one object as a Table has one row and the object's resourceVersion."""
        server = self.server()
        reply = server.get(f"{APISERVICES}/v1.c.example", accept=TABLE)
        stored = server.run(server.store.get(APISERVICE_COLLECTION, "", "v1.c.example"))
        self.assertEqual((reply.code, reply.header("content-type")), (200, TABLE_CONTENT_TYPE))
        self.assertEqual(reply.json(), {
            "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "4"},
            "columnDefinitions": APISERVICE_COLUMNS,
            "rows": [{"cells": ["v1.c.example", "grafana/c", "False (FailedDiscoveryCheck)", "0s"],
                      "object": partial(stored)}],
        })

    def test_paged_table(self) -> None:
        """A paged Table carries continue and remainingItemCount in its metadata."""
        server = self.server()
        body = server.get(f"{APISERVICES}?limit=2", accept=TABLE).json()
        self.assertEqual(([row["cells"][0] for row in body["rows"]], sorted(body["metadata"])),
                         (["v1.a.example", "v1.b.example"], ["continue", "remainingItemCount", "resourceVersion"]))
        self.assertEqual(body["metadata"]["remainingItemCount"], 1)

    def test_external_name_table(self) -> None:
        """ExternalNames print as Name, Host and Age."""
        server = Server(self)
        stored = server.seed(external_name("grafana", "backend", "backend.example.com"))
        server.clock.advance(90)
        reply = server.get(f"{SERVICE_GRAFANA}/namespaces/grafana/externalnames", accept=TABLE)
        self.assertEqual((reply.code, reply.header("content-type")), (200, TABLE_CONTENT_TYPE))
        self.assertEqual(reply.json(), {
            "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
            "columnDefinitions": EXTERNALNAME_COLUMNS,
            "rows": [{"cells": ["backend", "backend.example.com", "90s"], "object": partial(stored)}],
        })


class GroupVersionTests(SynchronousTestCase):
    """`/apis/<group>` and `/apis/<group>/<version>` for local, remote and unknown group-versions."""

    def test_apiregistration_resource_list(self) -> None:
        """apiregistration.k8s.io/v1 lists apiservices and apiservices/status."""
        reply = Server(self).get(APIREGISTRATION)
        self.assertEqual((reply.code, reply.header("content-type")), (200, ["application/json"]))
        self.assertEqual(reply.json(), {
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apiregistration.k8s.io/v1",
            "resources": [
                {"name": "apiservices", "singularName": "apiservice", "namespaced": False, "kind": "APIService",
                 "verbs": VERBS, "categories": ["api-extensions"]},
                {"name": "apiservices/status", "singularName": "", "namespaced": False, "kind": "APIService",
                 "verbs": ["get", "patch", "update"]},
            ]})

    def test_service_grafana_resource_list(self) -> None:
        """service.grafana.app/v0alpha1 lists the namespaced externalnames, without a status subresource."""
        reply = Server(self).get(SERVICE_GRAFANA, accept="application/json, */*")
        self.assertEqual((reply.code, reply.header("content-type")), (200, ["application/json"]))
        self.assertEqual(reply.json(), {
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "service.grafana.app/v0alpha1",
            "resources": [{"name": "externalnames", "singularName": "externalname", "namespaced": True,
                           "kind": "ExternalName", "verbs": VERBS}]})

    def test_api_group(self) -> None:
        """/apis/<group> is the APIGroup of the group's APIServices, preferred version first."""
        server = Server(self)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        server.seed(apiservice("v2.a.example", "a.example", "v2"))
        reply = server.get(f"{HOST}/apis/a.example")
        self.assertEqual((reply.code, reply.json()), (200, {
            "kind": "APIGroup", "apiVersion": "v1", "name": "a.example",
            "versions": [{"groupVersion": "a.example/v2", "version": "v2"},
                         {"groupVersion": "a.example/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "a.example/v2", "version": "v2"}}))

    def test_unknown_group(self) -> None:
        """/apis/<group> without any APIService is not found."""
        reply = Server(self).get(f"{HOST}/apis/a.example")
        self.assertEqual((reply.code, reply.json()), (404, NOT_FOUND_PATH))

    def test_unknown_resource(self) -> None:
        """An unknown resource under a served group-version is not found."""
        server = Server(self)
        for url in (f"{APIREGISTRATION}/widgets", f"{APIREGISTRATION}/widgets/x",
                    f"{SERVICE_GRAFANA}/namespaces/grafana/widgets"):
            reply = server.get(url)
            self.assertEqual((reply.code, reply.json()), (404, NOT_FOUND_PATH))

    def test_remote_group_version_unavailable(self) -> None:
        """A group-version named by a remote APIService but not proxied is 503 ServiceUnavailable."""
        server = Server(self)
        server.seed(apiservice("v0alpha1.example.grafana.app", "example.grafana.app", "v0alpha1",
                               service={"namespace": "grafana", "name": "example", "port": 443}))
        reply = server.get(f"{HOST}/apis/example.grafana.app/v0alpha1/namespaces/default/things")
        self.assertEqual((reply.code, reply.header("retry-after")), (503, ["1"]))
        self.assertEqual(reply.json(), {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server is currently unable to handle the request", "reason": "ServiceUnavailable",
            "details": {"causes": [{"reason": "UnexpectedServerResponse", "message": "service unavailable"}]},
            "code": 503})
        self.assertEqual(server.get(f"{HOST}/apis/example.grafana.app/v0alpha1").code, 503)

    def test_group_version_without_apiservice(self) -> None:
        """A group-version nobody registered is not found."""
        reply = Server(self).get(f"{HOST}/apis/example.grafana.app/v0alpha1/namespaces/default/things")
        self.assertEqual((reply.code, reply.json()), (404, NOT_FOUND_PATH))

    def test_local_apiservice_without_handler(self) -> None:
        """A Local APIService for a group-version this process does not serve goes to the delegate: 404, as in kube."""
        server = Server(self)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        reply = server.get(f"{HOST}/apis/a.example/v1/things")
        self.assertEqual((reply.code, reply.json()), (404, NOT_FOUND_PATH))



class DiscoveryTests(SynchronousTestCase):
    """`/apis` built from the stored APIServices, legacy and aggregated."""

    def registered(self) -> Server:
        """A server whose Local APIServices were registered as at daemon start."""
        server = Server(self)
        registration = LocalAPIServiceRegistration(server.store, server.served.informer, server.strategy,
                                                   LOCAL_APISERVICES, server.now, server.clock)
        registration.startService()
        self.successResultOf(registration.registered)  # type: ignore[arg-type]
        return server

    def test_legacy_order(self) -> None:
        """Groups go by highest groupPriorityMinimum then APIService name; versions by priority then kube order."""
        server = Server(self)
        server.seed(apiservice("v2.alpha.example", "alpha.example", "v2", 100))
        server.seed(apiservice("v1.zeta.example", "zeta.example", "v1", 100))
        server.seed(apiservice("v1.high.example", "high.example", "v1", 200))
        for version, group_priority, version_priority in (("foo10", 50, 15), ("v1", 50, 15), ("foo1", 300, 15),
                                                          ("v2beta1", 50, 15), ("v1alpha1", 50, 20)):
            server.seed(apiservice(f"{version}.multi.example", "multi.example", version, group_priority,
                                   version_priority))
        reply = server.get(f"{HOST}/apis")
        self.assertEqual((reply.code, reply.header("content-type")), (200, ["application/json"]))

        def group(name: str, *versions: str) -> dict[str, Any]:
            entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            return {"name": name, "versions": entries, "preferredVersion": entries[0]}

        self.assertEqual(reply.json(), {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            group("multi.example", "v1alpha1", "v1", "v2beta1", "foo1", "foo10"),
            group("high.example", "v1"),
            group("zeta.example", "v1"),
            group("alpha.example", "v2"),
        ]})

    def test_legacy_kube_version_order(self) -> None:
        """Equal priorities order versions as kube's example: v10, v2, v1, v11beta2, v10beta3, v3beta1, v12alpha1, v11alpha2, foo1, foo10."""
        server = Server(self)
        expected = ["v10", "v2", "v1", "v11beta2", "v10beta3", "v3beta1", "v12alpha1", "v11alpha2", "foo1", "foo10"]
        for version in sorted(expected):
            server.seed(apiservice(f"{version}.k.example", "k.example", version))
        groups = server.get(f"{HOST}/apis").json()["groups"]
        self.assertEqual([v["version"] for v in groups[0]["versions"]], expected)

    def test_legacy_local_groups(self) -> None:
        """After registration the legacy list holds the local groups, apiregistration first."""
        reply = self.registered().get(f"{HOST}/apis", accept="application/json, */*")
        self.assertEqual(reply.json(), {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apiregistration.k8s.io",
             "versions": [{"groupVersion": "apiregistration.k8s.io/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "apiregistration.k8s.io/v1", "version": "v1"}},
            {"name": "apiextensions.k8s.io",
             "versions": [{"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}},
            {"name": "service.grafana.app",
             "versions": [{"groupVersion": "service.grafana.app/v0alpha1", "version": "v0alpha1"}],
             "preferredVersion": {"groupVersion": "service.grafana.app/v0alpha1", "version": "v0alpha1"}},
        ]})

    def test_apiregistration_always_first(self) -> None:
        """apiregistration.k8s.io stays the first group even below an APIService of priority 20000, as in kube."""
        server = self.registered()
        server.seed(apiservice("v1.top.example", "top.example", "v1", 20000,
                               service={"namespace": "grafana", "name": "top", "port": 443}))
        legacy = server.get(f"{HOST}/apis").json()["groups"]
        aggregated = server.get(f"{HOST}/apis", accept=AGGREGATED).json()["items"]
        self.assertEqual(([g["name"] for g in legacy], [g["metadata"]["name"] for g in aggregated]),
                         (["apiregistration.k8s.io", "top.example", "apiextensions.k8s.io", "service.grafana.app"],) * 2)


    def test_aggregated(self) -> None:
        """Aggregated v2 lists local group-versions with their resources and a remote one as Stale."""
        server = self.registered()
        server.seed(apiservice("v0alpha1.example.grafana.app", "example.grafana.app", "v0alpha1", 1000,
                               service={"namespace": "grafana", "name": "example", "port": 443}))
        reply = server.get(f"{HOST}/apis", accept=AGGREGATED)
        self.assertEqual((reply.code, reply.header("content-type"), reply.header("vary"),
                          reply.header("cache-control")),
                         (200, AGGREGATED_CONTENT_TYPE, ["Accept"], ["public"]))
        self.assertEqual(reply.json(), {
            "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": [
                {"metadata": {"name": "apiregistration.k8s.io"}, "versions": [
                    {"version": "v1", "freshness": "Current", "resources": [
                        {"resource": "apiservices", "responseKind": APISERVICE_KIND, "scope": "Cluster",
                         "singularResource": "apiservice", "verbs": VERBS, "categories": ["api-extensions"],
                         "subresources": [{"subresource": "status", "responseKind": APISERVICE_KIND,
                                           "verbs": ["get", "patch", "update"]}]}]}]},
                {"metadata": {"name": "apiextensions.k8s.io"}, "versions": [
                    {"version": "v1", "freshness": "Current", "resources": [
                        {"resource": "customresourcedefinitions", "responseKind": CRD_KIND, "scope": "Cluster",
                         "singularResource": "customresourcedefinition", "verbs": VERBS, "shortNames": ["crd", "crds"],
                         "categories": ["api-extensions"],
                         "subresources": [{"subresource": "status", "responseKind": CRD_KIND,
                                           "verbs": ["get", "patch", "update"]}]}]}]},
                {"metadata": {"name": "service.grafana.app"}, "versions": [
                    {"version": "v0alpha1", "freshness": "Current", "resources": [
                        {"resource": "externalnames", "responseKind": EXTERNALNAME_KIND, "scope": "Namespaced",
                         "singularResource": "externalname", "verbs": VERBS}]}]},
                {"metadata": {"name": "example.grafana.app"}, "versions": [
                    {"version": "v0alpha1", "freshness": "Stale"}]},
            ]})

    def test_etag_not_modified(self) -> None:
        """The aggregated document has a quoted SHA-512 ETag; If-None-Match with it gives 304 and no body."""
        server = self.registered()
        first = server.get(f"{HOST}/apis", accept=AGGREGATED)
        etag = first.header("etag")
        assert etag is not None
        self.assertRegex(etag[0], r'^"[0-9A-F]{128}"$')
        again = server.get(f"{HOST}/apis", accept=AGGREGATED, headers={"If-None-Match": etag[0]})
        self.assertEqual((again.code, again.body, again.header("etag")), (304, b"", etag))
        other = server.get(f"{HOST}/apis", accept=AGGREGATED, headers={"If-None-Match": '"0"'})
        self.assertEqual((other.code, other.body), (200, first.body))

    def test_etag_changes(self) -> None:
        """Adding an APIService changes the ETag, so the old one no longer gives 304."""
        server = self.registered()
        etag = server.get(f"{HOST}/apis", accept=AGGREGATED).header("etag")
        assert etag is not None
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        reply = server.get(f"{HOST}/apis", accept=AGGREGATED, headers={"If-None-Match": etag[0]})
        self.assertEqual(reply.code, 200)
        self.assertNotEqual(reply.header("etag"), etag)
        self.assertEqual([g["metadata"]["name"] for g in reply.json()["items"]],
                         ["apiregistration.k8s.io", "apiextensions.k8s.io", "service.grafana.app", "a.example"])


class WatchTests(SynchronousTestCase):
    """WATCH: initial and live events, resourceVersions, selectors, expiry, bookmarks, timeouts, Tables, disconnects."""

    def test_initial_then_live_events(self) -> None:
        """Without a resourceVersion, existing objects come as ADDED, then each change through the API as it happens."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&timeoutSeconds=600")
        assert watch.response is not None
        self.assertEqual((watch.response.code, watch.response.headers.getRawHeaders("content-type")),
                         (200, ["application/json"]))
        self.assertEqual(watch.summary(), [("ADDED", "v1.a.example", "1")])
        created = server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        server.client.flush()
        self.assertEqual(watch.events()[1], {"type": "ADDED", "object": created})
        labelled = server.label("v1.a.example", {"tier": "web"})
        server.client.flush()
        self.assertEqual(watch.events()[2], {"type": "MODIFIED", "object": labelled})
        server.delete("v1.b.example")
        server.client.flush()
        deleted = watch.events()[3]
        self.assertEqual((deleted["type"], deleted["object"]["metadata"]["resourceVersion"]), ("DELETED", "4"))
        self.assertEqual({**deleted["object"], "metadata": {**deleted["object"]["metadata"], "resourceVersion": "2"}},
                         created)
        self.assertIsNone(watch.ended)

    def test_one_encoding_for_many_watchers(self) -> None:
        """Three watchers of one change get the same bytes, encoded once; a watch with a selector still filters."""
        server = Server(self)
        version = server.get(APISERVICES).json()["metadata"]["resourceVersion"]
        watches = [server.watch(f"{APISERVICES}?watch=true&resourceVersion={version}") for _ in range(3)]
        selective = server.watch(f"{APISERVICES}?watch=true&resourceVersion={version}&labelSelector=tier%3Dweb")
        encodings: list[object] = []
        real_dumps = watch_module.json.dumps

        def counting_dumps(obj: Any, **kwargs: Any) -> str:
            encodings.append(obj)
            return real_dumps(obj, **kwargs)

        self.patch(watch_module.json, "dumps", counting_dumps)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        server.client.flush()
        self.assertEqual(len([e for e in encodings if isinstance(e, dict) and e.get("type") == "ADDED"]), 1)
        self.assertEqual([w.summary() for w in watches], [[("ADDED", "v1.a.example", "1")]] * 3)
        self.assertEqual(watches[0].data, watches[2].data)
        self.assertEqual(selective.summary(), [])
        server.label("v1.a.example", {"tier": "web"})
        server.client.flush()
        self.assertEqual(selective.summary(), [("ADDED", "v1.a.example", "2")])

    def test_watch_path_prefix(self) -> None:
        """/watch/apiservices streams the same events as ?watch=true; /watch/apiservices/<name> only that object's."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        every = server.watch(f"{APIREGISTRATION}/watch/apiservices")
        named = server.watch(f"{APIREGISTRATION}/watch/apiservices/v1.a.example")
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        server.label("v1.a.example", {"tier": "web"})
        server.client.flush()
        self.assertEqual(every.summary(), [("ADDED", "v1.a.example", "1"), ("ADDED", "v1.b.example", "2"),
                                           ("MODIFIED", "v1.a.example", "3")])
        self.assertEqual(named.summary(), [("ADDED", "v1.a.example", "1"), ("MODIFIED", "v1.a.example", "3")])

    def test_namespaced_watch(self) -> None:
        """A watch under /namespaces/<ns>/ sees that namespace only; one without sees all."""
        server = Server(self)
        server.seed(external_name("ns1", "a", "a.example.com"))
        one = server.watch(f"{SERVICE_GRAFANA}/namespaces/ns1/externalnames?watch=1")
        every = server.watch(f"{SERVICE_GRAFANA}/externalnames?watch=1")
        server.seed(external_name("ns2", "b", "b.example.com"))
        server.seed(external_name("ns1", "c", "c.example.com"))
        server.client.flush()
        self.assertEqual(one.summary(), [("ADDED", "a", "1"), ("ADDED", "c", "3")])
        self.assertEqual(every.summary(), [("ADDED", "a", "1"), ("ADDED", "b", "2"), ("ADDED", "c", "3")])

    def test_from_list_resource_version(self) -> None:
        """A watch from the list's resourceVersion sends only the changes after it."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        version = server.get(APISERVICES).json()["metadata"]["resourceVersion"]
        watch = server.watch(f"{APISERVICES}?watch=true&resourceVersion={version}")
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        server.client.flush()
        self.assertEqual(watch.summary(), [("ADDED", "v1.b.example", "2")])

    def test_from_older_resource_version(self) -> None:
        """A watch from an older resourceVersion replays the kept changes after it."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        server.delete("v1.a.example")
        watch = server.watch(f"{APISERVICES}?watch=true&resourceVersion=1")
        self.assertEqual(watch.summary(), [("ADDED", "v1.b.example", "2"), ("DELETED", "v1.a.example", "3")])

    def test_headers_sent_at_once(self) -> None:
        """The 200 and its headers are sent when the watch starts, before any event (kube flushes them at once)."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&resourceVersion=1")
        self.assertIsNotNone(watch.response)


    def test_field_selector(self) -> None:
        """fieldSelector=metadata.name=X restricts both the initial and the live events to X."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&fieldSelector=metadata.name%3Dv1.b.example")
        server.label("v1.a.example", {"tier": "web"})
        server.label("v1.b.example", {"tier": "web"})
        server.delete("v1.a.example")
        server.delete("v1.b.example")
        server.client.flush()
        self.assertEqual(watch.summary(), [("ADDED", "v1.b.example", "2"), ("MODIFIED", "v1.b.example", "4"),
                                           ("DELETED", "v1.b.example", "6")])

    def test_label_selector(self) -> None:
        """labelSelector restricts both the initial and the live events to matching objects."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1", labels={"tier": "web"}))
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&labelSelector=tier%3Dweb")
        server.create(APISERVICES, new_apiservice("v1.c.example", "c.example", "v1", labels={"tier": "web"}))
        server.create(APISERVICES, new_apiservice("v1.d.example", "d.example", "v1", labels={"tier": "db"}))
        server.client.flush()
        self.assertEqual(watch.summary(), [("ADDED", "v1.a.example", "1"), ("ADDED", "v1.c.example", "3")])

    def test_label_selector_transitions(self) -> None:
        """An object leaving the selector is DELETED (old labels, new resourceVersion); one entering it is ADDED."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1", labels={"tier": "web"}))
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&resourceVersion=2&labelSelector=tier%3Dweb")
        server.label("v1.a.example", {"tier": "db"})
        server.label("v1.b.example", {"tier": "web"})
        server.client.flush()
        self.assertEqual(watch.summary(), [("DELETED", "v1.a.example", "3"), ("ADDED", "v1.b.example", "4")])
        self.assertEqual(watch.events()[0]["object"]["metadata"]["labels"], {"tier": "web"})


    def test_expired_resource_version(self) -> None:
        """A resourceVersion older than the kept history gives one ERROR event with a 410 Expired Status, then the end."""
        server = Server(self, MemoryStore(history_size=2))
        for name in "abcd":
            server.create(APISERVICES, new_apiservice(f"v1.{name}.example", f"{name}.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&resourceVersion=1")
        self.assertEqual(watch.events(), [{"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410}}])
        assert watch.ended is not None
        self.assertTrue(watch.ended.check(ResponseDone))
        kept = server.watch(f"{APISERVICES}?watch=true&resourceVersion=2")
        self.assertEqual(kept.summary(), [("ADDED", "v1.c.example", "3"), ("ADDED", "v1.d.example", "4")])

    def test_store_expires_the_watch(self) -> None:
        """When the store can no longer follow a watch (its history was compacted away), the client gets one ERROR
        event with kube's 410 Expired Status, then the end of the stream, and relists."""
        store = MemoryStore()
        server = Server(self, store)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&resourceVersion=1")
        store._table.hub.expire(store.current_resource_version())
        server.client.flush()
        self.assertEqual(watch.events(), [{"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "The resourceVersion for the provided watch is too old.", "reason": "Expired", "code": 410}}])
        assert watch.ended is not None
        self.assertTrue(watch.ended.check(ResponseDone))

    def test_bookmarks(self) -> None:
        """allowWatchBookmarks=true gives a BOOKMARK with the latest resourceVersion every 60 s."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&allowWatchBookmarks=true&resourceVersion=1"
                             f"&fieldSelector=metadata.name%3Dv1.a.example")
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        server.clock.advance(59)
        server.client.flush()
        self.assertEqual(watch.data, b"")
        server.clock.advance(1)
        server.client.flush()
        bookmark = {"type": "BOOKMARK", "object": {"kind": "APIService", "apiVersion": "apiregistration.k8s.io/v1",
                                                   "metadata": {"resourceVersion": "2"}}}
        self.assertEqual(watch.events(), [bookmark])
        server.clock.advance(60)
        server.client.flush()
        self.assertEqual(watch.events(), [bookmark, bookmark])

    def test_no_bookmarks_unless_allowed(self) -> None:
        """Without allowWatchBookmarks no BOOKMARK is sent."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true")
        server.clock.advance(600)
        server.client.flush()
        self.assertEqual(watch.summary(), [("ADDED", "v1.a.example", "1")])

    def test_timeout(self) -> None:
        """timeoutSeconds=5 ends the stream cleanly 5 s later."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true&timeoutSeconds=5")
        server.clock.advance(4.9)
        server.client.flush()
        self.assertIsNone(watch.ended)
        server.clock.advance(0.1)
        server.client.flush()
        assert watch.ended is not None
        self.assertTrue(watch.ended.check(ResponseDone))
        self.assertEqual(watch.summary(), [("ADDED", "v1.a.example", "1")])

    def test_client_not_reading_is_ended(self) -> None:
        """A watch whose connection stays full (its client reads nothing) is ended cleanly once more than the backlog
        limit has piled up, as kube ends a watcher whose buffer is full; the events before the cut are whole."""
        self.patch(streams_module, "MAX_BACKLOG", 4096)
        store = RecordingStore()
        server = Server(self, store)
        watch = server.watch(f"{APISERVICES}?watch=true")
        (stream,) = server.served.watches
        # What the connection does when its send buffer is full (the in-memory transport never fills).
        stream._request.channel.pauseProducing()
        for index in range(40):
            server.create(APISERVICES, new_apiservice(f"v1.g{index}.example", f"g{index}.example", "v1"))
            if not server.served.watches:
                break
        server.client.flush()
        assert watch.ended is not None
        self.assertTrue(watch.ended.check(ResponseDone))
        self.assertEqual(server.served.watches, set())
        self.assertTrue(store.watches[-1].cancelled)  # the first is the informer's
        summary = watch.summary()
        self.assertGreater(len(summary), 2)
        self.assertLess(len(summary), index + 1)
        self.assertEqual(summary, [("ADDED", f"v1.g{i}.example", str(i + 1)) for i in range(len(summary))])

    def test_default_timeout(self) -> None:
        """Without timeoutSeconds a watch lasts between 30 and 60 minutes, as in kube."""
        server = Server(self)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true")
        server.clock.advance(1799)
        server.client.flush()
        self.assertIsNone(watch.ended)
        server.clock.advance(1801)
        server.client.flush()
        self.assertIsNotNone(watch.ended)

    def test_table_watch(self) -> None:
        """A Table watch sends each event's object as a one-row Table at that object's resourceVersion."""
        server = Server(self)
        first = server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        watch = server.watch(f"{APISERVICES}?watch=true", accept=TABLE)
        assert watch.response is not None
        self.assertEqual(watch.response.headers.getRawHeaders("content-type"), TABLE_CONTENT_TYPE)
        server.clock.advance(150)
        second = server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1",
                                                           service={"namespace": "grafana", "name": "b"}))
        server.client.flush()
        self.assertEqual(watch.events(), [
            {"type": "ADDED", "object": {
                "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
                "columnDefinitions": APISERVICE_COLUMNS,
                "rows": [{"cells": ["v1.a.example", "Local", "True", "0s"], "object": partial(first)}]}},
            {"type": "ADDED", "object": {
                "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "2"},
                "columnDefinitions": APISERVICE_COLUMNS,
                "rows": [{"cells": ["v1.b.example", "grafana/b", "Unknown", "0s"], "object": partial(second)}]}},
        ])

    def test_disconnect_cancels_store_watch(self) -> None:
        """When the client goes away the store watch is cancelled and later writes still succeed."""
        store = RecordingStore()
        server = Server(self, store)
        server.create(APISERVICES, new_apiservice("v1.a.example", "a.example", "v1"))
        informer_watches = len(store.watches)
        watch = server.watch(f"{APISERVICES}?watch=true&allowWatchBookmarks=true")
        tracked = store.watches[informer_watches:]
        self.assertEqual([w.cancelled for w in tracked], [False])
        watch.disconnect()
        server.client.flush()
        self.assertEqual([w.cancelled for w in tracked], [True])
        server.create(APISERVICES, new_apiservice("v1.b.example", "b.example", "v1"))
        server.clock.advance(3600)
        server.client.flush()
        self.assertEqual(watch.summary(), [("ADDED", "v1.a.example", "1")])


class LocalAPIServiceRegistrationTests(SynchronousTestCase):
    """The service that registers the Local APIServices of the groups served here, at each start."""

    def start(self, server: Server) -> None:
        """Start a registration service over the server's store, as the daemon does, and wait for it."""
        registration = LocalAPIServiceRegistration(server.store, server.served.informer, server.strategy,
                                                   LOCAL_APISERVICES, server.now, server.clock)
        registration.startService()
        self.successResultOf(registration.registered)  # type: ignore[arg-type]
        self.assertTrue(registration.done)
        registration.stopService()

    def stored(self, server: Server) -> list[dict[str, Any]]:
        return server.run(server.store.list(APISERVICE_COLLECTION, "")).items  # type: ignore[no-any-return]

    def test_creates_local_apiservices(self) -> None:
        """On an empty store every Local APIService is created, labelled automanaged and available."""
        server = Server(self)
        self.start(server)
        stored = self.stored(server)

        def expected(name: str, group: str, version: str, group_priority: int, version_priority: int,
                     resource_version: str, uid: str) -> dict[str, Any]:
            return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                    "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"},
                                 "uid": uid, "generation": 1, "creationTimestamp": CREATED,
                                 "resourceVersion": resource_version,
                                 "managedFields": [{
                                     "manager": "kube-apiserver", "operation": "Update",
                                     "apiVersion": "apiregistration.k8s.io/v1", "time": CREATED,
                                     "fieldsType": "FieldsV1",
                                     "fieldsV1": {"f:metadata": {"f:labels": {
                                                      ".": {}, "f:kube-aggregator.kubernetes.io/automanaged": {}}},
                                                  "f:spec": {".": {}, "f:group": {}, "f:groupPriorityMinimum": {},
                                                             "f:version": {}, "f:versionPriority": {}}}}]},
                    "spec": {"group": group, "version": version, "groupPriorityMinimum": group_priority,
                             "versionPriority": version_priority},
                    "status": {"conditions": [LOCAL_CONDITION]}}

        self.assertEqual(stored, [
            expected("v0alpha1.service.grafana.app", "service.grafana.app", "v0alpha1", 15000, 1, "3",
                     stored[0]["metadata"]["uid"]),
            expected("v1.apiextensions.k8s.io", "apiextensions.k8s.io", "v1", 16700, 15, "2",
                     stored[1]["metadata"]["uid"]),
            expected("v1.apiregistration.k8s.io", "apiregistration.k8s.io", "v1", 18000, 15, "1",
                     stored[2]["metadata"]["uid"]),
        ])
        self.assertEqual(len({item["metadata"]["uid"] for item in stored}), 3)
        rows = server.get(APISERVICES, accept=TABLE).json()["rows"]
        self.assertEqual([row["cells"] for row in rows], [["v0alpha1.service.grafana.app", "Local", "True", "0s"],
                                                          ["v1.apiextensions.k8s.io", "Local", "True", "0s"],
                                                          ["v1.apiregistration.k8s.io", "Local", "True", "0s"]])

    def test_restores_spec(self) -> None:
        """A start after someone changed a Local APIService's spec puts the expected spec back."""
        server = Server(self)
        self.start(server)
        reply = server.request("PATCH", f"{APISERVICES}/v0alpha1.service.grafana.app",
                               {"spec": {"groupPriorityMinimum": 5, "versionPriority": 7}},
                               content_type="application/merge-patch+json")
        self.assertEqual(reply.json()["spec"], {"group": "service.grafana.app", "version": "v0alpha1",
                                                "groupPriorityMinimum": 5, "versionPriority": 7})
        server.clock.advance(60)
        self.start(server)
        restored = server.get(f"{APISERVICES}/v0alpha1.service.grafana.app").json()
        self.assertEqual(restored["spec"], {"group": "service.grafana.app", "version": "v0alpha1",
                                            "groupPriorityMinimum": 15000, "versionPriority": 1})
        self.assertEqual((restored["metadata"]["resourceVersion"], restored["metadata"]["generation"]), ("5", 3))
        self.assertEqual(restored["metadata"]["labels"], {"kube-aggregator.kubernetes.io/automanaged": "onstart"})
        self.assertEqual(server.store.current_resource_version(), 5)

    def test_second_start_writes_nothing(self) -> None:
        """A start with everything in place writes nothing."""
        server = Server(self)
        self.start(server)
        before = self.stored(server)
        server.clock.advance(3600)
        self.start(server)
        self.assertEqual((server.store.current_resource_version(), self.stored(server)), (3, before))

    def test_unlabelled_apiservice_left_alone(self) -> None:
        """An existing APIService without the automanaged label is never changed, as kube's autoregister does."""
        server = Server(self)
        own = server.seed(apiservice("v0alpha1.service.grafana.app", "service.grafana.app", "v0alpha1", 100, 5))
        self.start(server)
        self.assertEqual(server.run(server.store.get(APISERVICE_COLLECTION, "", "v0alpha1.service.grafana.app")), own)



class StartupTests(SynchronousTestCase):
    """Before every known path is installed, unknown group-versions are 503 with retryAfterSeconds, not 404."""

    def test_not_installed_yet(self) -> None:
        """A group-version nobody serves gets kube's 503 while the informer is not synced, and 404 once it is."""
        served = serve_apis(MemoryStore(), Clock(), start=False)
        client = StubTreq(served.apis)
        response = self.successResultOf(client.get("https://a.test/nothing.example/v1/things"))
        body = self.successResultOf(client.json_content(response))
        self.assertEqual((response.code, body["message"], body["details"]), (
            503, "the request has been made before all known HTTP paths have been installed, please try again",
            {"retryAfterSeconds": 5}))
        served.informer.startService()
        response = self.successResultOf(client.get("https://a.test/nothing.example/v1/things"))
        self.assertEqual(response.code, 404)


class _AwayStore(MemoryStore):
    """A memory store whose etcd goes away (once `away` is set): lists find it unreachable, gets time out."""

    away = False

    async def list(self, collection: Collection, namespace: str | None) -> Any:
        from grafana_aggregator.storage import StorageUnavailableError

        if not self.away:
            return await super().list(collection, namespace)
        raise StorageUnavailableError("etcd cannot be reached (http://127.0.0.1:2379: Connection refused)")

    async def get(self, collection: Collection, namespace: str, name: str) -> Any:
        from grafana_aggregator.storage import StorageTimeoutError

        if not self.away:
            return await super().get(collection, namespace, name)
        raise StorageTimeoutError("etcd (http://127.0.0.1:2379) did not answer kv/range within 5 s")


class StorageAwayTests(SynchronousTestCase):
    """A storage that cannot answer is a 503 or 504 Status saying so, never a 500."""

    def test_unavailable_is_503(self) -> None:
        """StorageUnavailableError: 503 ServiceUnavailable with the reason and a retry hint."""
        store = _AwayStore()
        server = Server(self, store)
        store.away = True
        reply = server.get(APISERVICES)
        self.assertEqual((reply.code, reply.json()), (503, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the storage is unavailable: etcd cannot be reached (http://127.0.0.1:2379: Connection refused)",
            "reason": "ServiceUnavailable", "details": {"retryAfterSeconds": 1}, "code": 503}))

    def test_timeout_is_504(self) -> None:
        """StorageTimeoutError: 504 Timeout."""
        store = _AwayStore()
        server = Server(self, store)
        store.away = True
        reply = server.get(f"{APISERVICES}/v1.a.example")
        self.assertEqual((reply.code, reply.json()["reason"], reply.json()["message"]), (504, "Timeout", (
            "the storage did not answer in time: etcd (http://127.0.0.1:2379) did not answer kv/range within 5 s")))


class SyncingStore(MemoryStore):
    """A memory store that counts the consistent reads asked of it, and can fail them as an unreachable etcd."""

    syncs = 0
    unreachable = False

    async def sync(self) -> None:
        self.syncs += 1
        if self.unreachable:
            from grafana_aggregator.storage import StorageUnavailableError

            raise StorageUnavailableError("etcd cannot be reached")


class ConsistentReadTests(SynchronousTestCase):
    """resourceVersion "" (kubectl's get and list) is a consistent read: the store is synced first; "0" (any)
    and a specific resourceVersion are served as they are; a store that cannot sync gives a 503 Status."""

    def test_which_reads_sync(self) -> None:
        store = SyncingStore()
        server = Server(self, store)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        for url, syncs in ((APISERVICES, 1), (f"{APISERVICES}?resourceVersion=0", 0),
                           (f"{APISERVICES}/v1.a.example", 1), (f"{APISERVICES}/v1.a.example?resourceVersion=0", 0),
                           (f"{APISERVICES}?resourceVersion=1", 0)):
            before = store.syncs
            self.assertEqual(server.get(url).code, 200, url)
            self.assertEqual(store.syncs - before, syncs, url)

    def test_unreachable_store_is_503(self) -> None:
        store = SyncingStore()
        server = Server(self, store)
        server.seed(apiservice("v1.a.example", "a.example", "v1"))
        store.unreachable = True
        for url in (APISERVICES, f"{APISERVICES}/v1.a.example"):
            reply = server.get(url)
            self.assertEqual((reply.code, reply.json()["reason"]), (503, "ServiceUnavailable"), url)
        self.assertEqual(server.get(f"{APISERVICES}?resourceVersion=0").code, 200)
