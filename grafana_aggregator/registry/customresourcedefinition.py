# -*- test-case-name: tests.test_registry_crd -*-
"""The `apiextensions.k8s.io/v1` CustomResourceDefinition kind: defaults, validation, status handling and printing.

Follows k8s.io/apiextensions-apiserver (Kubernetes 1.36): pkg/apis/apiextensions/v1/defaults.go,
pkg/apis/apiextensions/validation/validation.go (with the v1-to-internal conversion, which moves
per-version schemas, subresources, printer columns and selectable fields to the top level when all
versions agree, so errors name `spec.validation`, `spec.subresources`... then) and
pkg/registry/customresourcedefinition/strategy.go.  The structural-schema rules are not here: the
strategy takes them as a `schema_errors(schema, path)` callable.  The controllers' status logic is
in registry/crdstatus.py.
"""

from __future__ import annotations

import copy
import datetime
import unicodedata
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..apimachinery.fielderrors import FieldError, forbidden, invalid, not_supported, required
from ..apimachinery.strategy import (
    CREATION_TIMESTAMP_DESCRIPTION,
    NAME_COLUMN,
    KindInfo,
    Object,
    Strategy,
    TableColumn,
    parse_time,
    rfc3339,
    type_meta_properties,
)
from ..apimachinery.validation import (
    FIELD_IMMUTABLE,
    go_json,
    is_dns1035_label,
    is_dns1123_subdomain,
    name_is_dns_subdomain,
    type_invalid,
    validate_object_meta_update,
)
from ..apimachinery.gotypes import (
    BOOL_TYPE,
    BYTES_TYPE,
    INT32_TYPE,
    OBJECT_META_TYPE,
    RAW,
    STRING_TYPE,
    TIME_TYPE,
    GoField,
    GoType,
    go_quote,
    named_string,
    slice_of,
    struct,
    type_meta_fields,
)
from ..apimachinery.schemavalidation import cel_rules
from .crdstatus import (
    CLEANUP_FINALIZER,
    ESTABLISHED,
    INSTANCE_DELETION_PENDING,
    add_storage_version,
    is_condition_true,
    set_condition,
    terminating_condition,
)

GROUP = "apiextensions.k8s.io"
VERSION = "v1"
DESCRIPTION = (
    "CustomResourceDefinition represents a resource that should be exposed on the API server.  Its name MUST be "
    "in the format <.spec.name>.<.spec.group>."
)
NONE_CONVERTER = "None"
WEBHOOK_CONVERTER = "Webhook"
SCOPES = ("Cluster", "Namespaced")
PRINTER_COLUMN_TYPES = ("boolean", "date", "integer", "number", "string")
PRINTER_COLUMN_FORMATS = ("byte", "date", "date-time", "double", "float", "int32", "int64", "password")
MAX_SELECTABLE_FIELDS = 8
DEFAULT_WEBHOOK_PORT = 443
#: The annotation a CRD in a *.k8s.io or *.kubernetes.io group must carry (KubeAPIApprovedAnnotation).
API_APPROVED_ANNOTATION = "api-approved.kubernetes.io"
#: Ours, not kube's: conversion webhooks are not supported yet (issue 15), so they are refused on create.
WEBHOOK_UNSUPPORTED = ("conversion webhooks are not supported by this server yet; use strategy None (all "
                       "versions share one schema and only apiVersion is rewritten)")
CREATED_AT_COLUMN = TableColumn("Created At", "date", "", CREATION_TIMESTAMP_DESCRIPTION)
#: metav1.Time{}.UTC().Format(time.RFC3339): the CREATED AT cell of an object without a creationTimestamp.
ZERO_TIME = "0001-01-01T00:00:00Z"

#: A brief OpenAPI v3 schema (kube's full one, with every JSONSchemaProps description, is for the serving work).
SCHEMA: dict[str, Any] = {
    "description": DESCRIPTION,
    "type": "object",
    "required": ["spec"],
    "properties": {
        **type_meta_properties(),
        "spec": {"description": "spec describes how the user wants the resources to appear", "type": "object",
                 "default": {}},
        "status": {"description": "status indicates the actual state of the CustomResourceDefinition",
                   "type": "object", "default": {}},
    },
    "x-kubernetes-group-version-kind": [{"group": GROUP, "kind": "CustomResourceDefinition", "version": VERSION}],
}

#: The Go types of apiextensions/v1 (types.go), for decoding bodies as kube does (a value of the wrong JSON type
#: is a 400) and for strategic merge patch, which kube offers for CRDs (a built-in kind) and the Python client
#: sends for a patch given as a dict.  JSONSchemaProps is kept raw: it has no patch strategies (its lists are
#: replaced), and its shape is checked by the structural-schema rules.
_STRINGS = slice_of(STRING_TYPE)
_JSON_SCHEMA_PROPS = GoType(RAW, "v1.JSONSchemaProps")
_NAMES_TYPE = struct(
    "v1.CustomResourceDefinitionNames",
    GoField("plural", STRING_TYPE, omitempty=False), GoField("singular", STRING_TYPE), GoField("shortNames", _STRINGS),
    GoField("kind", STRING_TYPE, omitempty=False), GoField("listKind", STRING_TYPE), GoField("categories", _STRINGS),
)
_SERVICE_REFERENCE_TYPE = struct(
    "v1.ServiceReference",
    GoField("namespace", STRING_TYPE, omitempty=False), GoField("name", STRING_TYPE, omitempty=False),
    GoField("path", STRING_TYPE), GoField("port", INT32_TYPE),
)
_WEBHOOK_TYPE = struct(
    "v1.WebhookConversion",
    GoField("clientConfig", struct("v1.WebhookClientConfig", GoField("url", STRING_TYPE),
                                   GoField("service", _SERVICE_REFERENCE_TYPE), GoField("caBundle", BYTES_TYPE))),
    GoField("conversionReviewVersions", _STRINGS, omitempty=False),
)
_VERSION_TYPE = struct(
    "v1.CustomResourceDefinitionVersion",
    GoField("name", STRING_TYPE, omitempty=False), GoField("served", BOOL_TYPE, omitempty=False),
    GoField("storage", BOOL_TYPE, omitempty=False), GoField("deprecated", BOOL_TYPE),
    GoField("deprecationWarning", STRING_TYPE),
    GoField("schema", struct("v1.CustomResourceValidation", GoField("openAPIV3Schema", _JSON_SCHEMA_PROPS))),
    GoField("subresources", struct(
        "v1.CustomResourceSubresources", GoField("status", struct("v1.CustomResourceSubresourceStatus")),
        GoField("scale", struct("v1.CustomResourceSubresourceScale",
                                GoField("specReplicasPath", STRING_TYPE, omitempty=False),
                                GoField("statusReplicasPath", STRING_TYPE, omitempty=False),
                                GoField("labelSelectorPath", STRING_TYPE))))),
    GoField("additionalPrinterColumns", slice_of(struct(
        "v1.CustomResourceColumnDefinition", GoField("name", STRING_TYPE, omitempty=False),
        GoField("type", STRING_TYPE, omitempty=False), GoField("format", STRING_TYPE),
        GoField("description", STRING_TYPE), GoField("priority", INT32_TYPE),
        GoField("jsonPath", STRING_TYPE, omitempty=False)))),
    GoField("selectableFields", slice_of(struct("v1.SelectableField",
                                                GoField("jsonPath", STRING_TYPE, omitempty=False)))),
)
_CONDITION_TYPE = struct(
    "v1.CustomResourceDefinitionCondition",
    GoField("type", named_string("v1.CustomResourceDefinitionConditionType"), omitempty=False),
    GoField("status", named_string("v1.ConditionStatus"), omitempty=False),
    GoField("lastTransitionTime", TIME_TYPE), GoField("reason", STRING_TYPE), GoField("message", STRING_TYPE),
)
GO_TYPE = struct(
    "v1.CustomResourceDefinition",
    *type_meta_fields(), GoField("metadata", OBJECT_META_TYPE),
    GoField("spec", struct(
        "v1.CustomResourceDefinitionSpec",
        GoField("group", STRING_TYPE, omitempty=False), GoField("names", _NAMES_TYPE, omitempty=False),
        GoField("scope", named_string("v1.ResourceScope"), omitempty=False),
        GoField("versions", slice_of(_VERSION_TYPE), omitempty=False),
        GoField("conversion", struct("v1.CustomResourceConversion",
                                     GoField("strategy", named_string("v1.ConversionStrategyType"), omitempty=False),
                                     GoField("webhook", _WEBHOOK_TYPE))),
        GoField("preserveUnknownFields", BOOL_TYPE)), omitempty=False),
    GoField("status", struct(
        "v1.CustomResourceDefinitionStatus",
        GoField("conditions", slice_of(_CONDITION_TYPE)), GoField("acceptedNames", _NAMES_TYPE, omitempty=False),
        GoField("storedVersions", _STRINGS, omitempty=False))),
)

INFO = KindInfo(
    group=GROUP, version=VERSION, kind="CustomResourceDefinition", plural="customresourcedefinitions",
    singular="customresourcedefinition", namespaced=False, short_names=("crd", "crds"),
    categories=("api-extensions",), has_status=True, schema=SCHEMA, description=DESCRIPTION, go_type=GO_TYPE,
)
#: Where CustomResourceDefinitions are stored.
CUSTOMRESOURCEDEFINITIONS = INFO.collection

#: schema_errors(openAPIV3Schema, path) → the structural-schema errors of one schema, path like
#: `spec.versions[0].schema.openAPIV3Schema`.
SchemaErrors = Callable[[dict[str, Any], str], list[FieldError]]


def no_schema_errors(schema: dict[str, Any], path: str) -> list[FieldError]:
    """The default schema check: none (the structural-schema rules are wired in by the caller)."""
    return []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _meta(obj: Object) -> dict[str, Any]:
    return _dict(obj.get("metadata"))


def _spec(obj: Object) -> dict[str, Any]:
    return _dict(obj.get("spec"))


def _go_strings(values: list[str]) -> str:
    """Go's %#v of a []string (nil when empty, as a status never set)."""
    if not values:
        return "[]string(nil)"
    return "[]string{" + ", ".join(go_json(value) for value in values) + "}"


def _str(source: dict[str, Any], key: str) -> str:
    value = source.get(key)
    return value if isinstance(value, str) else ""


def _strs(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def type_errors(obj: Object) -> list[FieldError]:
    """The JSON values of the wrong type that would make kube fail to decode a CRD; checked before the rules."""
    errors: list[FieldError] = []

    def check(value: Any, path: str, expected: str) -> None:
        ok = {"string": isinstance(value, str), "boolean": isinstance(value, bool),
              "object": isinstance(value, dict), "array": isinstance(value, list)}[expected]
        if value is not None and not ok:
            errors.append(type_invalid(path, value, expected))

    def strings(value: Any, path: str) -> None:
        check(value, path, "array")
        for index, item in enumerate(value if isinstance(value, list) else []):
            check(item, f"{path}[{index}]", "string")

    def names(value: Any, path: str) -> None:
        check(value, path, "object")
        for key in ("plural", "singular", "kind", "listKind"):
            check(_dict(value).get(key), f"{path}.{key}", "string")
        for key in ("shortNames", "categories"):
            strings(_dict(value).get(key), f"{path}.{key}")

    check(obj.get("spec"), "spec", "object")
    spec = _spec(obj)
    check(spec.get("group"), "spec.group", "string")
    check(spec.get("scope"), "spec.scope", "string")
    check(spec.get("preserveUnknownFields"), "spec.preserveUnknownFields", "boolean")
    names(spec.get("names"), "spec.names")
    check(spec.get("conversion"), "spec.conversion", "object")
    check(_dict(spec.get("conversion")).get("strategy"), "spec.conversion.strategy", "string")
    check(spec.get("versions"), "spec.versions", "array")
    raw_versions = spec.get("versions")
    for index, version in enumerate(raw_versions if isinstance(raw_versions, list) else []):
        path = f"spec.versions[{index}]"
        check(version, path, "object")
        version = _dict(version)
        for key in ("name", "deprecationWarning"):
            check(version.get(key), f"{path}.{key}", "string")
        for key in ("served", "storage", "deprecated"):
            check(version.get(key), f"{path}.{key}", "boolean")
        for key in ("schema", "subresources"):
            check(version.get(key), f"{path}.{key}", "object")
        check(_dict(version.get("schema")).get("openAPIV3Schema"), f"{path}.schema.openAPIV3Schema", "object")
        scale = _dict(version.get("subresources")).get("scale")
        check(scale, f"{path}.subresources.scale", "object")
        for key in ("specReplicasPath", "statusReplicasPath", "labelSelectorPath"):
            check(_dict(scale).get(key), f"{path}.subresources.scale.{key}", "string")
        for key in ("additionalPrinterColumns", "selectableFields"):
            check(version.get(key), f"{path}.{key}", "array")
            items = version.get(key)
            for position, item in enumerate(items if isinstance(items, list) else []):
                check(item, f"{path}.{key}[{position}]", "object")
                for name in ("name", "type", "format", "jsonPath", "description"):
                    check(_dict(item).get(name), f"{path}.{key}[{position}].{name}", "string")
    check(obj.get("status"), "status", "object")
    status = _dict(obj.get("status"))
    names(status.get("acceptedNames"), "status.acceptedNames")
    strings(status.get("storedVersions"), "status.storedVersions")
    check(status.get("conditions"), "status.conditions", "array")
    return errors


def default_crd(obj: Object) -> None:
    """SetObjectDefaults_CustomResourceDefinition: singular, listKind, conversion None, webhook port 443, and
    status.storedVersions from the storage version when empty."""
    if not isinstance(obj.get("spec"), dict):
        return
    spec = obj["spec"]
    names = spec.get("names")
    if isinstance(names, dict):
        kind = _str(names, "kind")
        if not names.get("singular"):
            names["singular"] = kind.lower()
        if not names.get("listKind") and kind:
            names["listKind"] = kind + "List"
    if spec.get("conversion") is None:
        spec["conversion"] = {"strategy": NONE_CONVERTER}
    service = _dict(_dict(_dict(spec.get("conversion")).get("webhook")).get("clientConfig")).get("service")
    if isinstance(service, dict) and service.get("port") is None:
        service["port"] = DEFAULT_WEBHOOK_PORT
    status = obj.get("status")
    if isinstance(status, dict) and not status.get("storedVersions"):
        add_storage_version(obj)


def _identical(versions: list[dict[str, Any]], key: str, empty: Any) -> bool:
    """Whether every version has the same value of a per-version field (the v1 conversion's test)."""
    values = [v.get(key) if v.get(key) is not None else empty for v in versions]
    return all(value == values[0] for value in values)


def _names_errors(names: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateCustomResourceDefinitionNames."""
    errors: list[FieldError] = []
    for key in ("plural", "singular"):
        value = _str(names, key)
        problems = is_dns1035_label(value)
        if value and problems:
            errors.append(invalid(f"{path}.{key}", value, ",".join(problems)))
    for key in ("kind", "listKind"):
        value = _str(names, key)
        problems = is_dns1035_label(value.lower())
        if value and problems:
            errors.append(invalid(f"{path}.{key}", value,
                                  "may have mixed case, but should otherwise match: " + ",".join(problems)))
    for index, short_name in enumerate(_strs(names.get("shortNames"))):
        problems = is_dns1035_label(short_name)
        if problems:
            errors.append(invalid(f"{path}.shortNames[{index}]", short_name, ",".join(problems)))
    kind, list_kind = _str(names, "kind"), _str(names, "listKind")
    if kind and kind == list_kind:
        errors.append(invalid(f"{path}.listKind", list_kind, "kind and listKind may not be the same"))
    for index, category in enumerate(_strs(names.get("categories"))):
        problems = is_dns1035_label(category)
        if problems:
            errors.append(invalid(f"{path}.categories[{index}]", category, ",".join(problems)))
    return errors


def _simple_json_path_errors(value: str, path: str) -> list[FieldError]:
    """validateSimpleJSONPath."""
    if not value:
        return [invalid(path, value, "must not be empty")]
    if not value.startswith("."):
        return [invalid(path, value, "must be a simple json path starting with .")]
    return []


def _subresources_errors(subresources: Any, path: str) -> list[FieldError]:
    """ValidateCustomResourceDefinitionSubresources: the scale paths."""
    scale = _dict(subresources).get("scale")
    if not isinstance(scale, dict):
        return []
    errors: list[FieldError] = []
    for key, prefix, where in (("specReplicasPath", ".spec.", ".spec"), ("statusReplicasPath", ".status.", ".status")):
        value = _str(scale, key)
        if not value:
            errors.append(required(f"{path}.scale.{key}"))
            continue
        problems = _simple_json_path_errors(value, f"{path}.scale.{key}")
        if problems:
            errors.extend(problems)
        elif not value.startswith(prefix):
            errors.append(invalid(f"{path}.scale.{key}", value, f"should be a json path under {where}"))
    selector = _str(scale, "labelSelectorPath")
    if selector:
        problems = _simple_json_path_errors(selector, f"{path}.scale.labelSelectorPath")
        if problems:
            errors.extend(problems)
        elif not selector.startswith((".spec.", ".status.")):
            # kube prints the *string pointer here, which field.Error dereferences: the quoted path.
            errors.append(invalid(f"{path}.scale.labelSelectorPath", selector,
                                  "should be a json path under either .spec or .status"))
    return errors


def _column_errors(column: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateCustomResourceColumnDefinition (the v1 field is jsonPath; kube's path says `JSONPath`)."""
    errors: list[FieldError] = []
    if not _str(column, "name"):
        errors.append(required(f"{path}.name"))
    kind = _str(column, "type")
    types = ",".join(PRINTER_COLUMN_TYPES)
    if not kind:
        errors.append(required(f"{path}.type", f"must be one of {types}"))
    elif kind not in PRINTER_COLUMN_TYPES:
        errors.append(invalid(f"{path}.type", kind, f"must be one of {types}"))
    fmt = _str(column, "format")
    if fmt and fmt not in PRINTER_COLUMN_FORMATS:
        errors.append(invalid(f"{path}.format", fmt, f"must be one of {','.join(PRINTER_COLUMN_FORMATS)}"))
    json_path = _str(column, "jsonPath")
    if not json_path:
        errors.append(required(f"{path}.JSONPath"))
    else:
        errors.extend(_simple_json_path_errors(json_path, f"{path}.JSONPath"))
    return errors


def _field_path(json_path: str, schema: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None, str]:
    """cel.ValidFieldPath without array notation: the field names, the schema found, or an error message."""
    names: list[str] = []
    current: dict[str, Any] | None = schema
    tokens: list[str] = []
    word = ""
    for char in json_path:
        if char in ".[]":
            if word:
                tokens.append(word)
            tokens.append(char)
            word = ""
        else:
            word += char
    if word:
        tokens.append(word)
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "[":
            return names, None, "array notation is not allowed"
        if token != ".":
            return names, None, f"expected [ or . but got: {token}"
        position += 1
        if position >= len(tokens):
            return names, None, "unexpected end of JSON path"
        name = tokens[position]
        position += 1
        node = current if isinstance(current, dict) else {}
        if isinstance(node.get("properties"), dict):
            if name not in node["properties"]:
                return names, None, "does not refer to a valid field"
            current = node["properties"][name]
        elif node.get("additionalProperties") is not None:
            current = node["additionalProperties"] if isinstance(node["additionalProperties"], dict) else None
        else:
            return names, None, "does not refer to a valid field"
        names.append(name)
    return names, current, ""


def _selectable_fields_errors(fields: list[Any], schema: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateCustomResourceSelectableFields: jsonPath required, a valid path to a string, boolean or integer
    outside metadata, no duplicates, at most 8."""
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, item in enumerate(fields):
        item_path = f"{path}[{index}].jsonPath"
        json_path = _str(_dict(item), "jsonPath")
        if not json_path:
            errors.append(required(item_path))
            continue
        names, found, problem = _field_path(json_path, schema)
        if problem:
            errors.append(invalid(item_path, json_path, f"is an invalid path: {problem}"))
            continue
        if names and names[0] == "metadata":
            errors.append(invalid(item_path, json_path, "must not point to fields in metadata"))
        if not isinstance(found, dict) or found.get("type") not in ("string", "boolean", "integer"):
            errors.append(invalid(item_path, json_path, "must point to a field of type string, boolean or integer. "
                                                        "Enum string fields and strings with formats are allowed."))
        key = ".".join(names)
        if key in seen:
            errors.append(FieldError("FieldValueDuplicate", item_path, f"Duplicate value: {go_json(json_path)}"))
        else:
            seen.add(key)
    if len(seen) > MAX_SELECTABLE_FIELDS:
        errors.append(FieldError("FieldValueTooMany", path,
                                 f"Too many: {len(seen)}: must have at most {MAX_SELECTABLE_FIELDS} items"))
    return errors


def _deprecation_warning_errors(deprecated: bool, warning: Any) -> list[str]:
    """validateDeprecationWarning."""
    if not deprecated and warning is not None:
        return ["can only be set for deprecated versions"]
    if not isinstance(warning, str):
        return []
    errors = []
    if len(warning.encode("utf-8", "surrogatepass")) > 256:
        errors.append("must be <= 256 characters long")
    if not warning:
        errors.append("must not be an empty string")
    offset = 0
    for char in warning:
        category = unicodedata.category(char)
        if category == "Cc":
            errors.append("must only contain printable UTF-8 characters; control character found at index "
                          f"{offset}")
            break
        if category[0] in "CZ" and char != " ":
            errors.append("must only contain printable UTF-8 characters; non-printable character found at index "
                          f"{offset}")
            break
        offset += len(char.encode("utf-8", "surrogatepass"))
    return errors


def _schema_has_default(schema: Any) -> bool:
    """Whether a JSONSchemaProps (or one nested in it) sets `default` (SchemaHas with schemaHasDefaults)."""
    if not isinstance(schema, dict):
        return False
    if schema.get("default") is not None:
        return True
    children: list[Any] = []
    for key in ("items", "additionalItems", "additionalProperties", "not"):
        value = schema.get(key)
        children.extend(value if isinstance(value, list) else [value])
    for key in ("allOf", "anyOf", "oneOf"):
        value = schema.get(key)
        children.extend(value if isinstance(value, list) else [])
    for key in ("properties", "patternProperties", "dependencies", "definitions"):
        children.extend(_dict(schema.get(key)).values())
    return any(_schema_has_default(child) for child in children)


def _root_schema_errors(schema: dict[str, Any], status_enabled: bool, path: str) -> list[FieldError]:
    """The root rules of validateCustomResourceDefinitionValidation that need the status subresource to judge."""
    errors: list[FieldError] = []
    if status_enabled and schema.get("type") and schema.get("type") != "object":
        errors.append(invalid(f"{path}.type", schema.get("type"),
                              'only "object" is allowed as the type at the root of the schema if the status '
                              "subresource is enabled"))
    if schema.get("nullable") is True:
        errors.append(forbidden(f"{path}.nullable", "nullable cannot be true at the root"))
    return errors


def _webhook_config_errors(conversion: dict[str, Any], path: str) -> list[FieldError]:
    """validateCustomResourceConversion for the Webhook strategy: a client config with exactly one of url and
    service, and conversionReviewVersions with v1 or v1beta1."""
    errors: list[FieldError] = []
    webhook = _dict(conversion.get("webhook"))
    config = webhook.get("clientConfig")
    if not isinstance(config, dict):
        errors.append(required(f"{path}.webhookClientConfig", "required when strategy is set to Webhook"))
    elif (config.get("url") is None) == (config.get("service") is None):
        errors.append(required(f"{path}.webhookClientConfig", "exactly one of url or service is required"))
    versions = _strs(webhook.get("conversionReviewVersions"))
    review_path = f"{path}.conversionReviewVersions"
    if not versions:
        errors.append(required(review_path))
        return errors
    seen: set[str] = set()
    for index, version in enumerate(versions):
        if version in seen:
            errors.append(invalid(f"{review_path}[{index}]", version, "duplicate version"))
            continue
        seen.add(version)
        errors.extend(invalid(f"{review_path}[{index}]", version, problem) for problem in is_dns1035_label(version))
    if not seen & {"v1", "v1beta1"}:
        errors.append(FieldError("FieldValueInvalid", review_path, f"Invalid value: {_go_strings(versions)}: must "
                                                                   "include at least one of v1, v1beta1"))
    return errors


def _conversion_errors(spec: dict[str, Any], preserve_unknown_fields: bool) -> list[FieldError]:
    """The conversion rules of validateCustomResourceDefinitionSpec, and the refusal of webhooks."""
    conversion = spec.get("conversion")
    if not isinstance(conversion, dict):
        return []
    errors: list[FieldError] = []
    strategy = _str(conversion, "strategy")
    if strategy != NONE_CONVERTER and preserve_unknown_fields:
        errors.append(invalid("spec.conversion.strategy", strategy, "must be None if spec.preserveUnknownFields is "
                                                                    "true"))
    path = "spec.conversion"
    if not strategy:
        errors.append(required(f"{path}.strategy"))
    elif strategy not in (NONE_CONVERTER, WEBHOOK_CONVERTER):
        errors.append(not_supported(f"{path}.strategy", strategy, [NONE_CONVERTER, WEBHOOK_CONVERTER]))
    if strategy == WEBHOOK_CONVERTER:
        errors.extend(_webhook_config_errors(conversion, path))
        errors.append(invalid(f"{path}.strategy", strategy, WEBHOOK_UNSUPPORTED))
    else:
        webhook = _dict(conversion.get("webhook"))
        if webhook.get("clientConfig") is not None:
            errors.append(forbidden(f"{path}.webhookClientConfig", "should not be set when strategy is not set to "
                                                                   "Webhook"))
        if webhook.get("conversionReviewVersions"):
            errors.append(forbidden(f"{path}.conversionReviewVersions", "should not be set when strategy is not set "
                                                                        "to Webhook"))
    return errors


def _all_versions_have_schema(spec: dict[str, Any]) -> bool:
    """allVersionsSpecifyOpenAPISchema."""
    versions = [_dict(v) for v in spec.get("versions") or [] if isinstance(v, dict)]
    return all(_dict(v.get("schema")).get("openAPIV3Schema") is not None for v in versions)


def validate_spec(spec: dict[str, Any], schema_errors: SchemaErrors = no_schema_errors,
                  require_openapi_schema: bool = True) -> list[FieldError]:
    """validateCustomResourceDefinitionSpec of a v1 spec, in kube's order and with kube's paths."""
    errors: list[FieldError] = []
    group = _str(spec, "group")
    if not group:
        errors.append(required("spec.group"))
    elif is_dns1123_subdomain(group):
        errors.append(invalid("spec.group", group, ",".join(is_dns1123_subdomain(group))))
    elif "." not in group:
        errors.append(invalid("spec.group", group, "should be a domain with at least one dot"))

    scope = _str(spec, "scope")
    if not scope:
        errors.append(required("spec.scope"))
    elif scope not in SCOPES:
        errors.append(not_supported("spec.scope", scope, list(SCOPES)))

    preserve = spec.get("preserveUnknownFields") is True
    versions = [_dict(v) for v in spec.get("versions") or []] if isinstance(spec.get("versions"), list) else []
    if require_openapi_schema or not preserve:
        for index, version in enumerate(versions):
            if _dict(version.get("schema")).get("openAPIV3Schema") is None and (
                    require_openapi_schema or version.get("served") is True):
                detail = "" if require_openapi_schema else "because otherwise all fields are pruned"
                errors.append(required(f"spec.versions[{index}].schema.openAPIV3Schema", detail))
    if preserve and any(_schema_has_default(_dict(v.get("schema")).get("openAPIV3Schema")) for v in versions):
        errors.append(invalid("spec.preserveUnknownFields", True, "must be false in order to use defaults in the "
                                                                  "schema"))

    # The v1 conversion moves a per-version field to the top level when every version has the same value.
    shared_schema = bool(versions) and _identical(versions, "schema", None)
    shared_subresources = bool(versions) and _identical(versions, "subresources", None)
    shared_columns = bool(versions) and _identical(versions, "additionalPrinterColumns", [])
    shared_selectable = bool(versions) and _identical(versions, "selectableFields", [])

    def status_enabled(version: dict[str, Any]) -> bool:
        return _dict(version.get("subresources")).get("status") is not None

    any_status = any(status_enabled(v) for v in versions)
    storage_count = 0
    names_seen: set[str] = set()
    unique = True
    for index, version in enumerate(versions):
        path = f"spec.versions[{index}]"
        name = _str(version, "name")
        storage_count += version.get("storage") is True
        unique = unique and name not in names_seen
        names_seen.add(name)
        problems = is_dns1035_label(name)
        if problems:
            errors.append(invalid(f"{path}.name", name, ",".join(problems)))
        warning = version.get("deprecationWarning")
        errors.extend(invalid(f"{path}.deprecationWarning", warning, problem)
                      for problem in _deprecation_warning_errors(version.get("deprecated") is True, warning))
        schema = _dict(version.get("schema")).get("openAPIV3Schema")
        if not shared_schema and isinstance(schema, dict):
            schema_path = f"{path}.schema.openAPIV3Schema"
            errors.extend(_root_schema_errors(schema, status_enabled(version), schema_path))
            errors.extend(schema_errors(schema, schema_path))
        if not shared_subresources:
            errors.extend(_subresources_errors(version.get("subresources"), f"{path}.subresources"))
        if not shared_columns:
            for position, column in enumerate(version.get("additionalPrinterColumns") or []):
                errors.extend(_column_errors(_dict(column), f"{path}.additionalPrinterColumns[{position}]"))
        fields = version.get("selectableFields") or []
        if not shared_selectable and fields:
            if not isinstance(schema, dict):
                errors.append(invalid(f"{path}.selectableFields", "",
                                      "may only be set when `version.schema.openAPIV3Schema` is not included"))
            else:
                errors.extend(_selectable_fields_errors(fields, schema, f"{path}.selectableFields"))

    versions_value = go_json(spec.get("versions") or [])
    if not unique:
        errors.append(FieldError("FieldValueInvalid", "spec.versions",
                                 f"Invalid value: {versions_value}: must contain unique version names"))
    if storage_count != 1:
        errors.append(FieldError("FieldValueInvalid", "spec.versions",
                                 f"Invalid value: {versions_value}: must have exactly one version marked as storage "
                                 "version"))
    if versions:
        first = _str(versions[0], "name")
        problems = is_dns1035_label(first)
        if first and problems:
            errors.append(invalid("spec.version", first, ",".join(problems)))

    names = _dict(spec.get("names"))
    for key in ("plural", "singular", "kind", "listKind"):
        if not _str(names, key):
            errors.append(required(f"spec.names.{key}"))
    errors.extend(_names_errors(names, "spec.names"))

    shared = versions[0] if versions else {}
    schema = _dict(shared.get("schema")).get("openAPIV3Schema") if shared_schema else None
    if isinstance(schema, dict):
        errors.extend(_root_schema_errors(schema, any_status, "spec.validation.openAPIV3Schema"))
        errors.extend(schema_errors(schema, "spec.validation.openAPIV3Schema"))
    if shared_subresources:
        errors.extend(_subresources_errors(shared.get("subresources"), "spec.subresources"))
    if shared_columns:
        for position, column in enumerate(shared.get("additionalPrinterColumns") or []):
            errors.extend(_column_errors(_dict(column), f"spec.additionalPrinterColumns[{position}]"))
    fields = (shared.get("selectableFields") or []) if shared_selectable else []
    if fields:
        if not shared_schema or _dict(shared.get("schema")).get("openAPIV3Schema") is None:
            errors.append(invalid("spec.selectableFields", "", "may only be set when validations.schema is included"))
        else:
            errors.extend(_selectable_fields_errors(fields, _dict(_dict(shared.get("schema")).get("openAPIV3Schema")),
                                                    "spec.selectableFields"))

    errors.extend(_conversion_errors(spec, preserve))
    return errors


def validate_stored_versions(obj: Object) -> list[FieldError]:
    """ValidateCustomResourceDefinitionStoredVersions: at least one, including the storage version, and every
    stored version still in spec.versions."""
    path = "status.storedVersions"
    stored = _strs(_dict(obj.get("status")).get("storedVersions"))
    if not stored:
        return [FieldError("FieldValueInvalid", path, f"Invalid value: {_go_strings(stored)}: must have at least one "
                                                      "stored version")]
    errors: list[FieldError] = []
    remaining = {name: index for index, name in enumerate(stored)}
    for version in _spec(obj).get("versions") or []:
        name = _str(_dict(version), "name")
        if _dict(version).get("storage") is True and name not in remaining:
            errors.append(FieldError("FieldValueInvalid", path, f"Invalid value: {_go_strings(stored)}: must have the "
                                                                f"storage version {name}"))
        remaining.pop(name, None)
    for name, index in sorted(remaining.items(), key=lambda item: item[1]):
        errors.append(invalid(f"{path}[{index}]", name, (
            f"missing from spec.versions; {name} was previously a storage version, and must remain in spec.versions "
            f"until a storage migration ensures no data remains persisted in {name} and removes {name} from "
            "status.storedVersions")))
    return errors


def validate_status(obj: Object) -> list[FieldError]:
    """ValidateCustomResourceDefinitionStatus: the accepted names follow the names rules."""
    return _names_errors(_dict(_dict(obj.get("status")).get("acceptedNames")), "status.acceptedNames")


def _approval(annotations: dict[str, Any]) -> tuple[str, str]:
    """GetAPIApprovalState: (state, reason) of the api-approved annotation."""
    value = annotations.get(API_APPROVED_ANNOTATION)
    value = value if isinstance(value, str) else ""
    quoted = go_json(API_APPROVED_ANNOTATION)
    if not value:
        return "missing", (f"protected groups must have approval annotation {quoted}, see "
                           "https://github.com/kubernetes/enhancements/pull/1111")
    if value.startswith("unapproved"):
        return "bypassed", f"not approved: {go_json(value)}"
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme and parsed.netloc and " " not in value:
        return "approved", f"approved in {value}"
    return "invalid", (f"protected groups must have approval annotation {quoted} with either a URL or a reason "
                       'starting with "unapproved", see https://github.com/kubernetes/enhancements/pull/1111')


def is_protected_group(group: str) -> bool:
    """IsProtectedCommunityGroup: k8s.io, kubernetes.io and their subdomains."""
    return group in ("k8s.io", "kubernetes.io") or group.endswith((".k8s.io", ".kubernetes.io"))


#: The KubernetesAPIApprovalPolicyConformant condition kube's API approval controller sets, by approval state.
APPROVAL_CONDITIONS = {"invalid": ("False", "InvalidAnnotation"), "missing": ("False", "MissingAnnotation"),
                       "approved": ("True", "ApprovedAnnotation"), "bypassed": ("False", "UnapprovedAnnotation")}


def approval_condition(crd: Object) -> dict[str, Any] | None:
    """The KubernetesAPIApprovalPolicyConformant condition of a CRD in a protected group (None elsewhere)."""
    if not is_protected_group(_str(_spec(crd), "group")):
        return None
    state, reason = _approval(_dict(_meta(crd).get("annotations")))
    status, why = APPROVAL_CONDITIONS[state]
    return {"type": "KubernetesAPIApprovalPolicyConformant", "status": status, "reason": why, "message": reason}


def validate_api_approval(new: Object, old: Object | None) -> list[FieldError]:
    """validateAPIApproval: a CRD in a *.k8s.io or *.kubernetes.io group needs the api-approved annotation."""
    group = _str(_spec(new), "group")
    if not is_protected_group(group):
        return []
    state, reason = _approval(_dict(_meta(new).get("annotations")))
    if old is not None and _approval(_dict(_meta(old).get("annotations")))[0] == state:
        return []
    path = f"metadata.annotations[{API_APPROVED_ANNOTATION}]"
    if state == "missing":
        return [required(path, reason)]
    if state == "invalid":
        return [invalid(path, _dict(_meta(new).get("annotations")).get(API_APPROVED_ANNOTATION), reason)]
    return []


def validate_preserve_unknown_fields(new: Object, old: Object | None) -> list[FieldError]:
    """validatePreserveUnknownFields: true is refused unless the stored CRD already had it."""
    if old is not None and _spec(old).get("preserveUnknownFields") is True:
        return []
    if _spec(new).get("preserveUnknownFields") is True:
        return [invalid("spec.preserveUnknownFields", True, "cannot set to true, set x-kubernetes-preserve-unknown-"
                                                            "fields to true in spec.versions[*].schema instead")]
    return []


def _name_errors(obj: Object) -> list[FieldError]:
    """The CRD's ValidateNameFunc: a DNS subdomain, and exactly `<spec.names.plural>.<spec.group>`."""
    required_name = f"{_str(_dict(_spec(obj).get('names')), 'plural')}.{_str(_spec(obj), 'group')}"
    errors: list[FieldError] = []
    for key in ("generateName", "name"):
        value = _meta(obj).get(key)
        if not value or not isinstance(value, str):
            continue
        problems = name_is_dns_subdomain(value, key == "generateName")
        if value != required_name:
            problems = problems + ['must be spec.names.plural+"."+spec.group']
        errors.extend(invalid(f"metadata.{key}", value, problem) for problem in problems)
    return errors


def validate_crd(obj: Object, schema_errors: SchemaErrors = no_schema_errors) -> list[FieldError]:
    """ValidateCustomResourceDefinition without the generic metadata checks (the REST handler runs those)."""
    errors = type_errors(obj)
    if errors:
        return errors
    errors = _name_errors(obj)
    errors.extend(validate_spec(_spec(obj), schema_errors))
    errors.extend(validate_status(obj))
    errors.extend(validate_stored_versions(obj))
    errors.extend(validate_api_approval(obj, None))
    errors.extend(validate_preserve_unknown_fields(obj, None))
    return errors


def validate_crd_update(new: Object, old: Object, schema_errors: SchemaErrors = no_schema_errors) -> list[FieldError]:
    """ValidateCustomResourceDefinitionUpdate: the spec rules (schemas required only if the stored CRD had them
    all), scope and kind fixed once Established, group and plural always fixed."""
    errors = type_errors(new)
    if errors:
        return errors
    errors = validate_object_meta_update(_meta(new), _meta(old))
    new_spec, old_spec = _spec(new), _spec(old)
    errors.extend(validate_spec(new_spec, schema_errors, require_openapi_schema=_all_versions_have_schema(old_spec)))
    new_names, old_names = _dict(new_spec.get("names")), _dict(old_spec.get("names"))
    immutable: list[tuple[str, Any, Any]] = []
    if is_condition_true(old, ESTABLISHED):
        immutable += [("spec.scope", new_spec.get("scope"), old_spec.get("scope")),
                      ("spec.names.kind", new_names.get("kind"), old_names.get("kind"))]
    immutable += [("spec.group", new_spec.get("group"), old_spec.get("group")),
                  ("spec.names.plural", new_names.get("plural"), old_names.get("plural"))]
    for path, new_value, old_value in immutable:
        if (new_value or "") != (old_value or ""):
            errors.append(invalid(path, new_value or "", FIELD_IMMUTABLE))
    errors.extend(validate_status(new))
    errors.extend(validate_stored_versions(new))
    errors.extend(validate_api_approval(new, old))
    errors.extend(validate_preserve_unknown_fields(new, old))
    return errors


UNENFORCED_RULE_PREFIX = "x-kubernetes-validations rule"


def unenforced_rules(obj: Object) -> list[tuple[str, str, str, str]]:
    """The CEL rules of every version's schema as (schema path, field path, rule, message): no maintained Python
    library evaluates kube's CEL (its library functions, cost limits, transition rules), so none is enforced."""
    found: list[tuple[str, str, str, str]] = []
    for index, version in enumerate(_spec(obj).get("versions") or []):
        if not isinstance(version, dict):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema") if isinstance(version.get("schema"),
                                                                                   dict) else None
        if isinstance(schema, dict):
            where = f"spec.versions[{index}].schema.openAPIV3Schema"
            found.extend((where, path, rule, message) for path, rule, message in cel_rules(schema))
    return found


def created_at(obj: Object) -> str:
    """The CREATED AT cell: creationTimestamp in UTC, RFC 3339 (Go's zero time when absent)."""
    moment = parse_time(_meta(obj).get("creationTimestamp"))
    return rfc3339(moment) if moment is not None else ZERO_TIME


class CustomResourceDefinitionStrategy(Strategy):
    """apiextensions-apiserver's strategy and statusStrategy for `customresourcedefinitions`."""

    info = INFO
    columns = (NAME_COLUMN, CREATED_AT_COLUMN)

    def __init__(self, schema_errors: SchemaErrors = no_schema_errors) -> None:
        """schema_errors checks one openAPIV3Schema (the structural-schema rules, wired in by the caller)."""
        self._schema_errors = schema_errors

    def default(self, obj: Object) -> None:
        """SetObjectDefaults_CustomResourceDefinition."""
        default_crd(obj)

    def prepare_for_create(self, obj: Object) -> None:
        """Wipe the status, then record the storage version as stored."""
        obj["status"] = {}
        add_storage_version(obj)

    def prepare_for_update(self, new: Object, old: Object) -> None:
        """Keep the stored status, and add the (maybe new) storage version to storedVersions."""
        new["status"] = copy.deepcopy(old.get("status", {}))
        add_storage_version(new)

    def validate(self, obj: Object) -> list[FieldError]:
        """ValidateCustomResourceDefinition."""
        return validate_crd(obj, self._schema_errors)

    def validate_update(self, new: Object, old: Object) -> list[FieldError]:
        """ValidateCustomResourceDefinitionUpdate."""
        return validate_crd_update(new, old, self._schema_errors)

    def validate_status_update(self, new: Object, old: Object) -> list[FieldError]:
        """ValidateUpdateCustomResourceDefinitionStatus: metadata update rules and the accepted names only."""
        errors = type_errors(new)
        if errors:
            return errors
        return validate_object_meta_update(_meta(new), _meta(old)) + validate_status(new)

    #: CRDs are large: the Alertmanager CRD holds about 6,000 values, and server-side apply managedFields as many.
    max_values = 30_000
    #: Deleting a CRD adds the cleanup finalizer, so its instances go first.
    finalizes_deletion = True

    def prepare_for_delete(self, obj: Object, now: datetime.datetime) -> None:
        """kube's CRD REST Delete: add the cleanup finalizer and mark Terminating (InstanceDeletionPending)."""
        finalizers = _meta(obj).setdefault("finalizers", [])
        if CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CLEANUP_FINALIZER)
        set_condition(obj, terminating_condition(*INSTANCE_DELETION_PENDING), now)

    def write_warnings(self, obj: Object) -> list[str]:
        """Each x-kubernetes-validations (CEL) rule, which this server does not evaluate: said, never ignored."""
        return [f"{where}: {UNENFORCED_RULE_PREFIX} {go_quote(rule)} at {path or '<root>'} is not enforced by this server"
                for where, path, rule, _ in unenforced_rules(obj)]

    def table_cells(self, obj: Object, now: datetime.datetime) -> list[Any]:
        """NAME and CREATED AT, as kube's default table convertor prints a CRD."""
        return [_meta(obj).get("name", ""), created_at(obj)]
