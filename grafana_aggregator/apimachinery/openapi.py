# -*- test-case-name: tests.test_openapi -*-
"""OpenAPI documents of the served kinds: per-group-version OpenAPI 3.0, the `/openapi/v3` index, a merged
Swagger 2.0 document and its gnostic `openapi_v2.Document` protobuf encoding (kubectl-wire.md §7.3, §8).

Everything here is a pure function from KindInfo values to dicts or bytes; the `/openapi` resources only
serialize the results.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import yaml
from attrs import frozen

from .strategy import API_VERSION_DESCRIPTION, KIND_DESCRIPTION
from .strategy import KindInfo

JSON = dict[str, Any]

#: What kube-openapi serves `/openapi/v2` protobuf as; `mime.ParseMediaType` accepts it (the `@` form it does not).
V2_PROTOBUF_CONTENT_TYPE: Final = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
#: The Accept values that ask for the v2 protobuf: what kubectl sends, and kube-openapi's own spelling.
V2_PROTOBUF_ACCEPT: Final = ("application/com.github.proto-openapi.spec.v2@v1.0+protobuf", V2_PROTOBUF_CONTENT_TYPE)

#: The patch types a custom resource's PATCH consumes (no strategic merge patch, as for kube's CRDs).
PATCH_CONTENT_TYPES: Final = ("application/json-patch+json", "application/merge-patch+json",
                              "application/apply-patch+yaml")
#: A built-in kind's: strategic merge patch too, in kube's order (kubectl apply then sends one, §7.3).
BUILT_IN_PATCH_CONTENT_TYPES: Final = ("application/json-patch+json", "application/merge-patch+json",
                                       "application/strategic-merge-patch+json", "application/apply-patch+yaml")


def patch_content_types(info: KindInfo) -> tuple[str, ...]:
    """What a kind's PATCH operations consume: strategic merge patch only where the server applies it."""
    return BUILT_IN_PATCH_CONTENT_TYPES if info.go_type is not None else PATCH_CONTENT_TYPES

META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1."
RUNTIME: Final = "io.k8s.apimachinery.pkg.runtime."
V3_REF_PREFIX: Final = "#/components/schemas/"
V2_REF_PREFIX: Final = "#/definitions/"

#: Java-package prefixes of groups whose Go types kube publishes under a repository path.
_GROUP_PACKAGES: Final = {
    "apiregistration.k8s.io": "io.k8s.kube-aggregator.pkg.apis.apiregistration",
    "": "io.k8s.api.core",
}

#: Component names kube gives nested types that the generic `<Kind><Field>` rule would name differently.
_TYPE_NAMES: Final = {("apiregistration.k8s.io", "APIService", "spec.service"): "ServiceReference"}

#: kube's descriptions of nested types (KindInfo schemas only carry the field's description).
_TYPE_DESCRIPTIONS: Final = {
    ("apiregistration.k8s.io", "APIService", "spec"): (
        "APIServiceSpec contains information for locating and communicating with a server. Only https is "
        "supported, though you are able to disable certificate verification."),
    ("apiregistration.k8s.io", "APIService", "spec.service"): (
        "ServiceReference holds a reference to Service.legacy.k8s.io"),
    ("apiregistration.k8s.io", "APIService", "status"): (
        "APIServiceStatus contains derived information about an API server"),
}


# --------------------------------------------------------------------------------------------------------------
# Names


def group_version_key(group: str, version: str) -> str:
    """The `/openapi/v3` index key of a group-version: `apis/<g>/<v>`, or `api/v1` for the core group."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(group: str, version: str, kind: str) -> str:
    """The component/definition name kube gives a kind, e.g. `app.grafana.service.v0alpha1.ExternalName`."""
    package = _GROUP_PACKAGES.get(group)
    if package is None:
        package = ".".join(reversed(group.split(".")))
    return f"{package}.{version}.{kind}"


def _valid_operation_id(text: str, capitalize_first: bool) -> str:
    """k8s.io/apiserver ToValidOperationID: drop separators, capitalizing the letter after each one."""
    out = []
    capitalize = capitalize_first
    for index, char in enumerate(text):
        if char.isalpha() or char == "_" or (index != 0 and char.isdigit()):
            out.append(char.upper() if capitalize else char)
            capitalize = False
        else:
            capitalize = True
    return "".join(out)


def _group_part(group: str) -> str:
    return (group or "core").removesuffix(".k8s.io")


def operation_tag(group: str, version: str) -> str:
    """The tag kube puts on a group-version's operations, e.g. `apiregistration_v1`, `serviceGrafanaApp_v0alpha1`."""
    return f"{_valid_operation_id(_group_part(group), False)}_{_valid_operation_id(version, False)}"


def operation_id(verb: str, info: KindInfo, rest: str) -> str:
    """kube's operationId: verb, then the camel-cased group and version, then `rest` (e.g. `NamespacedPod`)."""
    return (verb + _valid_operation_id(_group_part(info.group), True)
            + _valid_operation_id(info.version, True) + rest)


def _article(kind: str) -> str:
    return "an" if kind[:1].upper() in "AEIOU" else "a"


# --------------------------------------------------------------------------------------------------------------
# Shared apimachinery components (descriptions abridged from k8s.io/apimachinery; `kubectl explain` prints them)


def _ref(name: str) -> JSON:
    return {"$ref": V3_REF_PREFIX + name}


def _field(name: str, description: str, default: Any = None) -> JSON:
    """A property that refers to another component the way kube's v3 documents do (allOf + optional default)."""
    schema: JSON = {"allOf": [_ref(name)], "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def _string(description: str) -> JSON:
    return {"description": description, "type": "string"}


def _integer(description: str, fmt: str) -> JSON:
    return {"description": description, "format": fmt, "type": "integer"}


def _boolean(description: str) -> JSON:
    return {"description": description, "type": "boolean"}


def _strings(description: str, list_type: str = "atomic") -> JSON:
    return {"description": description, "items": {"default": "", "type": "string"}, "type": "array",
            "x-kubernetes-list-type": list_type}


def _string_map(description: str) -> JSON:
    return {"additionalProperties": {"default": "", "type": "string"}, "description": description, "type": "object"}


_API_CONVENTIONS = "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
_RESOURCE_VERSION_DESCRIPTION = (
    "An opaque value that represents the internal version of this object that can be used by clients to determine "
    "when objects have changed. May be used for optimistic concurrency, change detection, and the watch operation "
    "on a resource or set of resources. Clients must treat these values as opaque and passed unmodified back to "
    f"the server.\n\nPopulated by the system. Read-only. More info: {_API_CONVENTIONS}#concurrency-control-and-consistency"
)
_DRY_RUN_DESCRIPTION = (
    "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun "
    "directive will result in an error response and no further processing of the request. Valid values are: - All: "
    "all dry run stages will be processed"
)
_GRACE_PERIOD_DESCRIPTION = (
    "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value "
    "zero indicates delete immediately. If this value is nil, the default grace period for the specified type will "
    "be used. Defaults to a per object value if not specified. zero means delete immediately."
)
_PROPAGATION_DESCRIPTION = (
    "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but "
    "not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the "
    "resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - "
    "allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy "
    "that deletes all dependents in the foreground."
)
_ORPHAN_DESCRIPTION = (
    "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent "
    "objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's "
    "finalizers list. Either this field or PropagationPolicy may be set, but not both."
)
_LIST_METADATA_DESCRIPTION = f"Standard list metadata. More info: {_API_CONVENTIONS}#metadata"


def meta_schemas() -> dict[str, JSON]:
    """The k8s.io/apimachinery meta/v1 (and runtime) components every group-version document ships, v3 form."""
    time_ref = META + "Time"
    return {
        META + "DeleteOptions": {
            "description": "DeleteOptions may be provided when deleting an API object.",
            "type": "object",
            "properties": {
                "apiVersion": _string(API_VERSION_DESCRIPTION),
                "dryRun": _strings(_DRY_RUN_DESCRIPTION),
                "gracePeriodSeconds": _integer(_GRACE_PERIOD_DESCRIPTION, "int64"),
                "kind": _string(KIND_DESCRIPTION),
                "orphanDependents": _boolean(_ORPHAN_DESCRIPTION),
                "preconditions": _field(META + "Preconditions", "Must be fulfilled before a deletion is carried "
                                        "out. If not possible, a 409 Conflict status will be returned."),
                "propagationPolicy": _string(_PROPAGATION_DESCRIPTION),
            },
        },
        META + "FieldsV1": {
            "description": (
                "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format.\n\nEach key is "
                "either a '.' representing the field itself, and will always map to an empty set, or a string "
                "representing a sub-field or item: 'f:<name>', 'v:<value>', 'i:<index>' or 'k:<keys>'. If a key "
                "maps to an empty Fields value, the field that key represents is part of the set.\n\nThe exact "
                "format is defined in sigs.k8s.io/structured-merge-diff"
            ),
            "type": "object",
        },
        META + "ListMeta": {
            "description": (
                "ListMeta describes metadata that synthetic resources must have, including lists and various "
                "status objects. A resource may have only one of {ObjectMeta, ListMeta}."
            ),
            "type": "object",
            "properties": {
                "continue": _string(
                    "continue may be set if the user set a limit on the number of items returned, and indicates "
                    "that the server has more data available. The value is opaque and may be used to issue another "
                    "request to the endpoint that served this list to retrieve the next set of available objects."
                ),
                "remainingItemCount": _integer(
                    "remainingItemCount is the number of subsequent items in the list which are not included in "
                    "this list response. Clients should not rely on the remainingItemCount to be set or to be "
                    "exact.", "int64"),
                "resourceVersion": _string(
                    "String that identifies the server's internal version of this object that can be used by "
                    "clients to determine when objects have changed. Value must be treated as opaque by clients and "
                    "passed unmodified back to the server. Populated by the system. Read-only. More info: "
                    f"{_API_CONVENTIONS}#concurrency-control-and-consistency"),
                "selfLink": _string("Deprecated: selfLink is a legacy read-only field that is no longer populated "
                                    "by the system."),
            },
        },
        META + "ManagedFieldsEntry": {
            "description": (
                "ManagedFieldsEntry is a workflow-id, a FieldSet and the group version of the resource that the "
                "fieldset applies to."
            ),
            "type": "object",
            "properties": {
                "apiVersion": _string(
                    "APIVersion defines the version of this resource that this field set applies to. The format is "
                    "\"group/version\" just like the top-level APIVersion field."),
                "fieldsType": _string("FieldsType is the discriminator for the different fields format and "
                                      "version. There is currently only one possible value: \"FieldsV1\""),
                "fieldsV1": _field(META + "FieldsV1", "FieldsV1 holds the first JSON version format as described "
                                   "in the \"FieldsV1\" type."),
                "manager": _string("Manager is an identifier of the workflow managing these fields."),
                "operation": _string("Operation is the type of operation which lead to this ManagedFieldsEntry "
                                     "being created. The only valid values for this field are 'Apply' and 'Update'."),
                "subresource": _string(
                    "Subresource is the name of the subresource used to update that object, or empty string if the "
                    "object was updated through the main resource."),
                "time": _field(time_ref, "Time is the timestamp of when the ManagedFields entry was added."),
            },
        },
        META + "ObjectMeta": {
            "description": (
                "ObjectMeta is metadata that all persisted resources must have, which includes all objects users "
                "must create."
            ),
            "type": "object",
            "properties": {
                "annotations": _string_map(
                    "Annotations is an unstructured key value map stored with a resource that may be set by "
                    "external tools to store and retrieve arbitrary metadata. They are not queryable and should be "
                    "preserved when modifying objects. More info: "
                    "https://kubernetes.io/docs/concepts/overview/working-with-objects/annotations"),
                "creationTimestamp": _field(
                    time_ref,
                    "CreationTimestamp is a timestamp representing the server time when this object was created. "
                    "It is not guaranteed to be set in happens-before order across separate operations. Clients "
                    "may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the "
                    f"system. Read-only. Null for lists. More info: {_API_CONVENTIONS}#metadata"),
                "deletionGracePeriodSeconds": _integer(
                    "Number of seconds allowed for this object to gracefully terminate before it will be removed "
                    "from the system. Only set when deletionTimestamp is also set. May only be shortened. "
                    "Read-only.", "int64"),
                "deletionTimestamp": _field(
                    time_ref,
                    "DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted. This field "
                    "is set by the server when a graceful deletion is requested by the user, and is not directly "
                    "settable by a client.\n\nPopulated by the system when a graceful deletion is requested. "
                    f"Read-only. More info: {_API_CONVENTIONS}#metadata"),
                "finalizers": {
                    **_strings(
                        "Must be empty before the object is deleted from the registry. Each entry is an identifier "
                        "for the responsible component that will remove the entry from the list. If the "
                        "deletionTimestamp of the object is non-nil, entries in this list can only be removed.",
                        "set"),
                    "x-kubernetes-patch-strategy": "merge",
                },
                "generateName": _string(
                    "GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the "
                    "Name field has not been provided.\n\nApplied only if Name is not specified. More info: "
                    f"{_API_CONVENTIONS}#idempotency"),
                "generation": _integer("A sequence number representing a specific generation of the desired "
                                       "state. Populated by the system. Read-only.", "int64"),
                "labels": _string_map(
                    "Map of string keys and values that can be used to organize and categorize (scope and select) "
                    "objects. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels"),
                "managedFields": {
                    "description": (
                        "ManagedFields maps workflow-id and version to the set of fields that are managed by that "
                        "workflow. This is mostly for internal housekeeping, and users typically shouldn't need to "
                        "set or understand this field."
                    ),
                    "items": {"allOf": [_ref(META + "ManagedFieldsEntry")], "default": {}},
                    "type": "array",
                    "x-kubernetes-list-type": "atomic",
                },
                "name": _string(
                    "Name must be unique within a namespace. Is required when creating resources, although some "
                    "resources may allow a client to request the generation of an appropriate name automatically. "
                    "Cannot be updated. More info: "
                    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"),
                "namespace": _string(
                    "Namespace defines the space within which each name must be unique. An empty namespace is "
                    "equivalent to the \"default\" namespace, but \"default\" is the canonical representation. Not "
                    "all objects are required to be scoped to a namespace - the value of this field for those "
                    "objects will be empty.\n\nMust be a DNS_LABEL. Cannot be updated. More info: "
                    "https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces"),
                "ownerReferences": {
                    "description": (
                        "List of objects depended by this object. If ALL objects in the list have been deleted, "
                        "this object will be garbage collected. If this object is managed by a controller, then an "
                        "entry in this list will point to this controller, with the controller field set to true."
                    ),
                    "items": {"allOf": [_ref(META + "OwnerReference")], "default": {}},
                    "type": "array",
                    "x-kubernetes-list-map-keys": ["uid"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "uid",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "resourceVersion": _string(_RESOURCE_VERSION_DESCRIPTION),
                "selfLink": _string("Deprecated: selfLink is a legacy read-only field that is no longer populated "
                                    "by the system."),
                "uid": _string(
                    "UID is the unique in time and space value for this object. It is typically generated by the "
                    "server on successful creation of a resource and is not allowed to change on PUT operations."
                    "\n\nPopulated by the system. Read-only. More info: "
                    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#uids"),
            },
        },
        META + "OwnerReference": {
            "description": (
                "OwnerReference contains enough information to let you identify an owning object. An owning object "
                "must be in the same namespace as the dependent, or be cluster-scoped, so there is no namespace "
                "field."
            ),
            "type": "object",
            "required": ["apiVersion", "kind", "name", "uid"],
            "properties": {
                "apiVersion": {**_string("API version of the referent."), "default": ""},
                "blockOwnerDeletion": _boolean(
                    "If true, AND if the owner has the \"foregroundDeletion\" finalizer, then the owner cannot be "
                    "deleted from the key-value store until this reference is removed. Defaults to false."),
                "controller": _boolean("If true, this reference points to the managing controller."),
                "kind": {**_string(f"Kind of the referent. More info: {_API_CONVENTIONS}#types-kinds"),
                         "default": ""},
                "name": {**_string("Name of the referent. More info: "
                                   "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"),
                         "default": ""},
                "uid": {**_string("UID of the referent. More info: "
                                  "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#uids"),
                        "default": ""},
            },
            "x-kubernetes-map-type": "atomic",
        },
        META + "Patch": {
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        },
        META + "Preconditions": {
            "description": "Preconditions must be fulfilled before an operation (update, delete, etc.) is carried out.",
            "type": "object",
            "properties": {
                "resourceVersion": _string("Specifies the target ResourceVersion"),
                "uid": _string("Specifies the target UID."),
            },
        },
        META + "Status": {
            "description": "Status is a return value for calls that don't return other objects.",
            "type": "object",
            "properties": {
                "apiVersion": _string(API_VERSION_DESCRIPTION),
                "code": _integer("Suggested HTTP return code for this status, 0 if not set.", "int32"),
                "details": _field(
                    META + "StatusDetails",
                    "Extended data associated with the reason.  Each reason may define its own extended details. "
                    "This field is optional and the data returned is not guaranteed to conform to any schema except "
                    "that defined by the reason type."),
                "kind": _string(KIND_DESCRIPTION),
                "message": _string("A human-readable description of the status of this operation."),
                "metadata": _field(META + "ListMeta", _LIST_METADATA_DESCRIPTION, {}),
                "reason": _string(
                    "A machine-readable description of why this operation is in the \"Failure\" status. If this "
                    "value is empty there is no information available. A Reason clarifies an HTTP status code but "
                    "does not override it."),
                "status": _string("Status of the operation. One of: \"Success\" or \"Failure\". More info: "
                                  f"{_API_CONVENTIONS}#spec-and-status"),
            },
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}],
        },
        META + "StatusCause": {
            "description": (
                "StatusCause provides more information about an api.Status failure, including cases when multiple "
                "errors are encountered."
            ),
            "type": "object",
            "properties": {
                "field": _string(
                    "The field of the resource that has caused this error, as named by its JSON serialization. May "
                    "include dot and postfix notation for nested attributes. Arrays are zero-indexed. Optional."),
                "message": _string("A human-readable description of the cause of the error.  This field may be "
                                   "presented as-is to a reader."),
                "reason": _string("A machine-readable description of the cause of the error. If this value is "
                                  "empty there is no information available."),
            },
        },
        META + "StatusDetails": {
            "description": (
                "StatusDetails is a set of additional properties that MAY be set by the server to provide "
                "additional information about a response. The Reason field of a Status object defines what "
                "attributes will be set."
            ),
            "type": "object",
            "properties": {
                "causes": {
                    "description": ("The Causes array includes more details associated with the StatusReason "
                                    "failure. Not all StatusReasons may provide detailed causes."),
                    "items": {"allOf": [_ref(META + "StatusCause")], "default": {}},
                    "type": "array",
                    "x-kubernetes-list-type": "atomic",
                },
                "group": _string("The group attribute of the resource associated with the status StatusReason."),
                "kind": _string("The kind attribute of the resource associated with the status StatusReason. On "
                                "some operations may differ from the requested resource Kind."),
                "name": _string("The name attribute of the resource associated with the status StatusReason (when "
                                "there is a single name which can be described)."),
                "retryAfterSeconds": _integer(
                    "If specified, the time in seconds before the operation should be retried.", "int32"),
                "uid": _string("UID of the resource. (when there is a single resource which can be described)."),
            },
        },
        META + "Time": {
            "description": (
                "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.  Wrappers "
                "are provided for many of the factory methods that the time package offers."
            ),
            "format": "date-time",
            "type": "string",
        },
        META + "WatchEvent": {
            "description": "Event represents a single event to a watched resource.",
            "type": "object",
            "required": ["type", "object"],
            "properties": {
                "object": _field(
                    RUNTIME + "RawExtension",
                    "Object is:\n * If Type is Added or Modified: the new state of the object.\n * If Type is "
                    "Deleted: the state of the object immediately before deletion.\n * If Type is Error: *Status is "
                    "recommended; other types may make sense\n   depending on context."),
                "type": {"default": "", "type": "string"},
            },
        },
        RUNTIME + "RawExtension": {
            "description": "RawExtension is used to hold extensions in external versions.",
            "type": "object",
        },
    }


# --------------------------------------------------------------------------------------------------------------
# Kind schemas: hoist nested object schemas into named components


def _is_struct(schema: Any) -> bool:
    """Whether a schema is an inline object with properties (what kube would publish as its own Go type)."""
    return (isinstance(schema, dict) and "$ref" not in schema and "allOf" not in schema
            and schema.get("type", "object") == "object" and bool(schema.get("properties")))


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _type_name(info: KindInfo, path: str, field_name: str, item: bool) -> str:
    """The Go-like type name of a nested struct: kube's where known, else `<Kind><Field>` (singular for items)."""
    known = _TYPE_NAMES.get((info.group, info.kind, path))
    if known is not None:
        return known
    word = _singular(field_name) if item else field_name
    return info.kind + word[:1].upper() + word[1:]


@frozen
class _Hoister:
    """Walks a kind's schema, moving inline structs into `components` and leaving `allOf` references behind."""

    info: KindInfo
    package: str
    components: dict[str, JSON]

    def struct(self, schema: JSON, path: str) -> JSON:
        """A copy of an object schema whose nested structs are references (the struct itself stays inline)."""
        out = {key: copy.deepcopy(value) for key, value in schema.items() if key != "properties"}
        out.pop("default", None)
        if "properties" in schema:
            out["properties"] = {name: self.property(sub, f"{path}.{name}" if path else name, name)
                                 for name, sub in schema["properties"].items()}
        if "type" not in out:
            out["type"] = "object"
        return out

    def property(self, schema: Any, path: str, name: str) -> Any:
        """One property: a struct becomes `allOf: [$ref]`; arrays and maps of structs get their items hoisted."""
        if _is_struct(schema):
            reference: JSON = {"allOf": [_ref(self.hoist(schema, path, name, item=False))]}
            if "description" in schema:
                reference["description"] = schema["description"]
            if "default" in schema:
                reference["default"] = copy.deepcopy(schema["default"])
            return reference
        if not isinstance(schema, dict):
            return copy.deepcopy(schema)
        out = copy.deepcopy(schema)
        for key in ("items", "additionalProperties"):
            sub = schema.get(key)
            if isinstance(sub, dict) and _is_struct(sub):
                out[key] = {"allOf": [_ref(self.hoist(sub, path, name, item=True))],
                            "default": copy.deepcopy(sub.get("default", {}))}
        return out

    def hoist(self, schema: JSON, path: str, name: str, item: bool) -> str:
        """Register a nested struct as a component and return its name (suffixed if a different one took it).

        `kubectl explain` prints the field's description and then the type's: a type description that only
        repeats the field's is replaced by kube's where known, and dropped otherwise.
        """
        base = f"{self.package}.{_type_name(self.info, path, name, item)}"
        component = self.struct(schema, path)
        known = _TYPE_DESCRIPTIONS.get((self.info.group, self.info.kind, path))
        if known is not None and not item:
            component["description"] = known
        elif not item:
            component.pop("description", None)
        candidate, counter = base, 1
        while candidate in self.components and self.components[candidate] != component:
            counter += 1
            candidate = f"{base}{counter}"
        self.components[candidate] = component
        return candidate


def _gvk(info: KindInfo, kind: str | None = None) -> JSON:
    return {"group": info.group, "kind": kind or info.kind, "version": info.version}


def kind_schemas(info: KindInfo) -> dict[str, JSON]:
    """The v3 components of one kind: the kind, its hoisted nested types, and `<Kind>List`."""
    name = schema_name(info.group, info.version, info.kind)
    package = name.rsplit(".", 1)[0]
    components: dict[str, JSON] = {}
    hoister = _Hoister(info, package, components)
    source = info.schema or {"type": "object", "properties": {}}
    if info.custom_resource:
        kind_schema = {key: copy.deepcopy(value) for key, value in source.items() if key != "default"}
        kind_schema.setdefault("type", "object")
    else:
        kind_schema = hoister.struct(source, "")
    kind_schema["description"] = source.get("description") or info.description or info.kind
    kind_schema["type"] = "object"
    kind_schema["x-kubernetes-group-version-kind"] = [_gvk(info)]
    list_schema: JSON = {
        "description": f"{info.list_kind} is a list of {info.kind} objects.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": _string(API_VERSION_DESCRIPTION),
            "items": {"description": f"Items is the list of {info.kind}", "type": "array",
                      "items": {"allOf": [_ref(name)], "default": {}}},
            "kind": _string(KIND_DESCRIPTION),
            "metadata": _field(META + "ListMeta", _LIST_METADATA_DESCRIPTION, {}),
        },
        "x-kubernetes-group-version-kind": [_gvk(info, info.list_kind)],
    }
    return {name: kind_schema, **components, schema_name(info.group, info.version, info.list_kind): list_schema}


# --------------------------------------------------------------------------------------------------------------
# Paths and operations (v3)


def _query(name: str, kind: str, description: str) -> JSON:
    return {"description": description, "in": "query", "name": name,
            "schema": {"type": kind, "uniqueItems": True}}


_QUERY: Final = {
    "allowWatchBookmarks": _query(
        "allowWatchBookmarks", "boolean",
        "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks "
        "may ignore this flag and bookmarks are sent at the server's discretion. If this is not a watch, this field "
        "is ignored."),
    "continue": _query(
        "continue", "string",
        "The continue option should be set when retrieving more results from the server. Since this value is "
        "server defined, clients may only use the continue value from a previous query result with identical query "
        "parameters (except for the value of continue).\n\nThis field is not supported when watch is true."),
    "dryRun": _query("dryRun", "string", _DRY_RUN_DESCRIPTION),
    "fieldManager": _query(
        "fieldManager", "string",
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must "
        "be less than or 128 characters long, and only contain printable characters, as defined by "
        "https://golang.org/pkg/unicode/#IsPrint."),
    "fieldSelector": _query("fieldSelector", "string", "A selector to restrict the list of returned objects by "
                            "their fields. Defaults to everything."),
    "fieldValidation": _query(
        "fieldValidation", "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing "
        "unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are "
        "silently dropped from the object, and will ignore all but the last duplicate field that the decoder "
        "encounters. - Warn: This will send a warning via the standard warning response header for each unknown "
        "field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This "
        "will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or "
        "if any duplicate fields are present."),
    "force": _query(
        "force", "boolean",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other "
        "people. Force flag must be unset for non-apply patch requests."),
    "gracePeriodSeconds": _query("gracePeriodSeconds", "integer", _GRACE_PERIOD_DESCRIPTION),
    "labelSelector": _query("labelSelector", "string", "A selector to restrict the list of returned objects by "
                            "their labels. Defaults to everything."),
    "limit": _query(
        "limit", "integer",
        "limit is a maximum number of responses to return for a list call. If more items exist, the server will set "
        "the `continue` field on the list metadata to a value that can be used with the same initial query to "
        "retrieve the next set of results. This field is not supported if watch is true."),
    "pretty": _query("pretty", "string", "If 'true', then the output is pretty printed. Defaults to 'false' unless "
                     "the user-agent indicates a browser or command-line HTTP tool (curl and wget)."),
    "propagationPolicy": _query("propagationPolicy", "string", _PROPAGATION_DESCRIPTION),
    "resourceVersion": _query(
        "resourceVersion", "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from. See "
        "https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults "
        "to unset"),
    "resourceVersionMatch": _query(
        "resourceVersionMatch", "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls. See "
        "https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults "
        "to unset"),
    "sendInitialEvents": _query(
        "sendInitialEvents", "boolean",
        "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin "
        "with synthetic events to produce the current state of objects in the collection, followed by a synthetic "
        "\"Bookmark\" event."),
    "timeoutSeconds": _query("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the "
                             "duration of the call, regardless of any activity or inactivity."),
    "watch": _query("watch", "boolean", "Watch for changes to the described resources and return them as a stream "
                    "of add, update, and remove notifications. Specify resourceVersion."),
}

LIST_PARAMETERS: Final = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
                          "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
WRITE_PARAMETERS: Final = ("dryRun", "fieldManager", "fieldValidation")
PATCH_PARAMETERS: Final = ("dryRun", "fieldManager", "fieldValidation", "force")
DELETE_PARAMETERS: Final = ("dryRun", "gracePeriodSeconds", "propagationPolicy")
DELETECOLLECTION_PARAMETERS: Final = ("continue", "dryRun", "fieldSelector", "gracePeriodSeconds", "labelSelector",
                                      "limit", "propagationPolicy", "resourceVersion", "resourceVersionMatch",
                                      "sendInitialEvents", "timeoutSeconds")

_RESPONSE_DESCRIPTIONS: Final = {"200": "OK", "201": "Created", "202": "Accepted"}


def _path_parameter(name: str, description: str) -> JSON:
    return {"description": description, "in": "path", "name": name, "required": True,
            "schema": {"type": "string", "uniqueItems": True}}


def _responses(schema: str, codes: Sequence[str], media: Sequence[str] = ("application/json",)) -> JSON:
    out: JSON = {code: {"content": {m: {"schema": _ref(schema)} for m in media},
                        "description": _RESPONSE_DESCRIPTIONS[code]} for code in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _operation(info: KindInfo, action: str, op_id: str, description: str, parameters: Sequence[str],
               responses: JSON, body: JSON | None = None) -> JSON:
    operation: JSON = {"description": description, "operationId": op_id}
    if parameters:
        operation["parameters"] = [copy.deepcopy(_QUERY[name]) for name in sorted(parameters)]
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = responses
    operation["tags"] = [operation_tag(info.group, info.version)]
    operation["x-kubernetes-action"] = action
    operation["x-kubernetes-group-version-kind"] = _gvk(info)
    return operation


def _body(schema: str, media: Sequence[str] = ("*/*",), required: bool = True) -> JSON:
    body: JSON = {"content": {m: {"schema": _ref(schema)} for m in media}}
    if required:
        body["required"] = True
    return body


def kind_paths(info: KindInfo) -> dict[str, JSON]:
    """The v3 path items kube would publish for a kind, with operations for the verbs it has."""
    verbs = set(info.verbs)
    kind_ref = schema_name(info.group, info.version, info.kind)
    list_ref = schema_name(info.group, info.version, info.list_kind)
    status_ref = META + "Status"
    prefix = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    scope = "Namespaced" if info.namespaced else ""
    collection = (f"{prefix}/namespaces/{{namespace}}/{info.plural}" if info.namespaced
                  else f"{prefix}/{info.plural}")
    item = collection + "/{name}"
    pretty = copy.deepcopy(_QUERY["pretty"])
    scoped = ([_path_parameter("namespace", "object name and auth scope, such as for teams and projects")]
              if info.namespaced else [])
    name = _path_parameter("name", f"name of the {info.kind}")
    an = _article(info.kind)
    paths: dict[str, JSON] = {}

    if info.namespaced and "list" in verbs:
        paths[f"{prefix}/{info.plural}"] = {
            "get": _operation(info, "list", operation_id("list", info, f"{info.kind}ForAllNamespaces"),
                              f"list or watch objects of kind {info.kind}", LIST_PARAMETERS,
                              _responses(list_ref, ["200"], ("application/json", "application/json;stream=watch"))),
            "parameters": [copy.deepcopy(pretty)],
        }

    collection_item: JSON = {}
    if "deletecollection" in verbs:
        collection_item["delete"] = _operation(
            info, "deletecollection", operation_id("delete", info, f"Collection{scope}{info.kind}"),
            f"delete collection of {info.kind}", DELETECOLLECTION_PARAMETERS, _responses(status_ref, ["200"]),
            _body(META + "DeleteOptions", required=False))
    if "list" in verbs:
        collection_item["get"] = _operation(
            info, "list", operation_id("list", info, f"{scope}{info.kind}"),
            f"list or watch objects of kind {info.kind}", LIST_PARAMETERS,
            _responses(list_ref, ["200"], ("application/json", "application/json;stream=watch")))
    if "create" in verbs:
        collection_item["post"] = _operation(
            info, "post", operation_id("create", info, f"{scope}{info.kind}"), f"create {an} {info.kind}",
            WRITE_PARAMETERS, _responses(kind_ref, ["200", "201", "202"]), _body(kind_ref))
    if collection_item:
        collection_item["parameters"] = scoped + [copy.deepcopy(pretty)]
        paths[collection] = dict(sorted(collection_item.items()))

    def item_operations(suffix: str, what: str) -> JSON:
        operations: JSON = {}
        if "get" in verbs:
            operations["get"] = _operation(info, "get", operation_id("read", info, f"{scope}{info.kind}{suffix}"),
                                           f"read {what}the specified {info.kind}", (),
                                           _responses(kind_ref, ["200"]))
        if "patch" in verbs:
            operations["patch"] = _operation(
                info, "patch", operation_id("patch", info, f"{scope}{info.kind}{suffix}"),
                f"partially update {what}the specified {info.kind}", PATCH_PARAMETERS,
                _responses(kind_ref, ["200", "201"]), _body(META + "Patch", patch_content_types(info)))
        if "update" in verbs:
            operations["put"] = _operation(
                info, "put", operation_id("replace", info, f"{scope}{info.kind}{suffix}"),
                f"replace {what}the specified {info.kind}", WRITE_PARAMETERS,
                _responses(kind_ref, ["200", "201"]), _body(kind_ref))
        return operations

    item_item = item_operations("", "")
    if "delete" in verbs:
        item_item["delete"] = _operation(
            info, "delete", operation_id("delete", info, f"{scope}{info.kind}"), f"delete {an} {info.kind}",
            DELETE_PARAMETERS, _responses(status_ref, ["200", "202"]),
            _body(META + "DeleteOptions", required=False))
    if item_item:
        item_item["parameters"] = [copy.deepcopy(name)] + copy.deepcopy(scoped) + [copy.deepcopy(pretty)]
        paths[item] = dict(sorted(item_item.items()))

    if info.has_status:
        status_item = item_operations("Status", "status of ")
        if status_item:
            status_item["parameters"] = [copy.deepcopy(name)] + copy.deepcopy(scoped) + [copy.deepcopy(pretty)]
            paths[item + "/status"] = dict(sorted(status_item.items()))
    return paths


# --------------------------------------------------------------------------------------------------------------
# Documents


def group_version_document_v3(kinds: Sequence[KindInfo], *, title: str = "Kubernetes",
                              version: str = "unversioned") -> JSON:
    """The OpenAPI 3.0 document of one group-version (`/openapi/v3/apis/<g>/<v>`); all kinds share group and version."""
    if not kinds:
        raise ValueError("a group-version document needs at least one kind")
    group_versions = {(k.group, k.version) for k in kinds}
    if len(group_versions) != 1:
        raise ValueError(f"kinds of several group-versions: {sorted(group_versions)}")
    schemas: dict[str, JSON] = meta_schemas()
    paths: dict[str, JSON] = {}
    for info in kinds:
        schemas.update(kind_schemas(info))
        paths.update(kind_paths(info))
    return {
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"BearerToken": {"description": "Bearer Token authentication", "in": "header",
                                                "name": "authorization", "type": "apiKey"}},
        },
        "info": {"title": title, "version": version},
        "openapi": "3.0.0",
        "paths": dict(sorted(paths.items())),
    }


def kinds_by_group_version(kinds: Iterable[KindInfo]) -> dict[str, list[KindInfo]]:
    """Kinds grouped under their `/openapi/v3` index key (`apis/<g>/<v>`), keys sorted, kinds in the given order."""
    grouped: dict[str, list[KindInfo]] = {}
    for info in kinds:
        grouped.setdefault(group_version_key(info.group, info.version), []).append(info)
    return dict(sorted(grouped.items()))


def v3_documents(kinds: Iterable[KindInfo]) -> dict[str, JSON]:
    """Every group-version document of the given kinds, keyed like the `/openapi/v3` index."""
    return {key: group_version_document_v3(group) for key, group in kinds_by_group_version(kinds).items()}


def canonical_json(document: Any) -> bytes:
    """The bytes a document is served and hashed as: compact JSON with sorted keys, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def document_hash(document: Any) -> str:
    """Uppercase hex SHA-512 of the canonical JSON: the `?hash=` of the index and the document's ETag."""
    return hashlib.sha512(canonical_json(document)).hexdigest().upper()


def openapi_v3_index(documents: Mapping[str, JSON]) -> JSON:
    """The `/openapi/v3` root: every group-version key (no leading slash) with its hash-pinned URL."""
    return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={document_hash(documents[key])}"}
                      for key in sorted(documents)}}


# --------------------------------------------------------------------------------------------------------------
# Swagger 2.0


#: OpenAPI 3 schema keywords that Swagger 2.0 (and gnostic's Schema message) cannot express.
_V3_ONLY_KEYWORDS: Final = frozenset({"nullable", "oneOf", "anyOf", "not", "writeOnly", "deprecated"})


def schema_v2(schema: Any) -> Any:
    """A v3 schema in Swagger 2.0 form: `allOf: [$ref]` becomes a plain `$ref` to `#/definitions/`."""
    if isinstance(schema, list):
        return [schema_v2(item) for item in schema]
    if not isinstance(schema, dict):
        return copy.deepcopy(schema)
    out: JSON = {}
    all_of = schema.get("allOf")
    single_ref = isinstance(all_of, list) and len(all_of) == 1 and set(all_of[0]) == {"$ref"}
    for key, value in schema.items():
        if key in _V3_ONLY_KEYWORDS or (key == "allOf" and single_ref):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = V2_REF_PREFIX + value.removeprefix(V3_REF_PREFIX)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: schema_v2(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "allOf"):
            out[key] = schema_v2(value)
        else:
            out[key] = copy.deepcopy(value)
    if single_ref:
        assert isinstance(all_of, list)
        out = {"$ref": V2_REF_PREFIX + all_of[0]["$ref"].removeprefix(V3_REF_PREFIX), **out}
    return out


def _parameter_v2(parameter: JSON) -> JSON:
    out = {key: copy.deepcopy(value) for key, value in parameter.items() if key != "schema"}
    out.update(copy.deepcopy(parameter.get("schema", {})))
    return out


def operation_v2(operation: JSON) -> JSON:
    """A v3 operation in Swagger 2.0 form: `consumes`/`produces`, a `body` parameter, flat parameter types."""
    out: JSON = {}
    body = operation.get("requestBody")
    out["consumes"] = list(body["content"]) if body else ["*/*"]
    out["description"] = operation.get("description", "")
    out["operationId"] = operation["operationId"]
    parameters = []
    if body:
        body_schema = next(iter(body["content"].values()))["schema"]
        body_parameter: JSON = {"in": "body", "name": "body", "schema": schema_v2(body_schema)}
        if body.get("required"):
            body_parameter["required"] = True
        parameters.append(body_parameter)
    parameters.extend(_parameter_v2(p) for p in operation.get("parameters", ()))
    if parameters:
        out["parameters"] = parameters
    produces: list[str] = []
    responses: JSON = {}
    for code, response in operation.get("responses", {}).items():
        converted: JSON = {"description": response.get("description", "")}
        content = response.get("content", {})
        for media in content:
            if media not in produces:
                produces.append(media)
        if content:
            converted["schema"] = schema_v2(next(iter(content.values()))["schema"])
        responses[code] = converted
    out["produces"] = produces or ["application/json"]
    out["responses"] = responses
    out["schemes"] = ["https"]
    for key, value in operation.items():
        if key == "tags" or key.startswith("x-"):
            out[key] = copy.deepcopy(value)
    return dict(sorted(out.items()))


_OPERATION_KEYS: Final = ("get", "put", "post", "delete", "options", "head", "patch")


def path_item_v2(item: JSON) -> JSON:
    """A v3 path item in Swagger 2.0 form."""
    out: JSON = {}
    for key, value in item.items():
        if key in _OPERATION_KEYS:
            out[key] = operation_v2(value)
        elif key == "parameters":
            out[key] = [_parameter_v2(p) for p in value]
    return out


def swagger_v2(kinds_by_gv: Mapping[str, Sequence[KindInfo]], *, title: str = "Kubernetes",
               version: str = "unversioned") -> JSON:
    """The Swagger 2.0 document of all group-versions (`/openapi/v2`); `kinds_by_gv` as `kinds_by_group_version`."""
    paths: dict[str, JSON] = {}
    definitions: dict[str, JSON] = {}
    for key in sorted(kinds_by_gv):
        kinds = kinds_by_gv[key]
        if not kinds:
            continue
        document = group_version_document_v3(kinds)
        for path, item in document["paths"].items():
            paths.setdefault(path, path_item_v2(item))
        for name, schema in document["components"]["schemas"].items():
            definitions.setdefault(name, schema_v2(schema))
    return {
        "definitions": dict(sorted(definitions.items())),
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "swagger": "2.0",
    }


# --------------------------------------------------------------------------------------------------------------
# gnostic openapi_v2.Document protobuf (field numbers from google/gnostic-models openapiv2/OpenAPIv2.proto)


@frozen
class _Field:
    """One protobuf field of a message: its number, its kind and, for messages, the message type."""

    number: int
    kind: str  # string, bool, int64, double, strings, any, anys, message, messages, types, items, addprops
    message: str = ""


_DOUBLES: Final = frozenset({"maximum", "minimum", "multipleOf"})
_INTS: Final = frozenset({"maxLength", "minLength", "maxItems", "minItems", "maxProperties", "minProperties"})
_BOOLS: Final = frozenset({"exclusiveMaximum", "exclusiveMinimum", "uniqueItems", "allowEmptyValue", "readOnly",
                           "deprecated", "attribute", "wrapped"})


def _numbered(keys: Sequence[str], **special: _Field | str) -> dict[str, _Field]:
    """Fields numbered 1..n in the order given; scalar kinds follow from the key, `special` overrides them."""
    fields: dict[str, _Field] = {}
    for number, key in enumerate(keys, start=1):
        override = special.get(key.replace("$", "_"))
        if isinstance(override, str):
            fields[key] = _Field(number, "message", override)
        elif override is not None:
            fields[key] = _Field(number, override.kind, override.message)
        elif key in ("default", "example"):
            fields[key] = _Field(number, "any")
        elif key == "enum":
            fields[key] = _Field(number, "anys")
        else:
            fields[key] = _Field(number, "double" if key in _DOUBLES else "int64" if key in _INTS
                                 else "bool" if key in _BOOLS else "string")
    return fields


_VALIDATIONS: Final = ("maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength",
                       "pattern", "maxItems", "minItems", "uniqueItems", "enum", "multipleOf")
_BOOL: Final = _Field(0, "bool")
_STRINGS: Final = _Field(0, "strings")
_SKIP: Final = _Field(0, "skip")

#: message name → (fields by JSON key, field number of repeated NamedAny vendor extensions or 0).
_MESSAGES: Final[dict[str, tuple[dict[str, _Field], int]]] = {
    "Document": (_numbered(
        ("swagger", "info", "host", "basePath", "schemes", "consumes", "produces", "paths", "definitions",
         "parameters", "responses", "security", "securityDefinitions", "tags", "externalDocs"),
        info="Info", schemes=_STRINGS, consumes=_STRINGS, produces=_STRINGS, paths="Paths",
        definitions="Definitions", parameters="ParameterDefinitions", responses="ResponseDefinitions",
        security=_SKIP, securityDefinitions=_SKIP, tags=_Field(0, "messages", "Tag"), externalDocs="ExternalDocs"),
        16),
    "Info": (_numbered(("title", "version", "description", "termsOfService", "contact", "license"),
                       contact="Contact", license="License"), 7),
    "Contact": (_numbered(("name", "url", "email")), 4),
    "License": (_numbered(("name", "url")), 3),
    "ExternalDocs": (_numbered(("description", "url")), 3),
    "Tag": (_numbered(("name", "description", "externalDocs"), externalDocs="ExternalDocs"), 4),
    "PathItem": (_numbered(("$ref", "get", "put", "post", "delete", "options", "head", "patch", "parameters"),
                           get="Operation", put="Operation", post="Operation", delete="Operation",
                           options="Operation", head="Operation", patch="Operation",
                           parameters=_Field(0, "messages", "ParametersItem")), 10),
    "Operation": (_numbered(
        ("tags", "summary", "description", "externalDocs", "operationId", "produces", "consumes", "parameters",
         "responses", "schemes", "deprecated", "security"),
        tags=_STRINGS, externalDocs="ExternalDocs", produces=_STRINGS, consumes=_STRINGS,
        parameters=_Field(0, "messages", "ParametersItem"), responses="Responses", schemes=_STRINGS,
        security=_SKIP), 13),
    "BodyParameter": (_numbered(("description", "name", "in", "required", "schema"), required=_BOOL,
                                schema="Schema"), 6),
    "QueryParameterSubSchema": (_numbered(
        ("required", "in", "description", "name", "allowEmptyValue", "type", "format", "items", "collectionFormat",
         "default", *_VALIDATIONS), required=_BOOL, items="PrimitivesItems"), 23),
    "HeaderParameterSubSchema": (_numbered(
        ("required", "in", "description", "name", "type", "format", "items", "collectionFormat", "default",
         *_VALIDATIONS), required=_BOOL, items="PrimitivesItems"), 22),
    "PrimitivesItems": (_numbered(("type", "format", "items", "collectionFormat", "default", *_VALIDATIONS),
                                  items="PrimitivesItems"), 18),
    "JsonReference": (_numbered(("$ref", "description")), 0),
    "Response": (_numbered(("description", "schema", "headers", "examples"), schema="SchemaItem",
                           headers=_SKIP, examples=_SKIP), 5),
    "FileSchema": (_numbered(("format", "title", "description", "default", "required", "type", "readOnly",
                              "externalDocs", "example"), required=_STRINGS, externalDocs="ExternalDocs"), 10),
    "Schema": (_numbered(
        ("$ref", "format", "title", "description", "default", "multipleOf", "maximum", "exclusiveMaximum",
         "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
         "maxProperties", "minProperties", "required", "enum", "additionalProperties", "type", "items", "allOf",
         "properties", "discriminator", "readOnly", "xml", "externalDocs", "example"),
        required=_STRINGS, additionalProperties=_Field(0, "addprops"), type=_Field(0, "types"),
        items=_Field(0, "items"), allOf=_Field(0, "messages", "Schema"), properties="Properties", xml="Xml",
        externalDocs="ExternalDocs"), 31),
    "Xml": (_numbered(("name", "namespace", "prefix", "attribute", "wrapped")), 6),
}
_MESSAGES["FormDataParameterSubSchema"] = _MESSAGES["QueryParameterSubSchema"]
_MESSAGES["PathParameterSubSchema"] = _MESSAGES["HeaderParameterSubSchema"]

#: map messages (a JSON object): name → (entry field number, value message, vendor-extension field or 0).
_MAPS: Final = {
    "Paths": (2, "PathItem", 1),
    "Responses": (1, "ResponseValue", 2),
    "Definitions": (1, "Schema", 0),
    "Properties": (1, "Schema", 0),
    "ParameterDefinitions": (1, "Parameter", 0),
    "ResponseDefinitions": (1, "Response", 0),
}

_NON_BODY: Final = {"header": (1, "HeaderParameterSubSchema"), "formData": (2, "FormDataParameterSubSchema"),
                    "query": (3, "QueryParameterSubSchema"), "path": (4, "PathParameterSubSchema")}


def _choose(message: str, value: JSON) -> tuple[int, str]:
    """The alternative a oneof wrapper message takes for a JSON value."""
    if message in ("ParametersItem", "ResponseValue"):
        return (2, "JsonReference") if "$ref" in value else (1, "Parameter" if message == "ParametersItem"
                                                              else "Response")
    if message == "Parameter":
        return (1, "BodyParameter") if value.get("in") == "body" else (2, "NonBodyParameter")
    if message == "NonBodyParameter":
        return _NON_BODY.get(value.get("in", "query"), _NON_BODY["query"])
    return (2, "FileSchema") if value.get("type") == "file" else (1, "Schema")  # SchemaItem


#: oneof wrapper messages → their alternatives by field number.
_ONEOFS: Final[dict[str, dict[int, str]]] = {
    "ParametersItem": {1: "Parameter", 2: "JsonReference"},
    "Parameter": {1: "BodyParameter", 2: "NonBodyParameter"},
    "NonBodyParameter": {number: name for number, name in _NON_BODY.values()},
    "ResponseValue": {1: "Response", 2: "JsonReference"},
    "SchemaItem": {1: "Schema", 2: "FileSchema"},
}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _yaml(value: Any) -> str:
    """YAML text of a value, as gnostic stores it in Any.yaml."""
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True, width=1 << 30)
    return text.removesuffix("...\n")


def _any(value: Any) -> bytes:
    return _delimited(2, _yaml(value).encode("utf-8"))


def _named_any(name: str, value: Any) -> bytes:
    return _delimited(1, name.encode("utf-8")) + _delimited(2, _any(value))


def _encode_field(field: _Field, value: Any) -> bytes:
    """The bytes of one field (all occurrences, for repeated ones); proto3 defaults are left out."""
    number, kind = field.number, field.kind
    if kind == "string":
        return _delimited(number, str(value).encode("utf-8")) if value not in (None, "") else b""
    if kind == "bool":
        return _tag(number, 0) + b"\x01" if value else b""
    if kind == "int64":
        return _tag(number, 0) + _varint(int(value)) if value else b""
    if kind == "double":
        return _tag(number, 1) + struct.pack("<d", float(value)) if value else b""
    if kind == "strings":
        values = [value] if isinstance(value, str) else value
        return b"".join(_delimited(number, str(v).encode("utf-8")) for v in values)
    if kind == "any":
        return _delimited(number, _any(value))
    if kind == "anys":
        return b"".join(_delimited(number, _any(v)) for v in value)
    if kind == "message":
        return _delimited(number, _encode_message(field.message, value))
    if kind == "messages":
        return b"".join(_delimited(number, _encode_message(field.message, v)) for v in value)
    if kind == "types":  # TypeItem{repeated string value = 1}
        values = [value] if isinstance(value, str) else value
        return _delimited(number, b"".join(_delimited(1, str(v).encode("utf-8")) for v in values))
    if kind == "items":  # ItemsItem{repeated Schema schema = 1}
        values = value if isinstance(value, list) else [value]
        return _delimited(number, b"".join(_delimited(1, _encode_message("Schema", v)) for v in values))
    if kind == "addprops":  # AdditionalPropertiesItem{oneof Schema schema = 1; bool boolean = 2}
        if isinstance(value, bool):
            return _delimited(number, _tag(2, 0) + (b"\x01" if value else b"\x00"))
        return _delimited(number, _delimited(1, _encode_message("Schema", value)))
    return b""  # skip: not carried by this encoder


def _encode_message(message: str, value: JSON) -> bytes:
    """Encode a JSON object as the named gnostic message."""
    if message in _ONEOFS:
        number, inner = _choose(message, value)
        return _delimited(number, _encode_message(inner, value))
    if message in _MAPS:
        entry, value_message, extension = _MAPS[message]
        extensions = b"".join(_delimited(extension, _named_any(key, sub)) for key, sub in value.items()
                              if extension and key.startswith("x-"))
        entries = b"".join(
            _delimited(entry, _delimited(1, key.encode("utf-8")) + _delimited(2, _encode_message(value_message, sub)))
            for key, sub in value.items() if not (extension and key.startswith("x-")))
        return extensions + entries if extension < entry else entries + extensions
    fields, extension = _MESSAGES[message]
    parts: list[tuple[int, bytes]] = []
    for key, sub in value.items():
        if extension and key.startswith("x-"):
            parts.append((extension, _delimited(extension, _named_any(key, sub))))
        elif key in fields and sub is not None:
            parts.append((fields[key].number, _encode_field(fields[key], sub)))
    parts.sort(key=lambda part: part[0])
    return b"".join(data for _, data in parts)


def encode_openapi_v2_protobuf(doc: JSON) -> bytes:
    """The Swagger 2.0 dict as a gnostic `openapi_v2.Document`, what client-go's proto.Unmarshal reads.

    Vendor extensions become NamedAny with the value's YAML text; keys the proto has no field for (and
    security requirements and response headers) are left out.
    """
    return _encode_message("Document", doc)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if offset >= len(data):
            raise ValueError("truncated varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7


def parse_wire(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split protobuf bytes into (field number, wire type, value) triples; fixed64 values stay as 8 bytes."""
    fields: list[tuple[int, int, int | bytes]] = []
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, offset = _read_varint(data, offset)
        elif wire_type == 1:
            value, offset = data[offset:offset + 8], offset + 8
        elif wire_type == 2:
            length, offset = _read_varint(data, offset)
            value, offset = data[offset:offset + length], offset + length
        elif wire_type == 5:
            value, offset = data[offset:offset + 4], offset + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if offset > len(data):
            raise ValueError("truncated field")
        fields.append((number, wire_type, value))
    return fields


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError("expected a length-delimited field")
    return value


def _int(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise ValueError("expected a varint field")
    return value


def _decode_any(data: bytes) -> Any:
    text = next((_bytes(v).decode("utf-8") for n, _, v in parse_wire(data) if n == 2), "")
    return yaml.safe_load(text) if text else None


def _decode_named(data: bytes, decode_value: Callable[[bytes], Any]) -> tuple[str, Any]:
    name, value = "", None
    for number, _, raw in parse_wire(data):
        if number == 1:
            name = _bytes(raw).decode("utf-8")
        elif number == 2:
            value = decode_value(_bytes(raw))
    return name, value


def _decode_message(message: str, data: bytes) -> JSON:
    """Decode the named gnostic message back into its JSON object form."""
    wire = parse_wire(data)
    if message in _ONEOFS:
        for number, _, raw in wire:
            if number in _ONEOFS[message]:
                return _decode_message(_ONEOFS[message][number], _bytes(raw))
        return {}
    if message in _MAPS:
        entry, value_message, extension = _MAPS[message]
        out: JSON = {}
        for number, _, raw in wire:
            if number == extension:
                name, value = _decode_named(_bytes(raw), _decode_any)
                out[name] = value
            elif number == entry:
                name, value = _decode_named(_bytes(raw), lambda b: _decode_message(value_message, b))
                out[name] = value
        return out
    fields, extension = _MESSAGES[message]
    by_number = {field.number: (key, field) for key, field in fields.items()}
    out = {}
    for number, _, raw in wire:
        if number == extension:
            name, value = _decode_named(_bytes(raw), _decode_any)
            out[name] = value
            continue
        if number not in by_number:
            continue
        key, field = by_number[number]
        kind = field.kind
        if kind == "string":
            out[key] = _bytes(raw).decode("utf-8")
        elif kind == "bool":
            out[key] = bool(_int(raw))
        elif kind == "int64":
            value = _int(raw)
            out[key] = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == "double":
            out[key] = struct.unpack("<d", _bytes(raw))[0]
        elif kind == "strings":
            out.setdefault(key, []).append(_bytes(raw).decode("utf-8"))
        elif kind == "any":
            out[key] = _decode_any(_bytes(raw))
        elif kind == "anys":
            out.setdefault(key, []).append(_decode_any(_bytes(raw)))
        elif kind == "message":
            out[key] = _decode_message(field.message, _bytes(raw))
        elif kind == "messages":
            out.setdefault(key, []).append(_decode_message(field.message, _bytes(raw)))
        elif kind == "types":
            values = [_bytes(v).decode("utf-8") for n, _, v in parse_wire(_bytes(raw)) if n == 1]
            out[key] = values[0] if len(values) == 1 else values
        elif kind == "items":
            schemas = [_decode_message("Schema", _bytes(v)) for n, _, v in parse_wire(_bytes(raw)) if n == 1]
            out[key] = schemas[0] if len(schemas) == 1 else schemas
        elif kind == "addprops":
            for n, _, v in parse_wire(_bytes(raw)):
                out[key] = bool(_int(v)) if n == 2 else _decode_message("Schema", _bytes(v))
    return out


def decode_openapi_v2_protobuf(data: bytes) -> JSON:
    """Decode a gnostic `openapi_v2.Document` back into the Swagger dict (the subset the encoder carries)."""
    return _decode_message("Document", data)
