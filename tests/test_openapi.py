# -*- test-case-name: tests.test_openapi -*-
"""Tests for L{grafana_aggregator.apimachinery.openapi}: the v3 group-version documents and index, Swagger 2.0, and its protobuf.

What is asserted is what kubectl 1.27–1.33 relies on (kubectl-wire.md §7.3 and §8).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.openapi import (
    canonical_json,
    decode_openapi_v2_protobuf,
    document_hash,
    encode_openapi_v2_protobuf,
    group_version_document_v3,
    group_version_key,
    kinds_by_group_version,
    openapi_v3_index,
    parse_wire,
    swagger_v2,
    v3_documents,
)
from grafana_aggregator.registry import apiservice, externalname
from grafana_aggregator.apimachinery.strategy import KindInfo

GROUP, VERSION = "demo.grafana.app", "v1beta1"
PREFIX = f"/apis/{GROUP}/{VERSION}"
PACKAGE = "app.grafana.demo.v1beta1"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
GVK_GADGET = {"group": GROUP, "kind": "Gadget", "version": VERSION}
GVK_WIDGET = {"group": GROUP, "kind": "Widget", "version": VERSION}
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
FIELD_VALIDATION_DESCRIPTION = (
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing "
    "unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are "
    "silently dropped from the object, and will ignore all but the last duplicate field that the decoder "
    "encounters. - Warn: This will send a warning via the standard warning response header for each unknown "
    "field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This "
    "will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or "
    "if any duplicate fields are present."
)

#: The 28 bytes of `{swagger:"2.0", info:{title:"Kubernetes", version:"v1.30.0"}}` (kubectl-wire.md §8.2).
MINIMAL_V2 = bytes.fromhex("0a 03 32 2e 30 12 15 0a 0a 4b 75 62 65 72 6e 65 74 65 73 12 07 76 31 2e 33 30 2e 30")

GADGET_SCHEMA: dict[str, Any] = {
    "description": "Gadget is a cluster-wide demo thing.",
    "type": "object",
    "properties": {
        **apiservice.type_meta_properties(),
        "spec": {
            "description": "Spec of the gadget.",
            "type": "object",
            "default": {},
            "required": ["size"],
            "properties": {
                "size": {"description": "Size in bytes.", "type": "integer", "format": "int64", "default": 0},
                "source": {
                    "description": "Where the gadget comes from.",
                    "type": "object",
                    "properties": {"url": {"description": "The URL.", "type": "string"}},
                },
                "labels": {"description": "Free-form labels.", "type": "object",
                           "additionalProperties": {"type": "string"}},
            },
        },
        "status": {
            "description": "Status of the gadget.",
            "type": "object",
            "default": {},
            "properties": {
                "conditions": {
                    "description": "Current conditions.",
                    "type": "array",
                    "items": {
                        "description": "GadgetCondition is one observation.",
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"description": "Type of the condition.", "type": "string"}},
                    },
                },
            },
        },
    },
}

GADGET = KindInfo(group=GROUP, version=VERSION, kind="Gadget", plural="gadgets", singular="gadget",
                  namespaced=False, has_status=True, schema=GADGET_SCHEMA, description="Gadget is a demo thing.")
WIDGET = KindInfo(group=GROUP, version=VERSION, kind="Widget", plural="widgets", singular="widget",
                  namespaced=True, has_status=False,
                  verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
                  schema={"description": "Widget is a namespaced demo thing.", "type": "object",
                          "properties": {**apiservice.type_meta_properties(),
                                         "color": {"description": "The color.", "type": "string"}}})


def _document() -> dict[str, Any]:
    """The v3 document of the two fake kinds."""
    return group_version_document_v3([GADGET, WIDGET])


def _refs(value: Any) -> Iterator[str]:
    """Every `$ref` string anywhere in a JSON value."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if key == "$ref":
                yield sub
            else:
                yield from _refs(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _refs(sub)


def _parameter_names(operation: dict[str, Any]) -> list[str]:
    """The names of an operation's parameters, in order."""
    return [parameter["name"] for parameter in operation.get("parameters", [])]


def _varint14(value: int) -> bytes:
    """A varint of at most two bytes, written out by hand."""
    assert value < 1 << 14
    return bytes([value]) if value < 0x80 else bytes([value & 0x7F | 0x80, value >> 7])


def _delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: key (number, wire type 2), length, payload."""
    return _varint14(number << 3 | 2) + _varint14(len(payload)) + payload


def _field(data: bytes, number: int) -> bytes:
    """The payload of the first length-delimited field `number` of a message."""
    for found, _, value in parse_wire(data):
        if found == number:
            assert isinstance(value, bytes)
            return value
    raise AssertionError(f"no field {number}")


class GroupVersionDocumentV3Tests(SynchronousTestCase):
    """The OpenAPI 3.0 document of one group-version."""

    def test_header(self) -> None:
        """The document is OpenAPI 3.0.0 titled Kubernetes."""
        document = _document()
        self.assertEqual((document["openapi"], document["info"]), ("3.0.0", {"title": "Kubernetes",
                                                                            "version": "unversioned"}))

    def test_paths(self) -> None:
        """Cluster kinds get collection, item and status paths; namespaced ones namespaced paths plus a list-all."""
        self.assertEqual(list(_document()["paths"]), [
            f"{PREFIX}/gadgets",
            f"{PREFIX}/gadgets/{{name}}",
            f"{PREFIX}/gadgets/{{name}}/status",
            f"{PREFIX}/namespaces/{{namespace}}/widgets",
            f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}",
            f"{PREFIX}/widgets",
        ])

    def test_methods_follow_verbs(self) -> None:
        """Each path has the methods its kind's verbs allow (no deletecollection for Widget)."""
        methods = {path: sorted(key for key in item if key != "parameters")
                   for path, item in _document()["paths"].items()}
        self.assertEqual(methods, {
            f"{PREFIX}/gadgets": ["delete", "get", "post"],
            f"{PREFIX}/gadgets/{{name}}": ["delete", "get", "patch", "put"],
            f"{PREFIX}/gadgets/{{name}}/status": ["get", "patch", "put"],
            f"{PREFIX}/namespaces/{{namespace}}/widgets": ["get", "post"],
            f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}": ["delete", "get", "patch", "put"],
            f"{PREFIX}/widgets": ["get"],
        })

    def test_operation_ids_and_actions(self) -> None:
        """Operation ids and x-kubernetes-action values are kube's."""
        found = {(path, method): (operation["operationId"], operation["x-kubernetes-action"])
                 for path, item in _document()["paths"].items()
                 for method, operation in item.items() if method != "parameters"}
        self.assertEqual(found, {
            (f"{PREFIX}/gadgets", "delete"): ("deleteDemoGrafanaAppV1beta1CollectionGadget", "deletecollection"),
            (f"{PREFIX}/gadgets", "get"): ("listDemoGrafanaAppV1beta1Gadget", "list"),
            (f"{PREFIX}/gadgets", "post"): ("createDemoGrafanaAppV1beta1Gadget", "post"),
            (f"{PREFIX}/gadgets/{{name}}", "delete"): ("deleteDemoGrafanaAppV1beta1Gadget", "delete"),
            (f"{PREFIX}/gadgets/{{name}}", "get"): ("readDemoGrafanaAppV1beta1Gadget", "get"),
            (f"{PREFIX}/gadgets/{{name}}", "patch"): ("patchDemoGrafanaAppV1beta1Gadget", "patch"),
            (f"{PREFIX}/gadgets/{{name}}", "put"): ("replaceDemoGrafanaAppV1beta1Gadget", "put"),
            (f"{PREFIX}/gadgets/{{name}}/status", "get"): ("readDemoGrafanaAppV1beta1GadgetStatus", "get"),
            (f"{PREFIX}/gadgets/{{name}}/status", "patch"): ("patchDemoGrafanaAppV1beta1GadgetStatus", "patch"),
            (f"{PREFIX}/gadgets/{{name}}/status", "put"): ("replaceDemoGrafanaAppV1beta1GadgetStatus", "put"),
            (f"{PREFIX}/namespaces/{{namespace}}/widgets", "get"): (
                "listDemoGrafanaAppV1beta1NamespacedWidget", "list"),
            (f"{PREFIX}/namespaces/{{namespace}}/widgets", "post"): (
                "createDemoGrafanaAppV1beta1NamespacedWidget", "post"),
            (f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}", "delete"): (
                "deleteDemoGrafanaAppV1beta1NamespacedWidget", "delete"),
            (f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}", "get"): (
                "readDemoGrafanaAppV1beta1NamespacedWidget", "get"),
            (f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}", "patch"): (
                "patchDemoGrafanaAppV1beta1NamespacedWidget", "patch"),
            (f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}", "put"): (
                "replaceDemoGrafanaAppV1beta1NamespacedWidget", "put"),
            (f"{PREFIX}/widgets", "get"): ("listDemoGrafanaAppV1beta1WidgetForAllNamespaces", "list"),
        })

    def test_apiservice_operation_ids(self) -> None:
        """APIService's operation ids match kube-aggregator's published ones."""
        paths = group_version_document_v3([apiservice.INFO])["paths"]
        item = paths["/apis/apiregistration.k8s.io/v1/apiservices/{name}"]
        status = paths["/apis/apiregistration.k8s.io/v1/apiservices/{name}/status"]
        self.assertEqual(
            [item["get"]["operationId"], item["patch"]["operationId"], status["get"]["operationId"],
             paths["/apis/apiregistration.k8s.io/v1/apiservices"]["delete"]["operationId"]],
            ["readApiregistrationV1APIService", "patchApiregistrationV1APIService",
             "readApiregistrationV1APIServiceStatus", "deleteApiregistrationV1CollectionAPIService"])
        self.assertEqual(item["get"]["tags"], ["apiregistration_v1"])

    def test_externalname_operation_ids(self) -> None:
        """ExternalName's namespaced operation ids camel-case the whole group."""
        paths = group_version_document_v3([externalname.INFO])["paths"]
        item = paths["/apis/service.grafana.app/v0alpha1/namespaces/{namespace}/externalnames/{name}"]
        self.assertEqual((item["get"]["operationId"], item["get"]["tags"]),
                         ("readServiceGrafanaAppV0alpha1NamespacedExternalName", ["serviceGrafanaApp_v0alpha1"]))

    def test_tags_and_gvk_objects(self) -> None:
        """Every operation carries the group-version tag and its kind's GVK as an object."""
        for path, item in _document()["paths"].items():
            for method, operation in item.items():
                if method == "parameters":
                    continue
                expected = GVK_GADGET if "gadgets" in path else GVK_WIDGET
                self.assertEqual((operation["tags"], operation["x-kubernetes-group-version-kind"]),
                                 (["demoGrafanaApp_v1beta1"], expected))

    def test_path_parameters(self) -> None:
        """Item paths declare name (and namespace) as required path parameters, plus pretty."""
        item = _document()["paths"][f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}"]
        self.assertEqual([(p["name"], p["in"], p.get("required", False)) for p in item["parameters"]],
                         [("name", "path", True), ("namespace", "path", True), ("pretty", "query", False)])

    def test_patch_operation(self) -> None:
        """PATCH takes dryRun, fieldManager, fieldValidation and force, and a body of the three patch types."""
        patch = _document()["paths"][f"{PREFIX}/gadgets/{{name}}"]["patch"]
        self.assertEqual(_parameter_names(patch), ["dryRun", "fieldManager", "fieldValidation", "force"])
        self.assertEqual(list(patch["requestBody"]["content"]), PATCH_TYPES)
        self.assertEqual(patch["requestBody"]["content"]["application/merge-patch+json"],
                         {"schema": {"$ref": f"#/components/schemas/{META}Patch"}})
        self.assertEqual(patch["x-kubernetes-group-version-kind"], GVK_GADGET)

    def test_patch_field_validation_parameter(self) -> None:
        """The fieldValidation query parameter has kube's shape (kubectl checks it before sending Strict)."""
        patch = _document()["paths"][f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}"]["patch"]
        self.assertEqual(patch["parameters"][2], {"name": "fieldValidation", "in": "query",
                                                  "schema": {"type": "string", "uniqueItems": True},
                                                  "description": FIELD_VALIDATION_DESCRIPTION})

    def test_no_strategic_merge_patch(self) -> None:
        """Strategic merge patch is advertised nowhere, so kubectl apply falls back to merge patch."""
        self.assertNotIn(b"strategic-merge-patch", canonical_json(_document()))

    def test_write_operations(self) -> None:
        """POST and PUT take dryRun, fieldManager and fieldValidation, and a required body of the kind."""
        paths = _document()["paths"]
        post = paths[f"{PREFIX}/gadgets"]["post"]
        put = paths[f"{PREFIX}/gadgets/{{name}}"]["put"]
        self.assertEqual((_parameter_names(post), _parameter_names(put)),
                         (["dryRun", "fieldManager", "fieldValidation"],) * 2)
        self.assertEqual(post["requestBody"], {"content": {"*/*": {"schema": {
            "$ref": f"#/components/schemas/{PACKAGE}.Gadget"}}}, "required": True})

    def test_list_operation(self) -> None:
        """List takes the selector, paging, resourceVersion and watch parameters and answers the List kind."""
        get = _document()["paths"][f"{PREFIX}/namespaces/{{namespace}}/widgets"]["get"]
        self.assertEqual(_parameter_names(get), [
            "allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
            "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch"])
        self.assertEqual(get["responses"]["200"]["content"]["application/json"],
                         {"schema": {"$ref": f"#/components/schemas/{PACKAGE}.WidgetList"}})

    def test_delete_operation(self) -> None:
        """Delete takes gracePeriodSeconds, propagationPolicy and dryRun and an optional DeleteOptions body."""
        delete = _document()["paths"][f"{PREFIX}/gadgets/{{name}}"]["delete"]
        self.assertEqual(_parameter_names(delete), ["dryRun", "gracePeriodSeconds", "propagationPolicy"])
        self.assertEqual(delete["requestBody"],
                         {"content": {"*/*": {"schema": {"$ref": f"#/components/schemas/{META}DeleteOptions"}}}})
        self.assertEqual(sorted(delete["responses"]), ["200", "202", "401"])

    def test_create_responses(self) -> None:
        """Create answers 200, 201 and 202 with the kind, and 401."""
        responses = _document()["paths"][f"{PREFIX}/gadgets"]["post"]["responses"]
        self.assertEqual(responses["201"], {"description": "Created", "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{PACKAGE}.Gadget"}}}})
        self.assertEqual((sorted(responses), responses["401"]),
                         (["200", "201", "202", "401"], {"description": "Unauthorized"}))

    def test_component_names(self) -> None:
        """The kind components, hoisted types and lists are named under the reverse-DNS group package."""
        names = [name for name in _document()["components"]["schemas"] if name.startswith(PACKAGE)]
        self.assertEqual(names, [f"{PACKAGE}.{kind}" for kind in (
            "Gadget", "GadgetCondition", "GadgetList", "GadgetSource", "GadgetSpec", "GadgetStatus", "Widget",
            "WidgetList")])

    def test_component_gvk_arrays(self) -> None:
        """Kind and List components carry x-kubernetes-group-version-kind as an array of one object."""
        schemas = _document()["components"]["schemas"]
        self.assertEqual(
            [schemas[f"{PACKAGE}.{kind}"]["x-kubernetes-group-version-kind"]
             for kind in ("Gadget", "GadgetList", "Widget")],
            [[GVK_GADGET], [{"group": GROUP, "kind": "GadgetList", "version": VERSION}], [GVK_WIDGET]])

    def test_kind_component(self) -> None:
        """The kind component is an object with the schema's description and referenced sub-objects."""
        gadget = _document()["components"]["schemas"][f"{PACKAGE}.Gadget"]
        self.assertEqual((gadget["type"], gadget["description"]), ("object", "Gadget is a cluster-wide demo thing."))
        self.assertEqual(list(gadget["properties"]), ["apiVersion", "kind", "metadata", "spec", "status"])
        self.assertEqual(gadget["properties"]["spec"], {
            "allOf": [{"$ref": f"#/components/schemas/{PACKAGE}.GadgetSpec"}], "default": {},
            "description": "Spec of the gadget."})

    def test_nested_objects_hoisted(self) -> None:
        """Nested structs become components referenced through allOf; maps of scalars stay inline."""
        schemas = _document()["components"]["schemas"]
        spec = schemas[f"{PACKAGE}.GadgetSpec"]
        self.assertEqual(spec["properties"]["source"], {
            "allOf": [{"$ref": f"#/components/schemas/{PACKAGE}.GadgetSource"}],
            "description": "Where the gadget comes from."})
        self.assertEqual(spec["properties"]["labels"], {"description": "Free-form labels.", "type": "object",
                                                        "additionalProperties": {"type": "string"}})
        self.assertEqual((spec["required"], spec["type"], "default" in spec), (["size"], "object", False))
        self.assertEqual(schemas[f"{PACKAGE}.GadgetSource"], {
            "type": "object", "properties": {"url": {"description": "The URL.", "type": "string"}}})

    def test_array_items_hoisted(self) -> None:
        """Array items that are structs become `allOf` references with an empty default, as kube publishes them."""
        schemas = _document()["components"]["schemas"]
        conditions = schemas[f"{PACKAGE}.GadgetStatus"]["properties"]["conditions"]
        self.assertEqual(conditions["items"], {
            "allOf": [{"$ref": f"#/components/schemas/{PACKAGE}.GadgetCondition"}], "default": {}})
        self.assertEqual(schemas[f"{PACKAGE}.GadgetCondition"]["description"], "GadgetCondition is one observation.")

    def test_list_component(self) -> None:
        """The List component has items referring to the kind and ListMeta metadata."""
        widget_list = _document()["components"]["schemas"][f"{PACKAGE}.WidgetList"]
        self.assertEqual(widget_list["required"], ["items"])
        self.assertEqual(widget_list["properties"]["items"], {
            "description": "Items is the list of Widget", "type": "array",
            "items": {"allOf": [{"$ref": f"#/components/schemas/{PACKAGE}.Widget"}], "default": {}}})
        self.assertEqual(widget_list["properties"]["metadata"]["allOf"],
                         [{"$ref": f"#/components/schemas/{META}ListMeta"}])

    def test_meta_components(self) -> None:
        """The shared apimachinery components are shipped, each with a description."""
        schemas = _document()["components"]["schemas"]
        names = ("ObjectMeta", "ListMeta", "ManagedFieldsEntry", "OwnerReference", "Time", "FieldsV1", "Status",
                 "StatusDetails", "StatusCause", "DeleteOptions", "Preconditions", "Patch", "WatchEvent")
        self.assertEqual([bool(schemas[META + name]["description"]) for name in names], [True] * len(names))
        self.assertEqual(schemas[META + "Time"]["format"], "date-time")

    def test_refs_resolve(self) -> None:
        """Every `$ref` names a component of the same document."""
        document = _document()
        prefix = "#/components/schemas/"
        missing = {ref for ref in _refs(document)
                   if not ref.startswith(prefix) or ref[len(prefix):] not in document["components"]["schemas"]}
        self.assertEqual(missing, set())

    def test_apiservice_components(self) -> None:
        """APIService components get kube-aggregator's names, including ServiceReference."""
        schemas = group_version_document_v3([apiservice.INFO])["components"]["schemas"]
        package = "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1."
        self.assertEqual([name for name in schemas if name.startswith(package)], [package + kind for kind in (
            "APIService", "APIServiceCondition", "APIServiceList", "APIServiceSpec", "APIServiceStatus",
            "ServiceReference")])
        self.assertEqual(schemas[package + "APIServiceSpec"]["properties"]["service"]["allOf"],
                         [{"$ref": f"#/components/schemas/{package}ServiceReference"}])
        self.assertEqual(schemas[package + "ServiceReference"]["description"],
                         "ServiceReference holds a reference to Service.legacy.k8s.io")

    def test_rejects_mixed_group_versions(self) -> None:
        """Kinds of different group-versions cannot share one document."""
        self.assertRaises(ValueError, group_version_document_v3, [GADGET, externalname.INFO])

    def test_does_not_modify_kind_schema(self) -> None:
        """Building the document leaves the KindInfo's schema untouched."""
        before = canonical_json(GADGET_SCHEMA)
        _document()
        self.assertEqual(canonical_json(GADGET_SCHEMA), before)


class OpenAPIV3IndexTests(SynchronousTestCase):
    """The `/openapi/v3` root and document hashes."""

    def test_keys_and_urls(self) -> None:
        """Keys have no leading slash and point at hash-pinned URLs of the same path."""
        index = openapi_v3_index(v3_documents([externalname.INFO, apiservice.INFO]))
        self.assertEqual(list(index), ["paths"])
        self.assertEqual(list(index["paths"]), ["apis/apiregistration.k8s.io/v1", "apis/service.grafana.app/v0alpha1"])
        for key, entry in index["paths"].items():
            self.assertEqual(list(entry), ["serverRelativeURL"])
            self.assertRegex(entry["serverRelativeURL"], "^" + re.escape(f"/openapi/v3/{key}?hash=") + "[0-9A-F]{128}$")

    def test_hash_is_sha512_of_canonical_json(self) -> None:
        """The hash is the uppercase hex SHA-512 of the canonical JSON that is served."""
        document = _document()
        index = openapi_v3_index({"apis/demo.grafana.app/v1beta1": document})
        expected = hashlib.sha512(canonical_json(document)).hexdigest().upper()
        self.assertEqual(index["paths"]["apis/demo.grafana.app/v1beta1"]["serverRelativeURL"],
                         f"/openapi/v3/apis/demo.grafana.app/v1beta1?hash={expected}")

    def test_hash_is_stable(self) -> None:
        """Building the same document twice gives the same hash, whatever the key order."""
        first, second = _document(), _document()
        reordered = dict(reversed(list(second.items())))
        self.assertEqual(document_hash(first), document_hash(reordered))

    def test_hash_changes_with_document(self) -> None:
        """A change to a kind's schema changes the hash."""
        changed = KindInfo(group=GROUP, version=VERSION, kind="Widget", plural="widgets", singular="widget",
                           namespaced=True, has_status=False, verbs=WIDGET.verbs,
                           schema={**WIDGET.schema, "description": "Widget, described differently."})
        self.assertNotEqual(document_hash(_document()), document_hash(group_version_document_v3([GADGET, changed])))

    def test_group_version_key(self) -> None:
        """Named groups live under apis/, the core group under api/."""
        self.assertEqual((group_version_key("service.grafana.app", "v0alpha1"), group_version_key("", "v1")),
                         ("apis/service.grafana.app/v0alpha1", "api/v1"))

    def test_kinds_by_group_version(self) -> None:
        """Kinds are grouped under their index key, keys sorted."""
        grouped = kinds_by_group_version([externalname.INFO, GADGET, apiservice.INFO, WIDGET])
        self.assertEqual(grouped, {"apis/apiregistration.k8s.io/v1": [apiservice.INFO],
                                   "apis/demo.grafana.app/v1beta1": [GADGET, WIDGET],
                                   "apis/service.grafana.app/v0alpha1": [externalname.INFO]})


def _swagger() -> dict[str, Any]:
    """The Swagger 2.0 document of the fake kinds and the two real ones."""
    return swagger_v2(kinds_by_group_version([GADGET, WIDGET, apiservice.INFO, externalname.INFO]),
                      version="v1.30.0")


class SwaggerV2Tests(SynchronousTestCase):
    """The merged Swagger 2.0 document behind `/openapi/v2`."""

    def test_header(self) -> None:
        """The document is Swagger 2.0 with the given version."""
        swagger = _swagger()
        self.assertEqual((swagger["swagger"], swagger["info"]), ("2.0", {"title": "Kubernetes",
                                                                        "version": "v1.30.0"}))

    def test_merges_group_versions(self) -> None:
        """Paths and definitions of every group-version are present, meta definitions once."""
        swagger = _swagger()
        self.assertEqual(len(swagger["paths"]), 6 + 3 + 3)
        self.assertIn("app.grafana.service.v0alpha1.ExternalName", swagger["definitions"])
        self.assertIn("io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService", swagger["definitions"])
        self.assertIn(META + "ObjectMeta", swagger["definitions"])

    def test_patch_consumes(self) -> None:
        """A built-in kind's PATCH consumes the four patch types it takes, strategic merge patch included, in kube's
        order (kubectl 1.27 reads this for apply)."""
        patch = _swagger()["paths"]["/apis/apiregistration.k8s.io/v1/apiservices/{name}"]["patch"]
        self.assertEqual(patch["consumes"], ["application/json-patch+json", "application/merge-patch+json",
                                             "application/strategic-merge-patch+json", "application/apply-patch+yaml"])
        self.assertEqual(patch["x-kubernetes-group-version-kind"],
                         {"group": "apiregistration.k8s.io", "kind": "APIService", "version": "v1"})

    def test_patch_parameters(self) -> None:
        """PATCH has a body of Patch and flat query parameters, fieldValidation among them."""
        patch = _swagger()["paths"][f"{PREFIX}/namespaces/{{namespace}}/widgets/{{name}}"]["patch"]
        self.assertEqual(patch["parameters"][0], {"in": "body", "name": "body", "required": True,
                                                  "schema": {"$ref": f"#/definitions/{META}Patch"}})
        self.assertEqual(patch["parameters"][3], {"name": "fieldValidation", "in": "query", "type": "string",
                                                  "uniqueItems": True, "description": FIELD_VALIDATION_DESCRIPTION})

    def test_operation_shape(self) -> None:
        """Operations list consumes, produces, https and responses with schemas."""
        get = _swagger()["paths"][f"{PREFIX}/gadgets/{{name}}"]["get"]
        self.assertEqual(get, {
            "consumes": ["*/*"], "description": "read the specified Gadget",
            "operationId": "readDemoGrafanaAppV1beta1Gadget", "produces": ["application/json"],
            "responses": {"200": {"description": "OK", "schema": {"$ref": f"#/definitions/{PACKAGE}.Gadget"}},
                          "401": {"description": "Unauthorized"}},
            "schemes": ["https"], "tags": ["demoGrafanaApp_v1beta1"], "x-kubernetes-action": "get",
            "x-kubernetes-group-version-kind": GVK_GADGET})

    def test_references_are_definitions(self) -> None:
        """References point into #/definitions and resolve; allOf wrappers become plain $ref."""
        swagger = _swagger()
        refs = set(_refs(swagger))
        self.assertEqual({ref for ref in refs if not ref.startswith("#/definitions/")
                          or ref[len("#/definitions/"):] not in swagger["definitions"]}, set())
        self.assertEqual(swagger["definitions"][f"{PACKAGE}.Gadget"]["properties"]["spec"], {
            "$ref": f"#/definitions/{PACKAGE}.GadgetSpec", "default": {}, "description": "Spec of the gadget."})
        self.assertNotIn(b"allOf", canonical_json(swagger))

    def test_definition_gvk_arrays(self) -> None:
        """Definitions of kinds carry x-kubernetes-group-version-kind arrays."""
        definitions = _swagger()["definitions"]
        self.assertEqual(definitions["app.grafana.service.v0alpha1.ExternalName"]["x-kubernetes-group-version-kind"],
                         [{"group": "service.grafana.app", "kind": "ExternalName", "version": "v0alpha1"}])


class OpenAPIV2ProtobufTests(SynchronousTestCase):
    """The gnostic openapi_v2.Document protobuf encoding and its test decoder."""

    def test_minimal_document(self) -> None:
        """The minimal document encodes to the 28 bytes kubectl was seen to accept."""
        document = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.30.0"}}
        self.assertEqual(encode_openapi_v2_protobuf(document), MINIMAL_V2)

    def test_minimal_round_trip(self) -> None:
        """The 28 bytes decode back to the minimal document."""
        self.assertEqual(decode_openapi_v2_protobuf(MINIMAL_V2),
                         {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.30.0"}})

    def test_empty_document(self) -> None:
        """An empty dict is the empty message, a valid document."""
        self.assertEqual((encode_openapi_v2_protobuf({}), decode_openapi_v2_protobuf(b"")), (b"", {}))

    def test_patch_operation_encoding(self) -> None:
        """A PATCH with consumes, a query parameter and a GVK extension encodes with gnostic's field numbers."""
        document = {"paths": {"/x": {"patch": {
            "consumes": ["application/merge-patch+json"],
            "parameters": [{"name": "fieldValidation", "in": "query", "type": "string"}],
            "x-kubernetes-group-version-kind": {"group": "g", "kind": "K", "version": "v1"},
        }}}}
        query = _delimited(2, b"query") + _delimited(4, b"fieldValidation") + _delimited(6, b"string")
        parameter = _delimited(1, _delimited(2, _delimited(3, query)))  # ParametersItem→Parameter→NonBody→Query
        gvk = _delimited(1, b"x-kubernetes-group-version-kind") + _delimited(2, _delimited(
            2, b"group: g\nkind: K\nversion: v1\n"))
        operation = _delimited(7, b"application/merge-patch+json") + _delimited(8, parameter) + _delimited(13, gvk)
        paths = _delimited(2, _delimited(1, b"/x") + _delimited(2, _delimited(8, operation)))
        self.assertEqual(encode_openapi_v2_protobuf(document), _delimited(8, paths))

    def test_schema_encoding(self) -> None:
        """A definition encodes description, required, type, properties and vendor extensions by number."""
        document = {"definitions": {"K": {
            "description": "d", "required": ["a"], "type": "object",
            "properties": {"a": {"type": "string"}},
            "x-kubernetes-group-version-kind": [{"group": "g", "kind": "K", "version": "v1"}],
        }}}
        property_a = _delimited(1, _delimited(1, b"a") + _delimited(2, _delimited(22, _delimited(1, b"string"))))
        gvk = _delimited(1, b"x-kubernetes-group-version-kind") + _delimited(2, _delimited(
            2, b"- group: g\n  kind: K\n  version: v1\n"))
        schema = (_delimited(4, b"d") + _delimited(19, b"a") + _delimited(22, _delimited(1, b"object"))
                  + _delimited(25, property_a) + _delimited(31, gvk))
        definitions = _delimited(1, _delimited(1, b"K") + _delimited(2, schema))
        self.assertEqual(encode_openapi_v2_protobuf(document), _delimited(9, definitions))

    def test_scalar_kinds_round_trip(self) -> None:
        """Booleans, integers, doubles, defaults, enums and additionalProperties survive a round trip."""
        document = {"definitions": {"K": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": -1.5, "maxLength": 7, "default": 0, "enum": [1, 2]},
                "m": {"type": "object", "additionalProperties": {"type": "string"}},
                "b": {"type": "object", "additionalProperties": False, "readOnly": True},
                "l": {"type": "array", "items": {"$ref": "#/definitions/K"}, "default": []},
            },
        }}}
        self.assertEqual(decode_openapi_v2_protobuf(encode_openapi_v2_protobuf(document)), document)

    def test_swagger_round_trip(self) -> None:
        """The whole Swagger document of the fake and real kinds decodes back to itself."""
        swagger = _swagger()
        self.assertEqual(decode_openapi_v2_protobuf(encode_openapi_v2_protobuf(swagger)), swagger)

    def test_truncated_input(self) -> None:
        """Truncated bytes are rejected."""
        self.assertRaises(ValueError, decode_openapi_v2_protobuf, MINIMAL_V2[:-3])
