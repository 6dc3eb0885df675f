"""Structural schemas as kube's apiextensions-apiserver checks, prunes and defaults them, on hand-made and real CRDs.

The real CRDs in tests/crds/ (see its README) are unchanged released manifests: kube accepts them, so
the structural check must too, and pruning and defaulting must treat their instances as kube does.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterator
from typing import Any

import yaml
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.structural import apply_defaults, prune, structural_errors

P = "spec.versions[0].schema.openAPIV3Schema"
CRDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crds")


def messages(schema: dict[str, Any]) -> list[str]:
    return [str(error) for error in structural_errors(schema, P)]


def root(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def spec(**properties: Any) -> dict[str, Any]:
    return root(spec={"type": "object", "properties": properties})


def list_map(items: dict[str, Any], keys: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema = {"type": "array", "x-kubernetes-list-type": "map", "items": items, **extra}
    if keys is not None:
        schema["x-kubernetes-list-map-keys"] = keys
    return schema


class StructuralRulesTests(SynchronousTestCase):
    """Each rule of kube's structural check, with kube's path and message."""

    def test_a_plain_schema_is_structural(self) -> None:
        """Typed properties, items and additionalProperties are structural."""
        schema = spec(
            replicas={"type": "integer", "minimum": 0},
            tags={"type": "array", "items": {"type": "string"}},
            labels={"type": "object", "additionalProperties": {"type": "string"}},
        )
        self.assertEqual(messages(schema), [])

    def test_type_must_not_be_empty(self) -> None:
        """A field, an array's items and the root all need a type."""
        self.assertEqual(messages(root(spec={"properties": {}})), [
            f"{P}.properties[spec].type: Required value: must not be empty for specified object fields"])
        self.assertEqual(messages(spec(tags={"type": "array", "items": {}})), [
            f"{P}.properties[spec].properties[tags].items.type: Required value: must not be empty for specified array items"])
        self.assertEqual(messages({"properties": {}}), [f"{P}.type: Required value: must not be empty at the root"])

    def test_root_must_be_object(self) -> None:
        """The root's type is object."""
        self.assertEqual(messages({"type": "string"}), [f'{P}.type: Invalid value: "string": must be object at the root'])

    def test_unknown_type(self) -> None:
        """Only OpenAPI's types are allowed; null is refused with a hint."""
        self.assertEqual(messages(spec(a={"type": "null"})), [
            f'{P}.properties[spec].properties[a].type: Unsupported value: "null": supported values: "array", '
            '"boolean", "integer", "number", "object", "string"',
            f"{P}.properties[spec].properties[a].type: Forbidden: type cannot be set to null, use nullable as an alternative",
        ])

    def test_array_needs_items(self) -> None:
        """An array without items is not structural."""
        self.assertEqual(messages(spec(tags={"type": "array"})), [
            f"{P}.properties[spec].properties[tags].items: Required value: must be specified"])

    def test_additional_properties(self) -> None:
        """additionalProperties is refused at the root and beside properties (except `true`)."""
        self.assertEqual(messages({"type": "object", "additionalProperties": {"type": "string"}}), [
            f"{P}.additionalProperties: Forbidden: must not be used at the root"])
        both = spec(m={"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}})
        self.assertEqual(messages(both), [
            f"{P}.properties[spec].properties[m].additionalProperties: Forbidden: additionalProperties and properties "
            "are mutual exclusive"])
        allowed = spec(m={"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True})
        self.assertEqual(messages(allowed), [])

    def test_preserve_unknown_fields(self) -> None:
        """preserve-unknown-fields stands in for the type, and may only be true."""
        self.assertEqual(messages(spec(free={"x-kubernetes-preserve-unknown-fields": True})), [])
        self.assertEqual(messages(spec(free={"type": "object", "x-kubernetes-preserve-unknown-fields": False})), [
            f"{P}.properties[spec].properties[free].x-kubernetes-preserve-unknown-fields: Invalid value: false: "
            "must be true or undefined"])

    def test_int_or_string(self) -> None:
        """int-or-string needs no type, allows kube's two anyOf patterns, and excludes the other extensions."""
        pattern = [{"type": "integer"}, {"type": "string"}]
        self.assertEqual(messages(spec(port={"x-kubernetes-int-or-string": True})), [])
        self.assertEqual(messages(spec(port={"x-kubernetes-int-or-string": True, "anyOf": pattern})), [])
        self.assertEqual(messages(spec(port={"x-kubernetes-int-or-string": True, "allOf": [{"anyOf": pattern}]})), [])
        self.assertEqual(messages(spec(port={"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "boolean"}]})), [
            f"{P}.properties[spec].properties[port].anyOf[0].type: Forbidden: must be empty to be structural",
            f"{P}.properties[spec].properties[port].anyOf[1].type: Forbidden: must be empty to be structural",
        ])
        both = spec(port={"x-kubernetes-int-or-string": True, "x-kubernetes-preserve-unknown-fields": True,
                          "x-kubernetes-embedded-resource": True, "type": "object", "properties": {"a": {"type": "string"}}})
        self.assertEqual(messages(both), [
            f"{P}.properties[spec].properties[port].x-kubernetes-embedded-resource: Invalid value: true: "
            "must be false if x-kubernetes-int-or-string is true",
            f"{P}.properties[spec].properties[port].x-kubernetes-preserve-unknown-fields: Invalid value: true: "
            "must be false if x-kubernetes-int-or-string is true",
        ])

    def test_embedded_resource(self) -> None:
        """An embedded resource is an object with properties or preserved fields, and no additionalProperties."""
        self.assertEqual(messages(spec(t={"x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True})), [
            f"{P}.properties[spec].properties[t].type: Required value: must be object if x-kubernetes-embedded-resource is true"])
        self.assertEqual(messages(spec(t={"type": "string", "x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True})), [
            f'{P}.properties[spec].properties[t].type: Invalid value: "string": must be object if x-kubernetes-embedded-resource is true'])
        self.assertEqual(messages(spec(t={"type": "object", "x-kubernetes-embedded-resource": True})), [
            f"{P}.properties[spec].properties[t].properties: Required value: must not be empty if "
            "x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"])
        self.assertEqual(messages(spec(t={"type": "object", "x-kubernetes-embedded-resource": True,
                                          "x-kubernetes-preserve-unknown-fields": True, "additionalProperties": True})), [
            f"{P}.properties[spec].properties[t].additionalProperties: Forbidden: must not be used if "
            "x-kubernetes-embedded-resource is set"])
        self.assertEqual(messages(spec(t={"type": "object", "x-kubernetes-embedded-resource": True,
                                          "properties": {"kind": {"type": "integer"}, "metadata": {"type": "string"}}})), [
            f'{P}.properties[spec].properties[t].properties[kind].type: Invalid value: "integer": must be string',
            f'{P}.properties[spec].properties[t].properties[metadata].type: Invalid value: "string": must be object',
        ])

    def test_value_validation_must_not_carry_structure(self) -> None:
        """Inside anyOf/allOf/oneOf/not: no type, description, nullable, default, extensions or metadata."""
        schema = spec(a={"type": "object", "properties": {"b": {"type": "string"}, "c": {"type": "string"}},
                         "anyOf": [{"properties": {"b": {"type": "string", "description": "x", "nullable": True}}}],
                         "allOf": [{"properties": {"c": {"default": "x", "title": "t", "x-kubernetes-int-or-string": True}}}],
                         "oneOf": [{"x-kubernetes-preserve-unknown-fields": True}],
                         "not": {"x-kubernetes-validations": [{"rule": "true"}], "properties": {"metadata": {}}}})
        a = f"{P}.properties[spec].properties[a]"
        self.assertEqual(messages(schema), [
            f"{a}.allOf[0].properties[c].default: Forbidden: must be undefined to be structural",
            f"{a}.allOf[0].properties[c].title: Forbidden: must be empty to be structural",
            f"{a}.allOf[0].properties[c].x-kubernetes-int-or-string: Forbidden: must be false to be structural",
            f"{a}.anyOf[0].properties[b].description: Forbidden: must be empty to be structural",
            f"{a}.anyOf[0].properties[b].nullable: Forbidden: must be false to be structural",
            f"{a}.anyOf[0].properties[b].type: Forbidden: must be empty to be structural",
            f"{a}.not.properties[metadata]: Forbidden: must not be specified in a nested context",
            f"{a}.not.x-kubernetes-validations: Forbidden: must be empty to be structural",
            f"{a}.oneOf[0].x-kubernetes-preserve-unknown-fields: Forbidden: must be false to be structural",
        ])

    def test_value_validation_must_be_specified_outside(self) -> None:
        """A property or items named in the root's value validation must also be in the structural part (kube checks from the root only)."""
        schema = spec(b={"type": "string"}, l={"type": "array", "items": {"type": "string"}})
        schema["anyOf"] = [{"properties": {"spec": {"properties": {"z": {}, "l": {"items": {"pattern": "^x"}}}}}}, {"required": ["spec"]}]
        schema["not"] = {"items": {}}
        self.assertEqual(messages(schema), [
            f"{P}.items: Required value: because it is defined in {P}.not.items",
            f"{P}.properties[spec].properties[z]: Required value: because it is defined in "
            f"{P}.anyOf[0].properties[spec].properties[z]",
        ])
        nested = spec(a={"type": "object", "anyOf": [{"properties": {"z": {}}}]})
        self.assertEqual(messages(nested), [])

    def test_nullable_at_the_root(self) -> None:
        """The root may not be nullable."""
        self.assertEqual(messages({"type": "object", "nullable": True}), [f"{P}.nullable: Forbidden: nullable cannot be true at the root"])

    def test_metadata_at_the_root(self) -> None:
        """Root metadata may only restrict name and generateName, and carries no default."""
        self.assertEqual(messages(root(metadata={"type": "object"})), [])
        self.assertEqual(messages(root(metadata={"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 10}, "generateName": {"type": "string"}}})), [])
        self.assertEqual(messages(root(metadata={"type": "object", "properties": {"labels": {"type": "object"}}})), [
            f"{P}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but "
            "metadata is implicitly specified"])
        self.assertEqual(messages(root(metadata={"type": "object", "default": {}})), [
            f"{P}.properties[metadata].default: Forbidden: must not be set in top-level metadata"])
        self.assertEqual(messages(root(metadata={"type": "string"}, apiVersion={"type": "integer"})), [
            f'{P}.properties[apiVersion].type: Invalid value: "integer": must be string',
            f'{P}.properties[metadata].type: Invalid value: "string": must be object',
        ])

    def test_unsupported_keywords(self) -> None:
        """$ref, patternProperties, uniqueItems and tuple items are refused as kube does."""
        self.assertEqual(messages(spec(a={"$ref": "#/x"}, b={"type": "object", "patternProperties": {"^x": {"type": "string"}}},
                                       c={"type": "array", "uniqueItems": True, "items": {"type": "string"}})), [
            f"{P}.properties[spec].properties[a].$ref: Forbidden: $ref is not supported",
            f"{P}.properties[spec].properties[b].patternProperties: Forbidden: patternProperties is not supported",
            f"{P}.properties[spec].properties[c].uniqueItems: Forbidden: uniqueItems cannot be set to true since the "
            "runtime complexity becomes quadratic",
        ])


class ListTypeRulesTests(SynchronousTestCase):
    """x-kubernetes-list-type and x-kubernetes-list-map-keys must agree with each other and with items."""

    item = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}

    def test_a_good_list_map(self) -> None:
        """Required or defaulted scalar keys are fine."""
        item = copy.deepcopy(self.item)
        item["properties"]["protocol"] = {"type": "string", "default": "TCP"}
        self.assertEqual(messages(spec(ports=list_map(item, ["name", "protocol"]))), [])

    def test_keys_must_be_required_or_defaulted(self) -> None:
        """A key that may be absent cannot identify an item."""
        self.assertEqual(messages(spec(ports=list_map(self.item, ["port"]))), [
            f"{P}.properties[spec].properties[ports].items.properties[port].default: Required value: this property is "
            "in x-kubernetes-list-map-keys, so it must have a default or be a required property"])

    def test_keys_must_be_scalar_item_properties(self) -> None:
        """Keys are names of scalar properties of the items, without duplicates."""
        item = copy.deepcopy(self.item)
        item["properties"]["name"] = {"type": "object"}
        ports = f"{P}.properties[spec].properties[ports]"
        self.assertEqual(messages(spec(ports=list_map(item, ["name"]))), [
            f'{ports}.items.properties[name].type: Invalid value: "object": must be a scalar type if parent array\'s '
            "x-kubernetes-list-type is map"])
        self.assertEqual(messages(spec(ports=list_map(self.item, ["nope", "name", "name"]))), [
            f'{ports}.x-kubernetes-list-map-keys: Invalid value: ["nope","name","name"]: entries must all '
            "be names of item properties",
            f'{ports}.x-kubernetes-list-map-keys: Invalid value: ["nope","name","name"]: must not contain '
            "duplicate entries",
        ])

    def test_keys_and_type_go_together(self) -> None:
        """Keys need list-type map, list-type map needs keys and object items, and only arrays have a list-type."""
        ports = f"{P}.properties[spec].properties[ports]"
        no_type = {"type": "array", "items": self.item, "x-kubernetes-list-map-keys": ["name"]}
        self.assertEqual(messages(spec(ports=no_type)), [
            f"{ports}.x-kubernetes-list-type: Required value: must be map if x-kubernetes-list-map-keys is non-empty"])
        self.assertEqual(messages(spec(ports={**no_type, "x-kubernetes-list-type": "set"})), [
            f'{ports}.items.x-kubernetes-map-type: Invalid value: null: must be atomic as item of a list with '
            "x-kubernetes-list-type=set",
            f'{ports}.x-kubernetes-list-type: Invalid value: "set": must be map if x-kubernetes-list-map-keys is non-empty'])
        self.assertEqual(messages(spec(ports=list_map(self.item))), [
            f"{ports}.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"])
        self.assertEqual(messages(spec(ports=list_map({"type": "string"}, ["name"]))), [
            f'{ports}.items.type: Invalid value: "string": must be object if parent array\'s x-kubernetes-list-type is map'])
        self.assertEqual(messages(spec(ports={"type": "object", "x-kubernetes-list-type": "atomic"})), [
            f'{ports}.type: Invalid value: "object": must be array if x-kubernetes-list-type is specified'])
        self.assertEqual(messages(spec(ports={"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "bag"})), [
            f'{ports}.x-kubernetes-list-type: Unsupported value: "bag": supported values: "atomic", "set", "map"'])

    def test_set_items_must_be_atomic(self) -> None:
        """A set's items are atomic: objects with map-type atomic, arrays without a granular list-type."""
        atomic_objects = {"type": "array", "x-kubernetes-list-type": "set",
                          "items": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {"a": {"type": "string"}}}}
        self.assertEqual(messages(spec(s=atomic_objects)), [])
        nested_sets = {"type": "array", "x-kubernetes-list-type": "set",
                       "items": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}
        self.assertEqual(messages(spec(s=nested_sets)), [
            f'{P}.properties[spec].properties[s].items.x-kubernetes-list-type: Invalid value: "set": must be atomic as '
            "item of a list with x-kubernetes-list-type=set"])

    def test_keys_and_items_not_nullable(self) -> None:
        """Items of a set or map list, and map keys, cannot be nullable."""
        item = copy.deepcopy(self.item)
        item["nullable"] = True
        item["properties"]["name"]["nullable"] = True
        ports = f"{P}.properties[spec].properties[ports]"
        self.assertEqual(messages(spec(ports=list_map(item, ["name"]))), [
            f"{ports}.items.nullable: Forbidden: cannot be nullable when x-kubernetes-list-type is map",
            f"{ports}.items.properties[name].nullable: Forbidden: this property is in x-kubernetes-list-map-keys, so it "
            "cannot be nullable",
        ])

    def test_map_type(self) -> None:
        """x-kubernetes-map-type is atomic or granular, on objects only."""
        m = f"{P}.properties[spec].properties[m]"
        self.assertEqual(messages(spec(m={"type": "object", "x-kubernetes-map-type": "atomic"})), [])
        self.assertEqual(messages(spec(m={"type": "string", "x-kubernetes-map-type": "loose"})), [
            f'{m}.type: Invalid value: "string": must be object if x-kubernetes-map-type is specified',
            f'{m}.x-kubernetes-map-type: Unsupported value: "loose": supported values: "atomic", "granular"',
        ])


SCHEMA = root(
    spec={"type": "object", "properties": {
        "a": {"type": "string"},
        "nested": {"type": "object", "properties": {"x": {"type": "integer"}}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "string"}}}},
        "anything": {"type": "object", "additionalProperties": True},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"known": {"type": "object", "properties": {"k": {"type": "string"}}}}},
        "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "properties": {"spec": {"type": "object", "properties": {"image": {"type": "string"}}}}},
        "opaque": {"type": "object", "x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True},
        "maybe": {"type": "string", "nullable": True},
        "never": {"type": "string"},
        "kind": {"type": "string"},
    }},
)


class PruneTests(SynchronousTestCase):
    """Unknown fields are dropped as kube drops them, and their paths returned in kube's order."""

    def test_unknown_fields_are_dropped(self) -> None:
        """Fields outside the schema go, at every depth, and their paths come back sorted."""
        obj = {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"}, "extra": 1,
               "spec": {"a": "s", "b": 2, "nested": {"x": 1, "y": 2}, "list": [{"name": "p", "bogus": True}],
                        "map": {"k": {"v": "1", "w": "2"}}, "anything": {"q": {"deep": 1}}}}
        self.assertEqual(prune(obj, SCHEMA), [
            "extra", "spec.anything.q.deep", "spec.b", "spec.list[0].bogus", "spec.map.k.w", "spec.nested.y"])
        # kube keeps the keys of `additionalProperties: true` but, without preserve-unknown-fields, not what is inside.
        self.assertEqual(obj, {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
                               "spec": {"a": "s", "nested": {"x": 1}, "list": [{"name": "p"}], "map": {"k": {"v": "1"}},
                                        "anything": {"q": {}}}})

    def test_preserve_unknown_fields_still_prunes_known_properties(self) -> None:
        """Under preserve-unknown-fields the unknown stays, but declared properties are still pruned inside."""
        obj = {"spec": {"free": {"whatever": {"z": 1}, "known": {"k": "v", "drop": 1}}}}
        self.assertEqual(prune(obj, SCHEMA), ["spec.free.known.drop"])
        self.assertEqual(obj, {"spec": {"free": {"whatever": {"z": 1}, "known": {"k": "v"}}}})

    def test_embedded_resource_keeps_type_and_object_meta(self) -> None:
        """An embedded resource keeps apiVersion and kind, and its metadata is pruned to ObjectMeta."""
        obj = {"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}, "colour": "red"},
                                     "spec": {"image": "i", "ports": []}, "status": {}},
                        "opaque": {"apiVersion": "v1", "metadata": {"name": "o", "size": 1}, "rest": {"kept": True}}}}
        self.assertEqual(prune(obj, SCHEMA), [
            "spec.template.spec.ports", "spec.template.status", "spec.opaque.metadata.size", "spec.template.metadata.colour"])
        self.assertEqual(obj["spec"]["template"], {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
                                                   "spec": {"image": "i"}})
        self.assertEqual(obj["spec"]["opaque"], {"apiVersion": "v1", "metadata": {"name": "o"}, "rest": {"kept": True}})

    def test_root_metadata_is_object_meta(self) -> None:
        """Unknown fields of the root's metadata (and of its owner references) come first, as kube reports them."""
        obj = {"apiVersion": "x/v1", "kind": "K", "spec": {"zzz": 1},
               "metadata": {"name": "n", "colour": "red", "ownerReferences": [{"kind": "K", "name": "o", "uid": "u", "apiVersion": "v1", "x": 1}]}}
        self.assertEqual(prune(obj, SCHEMA), ["metadata.colour", "metadata.ownerReferences[0].x", "spec.zzz"])
        self.assertEqual(obj["metadata"], {"name": "n", "ownerReferences": [{"kind": "K", "name": "o", "uid": "u", "apiVersion": "v1"}]})

    def test_type_meta_below_the_root_is_an_ordinary_field(self) -> None:
        """apiVersion and kind are only implicit at the root and in embedded resources."""
        obj = {"spec": {"kind": "k", "apiVersion": "v", "metadata": {}}}
        self.assertEqual(prune(obj, SCHEMA), ["spec.apiVersion", "spec.metadata"])
        self.assertEqual(obj, {"spec": {"kind": "k"}})

    def test_non_nullable_nulls_are_dropped(self) -> None:
        """A null where the schema does not allow one (and has no default) is removed without a report."""
        obj = {"spec": {"maybe": None, "never": None}}
        self.assertEqual(prune(obj, SCHEMA), [])
        self.assertEqual(obj, {"spec": {"maybe": None}})


DEFAULTS = root(
    spec={"type": "object", "default": {}, "properties": {
        "replicas": {"type": "integer", "default": 1},
        "mode": {"type": "string", "default": "fast"},
        "maybe": {"type": "string", "nullable": True, "default": "d"},
        "strategy": {"type": "object", "default": {"type": "Rolling", "junk": 1},
                     "properties": {"type": {"type": "string"}, "maxSurge": {"type": "integer", "default": 25}}},
        "ports": {"type": "array", "items": {"type": "object", "properties": {
            "protocol": {"type": "string", "default": "TCP"}, "port": {"type": "integer"}}}},
        "byName": {"type": "object", "additionalProperties": {
            "type": "object", "default": {"weight": 1}, "properties": {"weight": {"type": "integer"}, "on": {"type": "boolean", "default": True}}}},
    }},
)


class DefaultTests(SynchronousTestCase):
    """kube's structural defaulting."""

    def test_missing_fields_get_their_defaults_at_every_depth(self) -> None:
        """Defaults apply to absent properties, inside defaults, in items and in additionalProperties."""
        obj: dict[str, Any] = {"spec": {"ports": [{"port": 80}], "byName": {"a": {"weight": 3}}}}
        apply_defaults(obj, DEFAULTS)
        self.assertEqual(obj["spec"], {
            "replicas": 1, "mode": "fast", "maybe": "d", "strategy": {"type": "Rolling", "maxSurge": 25},
            "ports": [{"port": 80, "protocol": "TCP"}], "byName": {"a": {"weight": 3, "on": True}}})

    def test_an_absent_parent_with_a_default_is_defaulted_then_filled(self) -> None:
        """The root's spec default `{}` is set, then its own properties are defaulted."""
        obj: dict[str, Any] = {"apiVersion": "x/v1"}
        apply_defaults(obj, DEFAULTS)
        self.assertEqual(obj["spec"]["replicas"], 1)
        self.assertEqual(obj["spec"]["strategy"], {"type": "Rolling", "maxSurge": 25})

    def test_nulls(self) -> None:
        """A null replaces by the default where null is not allowed; a nullable null stays."""
        obj: dict[str, Any] = {"spec": {"mode": None, "maybe": None, "byName": {"b": None}}}
        apply_defaults(obj, DEFAULTS)
        self.assertEqual(obj["spec"]["mode"], "fast")
        self.assertIsNone(obj["spec"]["maybe"])
        self.assertEqual(obj["spec"]["byName"], {"b": {"weight": 1, "on": True}})

    def test_set_values_are_kept_and_defaults_are_copies(self) -> None:
        """Given values win, and changing a defaulted value does not change the schema."""
        schema = copy.deepcopy(DEFAULTS)
        first: dict[str, Any] = {"spec": {"replicas": 0}}
        apply_defaults(first, schema)
        self.assertEqual(first["spec"]["replicas"], 0)
        first["spec"]["strategy"]["type"] = "Changed"
        second: dict[str, Any] = {"spec": {}}
        apply_defaults(second, schema)
        self.assertEqual(second["spec"]["strategy"]["type"], "Rolling")
        self.assertEqual(schema, DEFAULTS)


def crd_files() -> list[str]:
    found = []
    for folder, _, files in sorted(os.walk(CRDS)):
        found.extend(os.path.join(folder, name) for name in sorted(files) if name.endswith(".yaml"))
    return found


def crd_schemas() -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Each version's schema of each fixture CRD: its name, its index in spec.versions, the schema (a fresh copy)."""
    for name, index, schema in _loaded():
        yield name, index, copy.deepcopy(schema)


@functools.cache
def _loaded() -> tuple[tuple[str, int, dict[str, Any]], ...]:
    found = []
    for path in crd_files():
        with open(path) as f:
            for document in yaml.load_all(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
                if document and document.get("kind") == "CustomResourceDefinition":
                    for index, version in enumerate(document["spec"]["versions"]):
                        found.append((f"{document['metadata']['name']} {version['name']}", index, version["schema"]["openAPIV3Schema"]))
    return tuple(found)


def sample(schema: dict[str, Any], depth: int = 0) -> Any:
    """A value for the schema: its default if it has one, else every property filled in, a few levels deep."""
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if depth > 8:
            return {}
        return {key: sample(sub, depth + 1) for key, sub in schema.get("properties", {}).items() if key != "metadata"}
    if kind == "array":
        return [sample(schema["items"], depth + 1)] if depth <= 8 else []
    if kind == "integer":
        return schema.get("minimum", 1)
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    return "x"


def add_unknown(value: Any, schema: dict[str, Any], path: str, added: list[str]) -> None:
    """Put a field named `bogusField` into every object that would prune it, recording its path as kube reports it."""
    if isinstance(value, dict) and schema.get("type") == "object":
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
        for key, sub in value.items():
            if key in schema.get("properties", {}) and key != "metadata":
                add_unknown(sub, schema["properties"][key], f"{path}.{key}" if path else key, added)
        if not preserve:
            value["bogusField"] = 1
            added.append(f"{path}.bogusField" if path else "bogusField")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            add_unknown(item, schema["items"], f"{path}[{index}]", added)


def drop_defaulted(value: Any, schema: dict[str, Any]) -> None:
    """Remove every value that defaulting will put back."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                if "default" in sub and value[key] == sub["default"]:
                    del value[key]
                else:
                    drop_defaulted(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            drop_defaulted(item, schema["items"])


def find_list_map(schema: dict[str, Any], path: str) -> tuple[dict[str, Any], str] | None:
    """The first array with x-kubernetes-list-type map, and its path."""
    if schema.get("x-kubernetes-list-type") == "map":
        return schema, path
    for key, sub in sorted(schema.get("properties", {}).items()):
        found = find_list_map(sub, f"{path}.properties[{key}]")
        if found:
            return found
    if isinstance(schema.get("items"), dict):
        return find_list_map(schema["items"], f"{path}.items")
    return None


class RealCrdTests(SynchronousTestCase):
    """The released CRDs of prometheus-operator, cert-manager and Argo CD, unchanged."""

    def test_the_fixtures(self) -> None:
        """At least three projects and six CRDs, one of them large with list-map keys."""
        self.assertGreaterEqual(len({os.path.basename(os.path.dirname(path)) for path in crd_files()}), 3)
        names = [name for name, _, _ in crd_schemas()]
        self.assertGreaterEqual(len(names), 6)
        self.assertIn("alertmanagers.monitoring.coreos.com v1", names)

    def test_every_schema_is_structural(self) -> None:
        """kube accepts these CRDs, so their schemas are structural."""
        for name, index, schema in crd_schemas():
            self.assertEqual([str(e) for e in structural_errors(schema, f"spec.versions[{index}].schema.openAPIV3Schema")], [], name)

    def test_a_sample_instance_is_pruned_exactly(self) -> None:
        """A full instance with an unknown field in every prunable object loses exactly those fields."""
        for name, _, schema in crd_schemas():
            obj = sample(schema)
            obj.update(apiVersion="g/v1", kind="K", metadata={"name": "n"})
            expected = copy.deepcopy(obj)
            added: list[str] = []
            add_unknown(obj, schema, "", added)
            self.assertTrue(added, name)
            self.assertEqual(prune(obj, schema), sorted(added), name)
            self.assertEqual(obj, expected, name)

    def test_a_sample_instance_is_defaulted_back(self) -> None:
        """Removing every defaulted value from an instance and defaulting it again gives the instance back."""
        for name, _, schema in crd_schemas():
            obj = sample(schema)
            expected = copy.deepcopy(obj)
            drop_defaulted(obj, schema)
            apply_defaults(obj, schema)
            self.assertEqual(obj, expected, name)

    def test_a_mutated_copy_is_refused(self) -> None:
        """Dropping spec's type, or a list-map key's requiredness, makes each schema non-structural with kube's message."""
        for name, index, schema in crd_schemas():
            path = f"spec.versions[{index}].schema.openAPIV3Schema"
            broken = copy.deepcopy(schema)
            del broken["properties"]["spec"]["type"]
            self.assertEqual([str(e) for e in structural_errors(broken, path)], [
                f"{path}.properties[spec].type: Required value: must not be empty for specified object fields"], name)
        schema = dict(crd_schemas_by_name()["alertmanagers.monitoring.coreos.com v1"])
        broken = copy.deepcopy(schema)
        found = find_list_map(broken, P)
        assert found is not None
        list_schema, list_path = found
        key = list_schema["x-kubernetes-list-map-keys"][0]
        list_schema["items"]["required"] = [k for k in list_schema["items"].get("required", []) if k != key]
        list_schema["items"]["properties"][key].pop("default", None)
        self.assertEqual([str(e) for e in structural_errors(broken, P)], [
            f"{list_path}.items.properties[{key}].default: Required value: this property is in x-kubernetes-list-map-keys, "
            "so it must have a default or be a required property"])

    def test_service_monitor_endpoints(self) -> None:
        """A ServiceMonitor's relabeling gets kube's default action and loses an unknown endpoint field."""
        schema = crd_schemas_by_name()["servicemonitors.monitoring.coreos.com v1"]
        obj = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "web"},
               "spec": {"selector": {"matchLabels": {"app": "web"}},
                        "endpoints": [{"port": "http", "intervall": "30s", "relabelings": [{"targetLabel": "job", "replacement": "web"}]}]}}
        apply_defaults(obj, schema)
        self.assertEqual(prune(obj, schema), ["spec.endpoints[0].intervall"])
        self.assertEqual(obj["spec"]["endpoints"], [{"port": "http", "relabelings": [
            {"targetLabel": "job", "replacement": "web", "action": "replace"}]}])
        self.assertEqual(obj["spec"]["selector"], {"matchLabels": {"app": "web"}})

    def test_certificate_and_issuer(self) -> None:
        """A Certificate has no defaults and keeps its known fields; an ACME Issuer's gateway parentRefs get theirs."""
        schemas = crd_schemas_by_name()
        certificate = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
                       "spec": {"secretName": "s", "dnsNames": ["a.example"], "issuerRef": {"name": "i", "kind": "Issuer", "colour": "red"},
                                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}}}
        before = copy.deepcopy(certificate)
        apply_defaults(certificate, schemas["certificates.cert-manager.io v1"])
        self.assertEqual(certificate, before)
        self.assertEqual(prune(certificate, schemas["certificates.cert-manager.io v1"]), ["spec.issuerRef.colour"])
        self.assertEqual(certificate["spec"]["privateKey"], before["spec"]["privateKey"])
        issuer = {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "i"},
                  "spec": {"acme": {"server": "https://acme.example/directory", "privateKeySecretRef": {"name": "k"},
                                    "solvers": [{"http01": {"gatewayHTTPRoute": {"parentRefs": [{"name": "gw"}]}}}]}}}
        apply_defaults(issuer, schemas["issuers.cert-manager.io v1"])
        self.assertEqual(prune(issuer, schemas["issuers.cert-manager.io v1"]), [])
        parent = issuer["spec"]["acme"]["solvers"][0]["http01"]["gatewayHTTPRoute"]["parentRefs"][0]
        self.assertEqual(parent["group"], "gateway.networking.k8s.io")
        self.assertEqual(parent["kind"], "Gateway")


def crd_schemas_by_name() -> dict[str, dict[str, Any]]:
    return {name: schema for name, _, schema in crd_schemas()}
