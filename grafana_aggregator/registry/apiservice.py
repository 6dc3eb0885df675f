# -*- test-case-name: tests.test_registry_apiservice -*-
"""The `apiregistration.k8s.io/v1` APIService kind: defaults, validation, status handling and printing.

Follows kube-aggregator's pkg/apis/apiregistration (types, defaults, validation, condition helpers)
and pkg/registry/apiservice (strategy, Table convertor); kube-aggregator.md §1 and §2.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
from collections.abc import Callable
from typing import Any

from attrs import frozen

from ..apimachinery.validation import (
    is_dns1035_label,
    is_dns1123_subdomain,
    is_path_segment_name,
    type_invalid,
    validate_object_meta_update,
)
from ..apimachinery.strategy import (
    type_meta_properties,
    AGE_COLUMN,
    NAME_COLUMN,
    KindInfo,
    Object,
    Strategy,
    TableColumn,
    human_age,
    rfc3339,
)
from ..apimachinery.fielderrors import FieldError, invalid, not_supported, required
from ..apimachinery.gotypes import (
    BOOL_TYPE,
    BYTES_TYPE,
    INT32_TYPE,
    OBJECT_META_TYPE,
    STRING_TYPE,
    TIME_TYPE,
    GoField,
    named_string,
    slice_of,
    struct,
    type_meta_fields,
)

GROUP = "apiregistration.k8s.io"
VERSION = "v1"
AVAILABLE = "Available"
CONDITION_STATUSES = ("True", "False", "Unknown")
DEFAULT_SERVICE_PORT = 443
LOCAL_REASON = "Local"
LOCAL_MESSAGE = "Local APIServices are always available"
#: Marks an APIService (and its ExternalName) as made by an autoregister controller, not by a user.
AUTOMANAGED_LABEL = "kube-aggregator.kubernetes.io/automanaged"
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1

DESCRIPTION = 'APIService represents a server for a particular GroupVersion. Name must be "version.group".'
SERVICE_COLUMN = TableColumn("Service", "string", "", "The reference to the service that hosts this API endpoint.")
AVAILABLE_COLUMN = TableColumn("Available", "string", "", "Whether this service is available.")


_SERVICE_REFERENCE_SCHEMA: dict[str, Any] = {
    "description": (
        "Service is a reference to the service for this API server.  It must communicate on port 443. If the "
        "Service is nil, that means the handling for the API groupversion is handled locally on this server. The "
        "call will simply delegate to the normal handler chain to be fulfilled."
    ),
    "type": "object",
    "properties": {
        "namespace": {"description": "Namespace is the namespace of the service", "type": "string"},
        "name": {"description": "Name is the name of the service", "type": "string"},
        "port": {
            "description": (
                "If specified, the port on the service that hosting webhook. Default to 443 for backward "
                "compatibility. `port` should be a valid port number (1-65535, inclusive)."
            ),
            "type": "integer",
            "format": "int32",
        },
    },
}

_SPEC_SCHEMA: dict[str, Any] = {
    "description": "Spec contains information for locating and communicating with a server",
    "type": "object",
    "default": {},
    "required": ["groupPriorityMinimum", "versionPriority"],
    "properties": {
        "service": _SERVICE_REFERENCE_SCHEMA,
        "group": {"description": "Group is the API group name this server hosts", "type": "string"},
        "version": {"description": 'Version is the API version this server hosts.  For example, "v1"',
                    "type": "string"},
        "insecureSkipTLSVerify": {
            "description": (
                "InsecureSkipTLSVerify disables TLS certificate verification when communicating with this server. "
                "This is strongly discouraged.  You should use the CABundle instead."
            ),
            "type": "boolean",
        },
        "caBundle": {
            "description": (
                "CABundle is a PEM encoded CA bundle which will be used to validate an API server's serving "
                "certificate. If unspecified, system trust roots on the apiserver are used."
            ),
            "type": "string",
            "format": "byte",
            "x-kubernetes-list-type": "atomic",
        },
        "groupPriorityMinimum": {
            "description": (
                "GroupPriorityMinimum is the priority this group should have at least. Higher priority means that "
                "the group is preferred by clients over lower priority ones. Note that other versions of this group "
                "might specify even higher GroupPriorityMinimum values such that the whole group gets a higher "
                "priority. The primary sort is based on GroupPriorityMinimum, ordered highest number to lowest (20 "
                "before 10). The secondary sort is based on the alphabetical comparison of the name of the object.  "
                "(v1.bar before v1.foo) We'd recommend something like: *.k8s.io (except extensions) at 18000 and "
                "PaaSes (OpenShift, Deis) are recommended to be in the 2000s"
            ),
            "type": "integer",
            "format": "int32",
            "default": 0,
        },
        "versionPriority": {
            "description": (
                "VersionPriority controls the ordering of this API version inside of its group.  Must be greater "
                "than zero. The primary sort is based on VersionPriority, ordered highest to lowest (20 before 10). "
                "Since it's inside of a group, the number can be small, probably in the 10s. In case of equal "
                "version priorities, the version string will be used to compute the order inside a group. If the "
                'version string is "kube-like", it will sort above non "kube-like" version strings, which are '
                'ordered lexicographically. "Kube-like" versions start with a "v", then are followed by a number '
                '(the major version), then optionally the string "alpha" or "beta" and another number (the minor '
                "version). These are sorted first by GA > beta > alpha (where GA is a version with no suffix such as "
                "beta or alpha), and then by comparing major version, then minor version. An example sorted list of "
                "versions: v10, v2, v1, v11beta2, v10beta3, v3beta1, v12alpha1, v11alpha2, foo1, foo10."
            ),
            "type": "integer",
            "format": "int32",
            "default": 0,
        },
    },
}

_CONDITION_SCHEMA: dict[str, Any] = {
    "description": "APIServiceCondition describes the state of an APIService at a particular point",
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"description": "Type is the type of the condition.", "type": "string", "default": ""},
        "status": {"description": "Status is the status of the condition. Can be True, False, Unknown.",
                   "type": "string", "default": ""},
        "lastTransitionTime": {"description": "Last time the condition transitioned from one status to another.",
                               "type": "string", "format": "date-time"},
        "reason": {"description": "Unique, one-word, CamelCase reason for the condition's last transition.",
                   "type": "string"},
        "message": {"description": "Human-readable message indicating details about last transition.",
                    "type": "string"},
    },
}

_STATUS_SCHEMA: dict[str, Any] = {
    "description": "Status contains derived information about an API server",
    "type": "object",
    "default": {},
    "properties": {
        "conditions": {
            "description": "Current service state of apiService.",
            "type": "array",
            "items": _CONDITION_SCHEMA,
            "x-kubernetes-list-map-keys": ["type"],
            "x-kubernetes-list-type": "map",
            "x-kubernetes-patch-merge-key": "type",
            "x-kubernetes-patch-strategy": "merge",
        },
    },
}

#: OpenAPI v3 schema of APIService with kube's field descriptions (what `kubectl explain` prints).
SCHEMA: dict[str, Any] = {
    "description": DESCRIPTION,
    "type": "object",
    "properties": {**type_meta_properties(), "spec": _SPEC_SCHEMA, "status": _STATUS_SCHEMA},
    "x-kubernetes-group-version-kind": [{"group": GROUP, "kind": "APIService", "version": VERSION}],
}

#: The Go types of apiregistration/v1 (k8s.io/kube-aggregator pkg/apis/apiregistration/v1/types.go): what a
#: request body must decode into, and the patch strategy of status.conditions (merge by `type`).
SERVICE_REFERENCE_TYPE = struct(
    "v1.ServiceReference",
    GoField("namespace", STRING_TYPE), GoField("name", STRING_TYPE), GoField("port", INT32_TYPE),
)
SPEC_TYPE = struct(
    "v1.APIServiceSpec",
    GoField("service", SERVICE_REFERENCE_TYPE), GoField("group", STRING_TYPE), GoField("version", STRING_TYPE),
    GoField("insecureSkipTLSVerify", BOOL_TYPE), GoField("caBundle", BYTES_TYPE),
    GoField("groupPriorityMinimum", INT32_TYPE, omitempty=False),
    GoField("versionPriority", INT32_TYPE, omitempty=False),
)
CONDITION_TYPE = struct(
    "v1.APIServiceCondition",
    GoField("type", named_string("v1.APIServiceConditionType"), omitempty=False),
    GoField("status", named_string("v1.ConditionStatus"), omitempty=False),
    GoField("lastTransitionTime", TIME_TYPE), GoField("reason", STRING_TYPE), GoField("message", STRING_TYPE),
)
STATUS_TYPE = struct(
    "v1.APIServiceStatus",
    GoField("conditions", slice_of(CONDITION_TYPE), patch_strategy="merge", patch_merge_key="type"),
)
GO_TYPE = struct(
    "v1.APIService",
    *type_meta_fields(), GoField("metadata", OBJECT_META_TYPE), GoField("spec", SPEC_TYPE),
    GoField("status", STATUS_TYPE),
)

INFO = KindInfo(
    group=GROUP, version=VERSION, kind="APIService", plural="apiservices", singular="apiservice", namespaced=False,
    categories=("api-extensions",), has_status=True, schema=SCHEMA, description=DESCRIPTION, go_type=GO_TYPE,
)
#: Where APIServices are stored.
APISERVICES = INFO.collection


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _spec(obj: Object) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def is_local(obj: Object) -> bool:
    """Whether the APIService is served locally (kube: `spec.service == nil`)."""
    return _spec(obj).get("service") is None


def service_reference(obj: Object) -> tuple[str, str]:
    """The (namespace, name) of the ExternalName a remote APIService's `spec.service` names."""
    service = _spec(obj).get("service")
    if not isinstance(service, dict):
        return "", ""
    return str(service.get("namespace") or ""), str(service.get("name") or "")


def conditions(obj: Object) -> list[dict[str, Any]]:
    """The status conditions that are objects (an absent or malformed list gives none)."""
    status = obj.get("status")
    found = status.get("conditions") if isinstance(status, dict) else None
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def available_condition(obj: Object) -> dict[str, Any] | None:
    """The `Available` condition of an APIService, or None (GetAPIServiceConditionByType)."""
    for condition in conditions(obj):
        if condition.get("type") == AVAILABLE:
            return condition
    return None


def is_available(obj: Object) -> bool:
    """IsAPIServiceConditionTrue for `Available`: the proxy only forwards to available APIServices."""
    condition = available_condition(obj)
    return condition is not None and condition.get("status") == "True"


def new_condition(status: str, reason: str, message: str, now: datetime.datetime,
                  condition_type: str = AVAILABLE) -> dict[str, Any]:
    """An APIServiceCondition as the controllers build it, with lastTransitionTime = now."""
    condition: dict[str, Any] = {"type": condition_type, "status": status, "lastTransitionTime": rfc3339(now)}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def local_available_condition(now: datetime.datetime) -> dict[str, Any]:
    """NewLocalAvailableAPIServiceCondition: `Available=True`, reason `Local`."""
    return new_condition("True", LOCAL_REASON, LOCAL_MESSAGE, now)


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    """Set a string field, or drop it when empty (`omitempty`)."""
    if value:
        target[key] = value
    else:
        target.pop(key, None)


def set_condition(obj: Object, condition: dict[str, Any]) -> None:
    """SetAPIServiceCondition: append a new type; else always take reason and message, and take status and
    lastTransitionTime only when the status changes (so a repeated sync changes nothing)."""
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    existing_list = status.get("conditions")
    if not isinstance(existing_list, list):
        existing_list = status["conditions"] = []
    for existing in existing_list:
        if isinstance(existing, dict) and existing.get("type") == condition.get("type"):
            break
    else:
        added = {"type": condition.get("type"), "status": condition.get("status")}
        for key in ("lastTransitionTime", "reason", "message"):
            _put(added, key, condition.get(key))
        existing_list.append(added)
        return
    if existing.get("status") != condition.get("status"):
        existing["status"] = condition.get("status")
        _put(existing, "lastTransitionTime", condition.get("lastTransitionTime"))
    _put(existing, "reason", condition.get("reason"))
    _put(existing, "message", condition.get("message"))


def service_cell(obj: Object) -> str:
    """The SERVICE cell: `Local`, or `<namespace>/<name>` (the port is not shown)."""
    service = _spec(obj).get("service")
    if service is None:
        return "Local"
    service = service if isinstance(service, dict) else {}
    return f"{service.get('namespace') or ''}/{service.get('name') or ''}"


def available_cell(obj: Object) -> str:
    """The AVAILABLE cell: `Unknown` without a condition, `True`, `<Status> (<Reason>)`, or the bare status."""
    condition = available_condition(obj)
    if condition is None:
        return "Unknown"
    status = str(condition.get("status") or "")
    reason = condition.get("reason") or ""
    if status == "True" or not reason:
        return status
    return f"{status} ({reason})"


@frozen
class _Spec:
    """An APIServiceSpec decoded from JSON into kube's internal types."""

    group: str
    version: str
    insecure_skip_tls_verify: bool
    ca_bundle: bytes
    group_priority_minimum: int
    version_priority: int
    service: dict[str, Any] | None
    service_namespace: str
    service_name: str
    service_port: int


def _decode_spec(obj: Object) -> tuple[_Spec | None, list[FieldError]]:
    """The spec in internal form, or the type errors that would make kube fail to decode the object."""
    errors: list[FieldError] = []
    raw = obj.get("spec")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [type_invalid("spec", raw, "object")]

    def text(source: dict[str, Any], key: str, path: str) -> str:
        value = source.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            errors.append(type_invalid(path, value, "string"))
            return ""
        return value

    def int32(source: dict[str, Any], key: str, path: str) -> int:
        value = source.get(key)
        if value is None:
            return 0
        if not isinstance(value, int) or isinstance(value, bool) or not INT32_MIN <= value <= INT32_MAX:
            errors.append(type_invalid(path, value, "int32"))
            return 0
        return value

    insecure = raw.get("insecureSkipTLSVerify")
    if insecure is None:
        insecure = False
    elif not isinstance(insecure, bool):
        errors.append(type_invalid("spec.insecureSkipTLSVerify", insecure, "boolean"))
        insecure = False
    bundle = b""
    encoded = raw.get("caBundle")
    if encoded is not None:
        if not isinstance(encoded, str):
            errors.append(type_invalid("spec.caBundle", encoded, "string"))
        else:
            try:
                bundle = base64.b64decode(encoded.replace("\r", "").replace("\n", ""), validate=True)
            except (binascii.Error, ValueError):
                errors.append(type_invalid("spec.caBundle", encoded, "base64-encoded bytes"))
    service = raw.get("service")
    namespace = name = ""
    port = 0
    if service is not None:
        if not isinstance(service, dict):
            errors.append(type_invalid("spec.service", service, "object"))
            service = {}
        namespace = text(service, "namespace", "spec.service.namespace")
        name = text(service, "name", "spec.service.name")
        port = int32(service, "port", "spec.service.port")
    spec = _Spec(
        group=text(raw, "group", "spec.group"),
        version=text(raw, "version", "spec.version"),
        insecure_skip_tls_verify=insecure,
        ca_bundle=bundle,
        group_priority_minimum=int32(raw, "groupPriorityMinimum", "spec.groupPriorityMinimum"),
        version_priority=int32(raw, "versionPriority", "spec.versionPriority"),
        service=service,
        service_namespace=namespace,
        service_name=name,
        service_port=port,
    )
    return (None, errors) if errors else (spec, [])


def _name_errors(name: str, required_name: str) -> list[str]:
    """The APIService ValidateNameFunc: a path segment, and exactly `spec.version + "." + spec.group`."""
    minimal = is_path_segment_name(name)
    if minimal:
        return minimal
    if name != required_name:
        return [f'must be `spec.version+"."+spec.group`: "{required_name}"']
    return []


def validate_apiservice(obj: Object) -> list[FieldError]:
    """ValidateAPIService without the generic metadata checks (the REST handler runs those), in kube's order."""
    spec, errors = _decode_spec(obj)
    if spec is None:
        return errors
    required_name = f"{spec.version}.{spec.group}"
    for key in ("generateName", "name"):
        value = _meta(obj).get(key)
        if value and isinstance(value, str):
            errors.extend(invalid(f"metadata.{key}", value, message) for message in _name_errors(value, required_name))

    if not spec.group and spec.version != "v1":
        errors.append(required("spec.group", "only v1 may have an empty group and it better be legacy kube"))
    if spec.group:
        errors.extend(invalid("spec.group", spec.group, message) for message in is_dns1123_subdomain(spec.group))
    errors.extend(invalid("spec.version", spec.version, message) for message in is_dns1035_label(spec.version))
    if spec.group_priority_minimum <= 0 or spec.group_priority_minimum > 20000:
        errors.append(invalid("spec.groupPriorityMinimum", spec.group_priority_minimum,
                              "must be positive and less than 20000"))
    if spec.version_priority <= 0 or spec.version_priority > 1000:
        errors.append(invalid("spec.versionPriority", spec.version_priority, "must be positive and less than 1000"))

    if spec.service is None:
        if spec.ca_bundle:
            errors.append(invalid("spec.caBundle", f"{len(spec.ca_bundle)} bytes",
                                  "local APIServices may not have a caBundle"))
        if spec.insecure_skip_tls_verify:
            errors.append(invalid("spec.insecureSkipTLSVerify", True,
                                  "local APIServices may not have insecureSkipTLSVerify"))
        return errors

    if not spec.service_namespace:
        errors.append(required("spec.service.namespace"))
    if not spec.service_name:
        errors.append(required("spec.service.name"))
    if not 1 <= spec.service_port <= 65535:
        errors.append(invalid("spec.service.port", spec.service_port,
                              "port is not valid: must be between 1 and 65535, inclusive"))
    if spec.insecure_skip_tls_verify and spec.ca_bundle:
        errors.append(invalid("spec.insecureSkipTLSVerify", True, "may not be true if caBundle is present"))
    return errors


def validate_apiservice_status(obj: Object) -> list[FieldError]:
    """ValidateAPIServiceStatus: every condition's status is True, False or Unknown."""
    status = obj.get("status")
    if status is None:
        return []
    if not isinstance(status, dict):
        return [type_invalid("status", status, "object")]
    found = status.get("conditions")
    if found is None:
        return []
    if not isinstance(found, list):
        return [type_invalid("status.conditions", found, "array")]
    errors: list[FieldError] = []
    for index, condition in enumerate(found):
        if not isinstance(condition, dict):
            errors.append(type_invalid(f"status.conditions[{index}]", condition, "object"))
            continue
        value = condition.get("status")
        if value is not None and not isinstance(value, str):
            errors.append(type_invalid(f"status.conditions[{index}].status", value, "string"))
        elif value not in CONDITION_STATUSES:
            errors.append(not_supported(f"status.conditions[{index}].status", "" if value is None else value,
                                        list(CONDITION_STATUSES)))
    return errors


def _meta(obj: Object) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


class APIServiceStrategy(Strategy):
    """kube-aggregator's apiServerStrategy and apiServerStatusStrategy for `apiservices`."""

    info = INFO
    columns = (NAME_COLUMN, SERVICE_COLUMN, AVAILABLE_COLUMN, AGE_COLUMN)

    def __init__(self, clock: Callable[[], datetime.datetime] = _utcnow) -> None:
        """clock gives the current time, for the lastTransitionTime of the Local condition."""
        self._clock = clock

    def default(self, obj: Object) -> None:
        """SetDefaults_ServiceReference: a service without a port gets port 443."""
        service = _spec(obj).get("service")
        if isinstance(service, dict) and service.get("port") is None:
            service["port"] = DEFAULT_SERVICE_PORT

    def prepare_for_create(self, obj: Object) -> None:
        """Wipe the status; a Local APIService is marked available at once."""
        obj["status"] = {}
        if is_local(obj):
            set_condition(obj, local_available_condition(self._clock()))

    def prepare_for_update(self, new: Object, old: Object) -> None:
        """Writes to the main resource keep the stored status."""
        new["status"] = copy.deepcopy(old.get("status", {}))

    def validate(self, obj: Object) -> list[FieldError]:
        """ValidateAPIService: name, group, version, priorities, then the local or service rules."""
        return validate_apiservice(obj)

    def validate_update(self, new: Object, old: Object) -> list[FieldError]:
        """ValidateAPIServiceUpdate: the metadata update rules, then the full validation of the new object."""
        return validate_object_meta_update(_meta(new), _meta(old)) + validate_apiservice(new)

    def validate_status_update(self, new: Object, old: Object) -> list[FieldError]:
        """ValidateAPIServiceStatusUpdate: the metadata update rules and the condition statuses."""
        return validate_object_meta_update(_meta(new), _meta(old)) + validate_apiservice_status(new)

    def table_cells(self, obj: Object, now: datetime.datetime) -> list[Any]:
        """NAME, SERVICE, AVAILABLE and AGE, as kube-aggregator's ConvertToTable prints them."""
        return [_meta(obj).get("name", ""), service_cell(obj), available_cell(obj), human_age(obj, now)]
