# -*- test-case-name: tests.test_reviews -*-
"""kube's Go types of the self-review kinds, and their three wire forms: JSON, protobuf and Go's %#v.

A `GoType` describes a struct (and its fields' types) with the names Go prints, the JSON names and
the protobuf field numbers of k8s.io/api's generated.proto.  From it:

- `decode` checks a JSON body as encoding/json would (its type errors name the Go struct field) and
  re-encodes it as kube does: fields in the Go order, `omitempty` zero values left out;
- `decode_protobuf` / `encode_protobuf` read and write the protobuf messages (kubectl 1.32 and later
  send the reviews as `application/vnd.kubernetes.protobuf`), inside kube's `k8s\\0` + runtime.Unknown
  envelope (`unwrap` / `wrap`), as gogo-protobuf marshals them (every non-pointer field written);
- `openapi_schema` gives the kinds' OpenAPI schemas, which also drive unknown-field pruning;
- `go_object_meta` prints an ObjectMeta as kube's "metadata: must be empty" shows it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from ..apimachinery.gotypes import json_kind
from ..apimachinery.strategy import type_meta_properties


@frozen
class GoType:
    """A Go type as encoding/json and gogo-protobuf see it.

    kind is `string`, `bool`, `int64`, `time` (metav1.Time), `struct`, `slice`, `map` or `raw` (metav1.FieldsV1,
    any JSON); name is how Go's errors print it.  A `pointer` is nil (JSON null, no protobuf field) unless given;
    a `wrapped` slice is its own protobuf message (ExtraValue: `repeated string items = 1`).
    """

    kind: str
    name: str
    fields: tuple[GoField, ...] = ()
    elem: GoType | None = None
    pointer: bool = False
    wrapped: bool = False
    description: str = ""


@frozen
class GoField:
    """A struct field: JSON name, type, protobuf number, `omitempty`, OpenAPI description and requiredness."""

    json: str
    type: GoType
    description: str = ""
    number: int = 0
    omitempty: bool = True
    #: Published as required in the OpenAPI schema (kube's fields without `+optional`).
    required: bool = False
    #: The Go field name, when it is not the JSON name capitalised (gogo's errors print it).
    go: str = ""

    @property
    def go_name(self) -> str:
        return self.go or self.json[:1].upper() + self.json[1:]


STRING = GoType("string", "string")
BOOL = GoType("bool", "bool")
BOOL_POINTER = GoType("bool", "bool", pointer=True)
INT64 = GoType("int64", "int64")
INT64_POINTER = GoType("int64", "int64", pointer=True)
STRINGS = GoType("slice", "[]string", elem=STRING)
STRING_MAP = GoType("map", "map[string]string", elem=STRING)
TIME = GoType("time", "v1.Time")
TIME_POINTER = GoType("time", "v1.Time", pointer=True)
RAW = GoType("raw", "v1.FieldsV1", pointer=True)

OWNER_REFERENCE = GoType("struct", "v1.OwnerReference", (
    GoField("apiVersion", STRING, number=5, omitempty=False, go="APIVersion"),
    GoField("kind", STRING, number=1, omitempty=False), GoField("name", STRING, number=3, omitempty=False),
    GoField("uid", STRING, number=4, omitempty=False, go="UID"),
    GoField("controller", BOOL_POINTER, number=6), GoField("blockOwnerDeletion", BOOL_POINTER, number=7),
))
MANAGED_FIELDS_ENTRY = GoType("struct", "v1.ManagedFieldsEntry", (
    GoField("manager", STRING, number=1), GoField("operation", STRING, number=2),
    GoField("apiVersion", STRING, number=3, go="APIVersion"), GoField("time", TIME_POINTER, number=4),
    GoField("fieldsType", STRING, number=6), GoField("fieldsV1", RAW, number=7, go="FieldsV1"),
    GoField("subresource", STRING, number=8),
))
OBJECT_META = GoType("struct", "v1.ObjectMeta", (
    GoField("name", STRING, number=1), GoField("generateName", STRING, number=2),
    GoField("namespace", STRING, number=3), GoField("selfLink", STRING, number=4),
    GoField("uid", STRING, number=5, go="UID"), GoField("resourceVersion", STRING, number=6),
    # Go writes a zero creationTimestamp as null up to kube 1.33; here it is left out, as kube 1.34 does (#130989):
    # the published ObjectMeta schema says a string, and clients read both the same.
    GoField("generation", INT64, number=7), GoField("creationTimestamp", TIME, number=8),
    GoField("deletionTimestamp", TIME_POINTER, number=9),
    GoField("deletionGracePeriodSeconds", INT64_POINTER, number=10),
    GoField("labels", STRING_MAP, number=11), GoField("annotations", STRING_MAP, number=12),
    GoField("ownerReferences", GoType("slice", "[]v1.OwnerReference", elem=OWNER_REFERENCE), number=13),
    GoField("finalizers", STRINGS, number=14),
    GoField("managedFields", GoType("slice", "[]v1.ManagedFieldsEntry", elem=MANAGED_FIELDS_ENTRY), number=17),
))

RESOURCE_ATTRIBUTES = GoType("struct", "v1.ResourceAttributes", (
    GoField("namespace", STRING, "namespace is the namespace of the action being requested. \"\" (empty) means all "
                                 "namespaces for namespaced resources and is meaningless for cluster-scoped ones.",
            number=1),
    GoField("verb", STRING, "verb is a kubernetes resource API verb, like: get, list, watch, create, update, "
                            "delete, proxy. \"*\" means all.", number=2),
    GoField("group", STRING, "group is the API Group of the Resource. \"*\" means all.", number=3),
    GoField("version", STRING, "version is the API Version of the Resource. \"*\" means all.", number=4),
    GoField("resource", STRING, "resource is one of the existing resource types. \"*\" means all.", number=5),
    GoField("subresource", STRING, "subresource is one of the existing resource types. \"\" means none.", number=6),
    GoField("name", STRING, "name is the name of the resource being requested for a \"get\" or deleted for a "
                            "\"delete\". \"\" (empty) means all.", number=7),
), pointer=True, description="ResourceAttributes includes the authorization attributes available for resource "
                             "requests to the Authorizer interface")
NON_RESOURCE_ATTRIBUTES = GoType("struct", "v1.NonResourceAttributes", (
    GoField("path", STRING, "path is the URL path of the request", number=1),
    GoField("verb", STRING, "verb is the standard HTTP verb", number=2),
), pointer=True, description="NonResourceAttributes includes the authorization attributes available for "
                             "non-resource requests to the Authorizer interface")
ACCESS_REVIEW_STATUS = GoType("struct", "v1.SubjectAccessReviewStatus", (
    GoField("allowed", BOOL, "allowed is required. True if the action would be allowed, false otherwise.",
            number=1, omitempty=False, required=True),
    GoField("denied", BOOL, "denied is optional. True if the action would be denied, otherwise false. If both "
                            "allowed is false and denied is false, then the authorizer has no opinion on whether "
                            "to authorize the action. Denied may not be true if Allowed is true.", number=4),
    GoField("reason", STRING, "reason is optional.  It indicates why a request was allowed or denied.", number=2),
    GoField("evaluationError", STRING, "evaluationError is an indication that some error occurred during the "
                                       "authorization check.", number=3),
), description="SubjectAccessReviewStatus")
RESOURCE_RULE = GoType("struct", "v1.ResourceRule", (
    GoField("verbs", STRINGS, "verb is a list of kubernetes resource API verbs, like: get, list, watch, create, "
                              "update, delete, proxy.  \"*\" means all.", number=1, omitempty=False, required=True),
    GoField("apiGroups", STRINGS, "apiGroups is the name of the APIGroup that contains the resources.  \"*\" "
                                  "means all.", number=2, go="APIGroups"),
    GoField("resources", STRINGS, "resources is a list of resources this rule applies to.  \"*\" means all in the "
                                  "specified apiGroups.  \"*/foo\" represents the subresource 'foo' for all "
                                  "resources in the specified apiGroups.", number=3),
    GoField("resourceNames", STRINGS, "resourceNames is an optional white list of names that the rule applies to.  "
                                      "An empty set means that everything is allowed.  \"*\" means all.", number=4),
), description="ResourceRule is the list of actions the subject is allowed to perform on resources.")
NON_RESOURCE_RULE = GoType("struct", "v1.NonResourceRule", (
    GoField("verbs", STRINGS, "verb is a list of kubernetes non-resource API verbs, like: get, post, put, delete, "
                              "patch, head, options.  \"*\" means all.", number=1, omitempty=False, required=True),
    GoField("nonResourceURLs", STRINGS, "nonResourceURLs is a set of partial urls that a user should have access "
                                        "to.  *s are allowed, but only as the full, final step in the path.  \"*\" "
                                        "means all.", number=2, go="NonResourceURLs"),
), description="NonResourceRule holds information that describes a rule for the non-resource")
RULES_REVIEW_STATUS = GoType("struct", "v1.SubjectRulesReviewStatus", (
    GoField("resourceRules", GoType("slice", "[]v1.ResourceRule", elem=RESOURCE_RULE),
            "resourceRules is the list of actions the subject is allowed to perform on resources. The list "
            "ordering isn't significant, may contain duplicates, and possibly be incomplete.",
            number=1, omitempty=False, required=True),
    GoField("nonResourceRules", GoType("slice", "[]v1.NonResourceRule", elem=NON_RESOURCE_RULE),
            "nonResourceRules is the list of actions the subject is allowed to perform on non-resources. The list "
            "ordering isn't significant, may contain duplicates, and possibly be incomplete.",
            number=2, omitempty=False, required=True),
    GoField("incomplete", BOOL, "incomplete is true when the rules returned by this call are incomplete. This is "
                                "most commonly encountered when an authorizer, such as an external authorizer, "
                                "doesn't support rules evaluation.", number=3, omitempty=False, required=True),
    GoField("evaluationError", STRING, "evaluationError can appear in combination with Rules. It indicates an "
                                       "error occurred during rule evaluation.", number=4),
), description="SubjectRulesReviewStatus contains the result of a rules check.")
USER_INFO = GoType("struct", "v1.UserInfo", (
    GoField("username", STRING, "The name that uniquely identifies this user among all active users.", number=1),
    GoField("uid", STRING, "A unique value that identifies this user across time.", number=2, go="UID"),
    GoField("groups", STRINGS, "The names of groups this user is a part of.", number=3),
    GoField("extra", GoType("map", "map[string]v1.ExtraValue",
                            elem=GoType("slice", "v1.ExtraValue", elem=STRING, wrapped=True)),
            "Any additional information provided by the authenticator.", number=4),
), description="UserInfo holds the information about the user needed to implement the user.Info interface.")


def _review(kind: str, description: str, *fields: GoField) -> GoType:
    return GoType("struct", f"v1.{kind}", (
        GoField("apiVersion", STRING, go="APIVersion"), GoField("kind", STRING),
        GoField("metadata", OBJECT_META, number=1, omitempty=False, go="ObjectMeta"), *fields),
        description=description)


SELF_SUBJECT_ACCESS_REVIEW = _review(
    "SelfSubjectAccessReview",
    "SelfSubjectAccessReview checks whether or the current user can perform an action.  Not filling in a "
    "spec.namespace means \"in all namespaces\".  Self is a special case, because users should always be able to "
    "check whether they can perform an action",
    GoField("spec", GoType("struct", "v1.SelfSubjectAccessReviewSpec", (
        GoField("resourceAttributes", RESOURCE_ATTRIBUTES, "resourceAuthorizationAttributes describes information "
                                                           "for a resource access request", number=1),
        GoField("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES, "nonResourceAttributes describes information for "
                                                                  "a non-resource access request", number=2),
    ), description="SelfSubjectAccessReviewSpec is a description of the access request.  Exactly one of "
                   "ResourceAuthorizationAttributes and NonResourceAuthorizationAttributes must be set"),
            "spec holds information about the request being evaluated.  user and groups must be empty",
            number=2, omitempty=False, required=True),
    GoField("status", ACCESS_REVIEW_STATUS, "status is filled in by the server and indicates whether the request "
                                            "is allowed or not", number=3, omitempty=False),
)
SELF_SUBJECT_RULES_REVIEW = _review(
    "SelfSubjectRulesReview",
    "SelfSubjectRulesReview enumerates the set of actions the current user can perform within a namespace. The "
    "returned list of actions may be incomplete depending on the server's authorization mode, and any errors "
    "experienced during the evaluation.",
    GoField("spec", GoType("struct", "v1.SelfSubjectRulesReviewSpec", (
        GoField("namespace", STRING, "namespace to evaluate rules for. Required.", number=1),
    ), description="SelfSubjectRulesReviewSpec defines the specification for SelfSubjectRulesReview."),
            "spec holds information about the request being evaluated.", number=2, omitempty=False, required=True),
    GoField("status", RULES_REVIEW_STATUS, "status is filled in by the server and indicates the set of actions a "
                                           "user can perform.", number=3, omitempty=False),
)


def self_subject_review_type(version: str) -> GoType:
    """authentication.k8s.io's SelfSubjectReview (the same shape in v1 and v1beta1)."""
    review = _review(
        "SelfSubjectReview",
        "SelfSubjectReview contains the user information that the kube-apiserver has about the user making this "
        "request. When using impersonation, users will receive the user info of the user being impersonated.",
        GoField("status", GoType("struct", f"{version}.SelfSubjectReviewStatus", (
            GoField("userInfo", USER_INFO, "User attributes of the user making this request.", number=1,
                    omitempty=False),
        ), description="SelfSubjectReviewStatus is filled by the kube-apiserver and sent back to a user."),
                "Status is filled in by the server with the user attributes.", number=2, omitempty=False),
    )
    return GoType(review.kind, f"{version}.SelfSubjectReview", review.fields, description=review.description)


# --------------------------------------------------------------------------------------------------------------
# JSON


class DecodeError(Exception):
    """The body does not fit the kind's Go types; the message is encoding/json's."""


_MISSING = object()
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_INT64_RANGE = (-(1 << 63), (1 << 63) - 1)


def _type_error(value: Any, go_type: GoType, struct: str, path: Sequence[str]) -> DecodeError:
    what = json_kind(value)
    if go_type.kind == "int64" and what == "number":
        what = f"number {value}"
    return DecodeError(f"json: cannot unmarshal {what} into Go struct field {struct}.{'.'.join(path)} of type "
                       f"{go_type.name}")


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
#: time.Time{}.Unix(): the zero time, year 1, which metav1.Time encodes as JSON null.
ZERO_TIME_SECONDS = -62135596800


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (any year, unlike `datetime`)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted + 2) // 5 + 1
    month = shifted + (3 if shifted < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


def instant(text: str) -> tuple[int, int]:
    """Seconds since the epoch and nanoseconds of a valid RFC 3339 timestamp."""
    match = _RFC3339.match(text)
    assert match is not None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    nanos = int((match.group(7) or ".")[1:10].ljust(9, "0"))
    offset = 0 if match.group(8) == "Z" else (int(match.group(8)[1:3]) * 3600 + int(match.group(8)[4:6]) * 60) * (
        -1 if match.group(8)[0] == "-" else 1)
    return _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset, nanos


def _civil(seconds: int) -> tuple[int, int, int, int, int, int]:
    days, rest = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    return year, month, day, rest // 3600, rest // 60 % 60, rest % 60


def format_time(seconds: int) -> str | None:
    """metav1.Time's JSON: RFC 3339 in UTC to the second, or null for the zero time."""
    if seconds == ZERO_TIME_SECONDS:
        return None
    year, month, day, hour, minute, second = _civil(seconds)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def time_problem(value: str) -> str | None:
    """What Go's time.Parse(time.RFC3339, value) says about a timestamp it refuses, or None.

    The shape must be RFC 3339; among out-of-range fields Go reports the last of month, day, hour, minute and
    second it met, and a day past the month's end only when nothing else was out of range.
    """
    match = _RFC3339.match(value)
    if match is None:
        return f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "{value}" as "2006"'
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    out_of_range = ""
    for name, number, low, high in (("month", month, 1, 12), ("day", day, 0, 31), ("hour", hour, 0, 23),
                                    ("minute", minute, 0, 59), ("second", second, 0, 59)):
        if not low <= number <= high:
            out_of_range = name
    if not out_of_range:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        days_in_month = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
        if not 1 <= day <= days_in_month:
            out_of_range = "day"
    return f'parsing time "{value}": {out_of_range} out of range' if out_of_range else None


def _zero(go_type: GoType) -> Any:
    if go_type.pointer:
        return None
    if go_type.kind == "string":
        return ""
    if go_type.kind == "bool":
        return False
    if go_type.kind == "int64":
        return 0
    if go_type.kind == "struct":
        return decode({}, go_type)
    return None


def _is_empty(value: Any, go_type: GoType) -> bool:
    """Whether `omitempty` leaves the value out (a pointer only when nil, never a struct)."""
    if go_type.pointer:
        return value is None
    if go_type.kind == "struct":
        return False
    return value is None or value == "" or value is False or (value == 0 and go_type.kind == "int64") \
        or value == [] or value == {}


def _decode_value(value: Any, go_type: GoType, struct: str, path: Sequence[str]) -> Any:
    if value is None:
        return _zero(go_type)
    kind = go_type.kind
    if kind == "raw":
        return value
    if kind == "time":
        if not isinstance(value, str):
            raise DecodeError(f"json: cannot unmarshal {json_kind(value)} into Go value of type string")
        problem = time_problem(value)
        if problem is not None:
            raise DecodeError(problem)
        return format_time(instant(value)[0])
    if kind == "string":
        if not isinstance(value, str):
            raise _type_error(value, go_type, struct, path)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, go_type, struct, path)
        return value
    if kind == "int64":
        if isinstance(value, bool) or not isinstance(value, int) or not _INT64_RANGE[0] <= value <= _INT64_RANGE[1]:
            raise _type_error(value, go_type, struct, path)
        return value
    if kind == "slice":
        if not isinstance(value, list):
            raise _type_error(value, go_type, struct, path)
        assert go_type.elem is not None
        return [_decode_value(item, go_type.elem, struct, path) for item in value]
    if kind == "map":
        if not isinstance(value, dict):
            raise _type_error(value, go_type, struct, path)
        assert go_type.elem is not None
        return {key: _decode_value(item, go_type.elem, struct, path) for key, item in value.items()}
    if not isinstance(value, dict):
        raise _type_error(value, go_type, struct, path)
    return decode(value, go_type, path)


def decode(value: Mapping[str, Any], go_type: GoType, path: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON object decoded into a struct and encoded back as kube encodes it: fields in the Go order, unknown
    fields dropped, `omitempty` zero values left out, and the first type error (in the body's order) raised."""
    struct = go_type.name.rpartition(".")[2]
    by_name = {f.json: f for f in go_type.fields}
    decoded: dict[str, Any] = {}
    for key, item in value.items():
        known = by_name.get(key)
        if known is not None:
            decoded[key] = _decode_value(item, known.type, struct, (*path, key))
    out: dict[str, Any] = {}
    for known in go_type.fields:
        item = decoded.get(known.json, _MISSING)
        if item is _MISSING:
            item = _zero(known.type)
        if known.omitempty and _is_empty(item, known.type):
            continue
        out[known.json] = item
    return out


def openapi_schema(go_type: GoType, description: str = "") -> dict[str, Any]:
    """The OpenAPI v3 schema of a Go type, as kube publishes its kinds (nested structs inline; `apimachinery.openapi`
    hoists them into components)."""
    kind = go_type.kind
    schema: dict[str, Any]
    if kind in ("string", "time"):
        schema = {"type": "string"} if kind == "string" else {"type": "string", "format": "date-time"}
    elif kind == "bool":
        schema = {"type": "boolean"}
    elif kind == "int64":
        schema = {"type": "integer", "format": "int64"}
    elif kind == "slice":
        assert go_type.elem is not None
        schema = {"type": "array", "items": openapi_schema(go_type.elem)}
        if go_type.elem.kind == "string":
            schema["items"]["default"] = ""
    elif kind == "map":
        assert go_type.elem is not None
        schema = {"type": "object", "additionalProperties": openapi_schema(go_type.elem)}
    elif kind == "raw":
        schema = {"type": "object"}
    else:
        properties = {f.json: openapi_schema(f.type, f.description) for f in go_type.fields}
        schema = {"type": "object", "properties": properties}
        required = [f.json for f in go_type.fields if f.required]
        if required:
            schema["required"] = required
        if go_type.description and not description:
            description = go_type.description
    if description:
        schema = {"description": description, **schema}
    return schema


def kind_schema(go_type: GoType, group: str, version: str, kind: str) -> dict[str, Any]:
    """The whole kind's schema: kube's apiVersion, kind and metadata, then the kind's own fields."""
    schema = openapi_schema(go_type)
    own = {k: v for k, v in schema["properties"].items() if k not in ("apiVersion", "kind", "metadata")}
    schema["properties"] = {**type_meta_properties(), **own}
    schema["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version}]
    return schema


# --------------------------------------------------------------------------------------------------------------
# Protobuf, as gogo-protobuf marshals k8s.io/api's messages

#: kube's protobuf media type, and the prefix of every protobuf-encoded object.
PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
_VARINT, _BYTES = 0, 2
_UINT64 = (1 << 64) - 1


def _varint(value: int) -> bytes:
    value &= _UINT64
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, _BYTES) + _varint(len(payload)) + payload


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if offset >= len(data):
            raise DecodeError("unexpected EOF")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _UINT64, offset
    raise DecodeError("proto: integer overflow")


def read_fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """A message's fields as (number, wire type, value), in order; gogo's errors for malformed input."""
    fields: list[tuple[int, int, int | bytes]] = []
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        number, wire_type = key >> 3, key & 7
        value: int | bytes = 0
        if wire_type == 0:
            value, offset = _read_varint(data, offset)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            if offset + size > len(data):
                raise DecodeError("unexpected EOF")
            value, offset = data[offset:offset + size], offset + size
        elif wire_type == 2:
            length, offset = _read_varint(data, offset)
            if offset + length > len(data):
                raise DecodeError("unexpected EOF")
            value, offset = data[offset:offset + length], offset + length
        elif wire_type not in (3, 4):
            raise DecodeError(f"proto: illegal wireType {wire_type}")
        if number <= 0:
            raise DecodeError(f"proto: illegal tag {number} (wire type {wire_type})")
        fields.append((number, wire_type, value))
    return fields


def _time_from_proto(data: bytes) -> str | None:
    seconds = nanos = 0
    for number, _, value in read_fields(data):
        if number == 1 and isinstance(value, int):
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 2 and isinstance(value, int):
            nanos = value
    if not data or (seconds == ZERO_TIME_SECONDS and not nanos):
        return None
    return format_time(seconds)


def _time_to_proto(text: str | None) -> bytes:
    """metav1.Time: nothing for the zero time, else seconds and nanos (both always written)."""
    if text is None:
        return b""
    seconds, nanos = instant(text)
    return _key(1, _VARINT) + _varint(seconds) + _key(2, _VARINT) + _varint(nanos)


def _scalar_from_proto(value: int | bytes, go_type: GoType) -> Any:
    if go_type.kind == "string":
        assert isinstance(value, bytes)
        return value.decode("utf-8", "replace")
    assert isinstance(value, int)
    if go_type.kind == "bool":
        return value != 0
    return value - (1 << 64) if value >= 1 << 63 else value


def _wire_type(go_type: GoType) -> int:
    return _VARINT if go_type.kind in ("bool", "int64") else _BYTES


def _element_from_proto(value: int | bytes, go_type: GoType) -> Any:
    if go_type.kind in ("string", "bool", "int64"):
        return _scalar_from_proto(value, go_type)
    assert isinstance(value, bytes)
    if go_type.kind == "time":
        return _time_from_proto(value)
    if go_type.kind == "raw":
        raw = next((v for n, _, v in read_fields(value) if n == 1 and isinstance(v, bytes)), b"")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None
    if go_type.kind == "slice" and go_type.wrapped:
        assert go_type.elem is not None
        return [_scalar_from_proto(v, go_type.elem) for n, w, v in read_fields(value) if n == 1 and w == _BYTES]
    return decode_protobuf(value, go_type)


def decode_protobuf(data: bytes, go_type: GoType) -> dict[str, Any]:
    """A message as the JSON object of the same struct (unknown fields skipped, as gogo skips them)."""
    by_number = {f.number: f for f in go_type.fields if f.number}
    out: dict[str, Any] = {}
    for number, wire_type, value in read_fields(data):
        known = by_number.get(number)
        if known is None:
            continue
        kind = known.type.kind
        element = known.type.elem if kind in ("slice", "map") and not known.type.wrapped else known.type
        assert element is not None
        if wire_type != (_BYTES if kind in ("slice", "map") else _wire_type(element)):
            raise DecodeError(f"proto: wrong wireType = {wire_type} for field {known.go_name}")
        if kind == "slice" and not known.type.wrapped:
            out.setdefault(known.json, []).append(_element_from_proto(value, element))
        elif kind == "map":
            assert isinstance(value, bytes)
            entry_key, entry_value = "", _zero(element) if element.kind != "slice" else []
            for entry_number, _, part in read_fields(value):
                if entry_number == 1 and isinstance(part, bytes):
                    entry_key = part.decode("utf-8", "replace")
                elif entry_number == 2:
                    entry_value = _element_from_proto(part, element)
            out.setdefault(known.json, {})[entry_key] = entry_value
        else:
            out[known.json] = _element_from_proto(value, element)
    return out


def _element_to_proto(number: int, value: Any, go_type: GoType) -> bytes:
    kind = go_type.kind
    if kind == "string":
        return _delimited(number, (value or "").encode("utf-8"))
    if kind == "bool":
        return _key(number, _VARINT) + _varint(1 if value else 0)
    if kind == "int64":
        return _key(number, _VARINT) + _varint(value or 0)
    if kind == "time":
        return _delimited(number, _time_to_proto(value))
    if kind == "raw":
        raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return _delimited(number, _delimited(1, raw))
    if kind == "slice" and go_type.wrapped:
        assert go_type.elem is not None
        return _delimited(number, b"".join(_element_to_proto(1, item, go_type.elem) for item in value or []))
    return _delimited(number, encode_protobuf(value or {}, go_type))


def encode_protobuf(value: Mapping[str, Any], go_type: GoType) -> bytes:
    """A struct (as `decode` gives it) as gogo marshals it: fields by number, every non-pointer field written,
    repeated fields once per item, map entries sorted by key."""
    out = bytearray()
    for known in sorted((f for f in go_type.fields if f.number), key=lambda f: f.number):
        item = value.get(known.json)
        kind = known.type.kind
        if known.type.pointer and item is None:
            continue
        if kind == "slice" and not known.type.wrapped:
            assert known.type.elem is not None
            for element in item or []:
                out += _element_to_proto(known.number, element, known.type.elem)
        elif kind == "map":
            assert known.type.elem is not None
            entries: Mapping[str, Any] = item or {}
            for key in sorted(entries):
                entry = _delimited(1, key.encode("utf-8")) + _element_to_proto(2, entries[key], known.type.elem)
                out += _delimited(known.number, entry)
        else:
            out += _element_to_proto(known.number, item, known.type)
    return bytes(out)


def unwrap(data: bytes) -> tuple[str, str, bytes]:
    """The apiVersion, kind and message bytes of a protobuf-encoded object (kube's runtime.Unknown envelope)."""
    if not data:
        raise DecodeError("empty data")
    if not data.startswith(MAGIC):
        raise DecodeError("provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]")
    api_version = kind = ""
    raw = b""
    for number, wire_type, value in read_fields(data[len(MAGIC):]):
        if number == 1 and isinstance(value, bytes):
            for part_number, _, part in read_fields(value):
                if part_number == 1 and isinstance(part, bytes):
                    api_version = part.decode("utf-8", "replace")
                elif part_number == 2 and isinstance(part, bytes):
                    kind = part.decode("utf-8", "replace")
        elif number == 2 and isinstance(value, bytes):
            raw = value
    return api_version, kind, raw


def wrap(api_version: str, kind: str, message: bytes) -> bytes:
    """A message in kube's envelope, as kube-apiserver writes it (empty contentEncoding and contentType included)."""
    type_meta = _delimited(1, api_version.encode()) + _delimited(2, kind.encode())
    return MAGIC + _delimited(1, type_meta) + _delimited(2, message) + _delimited(3, b"") + _delimited(4, b"")


# --------------------------------------------------------------------------------------------------------------
# Go's %#v of an ObjectMeta, which kube's "metadata: must be empty" prints


def go_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _go_time(text: str | None) -> str:
    if text is None:
        return "time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC)"
    seconds, nanos = instant(text)
    year, month, day, hour, minute, second = _civil(seconds)
    return f"time.Date({year}, time.{_MONTHS[month - 1]}, {day}, {hour}, {minute}, {second}, {nanos}, time.Local)"


#: Where Go would print a pointer's address, which is different on every run.
_ADDRESS = "0xc000000000"


def _go_map(value: Mapping[str, str] | None) -> str:
    if value is None:
        return "map[string]string(nil)"
    return "map[string]string{" + ", ".join(f"{go_quoted(k)}:{go_quoted(v)}" for k, v in sorted(value.items())) \
        + "}"


def _go_strings(value: Sequence[str] | None) -> str:
    if value is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(go_quoted(v) for v in value) + "}"


def _go_bool_pointer(value: bool | None) -> str:
    return "(*bool)(nil)" if value is None else f"(*bool)({_ADDRESS})"


def _go_owner(owner: Mapping[str, Any]) -> str:
    return (f"v1.OwnerReference{{APIVersion:{go_quoted(owner.get('apiVersion', ''))}, "
            f"Kind:{go_quoted(owner.get('kind', ''))}, Name:{go_quoted(owner.get('name', ''))}, "
            f"UID:{go_quoted(owner.get('uid', ''))}, Controller:{_go_bool_pointer(owner.get('controller'))}, "
            f"BlockOwnerDeletion:{_go_bool_pointer(owner.get('blockOwnerDeletion'))}}}")


def _go_managed(entry: Mapping[str, Any]) -> str:
    moment = entry.get("time")
    return (f"v1.ManagedFieldsEntry{{Manager:{go_quoted(entry.get('manager', ''))}, "
            f"Operation:{go_quoted(entry.get('operation', ''))}, APIVersion:{go_quoted(entry.get('apiVersion', ''))}, "
            f"Time:{'<nil>' if moment is None else _go_time(moment)}, "
            f"FieldsType:{go_quoted(entry.get('fieldsType', ''))}, "
            f"FieldsV1:{'(*v1.FieldsV1)(nil)' if entry.get('fieldsV1') is None else f'(*v1.FieldsV1)({_ADDRESS})'}, "
            f"Subresource:{go_quoted(entry.get('subresource', ''))}}}")


def _go_list(type_name: str, items: Sequence[Mapping[str, Any]] | None, render: Any) -> str:
    if items is None:
        return f"[]{type_name}(nil)"
    return f"[]{type_name}{{" + ", ".join(render(item) for item in items) + "}"


def go_object_meta(meta: Mapping[str, Any]) -> str:
    """An ObjectMeta (as `decode` gives it) as Go's %#v prints it; pointers print a placeholder address."""
    deletion = meta.get("deletionTimestamp")
    grace = meta.get("deletionGracePeriodSeconds")
    return (
        f"v1.ObjectMeta{{Name:{go_quoted(meta.get('name', ''))}, GenerateName:{go_quoted(meta.get('generateName', ''))}, "
        f"Namespace:{go_quoted(meta.get('namespace', ''))}, SelfLink:{go_quoted(meta.get('selfLink', ''))}, "
        f"UID:{go_quoted(meta.get('uid', ''))}, ResourceVersion:{go_quoted(meta.get('resourceVersion', ''))}, "
        f"Generation:{meta.get('generation', 0)}, CreationTimestamp:{_go_time(meta.get('creationTimestamp'))}, "
        f"DeletionTimestamp:{'<nil>' if deletion is None else _go_time(deletion)}, "
        f"DeletionGracePeriodSeconds:{'(*int64)(nil)' if grace is None else f'(*int64)({_ADDRESS})'}, "
        f"Labels:{_go_map(meta.get('labels'))}, Annotations:{_go_map(meta.get('annotations'))}, "
        f"OwnerReferences:{_go_list('v1.OwnerReference', meta.get('ownerReferences'), _go_owner)}, "
        f"Finalizers:{_go_strings(meta.get('finalizers'))}, "
        f"ManagedFields:{_go_list('v1.ManagedFieldsEntry', meta.get('managedFields'), _go_managed)}}}"
    )


def meta_is_empty(meta: Mapping[str, Any]) -> bool:
    """apiequality.Semantic.DeepEqual(ObjectMeta{}, meta) with managedFields left out (empty maps equal nil)."""
    return all(value in (None, "", 0, [], {}) for key, value in meta.items() if key != "managedFields")


# --------------------------------------------------------------------------------------------------------------
# The kinds
