# -*- test-case-name: tests.test_customresource -*-
"""The strategy of a kind a CustomResourceDefinition defines, for one of its versions: names and scope for
discovery, the status subresource, `kubectl get` columns from `additionalPrinterColumns`, and field selectors
from `selectableFields`, all as kube's apiextensions-apiserver derives them from the CRD.

Table cells follow kube's CRD table convertor: a column whose JSONPath finds nothing is empty (null); `string`
columns print the first value found as text; `integer`, `number` and `boolean` take it only when it has that JSON
type (else null); `date` columns show the age of an RFC 3339 timestamp (`<invalid>` when it is not one).  A version
without printer columns gets kube's default `Age` column.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from ..apimachinery.fielderrors import FieldError, invalid
from ..apimachinery.gotypes import go_format
from ..apimachinery.jsonpath import JSONPathError, Step, find, parse
from ..apimachinery.strategy import (
    CREATION_TIMESTAMP_DESCRIPTION,
    NAME_COLUMN,
    KindInfo,
    Object,
    Strategy,
    TableColumn,
    human_duration,
    parse_time,
    type_meta_properties,
)
from ..apimachinery.scale import lookup
from ..apimachinery.schemavalidation import validate, validate_metadata_name
from ..apimachinery.structural import apply_defaults, prune

#: The column kube gives a version without additionalPrinterColumns.
DEFAULT_COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
     "description": CREATION_TIMESTAMP_DESCRIPTION},
)


def version_of(crd: Object, version: str) -> dict[str, Any]:
    """The `spec.versions[]` entry of a version (KeyError when the CRD has no such version)."""
    for entry in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(entry, dict) and entry.get("name") == version:
            return entry
    raise KeyError(version)


def published_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A version's schema as OpenAPI publishes it (for `kubectl explain`): kube's apiVersion, kind and metadata
    (ObjectMeta) in place of whatever the CRD says about them."""
    if not schema:
        return {}
    return {**schema, "type": "object",
            "properties": {**(schema.get("properties") or {}), **type_meta_properties()}}


def served_versions(crd: Object) -> list[str]:
    """The versions a CRD serves, in its order."""
    return [str(v.get("name")) for v in (crd.get("spec") or {}).get("versions") or []
            if isinstance(v, dict) and v.get("served")]


class CustomResourceStrategy(Strategy):
    """One served version of a CRD's kind (see module)."""

    #: Custom resources may be far larger than this server's built-in kinds (a whole pod template, say).
    max_values = 10_000

    def __init__(self, crd: Object, version: str):
        spec = crd.get("spec") or {}
        # Served under the names the naming controller accepted (kube's crdHandler serves status.acceptedNames, so
        # a rename that conflicts with another CRD does not change what is served).
        accepted = (crd.get("status") or {}).get("acceptedNames") or {}
        names = accepted if accepted.get("plural") and accepted.get("kind") else spec.get("names") or {}
        entry = version_of(crd, version)
        subresources = entry.get("subresources") or {}
        schema = (entry.get("schema") or {}).get("openAPIV3Schema") or {}
        kind = str(names.get("kind", ""))
        self.crd_name = str((crd.get("metadata") or {}).get("name", ""))
        group = str(spec.get("group", ""))
        self.info = KindInfo(
            group=group, version=version, kind=kind, plural=str(names.get("plural", "")),
            singular=str(names.get("singular") or kind.lower()), namespaced=spec.get("scope") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            has_status="status" in subresources, has_scale=isinstance(subresources.get("scale"), dict),
            schema=published_schema(schema), go_type=None, custom_resource=True, list_kind_name=str(names.get("listKind") or f"{kind}List"))
        self.list_kind = self.info.list_kind
        self.scale: dict[str, Any] = dict(subresources["scale"]) if self.info.has_scale else {}
        self.deprecated = bool(entry.get("deprecated"))
        self.deprecation_warning = entry.get("deprecationWarning")
        self._warnings: list[str] = []
        if self.deprecated:
            self._warnings.append(str(self.deprecation_warning) if self.deprecation_warning is not None
                                  else f"{group}/{version} {kind} is deprecated")
        #: The schema as validation, pruning and defaulting use it (empty when the CRD keeps every field).
        self.schema: dict[str, Any] = schema
        self.preserve_unknown_fields = bool(spec.get("preserveUnknownFields"))
        storage = next((str(v.get("name")) for v in spec.get("versions") or []
                        if isinstance(v, dict) and v.get("storage")), version)
        #: The apiVersion objects are stored with (the CRD's storage version), whatever version wrote them.
        self.storage_api_version = f"{group}/{storage}"
        self._has_defaults = _has_defaults(schema)
        self.list_map_keys = list_map_keys(schema)
        self._last_read: tuple[Object | None, Object | None] = (None, None)
        meta = crd.get("metadata") or {}
        self.terminating = bool(meta.get("deletionTimestamp")) or any(
            isinstance(c, dict) and c.get("type") == "Terminating" and c.get("status") == "True"
            for c in (crd.get("status") or {}).get("conditions") or [])
        self._printer: list[tuple[TableColumn, tuple[Step, ...] | None]] = []
        for column in entry.get("additionalPrinterColumns") or DEFAULT_COLUMNS:
            try:
                path: tuple[Step, ...] | None = parse(str(column.get("jsonPath", "")))
            except JSONPathError:
                path = None  # validation refuses such a CRD; a stored one prints nothing there
            self._printer.append((TableColumn(str(column.get("name", "")), str(column.get("type", "string")),
                                              str(column.get("format", "")), str(column.get("description", "")),
                                              int(column.get("priority", 0) or 0)), path))
        self.columns = (NAME_COLUMN, *(column for column, _ in self._printer))
        self._selectable: list[tuple[str, tuple[Step, ...]]] = []
        for field in entry.get("selectableFields") or []:
            text = str((field or {}).get("jsonPath", ""))
            try:
                self._selectable.append((text.lstrip("."), parse(text)))
            except JSONPathError:
                continue
        self.field_labels = ("metadata.name", "metadata.namespace", *(name for name, _ in self._selectable))

    # -- decoding: defaults and pruning, as kube's CR codec applies them on every write and read ----------

    def default(self, obj: Object) -> None:
        if self._has_defaults:
            apply_defaults(obj, self.schema)

    def prune(self, obj: Object) -> list[str]:
        if self.preserve_unknown_fields or not self.schema:
            return []
        return prune(obj, self.schema)

    def on_read(self, obj: Object) -> Object:
        """A stored object as this version serves it: kube's `None` conversion (apiVersion rewritten) and the
        schema's current defaults (a default added after it was written), as kube converts and defaults on
        decoding from storage.  The object last read is remembered, so a watch event is converted once for all
        its watchers."""
        converted = obj.get("apiVersion") != self.info.api_version
        if not self._has_defaults and not converted:
            return obj
        last, answer = self._last_read
        if last is obj and answer is not None:
            return answer
        result = copy.deepcopy(obj)
        result["apiVersion"] = self.info.api_version
        if self._has_defaults:
            apply_defaults(result, self.schema)
        answer = obj if result == obj else result
        self._last_read = (obj, answer)
        return answer

    def to_storage(self, obj: Object) -> Object:
        if obj.get("apiVersion") == self.storage_api_version:
            return obj
        return {**obj, "apiVersion": self.storage_api_version}

    def scale_paths(self) -> dict[str, Any]:
        return self.scale

    def spec_changed(self, new: Object, old: Object) -> bool:
        """kube's CR strategy: without a status subresource, any change outside metadata bumps the generation."""
        if self.info.has_status:
            return super().spec_changed(new, old)
        return {k: v for k, v in new.items() if k != "metadata"} != {k: v for k, v in old.items() if k != "metadata"}

    def refuse_create(self) -> str | None:
        return "create not allowed while custom resource definition is terminating" if self.terminating else None

    def warnings(self) -> list[str]:
        return self._warnings

    # -- validation --------------------------------------------------------------------------------

    def validate(self, obj: Object) -> list[FieldError]:
        errors = validate_metadata_name(obj.get("metadata") or {})
        if self.schema:
            errors.extend(validate(obj, self.schema))
        errors.extend(self._scale_errors(obj, status=False))
        return errors

    def validate_update(self, new: Object, old: Object) -> list[FieldError]:
        errors = validate(new, self.schema) if self.schema else []
        return errors + self._scale_errors(new, status=False)

    def validate_status_update(self, new: Object, old: Object) -> list[FieldError]:
        errors = validate(new, self.schema) if self.schema else []
        return errors + self._scale_errors(new, status=True)

    def _scale_errors(self, obj: Object, status: bool) -> list[FieldError]:
        """kube's checks of the scale subresource's paths: the spec replicas on main-resource writes, the status
        replicas and the label selector on status writes."""
        if not self.scale:
            return []
        errors: list[FieldError] = []
        paths = [str(self.scale.get("statusReplicasPath", ""))] if status else [
            str(self.scale.get("specReplicasPath", ""))]
        for path in paths:
            found, value = lookup(obj, path)
            if not found:
                continue
            field_path = path.lstrip(".")
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(invalid(field_path, value, "should be an integer"))
            elif value < 0:
                errors.append(invalid(field_path, value, "should be a non-negative integer"))
            elif value > INT32_MAX:
                errors.append(invalid(field_path, value, f"should be less than or equal to {INT32_MAX}"))
        selector_path = str(self.scale.get("labelSelectorPath") or "")
        if status and selector_path:
            found, value = lookup(obj, selector_path)
            if found and not isinstance(value, str):
                errors.append(invalid(selector_path.lstrip("."), value, "must be a string"))
        return errors

    def table_cells(self, obj: Object, now: datetime.datetime) -> list[Any]:
        cells: list[Any] = [(obj.get("metadata") or {}).get("name", "")]
        for column, path in self._printer:
            found = find(obj, path) if path is not None else []
            cells.append(_cell(column.type, found[0], now) if found else None)
        return cells

    def selectable_fields(self, obj: Object) -> dict[str, str]:
        fields = super().selectable_fields(obj)
        for name, path in self._selectable:
            found = find(obj, path)
            fields[name] = go_format(found[0]) if found else ""
        return fields


INT32_MAX = 2**31 - 1


def list_map_keys(schema: Any, path: str = "") -> dict[str, tuple[str, ...]]:
    """The `x-kubernetes-list-type: map` lists of a schema by field path (array items add nothing to the path),
    with their `x-kubernetes-list-map-keys`, which server-side apply merges them by."""
    found: dict[str, tuple[str, ...]] = {}
    if not isinstance(schema, dict):
        return found
    keys = schema.get("x-kubernetes-list-map-keys")
    if schema.get("x-kubernetes-list-type") == "map" and isinstance(keys, list) and keys and path:
        found[path] = tuple(str(key) for key in keys)
    for name, child in (schema.get("properties") or {}).items():
        found.update(list_map_keys(child, f"{path}.{name}" if path else str(name)))
    if isinstance(schema.get("items"), dict):
        found.update(list_map_keys(schema["items"], path))
    return found


def _has_defaults(schema: Any) -> bool:
    """Whether a schema sets a default anywhere (only then is there defaulting to do on each read)."""
    if isinstance(schema, list):
        return any(_has_defaults(item) for item in schema)
    if not isinstance(schema, dict):
        return False
    return "default" in schema or any(_has_defaults(value) for key, value in schema.items()
                                      if key not in ("example", "enum", "x-kubernetes-validations"))


def _cell(column_type: str, value: Any, now: datetime.datetime) -> Any:
    """One cell as kube's CRD table convertor makes it from the first value its JSONPath found."""
    if value is None:
        return None
    if column_type == "string":
        return value if isinstance(value, str) else go_format(value)
    if column_type == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        return int(value) if isinstance(value, float) else None
    if column_type == "number":
        if isinstance(value, bool):
            return None
        return float(value) if isinstance(value, (int, float)) else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "date":
        if not isinstance(value, str):
            return None
        moment = parse_time(value)
        if moment is None or moment.tzinfo is None:
            return "<invalid>"
        return human_duration(now - moment)
    return None


__all__ = ["CustomResourceStrategy", "DEFAULT_COLUMNS", "served_versions", "version_of"]
