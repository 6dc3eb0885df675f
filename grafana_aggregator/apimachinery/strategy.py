"""What the generic REST handler needs to know about a kind, and the hooks a kind's strategy overrides.

A strategy mirrors k8s.io/apiserver's RESTCreateStrategy / RESTUpdateStrategy: defaulting, preparing
an object for create or update (status and spec kept apart), validation into field errors, generation
bumps, and the server-side printing of `kubectl get`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from attrs import field, frozen
from twisted.internet.interfaces import IReactorTime

from ..storage import Collection
from .fielderrors import FieldError
from .gotypes import GoType
from .pruning import prune_unknown_fields

Object = dict[str, Any]

OBJECT_META_REF = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should convert "
    "recognized schemas to the latest internal value, and may reject unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer this from "
    "the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
METADATA_DESCRIPTION = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def type_meta_properties(metadata_description: str = METADATA_DESCRIPTION) -> dict[str, Any]:
    """The apiVersion, kind and metadata properties every kind's schema starts with, as kube publishes them."""
    return {
        "apiVersion": {"description": API_VERSION_DESCRIPTION, "type": "string"},
        "kind": {"description": KIND_DESCRIPTION, "type": "string"},
        "metadata": {"allOf": [{"$ref": OBJECT_META_REF}], "default": {}, "description": metadata_description},
    }


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
    #: The kind has kube's scale subresource (autoscaling/v1 Scale), as a CRD can give it.
    has_scale: bool = False
    #: Verbs of the main resource, in the order discovery lists them.
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    #: OpenAPI v3 schema of the whole object (with descriptions, for kubectl explain); see registry modules.
    schema: dict[str, Any] = field(factory=dict, hash=False)
    description: str = ""
    #: The Go struct of a built-in (compiled-in) kind: bodies decode into it (type errors are 400), may omit
    #: apiVersion and kind (the endpoint gives them), and strategic merge patch follows its patch tags.
    #: None for a custom resource: kind and apiVersion are required and strategic merge patch is 415.
    go_type: GoType | None = field(default=None, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def collection(self) -> Collection:
        """Where objects of the kind are stored."""
        return Collection(self.group, self.plural)

    #: A custom resource: its schema comes from a CRD and is published inline, as kube publishes it (no named
    #: nested types, so `kubectl explain` shows `<Object>`).
    custom_resource: bool = False
    #: The kind of its lists, when not `<kind>List` (a CRD's spec.names.listKind).
    list_kind_name: str = ""

    @property
    def list_kind(self) -> str:
        return self.list_kind_name or f"{self.kind}List"


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

    def prune(self, obj: Object) -> list[str]:
        """Drop the fields the kind does not know, in place, and return their paths (for fieldValidation)."""
        return prune_unknown_fields(obj, self.info.schema)

    def on_read(self, obj: Object) -> Object:
        """An object as read from storage is answered (a custom resource gets the defaults its schema has now)."""
        return obj

    #: The fields a fieldSelector may use (kube's ObjectMetaFieldsSet; a CRD adds its selectableFields).
    field_labels: tuple[str, ...] = ("metadata.name", "metadata.namespace")
    #: How many values an object of this kind may hold (None: negotiation.MAX_OBJECT_VALUES, enough for any
    #: built-in kind here; CRDs and custom resources are larger).
    max_values: int | None = None
    #: The lists that are maps keyed by some of their fields (`spec.ports`: ("port",)), for server-side apply.
    list_map_keys: dict[str, tuple[str, ...]] = {"status.conditions": ("type",)}

    #: Deleting an object of this kind always goes through a finalizer (kube's CRDs add theirs on delete).
    finalizes_deletion: bool = False

    def prepare_for_delete(self, obj: Object, now: datetime.datetime) -> None:
        """Adjust an object being marked for deletion (add a finalizer, a condition), in place."""

    def write_warnings(self, obj: Object) -> list[str]:
        """Warnings an accepted create or update of this object is answered with."""
        return []

    def scale_paths(self) -> dict[str, Any]:
        """The scale subresource's specReplicasPath, statusReplicasPath and labelSelectorPath (when has_scale)."""
        return {}

    def to_storage(self, obj: Object) -> Object:
        """An object as it is stored (a custom resource in its CRD's storage version); on_read undoes it."""
        return obj

    def refuse_create(self) -> str | None:
        """Why creates are refused now (kube refuses them while a CRD terminates), or None."""
        return None

    def warnings(self) -> list[str]:
        """Warnings every request to this kind is answered with (a deprecated version's, say)."""
        return []

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


def rfc3339(moment: datetime.datetime) -> str:
    """metav1.Time's wire form: seconds precision, UTC, `Z` suffix (a naive moment is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_clock(clock: IReactorTime) -> Callable[[], datetime.datetime]:
    """The current UTC time by an injected clock (timestamps written into objects follow a test's Clock)."""

    def now() -> datetime.datetime:
        return datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)

    return now


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


@frozen
class LocalGroupVersion:
    """A group-version served in this process, with its kinds."""

    group: str
    version: str
    kinds: tuple[Strategy, ...]

    @property
    def infos(self) -> list[KindInfo]:
        return [k.info for k in self.kinds]
