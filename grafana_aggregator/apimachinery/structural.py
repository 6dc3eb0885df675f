"""Structural schemas for CustomResourceDefinitions, as kube's apiextensions-apiserver has them.

A CRD's `openAPIV3Schema` must be *structural* (every field typed outside value validation, the
extensions consistent) so that the server knows every field's shape: `structural_errors` says why a
schema is not, with kube's paths and messages. Knowing the shape, kube prunes unknown fields
(`prune`, whose paths feed fieldValidation Strict and Warn) and fills in defaults (`apply_defaults`).
kube applies both on every decode, on write and on read from storage, defaulting first and pruning
after: `apply_defaults(obj, schema)` then `prune(obj, schema)`. Schemas and objects are plain JSON
values (dicts, lists, scalars); the functions keep no state.

Not here: value validation (type, enum, pattern, ... of an instance), CEL rules, the check that
defaults validate, and the status-subresource root restrictions, which need the whole CRD.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from .fielderrors import FieldError, forbidden, invalid, not_supported, required
from .pruning import OBJECT_META_FIELDS

Schema = Mapping[str, Any]

#: OpenAPI v3's types, sorted as kube lists them.
OPENAPI_TYPES = ["array", "boolean", "integer", "number", "object", "string"]
#: The keywords kube's structural conversion refuses outright (with their own messages).
UNSUPPORTED = {"id": "id is not supported", "additionalItems": "additionalItems is not supported",
               "patternProperties": "patternProperties is not supported", "definitions": "definitions is not supported",
               "dependencies": "dependencies is not supported", "$ref": "$ref is not supported"}
#: The type-meta and object-meta fields implicit at a resource's root and in embedded resources.
META_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
#: The two anyOf patterns kube accepts beside x-kubernetes-int-or-string.
INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
OWNER_REFERENCE_FIELDS = frozenset({"apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion"})
MANAGED_FIELDS_ENTRY_FIELDS = frozenset({"manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1", "subresource"})

ROOT, ITEM, FIELD = "root", "item", "field"
TYPE_REQUIRED = {ROOT: "must not be empty at the root", ITEM: "must not be empty for specified array items",
                 FIELD: "must not be empty for specified object fields"}


def structural_errors(schema: Schema, path: str) -> list[FieldError]:
    """Why the openAPIV3Schema at `path` (e.g. `spec.versions[0].schema.openAPIV3Schema`) is not structural.

    Empty when kube would accept it. The order is kube's: the root's nullable, then the structural
    rules sorted as kube sorts them, then the rules on the extensions and keywords in schema order.
    """
    errors: list[FieldError] = []
    if schema.get("nullable") is True:
        errors.append(forbidden(_child(path, "nullable"), "nullable cannot be true at the root"))
    if not _uses_unsupported(schema):
        structural = _invariants(schema, ROOT, path) + _completeness(schema, schema, path, path)
        errors.extend(sorted(structural, key=str))
    errors.extend(_schema_rules(schema, path, root=True, meta=False, no_defaults=""))
    return errors


def prune(obj: dict[str, Any], schema: Schema) -> list[str]:
    """Drop the fields of a custom resource that its schema does not know, and return their paths.

    As kube's decoder does: the root's metadata is reduced to ObjectMeta, every other unknown field
    goes (unless x-kubernetes-preserve-unknown-fields or additionalProperties keeps it), nulls the
    schema does not allow and cannot default are removed, and embedded resources keep their type
    meta with their metadata reduced to ObjectMeta. Paths are in kube's format and order.
    """
    unknown: list[str] = []
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        _coerce_object_meta(metadata, "metadata", unknown)
    pruned: list[str] = []
    _prune(obj, {**schema, "x-kubernetes-embedded-resource": True}, "", pruned)
    unknown.extend(sorted(pruned))
    _prune_nulls(obj, schema)
    embedded: list[str] = []
    _coerce_embedded(obj, schema, "", embedded, root=True)
    unknown.extend(sorted(embedded))
    return unknown


def apply_defaults(obj: Any, schema: Schema | None) -> None:
    """Fill in the schema's defaults where the object has no value (or a null the schema does not allow).

    Defaults are deep copies, themselves pruned by their schema as kube prunes them when the CRD is
    stored, and defaulted further inside, as kube's structural defaulting does.
    """
    if schema is None:
        return
    properties: Mapping[str, Any] = schema.get("properties") or {}
    if isinstance(obj, dict):
        for key, sub in properties.items():
            if "default" in sub and sub["default"] is not None and (key not in obj or _non_nullable_null(obj[key], sub)):
                obj[key] = _pruned_default(sub)
        extra = _additional_schema(schema)
        for key in obj:
            if key in properties:
                apply_defaults(obj[key], properties[key])
            elif "additionalProperties" in schema:
                if _non_nullable_null(obj[key], extra):
                    obj[key] = _pruned_default(extra) if extra is not None else None
                apply_defaults(obj[key], extra)
    elif isinstance(obj, list):
        items = schema.get("items") if isinstance(schema.get("items"), Mapping) else None
        for index, item in enumerate(obj):
            if _non_nullable_null(item, items):
                obj[index] = _pruned_default(items) if items is not None else None
            apply_defaults(obj[index], items)


# The structural invariants (kube's validateStructuralInvariants and friends).

def _invariants(s: Schema, level: str, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    kind = s.get("type") or ""
    items = s.get("items")
    if kind == "array" and items is None:
        errors.append(required(_child(path, "items"), "must be specified"))
    if isinstance(items, Mapping):
        errors.extend(_invariants(items, ITEM, _child(path, "items")))
    properties: Mapping[str, Any] = s.get("properties") or {}
    for key, sub in properties.items():
        errors.extend(_invariants(sub, FIELD, _key(_child(path, "properties"), key)))
    extra = s.get("additionalProperties")
    if extra is not None:
        if level == ROOT:
            errors.append(forbidden(_child(path, "additionalProperties"), "must not be used at the root"))
        if isinstance(extra, Mapping):
            errors.extend(_invariants(extra, FIELD, _child(path, "additionalProperties")))
    int_or_string = s.get("x-kubernetes-int-or-string") is True
    preserve = s.get("x-kubernetes-preserve-unknown-fields") is True
    embedded = s.get("x-kubernetes-embedded-resource") is True
    if int_or_string and preserve:
        errors.append(invalid(_child(path, "x-kubernetes-preserve-unknown-fields"), True,
                              "must be false if x-kubernetes-int-or-string is true"))
    if int_or_string and embedded:
        errors.append(invalid(_child(path, "x-kubernetes-embedded-resource"), True,
                              "must be false if x-kubernetes-int-or-string is true"))
    skip_any_of = _is_int_or_string_pattern(s.get("anyOf"))
    all_of = s.get("allOf") or []
    skip_first_all_of = bool(all_of) and _is_int_or_string_pattern(all_of[0].get("anyOf"))
    errors.extend(_value_validation(s, skip_any_of, skip_first_all_of, path))
    if embedded and kind != "object":
        detail = "must be object if x-kubernetes-embedded-resource is true"
        errors.append(required(_child(path, "type"), detail) if not kind else invalid(_child(path, "type"), kind, detail))
    elif not kind and not int_or_string and not preserve:
        errors.append(required(_child(path, "type"), TYPE_REQUIRED[level]))
    if embedded and extra is not None:
        errors.append(forbidden(_child(path, "additionalProperties"), "must not be used if x-kubernetes-embedded-resource is set"))
    if level == ROOT and kind and kind != "object":
        errors.append(invalid(_child(path, "type"), kind, "must be object at the root"))
    check_meta = level == ROOT or embedded
    for name in ("kind", "apiVersion"):
        if name in properties and check_meta and (properties[name].get("type") or "") != "string":
            errors.append(invalid(_child(_key(_child(path, "properties"), name), "type"), properties[name].get("type") or "",
                                  "must be string"))
    if "metadata" in properties:
        errors.extend(_metadata_invariants(properties["metadata"], check_meta, level,
                                           _key(_child(path, "properties"), "metadata")))
    if embedded and not preserve and not properties:
        errors.append(required(_child(path, "properties"),
                               "must not be empty if x-kubernetes-embedded-resource is true without "
                               "x-kubernetes-preserve-unknown-fields"))
    return errors


def _metadata_invariants(s: Schema, check_meta: bool, level: str, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if check_meta and (s.get("type") or "") != "object":
        errors.append(invalid(_child(path, "type"), s.get("type") or "", "must be object"))
    if level == ROOT:
        rest = {key: value for key, value in s.items() if key not in ("type", "default") and not _is_zero(key, value)}
        names = set(rest.get("properties") or {})
        if names and names <= {"name", "generateName"}:
            rest.pop("properties")
        if rest:
            errors.append(forbidden(path, "must not specify anything other than name and generateName, but metadata is "
                                          "implicitly specified"))
    return errors


def _value_validation(s: Schema, skip_any_of: bool, skip_first_all_of: bool, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not skip_any_of:
        for index, clause in enumerate(s.get("anyOf") or []):
            errors.extend(_nested(clause, False, _index(_child(path, "anyOf"), index)))
    for index, clause in enumerate(s.get("allOf") or []):
        errors.extend(_nested(clause, skip_first_all_of and index == 0, _index(_child(path, "allOf"), index)))
    for index, clause in enumerate(s.get("oneOf") or []):
        errors.extend(_nested(clause, False, _index(_child(path, "oneOf"), index)))
    if isinstance(s.get("not"), Mapping):
        errors.extend(_nested(s["not"], False, _child(path, "not")))
    return errors


#: What value validation may not carry, with kube's detail.
_NESTED_FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("default", "must be undefined to be structural"), ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"), ("nullable", "must be false to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)


def _nested(v: Schema, skip_any_of: bool, path: str) -> list[FieldError]:
    errors = _value_validation(v, skip_any_of, False, path)
    if isinstance(v.get("items"), Mapping):
        errors.extend(_nested(v["items"], False, _child(path, "items")))
    properties: Mapping[str, Any] = v.get("properties") or {}
    for key, sub in properties.items():
        errors.extend(_nested(sub, False, _key(_child(path, "properties"), key)))
    if v.get("type"):
        errors.append(forbidden(_child(path, "type"), "must be empty to be structural"))
    extra = v.get("additionalProperties")
    if isinstance(extra, Mapping) or extra is True:
        errors.append(forbidden(_child(path, "additionalProperties"), "must be undefined to be structural"))
    for keyword, detail in _NESTED_FORBIDDEN:
        if keyword in v and not _is_zero(keyword, v[keyword]):
            errors.append(forbidden(_child(path, keyword), detail))
    if "metadata" in properties:
        errors.append(forbidden(_key(_child(path, "properties"), "metadata"), "must not be specified in a nested context"))
    return errors


def _completeness(v: Schema, s: Schema | None, s_path: str, v_path: str) -> list[FieldError]:
    """Every property and items named in the root's value validation exists in the structural part."""
    errors: list[FieldError] = []
    clauses: list[tuple[Schema, str]] = []
    if isinstance(v.get("not"), Mapping):
        clauses.append((v["not"], _child(v_path, "not")))
    for junctor in ("allOf", "anyOf", "oneOf"):
        clauses.extend((clause, _index(_child(v_path, junctor), index)) for index, clause in enumerate(v.get(junctor) or []))
    for clause, clause_path in clauses:
        errors.extend(_nested_completeness(clause, s, s_path, clause_path))
    return errors


def _nested_completeness(v: Schema, s: Schema | None, s_path: str, v_path: str) -> list[FieldError]:
    if s is None:
        return [required(s_path, f"because it is defined in {v_path}")]
    errors = _completeness(v, s, s_path, v_path)
    if isinstance(v.get("items"), Mapping):
        items = s.get("items") if isinstance(s.get("items"), Mapping) else None
        errors.extend(_nested_completeness(v["items"], items, _child(s_path, "items"), _child(v_path, "items")))
    s_properties: Mapping[str, Any] = s.get("properties") or {}
    for key, sub in (v.get("properties") or {}).items():
        s_key = _key(_child(s_path, "properties"), key)
        v_key = _key(_child(v_path, "properties"), key)
        if key not in s_properties:
            errors.append(required(s_key, f"because it is defined in {v_key}"))
        else:
            errors.extend(_nested_completeness(sub, s_properties[key], s_key, v_key))
    return errors


# The rules kube checks on every schema node while validating the CRD (keywords and extensions).

def _schema_rules(s: Schema, path: str, root: bool, meta: bool, no_defaults: str) -> list[FieldError]:
    errors: list[FieldError] = []
    kind = s.get("type") or ""
    if kind and kind not in OPENAPI_TYPES:
        errors.append(not_supported(_child(path, "type"), kind, OPENAPI_TYPES))
    if "default" in s and s["default"] is not None and no_defaults:
        errors.append(forbidden(_child(path, "default"), f"must not be set {no_defaults}"))
    for keyword, detail in UNSUPPORTED.items():
        if keyword in s and s[keyword] not in ("", None, {}):
            errors.append(forbidden(_child(path, keyword), detail))
    if kind == "null":
        errors.append(forbidden(_child(path, "type"), "type cannot be set to null, use nullable as an alternative"))
    if isinstance(s.get("items"), list):
        errors.append(forbidden(_child(path, "items"), "items must be a schema object and not an array"))
    if meta and s.get("x-kubernetes-embedded-resource") is True:
        errors.append(forbidden(_child(path, "x-kubernetes-embedded-resource"), "must not be used inside of resource meta"))
    if s.get("uniqueItems") is True:
        errors.append(forbidden(_child(path, "uniqueItems"),
                                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"))
    properties: Mapping[str, Any] = s.get("properties") or {}
    extra = s.get("additionalProperties")
    if extra is not None:
        if properties and extra is not True:
            errors.append(forbidden(_child(path, "additionalProperties"), "additionalProperties and properties are mutual exclusive"))
        if isinstance(extra, Mapping):
            reason = "inside additionalProperties applying to object metadata" if meta else no_defaults
            errors.extend(_schema_rules(extra, _child(path, "additionalProperties"), False, meta, reason))
    for key in sorted(properties):
        sub_meta, reason = meta, no_defaults
        if (root or s.get("x-kubernetes-embedded-resource") is True) and key in META_FIELDS:
            sub_meta = True
            if root:
                reason = f"in top-level {key}"
        errors.extend(_schema_rules(properties[key], _key(_child(path, "properties"), key), False, sub_meta, reason))
    if isinstance(s.get("not"), Mapping):
        errors.extend(_schema_rules(s["not"], _child(path, "not"), False, meta, no_defaults))
    for junctor in ("allOf", "oneOf", "anyOf"):
        for index, clause in enumerate(s.get(junctor) or []):
            errors.extend(_schema_rules(clause, _index(_child(path, junctor), index), False, meta, no_defaults))
    items = s.get("items")
    if isinstance(items, Mapping):
        errors.extend(_schema_rules(items, _child(path, "items"), False, meta, no_defaults))
    errors.extend(_extension_rules(s, path))
    return errors


def _extension_rules(s: Schema, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    kind = s.get("type") or ""
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        errors.append(invalid(_child(path, "x-kubernetes-preserve-unknown-fields"), False, "must be true or undefined"))
    map_type = s.get("x-kubernetes-map-type")
    if map_type is not None and kind != "object":
        detail = "must be object if x-kubernetes-map-type is specified"
        errors.append(required(_child(path, "type"), detail) if not kind else invalid(_child(path, "type"), kind, detail))
    if map_type is not None and map_type not in ("atomic", "granular"):
        errors.append(not_supported(_child(path, "x-kubernetes-map-type"), map_type, ["atomic", "granular"]))
    list_type = s.get("x-kubernetes-list-type")
    items = s.get("items") if isinstance(s.get("items"), Mapping) else None
    if list_type is not None and kind != "array":
        detail = "must be array if x-kubernetes-list-type is specified"
        errors.append(required(_child(path, "type"), detail) if not kind else invalid(_child(path, "type"), kind, detail))
    elif list_type == "set" and items is not None:
        # kube requires a set's items to be atomic (and prints the items' list-type as the value, as here).
        item_list_type = items.get("x-kubernetes-list-type")
        shown = _go_optional_string(item_list_type)
        if items.get("type") == "array" and item_list_type is not None and item_list_type != "atomic":
            errors.append(_invalid_raw(_child(_child(path, "items"), "x-kubernetes-list-type"), shown,
                                       "must be atomic as item of a list with x-kubernetes-list-type=set"))
        if items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            errors.append(_invalid_raw(_child(_child(path, "items"), "x-kubernetes-map-type"), shown,
                                       "must be atomic as item of a list with x-kubernetes-list-type=set"))
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        errors.append(not_supported(_child(path, "x-kubernetes-list-type"), list_type, ["atomic", "set", "map"]))
    keys: list[str] = list(s.get("x-kubernetes-list-map-keys") or [])
    if keys:
        detail = "must be map if x-kubernetes-list-map-keys is non-empty"
        if list_type is None:
            errors.append(required(_child(path, "x-kubernetes-list-type"), detail))
        elif list_type != "map":
            errors.append(invalid(_child(path, "x-kubernetes-list-type"), list_type, detail))
    if list_type == "map":
        if not keys:
            errors.append(required(_child(path, "x-kubernetes-list-map-keys"), "must not be empty if x-kubernetes-list-type is map"))
        if "items" not in s:
            errors.append(required(_child(path, "items"), "must have a schema if x-kubernetes-list-type is map"))
        if items is not None and items.get("type") != "object":
            errors.append(invalid(_child(_child(path, "items"), "type"), items.get("type") or "",
                                  "must be object if parent array's x-kubernetes-list-type is map"))
        if items is not None and items.get("type") == "object":
            item_properties: Mapping[str, Any] = items.get("properties") or {}
            seen: set[str] = set()
            shown_keys = json.dumps(keys, separators=(",", ":"))
            for key in keys:
                if key in item_properties:
                    if item_properties[key].get("type") in ("array", "object"):
                        errors.append(invalid(_child(_key(_child(_child(path, "items"), "properties"), key), "type"), items["type"],
                                              "must be a scalar type if parent array's x-kubernetes-list-type is map"))
                else:
                    errors.append(_invalid_raw(_child(path, "x-kubernetes-list-map-keys"), shown_keys,
                                               "entries must all be names of item properties"))
                if key in seen:
                    errors.append(_invalid_raw(_child(path, "x-kubernetes-list-map-keys"), shown_keys, "must not contain duplicate entries"))
                seen.add(key)
    if list_type in ("set", "map") and items is not None:
        if items.get("nullable") is True:
            errors.append(forbidden(_child(_child(path, "items"), "nullable"), f"cannot be nullable when x-kubernetes-list-type is {list_type}"))
        if list_type == "map":
            item_properties = items.get("properties") or {}
            required_keys = set(items.get("required") or [])
            for key in keys:
                if key not in item_properties:
                    continue
                key_path = _key(_child(_child(path, "items"), "properties"), key)
                if key not in required_keys and item_properties[key].get("default") is None:
                    errors.append(required(_child(key_path, "default"), "this property is in x-kubernetes-list-map-keys, "
                                                                        "so it must have a default or be a required property"))
                if item_properties[key].get("nullable") is True:
                    errors.append(forbidden(_child(key_path, "nullable"), "this property is in x-kubernetes-list-map-keys, so it cannot be nullable"))
    return errors


# Pruning (kube's pruning.Prune, PruneNonNullableNullsWithoutDefaults and the ObjectMeta coercion).

def _prune(value: Any, s: Schema | None, path: str, unknown: list[str], keep_unknown: bool = False) -> None:
    """Drop the fields s does not declare (kube's prune), or, under x-kubernetes-preserve-unknown-fields
    (`keep_unknown`, kube's skipPrune), keep them and go on pruning inside the declared ones."""
    if s is not None and s.get("x-kubernetes-preserve-unknown-fields") is True:
        keep_unknown = True
    if keep_unknown and s is None:
        return
    if isinstance(value, dict):
        if s is None:
            for key in list(value):
                unknown.append(_join(path, key))
                del value[key]
            return
        embedded = s.get("x-kubernetes-embedded-resource") is True
        properties: Mapping[str, Any] = s.get("properties") or {}
        for key in list(value):
            if embedded and key in META_FIELDS:
                continue
            if key in properties:
                _prune(value[key], properties[key], _join(path, key), unknown)
            elif "additionalProperties" in s:
                _prune(value[key], _additional_schema(s), _join(path, key), unknown)
            elif not keep_unknown:
                if key not in META_FIELDS or path:
                    unknown.append(_join(path, key))
                del value[key]
    elif isinstance(value, list):
        items = s.get("items") if s is not None and isinstance(s.get("items"), Mapping) else None
        for index, item in enumerate(value):
            _prune(item, items, f"{path}[{index}]", unknown, keep_unknown)


def _prune_nulls(value: Any, s: Schema | None) -> None:
    if isinstance(value, dict):
        for key in list(value):
            sub = _field_schema(key, s)
            if value[key] is None and sub is not None and sub.get("nullable") is not True and sub.get("default") is None:
                del value[key]
            else:
                _prune_nulls(value[key], sub)
    elif isinstance(value, list):
        items = s.get("items") if s is not None and isinstance(s.get("items"), Mapping) else None
        for item in value:
            _prune_nulls(item, items)


def _coerce_embedded(value: Any, s: Schema | None, path: str, unknown: list[str], root: bool = False) -> None:
    """Reduce each embedded resource's metadata to ObjectMeta (kube's objectmeta.Coerce, below the root)."""
    if s is None:
        return
    if isinstance(value, dict):
        properties: Mapping[str, Any] = s.get("properties") or {}
        if not root and s.get("x-kubernetes-embedded-resource") is True and isinstance(value.get("metadata"), dict):
            _coerce_object_meta(value["metadata"], _child(path, "metadata"), unknown)
        for key in list(value):
            if key in properties:
                _coerce_embedded(value[key], properties[key], _child(path, key), unknown)
            elif "additionalProperties" in s:
                _coerce_embedded(value[key], _additional_schema(s), _key(path, key), unknown)
    elif isinstance(value, list):
        items = s.get("items") if isinstance(s.get("items"), Mapping) else None
        for index, item in enumerate(value):
            _coerce_embedded(item, items, _index(path, index), unknown)


def _coerce_object_meta(metadata: dict[str, Any], path: str, unknown: list[str]) -> None:
    """Drop what metav1.ObjectMeta does not have, recording `<path>.<field>` as kube's strict decoding names it."""
    for key in list(metadata):
        if key not in OBJECT_META_FIELDS:
            unknown.append(f"{path}.{key}")
            del metadata[key]
    for name, fields in (("ownerReferences", OWNER_REFERENCE_FIELDS), ("managedFields", MANAGED_FIELDS_ENTRY_FIELDS)):
        entries = metadata.get(name)
        if isinstance(entries, list):
            for index, entry in enumerate(entries):
                if isinstance(entry, dict):
                    for key in list(entry):
                        if key not in fields:
                            unknown.append(f"{path}.{name}[{index}].{key}")
                            del entry[key]


# Defaulting helpers.

def _non_nullable_null(value: Any, s: Schema | None) -> bool:
    return value is None and s is not None and s.get("nullable") is not True


def _pruned_default(s: Schema) -> Any:
    """A copy of the schema's default, pruned by the schema as kube prunes defaults when the CRD is stored."""
    value = copy.deepcopy(s.get("default"))
    _prune(value, s, "", [])
    _coerce_embedded(value, s, "", [])
    return value


# Small helpers: kube's field.Path formatting and schema lookups.

def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _join(path: str, key: str) -> str:
    """A path as kube's pruning records it: keys joined by dots, indexes in brackets."""
    return f"{path}.{key}" if path else key


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _additional_schema(s: Schema) -> Schema | None:
    extra = s.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def _field_schema(key: str, s: Schema | None) -> Schema | None:
    if s is None:
        return None
    properties: Mapping[str, Any] = s.get("properties") or {}
    if key in properties:
        sub: Schema = properties[key]
        return sub
    if "additionalProperties" in s:
        return _additional_schema(s)
    return None


def _uses_unsupported(s: Any) -> bool:
    """Whether kube's conversion to a structural schema fails (it then skips the structural rules)."""
    if not isinstance(s, Mapping):
        return False
    if any(keyword in s and s[keyword] not in ("", None, {}) for keyword in (*UNSUPPORTED, "$schema")):
        return True
    if isinstance(s.get("items"), list):
        return True
    children: list[Any] = [s.get("items"), s.get("not"), s.get("additionalProperties")]
    children.extend((s.get("properties") or {}).values())
    for junctor in ("allOf", "anyOf", "oneOf"):
        children.extend(s.get(junctor) or [])
    return any(_uses_unsupported(child) for child in children)


def _is_int_or_string_pattern(any_of: Any) -> bool:
    return isinstance(any_of, list) and [dict(clause) for clause in any_of] == INT_OR_STRING_ANY_OF


def _is_zero(keyword: str, value: Any) -> bool:
    """Whether a keyword's value is Go's zero value (unset) in kube's schema types."""
    if keyword == "default":
        return value is None
    return value is None or value is False or value == "" or value == []


def _go_optional_string(value: Any) -> str:
    """A *string as field.Error prints it (JSON): the string quoted, or null when unset."""
    return json.dumps(value if isinstance(value, str) else None)


def _invalid_raw(path: str, shown: str, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, f"Invalid value: {shown}: {detail}")
