"""What the generic REST handler needs to know about a kind, and the hooks a kind's strategy overrides.

A strategy mirrors k8s.io/apiserver's RESTCreateStrategy / RESTUpdateStrategy: defaulting, preparing
an object for create or update (status and spec kept apart), validation into field errors, generation
bumps, and the server-side printing of `kubectl get`.
"""

from __future__ import annotations

import datetime
from typing import Any

from attrs import field, frozen

Object = dict[str, Any]


@frozen
class FieldError:
    """One validation failure, as k8s.io/apimachinery's field.Error.

    reason is the cause type (FieldValueRequired, FieldValueInvalid, FieldValueNotSupported,
    FieldValueDuplicate, FieldValueForbidden, FieldValueTooLong, FieldValueTypeInvalid); path is the
    JSON path (`spec.service.port`); message is the full text after the path, for example
    `Required value` or `Invalid value: 0: must be positive and less than 20000`.
    """

    reason: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def required(path: str, detail: str = "") -> FieldError:
    """field.Required."""
    return FieldError("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else ""))


def invalid(path: str, value: Any, detail: str) -> FieldError:
    """field.Invalid: the value is printed Go-style (strings quoted, numbers bare)."""
    return FieldError("FieldValueInvalid", path, f"Invalid value: {go_value(value)}" + (f": {detail}" if detail else ""))


def not_supported(path: str, value: Any, supported: list[str]) -> FieldError:
    """field.NotSupported."""
    quoted = ", ".join(f'"{s}"' for s in supported)
    return FieldError("FieldValueNotSupported", path, f"Unsupported value: {go_value(value)}: supported values: {quoted}")


def forbidden(path: str, detail: str) -> FieldError:
    """field.Forbidden."""
    return FieldError("FieldValueForbidden", path, f"Forbidden: {detail}")


def too_long(path: str, limit: int) -> FieldError:
    """field.TooLong (as of Kubernetes 1.32)."""
    return FieldError("FieldValueTooLong", path, f"Too long: may not be more than {limit} bytes")


def go_value(value: Any) -> str:
    """Render a value as Go's %#v would for the simple types field errors carry."""
    if isinstance(value, str):
        import json

        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


@frozen
class TableColumn:
    """A column of the server-side printed Table (meta.k8s.io/v1 TableColumnDefinition)."""

    name: str
    type: str
    format: str = ""
    description: str = ""
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format, "description": self.description,
                "priority": self.priority}


NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources may "
    "allow a client to request the generation of an appropriate name automatically. Name is primarily intended "
    "for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
CREATION_TIMESTAMP_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
NAME_COLUMN = TableColumn("Name", "string", "name", NAME_DESCRIPTION)
AGE_COLUMN = TableColumn("Age", "string", "", CREATION_TIMESTAMP_DESCRIPTION)


@frozen
class KindInfo:
    """Names and shape of a kind, as discovery and OpenAPI publish them."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = True
    #: Verbs of the main resource, in the order discovery lists them.
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    #: OpenAPI v3 schema of the whole object (with descriptions, for kubectl explain); see registry modules.
    schema: dict[str, Any] = field(factory=dict, hash=False)
    description: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


class Strategy:
    """Default behaviour of a kind; subclasses override what their kind does differently."""

    info: KindInfo
    columns: tuple[TableColumn, ...] = (NAME_COLUMN, AGE_COLUMN)

    def default(self, obj: Object) -> None:
        """Fill in defaults (for example a port of 443), in place, on create and update."""

    def prepare_for_create(self, obj: Object) -> None:
        """Adjust a new object before validation (kube wipes status here, for example)."""
        if self.info.has_status:
            obj.pop("status", None)

    def prepare_for_update(self, new: Object, old: Object) -> None:
        """Adjust an update of the main resource: by default the status cannot change through it."""
        if self.info.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)

    def prepare_for_status_update(self, new: Object, old: Object) -> None:
        """Adjust an update of the status subresource: only status may change."""
        for key in list(new):
            if key not in ("status", "metadata", "apiVersion", "kind"):
                del new[key]
        for key, value in old.items():
            if key not in ("status", "metadata", "apiVersion", "kind"):
                new[key] = value
        new_meta, old_meta = new.setdefault("metadata", {}), old.get("metadata", {})
        for key in ("labels", "annotations", "finalizers", "ownerReferences"):
            if key in old_meta:
                new_meta[key] = old_meta[key]
            else:
                new_meta.pop(key, None)

    def validate(self, obj: Object) -> list[FieldError]:
        """Field errors of an object about to be created (metadata is checked by the handler)."""
        return []

    def validate_update(self, new: Object, old: Object) -> list[FieldError]:
        """Field errors of an update of the main resource."""
        return self.validate(new)

    def validate_status_update(self, new: Object, old: Object) -> list[FieldError]:
        """Field errors of an update of the status subresource."""
        return []

    def spec_changed(self, new: Object, old: Object) -> bool:
        """Whether metadata.generation must grow: everything but metadata and status is the spec."""
        strip = ("metadata", "status")
        return {k: v for k, v in new.items() if k not in strip} != {k: v for k, v in old.items() if k not in strip}

    def table_cells(self, obj: Object, now: datetime.datetime) -> list[Any]:
        """The cells of one row, matching `columns`."""
        return [obj.get("metadata", {}).get("name", ""), human_age(obj, now)]

    def selectable_fields(self, obj: Object) -> dict[str, str]:
        """Fields a fieldSelector may use (kube's ObjectMetaFieldsSet by default)."""
        meta = obj.get("metadata", {})
        return {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}


def parse_time(text: str | None) -> datetime.datetime | None:
    """An RFC 3339 timestamp as metav1.Time writes it, or None."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_age(obj: Object, now: datetime.datetime) -> str:
    """The AGE cell: kube's ConvertToHumanReadableDateType of metadata.creationTimestamp."""
    created = parse_time(obj.get("metadata", {}).get("creationTimestamp"))
    if created is None:
        return "<unknown>"
    return human_duration(now - created)


def human_duration(delta: datetime.timedelta) -> str:
    """k8s.io/apimachinery duration.HumanDuration."""
    seconds = delta.total_seconds()
    if int(seconds) < -1:  # Go truncates toward zero: up to 2s (excluded) in the future still counts as now
        return "<invalid>"
    if seconds < 0:
        return "0s"
    seconds = int(seconds)
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years = hours // 24 // 365
        rest = hours // 24 % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{hours // 24 // 365}y"
