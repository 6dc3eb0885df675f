# -*- test-case-name: tests.test_parity -*-
"""Where this server and kube-apiserver used to differ for unmodified clients, driven over HTTP through the tree.

- `/api` lists the core version `v1` (an empty `/api/v1`), so kubectl maps `kind: List` files;
- aggregated discovery v2beta1 for kubectl 1.27–1.29, also when emulating 1.33;
- strategic merge patch (kubectl patch's default) on the built-in kinds, their status included, and
  advertised in OpenAPI as kube advertises it; a custom resource still answers 415;
- bodies of built-in kinds may omit apiVersion and kind (the typed Python client's habit);
- a field of the wrong JSON type is kube's decode error (400), not a validation error;
- emptied labels and annotations are left out, as Go's omitempty leaves them out.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, NamedTuple

from treq.testing import StubTreq
from twisted.internet.address import UNIXAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from grafana_aggregator.apimachinery.discovery import Negotiated, negotiate_discovery
from grafana_aggregator.apimachinery.gotypes import base64_error, go_format, parse_rfc3339_error
from grafana_aggregator.apimachinery.openapi import kinds_by_group_version, swagger_v2, v3_documents
from grafana_aggregator.apimachinery.strategy import KindInfo, LocalGroupVersion, Strategy, type_meta_properties
from grafana_aggregator.apimachinery.writes import accepted_patch_types
from grafana_aggregator.registry import apiservice as apiservice_kind
from grafana_aggregator.registry import externalname as externalname_kind
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import local_groups
from grafana_aggregator.web.discovery import CoreResource, _server_address

from .support import serve_apis

EPOCH = 1_700_000_000
T0 = "2023-11-14T22:13:20Z"
HOST = "https://agg.test"
APISERVICES = f"{HOST}/apis/apiregistration.k8s.io/v1/apiservices"
EXTERNALNAMES = f"{HOST}/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames"
WIDGETS = f"{HOST}/apis/demo.grafana.app/v1/widgets"
NAME = "v1.foo.example.com"
URL = f"{APISERVICES}/{NAME}"
APIREG = "apiregistration.k8s.io/v1"
GRAFANA = "service.grafana.app/v0alpha1"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
KUBECTL_1_27 = f"{V2BETA1},application/json"
KUBECTL_1_30 = f"{V2},{V2BETA1},application/json"
KUBECTL_RAW = "application/json, */*"
LOCAL_CONDITION = {"type": "Available", "status": "True", "lastTransitionTime": T0, "reason": "Local",
                   "message": "Local APIServices are always available"}
DECODE_PREFIX = 'APIService in version "v1" cannot be handled as a APIService: '
BUILT_IN_PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC, APPLY]
CUSTOM_PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, APPLY]

WIDGET_SCHEMA: dict[str, Any] = {
    "description": "A custom resource: no Go type.", "type": "object",
    "properties": {**type_meta_properties(),
                   "spec": {"type": "object", "properties": {"size": {"type": "integer", "format": "int32"}}}},
    "x-kubernetes-group-version-kind": [{"group": "demo.grafana.app", "kind": "Widget", "version": "v1"}],
}


class WidgetStrategy(Strategy):
    """A kind served like a custom resource (its KindInfo declares no Go type)."""

    info = KindInfo(group="demo.grafana.app", version="v1", kind="Widget", plural="widgets", singular="widget",
                    namespaced=False, has_status=False, schema=WIDGET_SCHEMA)


class Reply(NamedTuple):
    """A finished response."""

    code: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def apiservice(name: str = NAME, **spec: Any) -> dict[str, Any]:
    """A Local APIService named `version.group`, priorities 100 and 10 unless overridden."""
    version, _, group = name.partition(".")
    body: dict[str, Any] = {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 10}
    body.update(spec)
    return {"apiVersion": APIREG, "kind": "APIService", "metadata": {"name": name}, "spec": body}


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure Status as kube-apiserver writes it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def patch_invalid(value: str, detail: str) -> dict[str, Any]:
    """kube's 422 for a patch whose result does not decode into the Go type."""
    message = f"Invalid value: {json.dumps(value)}: {detail}"
    return status(422, "Invalid", f' "" is invalid: patch: {message}',
                  {"causes": [{"reason": "FieldValueInvalid", "message": message, "field": "patch"}]})


class _Served(SynchronousTestCase):
    """`/api` and `/apis` as the daemon serves them, over a MemoryStore, with a Clock at EPOCH."""

    minor = 33

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(EPOCH)
        _, groups = local_groups(lambda: datetime.fromtimestamp(self.clock.seconds(), timezone.utc))
        groups.append(LocalGroupVersion("demo.grafana.app", "v1", (WidgetStrategy(),)))
        self.store = MemoryStore()
        root = Resource()
        root.putChild(b"api", CoreResource(emulated_minor=self.minor))
        root.putChild(b"apis", serve_apis(self.store, self.clock, groups, emulated_minor=self.minor).apis)
        self.client: Any = StubTreq(root)

    def request(self, method: str, url: str, body: Any = None, content_type: str | None = JSON,
                accept: str | None = None) -> Reply:
        """Send a request (a dict or list body as JSON) and wait for the whole response."""
        headers: dict[str, list[str]] = {"User-Agent": ["kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0"]}
        if content_type is not None:
            headers["Content-Type"] = [content_type]
        if accept is not None:
            headers["Accept"] = [accept]
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else \
            body.encode() if isinstance(body, str) else body
        pending = self.client.request(method, url, data=data, headers=headers)
        self.client.flush()
        response = self.successResultOf(pending)
        content = self.client.content(response)
        self.client.flush()
        return Reply(response.code, response.headers, self.successResultOf(content))

    def create(self, url: str = APISERVICES, body: Any = None) -> dict[str, Any]:
        reply = self.request("POST", url, apiservice() if body is None else body)
        self.assertEqual(reply.code, 201, reply.body)
        created: dict[str, Any] = reply.json()
        return created

    def get(self, url: str = URL) -> Reply:
        return self.request("GET", url, content_type=None)


# -- 1. the core group, for `kind: List` ------------------------------------------------------------------


class CoreGroupTests(_Served):
    """`/api` lists v1 (kubectl maps `kind: List` only for a discovered v1) and `/api/v1` has no resources."""

    def test_legacy_api_versions(self) -> None:
        """Legacy `/api` is kube's APIVersions: v1 and the address the client reached, no apiVersion."""
        reply = self.request("GET", f"{HOST}/api", content_type=None, accept=KUBECTL_RAW)
        self.assertEqual((reply.code, reply.headers.getRawHeaders(b"Content-Type")), (200, [b"application/json"]))
        self.assertEqual(reply.body, b'{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":'
                                     b'[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:443"}]}\n')

    def test_aggregated_v2_core_group(self) -> None:
        """kubectl 1.30+ get the core group (no name) with its v1, current and without resources."""
        reply = self.request("GET", f"{HOST}/api", content_type=None, accept=KUBECTL_1_30)
        self.assertEqual(reply.headers.getRawHeaders(b"Content-Type"), [V2.encode()])
        self.assertEqual(reply.json(), {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
                                        "metadata": {}, "items": [{"metadata": {}, "versions": [
                                            {"version": "v1", "freshness": "Current"}]}]})

    def test_server_address_of_other_sockets(self) -> None:
        """On a socket without an IP address (a UNIX socket from systemd) the address is the Host the client used."""
        class Request:
            def getHost(self) -> UNIXAddress:
                return UNIXAddress("/run/grafana-aggregator.sock")

            def getHeader(self, name: bytes) -> bytes | None:
                return {b"host": b"agg.example:6443"}.get(name)

        self.assertEqual(_server_address(Request()), "agg.example:6443")  # type: ignore[arg-type]

    def test_resource_list(self) -> None:
        """`/api/v1` is an APIResourceList of the core group-version, without resources and without apiVersion."""
        reply = self.request("GET", f"{HOST}/api/v1", content_type=None, accept=KUBECTL_RAW)
        self.assertEqual((reply.code, reply.headers.getRawHeaders(b"Content-Type")), (200, [b"application/json"]))
        self.assertEqual(reply.body, b'{"kind":"APIResourceList","groupVersion":"v1","resources":[]}\n')

    def test_resource_list_yaml(self) -> None:
        """`/api/v1` is served as YAML when asked for."""
        reply = self.request("GET", f"{HOST}/api/v1", content_type=None, accept="application/yaml")
        self.assertEqual((reply.code, reply.body), (200, b"kind: APIResourceList\ngroupVersion: v1\nresources: []\n"))

    def test_nothing_below_v1(self) -> None:
        """There are no core resources and no other core version: 404."""
        for path in ("/api/v1/namespaces", "/api/v1/namespaces/default/pods", "/api/v2"):
            reply = self.request("GET", f"{HOST}{path}", content_type=None)
            self.assertEqual((reply.code, reply.json()["reason"]), (404, "NotFound"), path)

    def test_resource_list_is_read_only(self) -> None:
        """Writing to `/api/v1` is 405."""
        self.assertEqual(self.request("POST", f"{HOST}/api/v1", {}).code, 405)

    def test_server_without_core_group(self) -> None:
        """A server passing no core versions (the example backend) lists none and has no `/api/v1`."""
        client = StubTreq(CoreResource(33, versions=()))
        legacy = self.successResultOf(client.get(f"{HOST}/", headers={"Accept": [KUBECTL_RAW]}))
        aggregated = self.successResultOf(client.get(f"{HOST}/", headers={"Accept": [KUBECTL_1_30]}))
        below = self.successResultOf(client.get(f"{HOST}/v1"))
        self.assertEqual((self.successResultOf(client.json_content(legacy)),
                          self.successResultOf(client.json_content(aggregated))["items"], below.code),
                         ({"kind": "APIVersions", "versions": []}, [], 404))


# -- 5. aggregated discovery v2beta1 for kubectl 1.27–1.29 --------------------------------------------------


class OldKubectlDiscoveryTests(_Served):
    """A client that asks only for v2beta1 gets it, also from a server emulating 1.33."""

    def test_negotiation(self) -> None:
        """v2beta1 is chosen when the Accept has no v2 clause; with a v2 clause, 1.33 recognises only v2."""
        v2beta1, v2, legacy = Negotiated("aggregated", "v2beta1"), Negotiated("aggregated", "v2"), Negotiated("legacy")
        self.assertEqual([negotiate_discovery(KUBECTL_1_27, 33), negotiate_discovery(V2BETA1, 33),
                          negotiate_discovery(KUBECTL_1_30, 33), negotiate_discovery(f"{V2BETA1},{V2}", 33),
                          negotiate_discovery(f"{V2BETA1},{V2}", 32), negotiate_discovery(KUBECTL_RAW, 33)],
                         [v2beta1, v2beta1, v2, v2, v2beta1, legacy])

    def test_apis_v2beta1_at_1_33(self) -> None:
        """`/apis` for kubectl 1.27 is aggregated v2beta1, the local groups with their resources."""
        self.create(body=apiservice("v1.apiregistration.k8s.io"))
        reply = self.request("GET", f"{HOST}/apis", content_type=None, accept=KUBECTL_1_27)
        self.assertEqual(reply.headers.getRawHeaders(b"Content-Type"), [V2BETA1.encode()])
        body = reply.json()
        self.assertEqual(body["apiVersion"], "apidiscovery.k8s.io/v2beta1")
        self.assertIn("apiservices", [r["resource"] for item in body["items"] for v in item["versions"]
                                      for r in v.get("resources", [])])

    def test_api_v2beta1_at_1_33(self) -> None:
        """`/api` for kubectl 1.27 is aggregated v2beta1 too, so client-go keeps the resources of `/apis`."""
        reply = self.request("GET", f"{HOST}/api", content_type=None, accept=KUBECTL_1_27)
        self.assertEqual(reply.headers.getRawHeaders(b"Content-Type"), [V2BETA1.encode()])
        self.assertEqual(reply.json()["items"], [{"metadata": {}, "versions": [{"version": "v1",
                                                                                "freshness": "Current"}]}])


# -- 2. strategic merge patch ---------------------------------------------------------------------------


class StrategicMergePatchTests(_Served):
    """`kubectl patch` without --type sends a strategic merge patch; built-in kinds apply it."""

    def patch(self, body: Any, url: str = URL, query: str = "fieldManager=kubectl-patch") -> Reply:
        return self.request("PATCH", f"{url}?{query}" if query else url, body, STRATEGIC)

    def test_default_kubectl_patch(self) -> None:
        """kubectl's `-p '{"spec":{"versionPriority":20}}'` changes the spec, bumps generation and names the manager."""
        self.create()
        reply = self.patch({"spec": {"versionPriority": 20}})
        self.assertEqual(reply.code, 200, reply.body)
        patched = reply.json()
        self.assertEqual((patched["spec"]["versionPriority"], patched["metadata"]["generation"]), (20, 2))
        self.assertEqual([(m["manager"], m["operation"]) for m in patched["metadata"]["managedFields"]],
                         [("kubectl", "Update"), ("kubectl-patch", "Update")])
        self.assertEqual(self.get().json(), patched)

    def test_status_conditions_merge_by_type(self) -> None:
        """A status patch adds a condition beside Available (merge key `type`), then changes one by its type."""
        self.create()
        degraded = {"type": "Degraded", "status": "False", "reason": "Fine"}
        reply = self.patch({"status": {"conditions": [degraded]}}, f"{URL}/status")
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["status"]["conditions"], [degraded, LOCAL_CONDITION])
        reply = self.patch({"status": {"conditions": [{"type": "Degraded", "status": "True", "reason": None}]}},
                           f"{URL}/status")
        self.assertEqual(self.get().json()["status"]["conditions"],
                         [{"type": "Degraded", "status": "True"}, LOCAL_CONDITION])

    def test_status_directives(self) -> None:
        """`$patch: delete` removes a condition by type; `$setElementOrder` orders them."""
        self.create()
        self.patch({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}]}},
                   f"{URL}/status")
        reply = self.patch({"status": {"$setElementOrder/conditions": [{"type": "Available"}, {"type": "B"}],
                                       "conditions": [{"$patch": "delete", "type": "A"}]}}, f"{URL}/status")
        self.assertEqual([c["type"] for c in reply.json()["status"]["conditions"]], ["Available", "B"])

    def test_status_patch_keeps_spec(self) -> None:
        """A strategic patch of the status subresource cannot change the spec."""
        created = self.create()
        reply = self.patch({"spec": {"versionPriority": 30}}, f"{URL}/status")
        self.assertEqual((reply.code, reply.json()["spec"]), (200, created["spec"]))

    def test_main_resource_patch_keeps_status(self) -> None:
        """A strategic patch of the main resource cannot change the status."""
        created = self.create()
        reply = self.patch({"status": {"conditions": [{"type": "Available", "status": "False"}]}})
        self.assertEqual((reply.code, reply.json()["status"]), (200, created["status"]))

    def test_finalizers_directive(self) -> None:
        """`$deleteFromPrimitiveList/finalizers` removes finalizers; a new one merges into the set."""
        self.create(body={**apiservice(), "metadata": {"name": NAME, "finalizers": ["a.example/x", "b.example/y"]}})
        reply = self.patch({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x"],
                                         "finalizers": ["c.example/z"]}})
        self.assertEqual(reply.json()["metadata"]["finalizers"], ["c.example/z", "b.example/y"])

    def test_external_name(self) -> None:
        """ExternalName takes strategic merge patches too."""
        self.create(EXTERNALNAMES, {"apiVersion": GRAFANA, "kind": "ExternalName", "metadata": {"name": "ext1"},
                                    "spec": {"host": "a.example.com"}})
        reply = self.patch({"spec": {"host": "b.example.com"}}, f"{EXTERNALNAMES}/ext1")
        self.assertEqual((reply.code, reply.json()["spec"]), (200, {"host": "b.example.com"}))

    def test_unknown_field_warns(self) -> None:
        """By default (Warn) an unknown field is dropped with a warning."""
        self.create()
        reply = self.patch({"spec": {"bogus": 1, "versionPriority": 11}})
        self.assertEqual((reply.code, reply.headers.getRawHeaders(b"Warning")),
                         (200, [b'299 - "unknown field \\"spec.bogus\\""']))
        self.assertNotIn("bogus", self.get().json()["spec"])

    def test_unknown_field_strict(self) -> None:
        """With fieldValidation=Strict an unknown field is kube's 422 showing the patch."""
        self.create()
        reply = self.patch({"spec": {"bogus": 1}}, query="fieldValidation=Strict")
        self.assertEqual((reply.code, reply.json()), (422, patch_invalid(
            "map[spec:map[bogus:1]]", 'strict decoding error: unknown field "spec.bogus"')))

    def test_duplicate_field_strict(self) -> None:
        """A field the patch repeats is a strict decoding error naming its path."""
        self.create()
        reply = self.patch('{"spec":{"versionPriority":11,"versionPriority":12}}', query="fieldValidation=Strict")
        self.assertEqual((reply.code, reply.json()), (422, patch_invalid(
            "map[spec:map[versionPriority:12]]", 'strict decoding error: duplicate field "spec.versionPriority"')))
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 10)

    def test_wrong_type(self) -> None:
        """A value of the wrong type is the unstructured converter's error, 422."""
        self.create()
        reply = self.patch({"spec": {"versionPriority": "x"}})
        self.assertEqual((reply.code, reply.json()), (422, patch_invalid(
            "map[spec:map[versionPriority:x]]", "unrecognized type: int32")))

    def test_malformed_json(self) -> None:
        """A body that is not JSON is 400 with encoding/json's message."""
        self.create()
        reply = self.patch("{spec}")
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "invalid character 's' looking for beginning of object key string")))

    def test_missing_merge_key(self) -> None:
        """A condition without its merge key is 400 with strategicpatch's message."""
        self.create()
        reply = self.patch({"status": {"conditions": [{"status": "False"}]}}, f"{URL}/status")
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "map: map[status:False] does not contain declared merge key: type")))

    def test_invalid_result(self) -> None:
        """A patch whose result fails validation is 422 Invalid and stores nothing."""
        self.create()
        reply = self.patch({"spec": {"versionPriority": 0}})
        self.assertEqual((reply.code, reply.json()["message"]), (422, f'APIService.apiregistration.k8s.io "{NAME}" '
                                                                      "is invalid: spec.versionPriority: Invalid "
                                                                      "value: 0: must be positive and less than 1000"))
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 10)

    def test_stale_resource_version(self) -> None:
        """A patch naming an old resourceVersion is 409 Conflict."""
        created = self.create()
        self.patch({"metadata": {"labels": {"a": "b"}}})
        reply = self.patch({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                            "spec": {"versionPriority": 12}})
        self.assertEqual((reply.code, reply.json()["reason"]), (409, "Conflict"))

    def test_dry_run(self) -> None:
        """dryRun=All answers with the patched object and stores nothing."""
        self.create()
        reply = self.patch({"spec": {"versionPriority": 12}}, query="dryRun=All")
        self.assertEqual((reply.code, reply.json()["spec"]["versionPriority"]), (200, 12))
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 10)

    def test_missing_object(self) -> None:
        """A strategic patch of an object that does not exist is 404."""
        self.assertEqual(self.patch({"spec": {"versionPriority": 12}}).code, 404)

    def test_kind_removed_comes_back(self) -> None:
        """Deleting apiVersion and kind by patch leaves them as the endpoint says (kube's typed decode)."""
        self.create()
        reply = self.patch({"kind": None, "apiVersion": None})
        self.assertEqual((reply.code, reply.json()["kind"], reply.json()["apiVersion"]), (200, "APIService", APIREG))

    def test_other_media_type_lists_four(self) -> None:
        """A built-in kind's 415 lists the four patch types it takes, in kube's order."""
        self.create()
        reply = self.request("PATCH", URL, {}, "text/plain")
        self.assertEqual((reply.code, reply.json()), (415, status(
            415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types "
                                         "include: " + ", ".join(BUILT_IN_PATCH_TYPES))))

    def test_custom_resource_is_415(self) -> None:
        """A kind without a Go type (a custom resource) answers 415 as kube does for CRDs."""
        self.create(WIDGETS, {"apiVersion": "demo.grafana.app/v1", "kind": "Widget", "metadata": {"name": "w"},
                              "spec": {"size": 1}})
        reply = self.patch({"spec": {"size": 2}}, f"{WIDGETS}/w")
        self.assertEqual((reply.code, reply.json()), (415, status(
            415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types "
                                         "include: " + ", ".join(CUSTOM_PATCH_TYPES))))
        self.assertEqual(self.get(f"{WIDGETS}/w").json()["spec"], {"size": 1})


class AdvertisedPatchTypesTests(SynchronousTestCase):
    """OpenAPI advertises strategic merge patch where the server takes it, as kube does."""

    infos = [apiservice_kind.INFO, externalname_kind.INFO, WidgetStrategy.info]

    def test_v3_request_body(self) -> None:
        """v3 PATCH operations of APIService (and its status) and ExternalName list it; the custom kind's do not."""
        documents = v3_documents(self.infos)
        paths = {**documents["apis/apiregistration.k8s.io/v1"]["paths"],
                 **documents["apis/service.grafana.app/v0alpha1"]["paths"], **documents["apis/demo.grafana.app/v1"]["paths"]}
        self.assertEqual({path: list(item["patch"]["requestBody"]["content"]) for path, item in paths.items()
                          if "patch" in item}, {
            "/apis/apiregistration.k8s.io/v1/apiservices/{name}": BUILT_IN_PATCH_TYPES,
            "/apis/apiregistration.k8s.io/v1/apiservices/{name}/status": BUILT_IN_PATCH_TYPES,
            "/apis/service.grafana.app/v0alpha1/namespaces/{namespace}/externalnames/{name}": BUILT_IN_PATCH_TYPES,
            "/apis/demo.grafana.app/v1/widgets/{name}": CUSTOM_PATCH_TYPES,
        })

    def test_v2_consumes(self) -> None:
        """v2 PATCH operations consume the same types (kubectl 1.27 and 1.28 read this)."""
        paths = swagger_v2(kinds_by_group_version(self.infos))["paths"]
        self.assertEqual({path: item["patch"]["consumes"] for path, item in paths.items() if "patch" in item}, {
            "/apis/apiregistration.k8s.io/v1/apiservices/{name}": BUILT_IN_PATCH_TYPES,
            "/apis/apiregistration.k8s.io/v1/apiservices/{name}/status": BUILT_IN_PATCH_TYPES,
            "/apis/service.grafana.app/v0alpha1/namespaces/{namespace}/externalnames/{name}": BUILT_IN_PATCH_TYPES,
            "/apis/demo.grafana.app/v1/widgets/{name}": CUSTOM_PATCH_TYPES,
        })

    def test_handler_accepts_what_is_advertised(self) -> None:
        """The PATCH handler takes exactly the advertised types."""
        self.assertEqual([list(accepted_patch_types(info)) for info in self.infos],
                         [BUILT_IN_PATCH_TYPES, BUILT_IN_PATCH_TYPES, CUSTOM_PATCH_TYPES])

    def test_strategies_match_schema(self) -> None:
        """The Go type's patch tags of status.conditions are the schema's x-kubernetes-patch extensions."""
        status_type = apiservice_kind.GO_TYPE.field("status")
        assert status_type is not None
        conditions = status_type.type.field("conditions")
        assert conditions is not None
        schema = apiservice_kind.SCHEMA["properties"]["status"]["properties"]["conditions"]
        self.assertEqual((conditions.patch_strategy, conditions.patch_merge_key),
                         (schema["x-kubernetes-patch-strategy"], schema["x-kubernetes-patch-merge-key"]))


# -- 3. apiVersion and kind from the endpoint ---------------------------------------------------------------


class DefaultedKindTests(_Served):
    """Built-in kinds take bodies without apiVersion and kind, as kube's decoder defaults them from the URL."""

    def test_create_without_api_version_and_kind(self) -> None:
        """A create without apiVersion and kind is stored and answered with them, first."""
        body = apiservice()
        del body["apiVersion"], body["kind"]
        created = self.create(body=body)
        self.assertEqual(list(created)[:2], ["apiVersion", "kind"])
        self.assertEqual((created["apiVersion"], created["kind"]), (APIREG, "APIService"))
        self.assertEqual(self.get().json()["kind"], "APIService")

    def test_create_with_only_one(self) -> None:
        """Either one alone is completed from the endpoint (an ExternalName with only a kind, only an apiVersion)."""
        self.create(EXTERNALNAMES, {"kind": "ExternalName", "metadata": {"name": "a"}, "spec": {"host": "a.example"}})
        created = self.create(EXTERNALNAMES, {"apiVersion": GRAFANA, "metadata": {"name": "b"},
                                              "spec": {"host": "b.example"}})
        self.assertEqual((created["apiVersion"], created["kind"]), (GRAFANA, "ExternalName"))

    def test_update_without_api_version_and_kind(self) -> None:
        """A replace without apiVersion and kind works too."""
        created = self.create()
        body = {"metadata": {"name": NAME, "resourceVersion": created["metadata"]["resourceVersion"]},
                "spec": {**created["spec"], "versionPriority": 11}}
        reply = self.request("PUT", URL, body)
        self.assertEqual((reply.code, reply.json()["kind"], reply.json()["spec"]["versionPriority"]),
                         (200, "APIService", 11))

    def test_mismatch_is_still_refused(self) -> None:
        """A body naming another kind is still 400."""
        reply = self.request("POST", APISERVICES, {**apiservice(), "kind": "ExternalName"})
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "the kind in the data (ExternalName) does not match the expected kind (APIService)")))

    def test_custom_resource_needs_kind(self) -> None:
        """A custom resource's body must name its kind, as for kube's CRDs."""
        reply = self.request("POST", WIDGETS, {"apiVersion": "demo.grafana.app/v1", "metadata": {"name": "w"}})
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", 'Object \'Kind\' is missing in \'{"apiVersion":"demo.grafana.app/v1","metadata":'
                               '{"name":"w"}}\'')))


# -- 4. decode errors and omitempty -------------------------------------------------------------------------


class DecodeErrorTests(_Served):
    """A field of the wrong JSON type is kube's 400 decode error, before any validation."""

    def assertDecodeError(self, body: dict[str, Any], message: str, method: str = "POST", url: str = APISERVICES,
                          prefix: str = DECODE_PREFIX) -> None:
        reply = self.request(method, url, body)
        self.assertEqual((reply.code, reply.json()), (400, status(400, "BadRequest", prefix + message)))

    def test_version_priority_string(self) -> None:
        """`spec.versionPriority: "x"` names the struct, the path and int32."""
        self.assertDecodeError(apiservice(versionPriority="x"), "json: cannot unmarshal string into Go struct field "
                                                                "APIServiceSpec.spec.versionPriority of type int32")
        self.assertEqual(self.get().code, 404)

    def test_labels_number(self) -> None:
        """`metadata.labels: 5`, and a label value that is not a string."""
        body = apiservice()
        body["metadata"]["labels"] = 5
        self.assertDecodeError(body, "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels "
                                     "of type map[string]string")
        body["metadata"]["labels"] = {"a": 1}
        self.assertDecodeError(body, "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels "
                                     "of type string")

    def test_numbers_out_of_range_or_fractional(self) -> None:
        """An int32 past its range or with a fraction quotes the number."""
        self.assertDecodeError(apiservice(groupPriorityMinimum=2147483648),
                               "json: cannot unmarshal number 2147483648 into Go struct field "
                               "APIServiceSpec.spec.groupPriorityMinimum of type int32")
        self.assertDecodeError(apiservice(service={"namespace": "n", "name": "s", "port": 44.5}),
                               "json: cannot unmarshal number 44.5 into Go struct field "
                               "ServiceReference.spec.service.port of type int32")

    def test_struct_bool_and_bytes(self) -> None:
        """A string for a struct or a bool names the Go type; bad base64 is encoding/base64's error."""
        self.assertDecodeError(apiservice(service="x"), "json: cannot unmarshal string into Go struct field "
                                                        "APIServiceSpec.spec.service of type v1.ServiceReference")
        self.assertDecodeError(apiservice(insecureSkipTLSVerify="yes"),
                               "json: cannot unmarshal string into Go struct field "
                               "APIServiceSpec.spec.insecureSkipTLSVerify of type bool")
        self.assertDecodeError(apiservice(caBundle="not base64!"), "illegal base64 data at input byte 3")

    def test_status_types(self) -> None:
        """Status is decoded too (before it is wiped on create): conditions and their named types."""
        self.assertDecodeError({**apiservice(), "status": {"conditions": {}}},
                               "json: cannot unmarshal object into Go struct field APIServiceStatus.status.conditions "
                               "of type []v1.APIServiceCondition")
        self.assertDecodeError({**apiservice(), "status": {"conditions": [{"type": "A", "status": 1}]}},
                               "json: cannot unmarshal number into Go struct field "
                               "APIServiceCondition.status.conditions.status of type v1.ConditionStatus")

    def test_time_errors_win(self) -> None:
        """metav1.Time's own decode error stops the decode, so it wins over an earlier type error."""
        body = apiservice(versionPriority="x")
        body["metadata"]["creationTimestamp"] = 5
        self.assertDecodeError(body, "json: cannot unmarshal number into Go struct field "
                                     "ObjectMeta.metadata.creationTimestamp of type string")
        body["metadata"]["creationTimestamp"] = "yesterday"
        self.assertDecodeError(body, 'parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse '
                                     '"yesterday" as "2006"')

    def test_first_error_wins(self) -> None:
        """Of two type errors the first in the document is reported."""
        self.assertDecodeError(apiservice(group=1, version=2), "json: cannot unmarshal number into Go struct field "
                                                               "APIServiceSpec.spec.group of type string")

    def test_update_and_external_name(self) -> None:
        """A replace is decoded the same way, and so is an ExternalName."""
        created = self.create()
        body = {**created, "spec": {**created["spec"], "versionPriority": "x"}}
        self.assertDecodeError(body, "json: cannot unmarshal string into Go struct field "
                                     "APIServiceSpec.spec.versionPriority of type int32", "PUT", URL)
        self.assertDecodeError({"apiVersion": GRAFANA, "kind": "ExternalName", "metadata": {"name": "e"},
                                "spec": {"host": 5}},
                               "json: cannot unmarshal number into Go struct field ExternalNameSpec.spec.host of type "
                               "string", url=EXTERNALNAMES,
                               prefix='ExternalName in version "v0alpha1" cannot be handled as a ExternalName: ')

    def test_merge_patch(self) -> None:
        """A merge patch whose result does not decode is kube's 422 showing the patched object."""
        self.create()
        stored = self.get().json()
        reply = self.request("PATCH", URL, {"spec": {"versionPriority": "x"}}, MERGE_PATCH)
        self.assertEqual(reply.code, 422)
        stored["spec"]["versionPriority"] = "x"
        self.assertEqual(reply.json(), patch_invalid(
            json.dumps(stored, sort_keys=True, separators=(",", ":")),
            "json: cannot unmarshal string into Go struct field APIServiceSpec.spec.versionPriority of type int32"))

    def test_custom_resource_is_validated_instead(self) -> None:
        """A custom resource has no Go type: its body is not decoded that way (kube validates its schema)."""
        reply = self.request("POST", WIDGETS, {"apiVersion": "demo.grafana.app/v1", "kind": "Widget",
                                               "metadata": {"name": "w"}, "spec": {"size": "x"}})
        self.assertNotIn(b"cannot unmarshal", reply.body)


class OmitEmptyTests(_Served):
    """Emptied labels and annotations disappear, as Go's `omitempty` drops them."""

    def test_create_with_empty_maps(self) -> None:
        """Empty or null labels, annotations and finalizers are not stored."""
        body = apiservice()
        body["metadata"].update(labels={}, annotations=None, finalizers=[])
        created = self.create(body=body)
        self.assertEqual([k for k in ("labels", "annotations", "finalizers") if k in created["metadata"]], [])

    def test_last_annotation_removed(self) -> None:
        """Removing the last annotation with a merge patch removes the map."""
        body = apiservice()
        body["metadata"]["annotations"] = {"note": "x"}
        self.create(body=body)
        reply = self.request("PATCH", URL, {"metadata": {"annotations": {"note": None}}}, MERGE_PATCH)
        self.assertNotIn("annotations", reply.json()["metadata"])
        self.assertNotIn("annotations", self.get().json()["metadata"])

    def test_last_label_removed(self) -> None:
        """Removing the last label, by strategic merge patch or JSON patch, removes the map."""
        body = apiservice()
        body["metadata"]["labels"] = {"a": "b", "c": "d"}
        self.create(body=body)
        self.request("PATCH", URL, {"metadata": {"labels": {"a": None}}}, STRATEGIC)
        reply = self.request("PATCH", URL, [{"op": "remove", "path": "/metadata/labels/c"}], JSON_PATCH)
        self.assertEqual(reply.code, 200)
        self.assertNotIn("labels", self.get().json()["metadata"])


class GoMessageTests(SynchronousTestCase):
    """The pieces of Go's messages: encoding/base64 offsets, time.Parse errors, fmt's %v of decoded values."""

    def test_base64(self) -> None:
        """base64.StdEncoding's CorruptInputError offsets: bad character, bad or missing padding, trailing data."""
        self.assertEqual([base64_error(text) for text in ("YWJj", "YQ==", "YW\nJj", "not base64!", "abc", "YQ=", "YQ==x",
                                                          "=YQ=")],
                         [None, None, None, "illegal base64 data at input byte 3", "illegal base64 data at input byte 0",
                          "illegal base64 data at input byte 3", "illegal base64 data at input byte 4",
                          "illegal base64 data at input byte 0"])

    def test_time(self) -> None:
        """time.Parse(time.RFC3339, ...) errors: the element that failed, ranges, extra text, days of the month."""
        layout = '"2006-01-02T15:04:05Z07:00"'
        self.assertEqual([parse_rfc3339_error(text) for text in (
            "2023-11-14T22:13:20Z", "2023-11-14T22:13:20.5+01:00", "2023-11-14", "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2023-11-14T22:13:20Zx", "2023-11-14T22:13:20",
            "\u00e9")], [
            None, None, f'parsing time "2023-11-14" as {layout}: cannot parse "" as "T"',
            'parsing time "2023-13-01T00:00:00Z": month out of range',
            'parsing time "2023-02-29T00:00:00Z": day out of range', None,
            'parsing time "2023-11-14T22:13:20Zx": extra text: "x"',
            f'parsing time "2023-11-14T22:13:20" as {layout}: cannot parse "" as "Z07:00"',
            f'parsing time "\\xc3\\xa9" as {layout}: cannot parse "\\xc3\\xa9" as "2006"'])

    def test_format(self) -> None:
        """fmt's %v: maps with sorted keys, floats in 'g' form with the shortest digits, nil as <nil>."""
        self.assertEqual(go_format({"b": [1, 2.5, 1e6, 100.0, 0.00001, None], "a": {"c": True, "d": "x y"}}),
                         "map[a:map[c:true d:x y] b:[1 2.5 1e+06 100 1e-05 <nil>]]")
