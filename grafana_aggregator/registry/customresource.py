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

import datetime
from typing import Any

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
)

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


def served_versions(crd: Object) -> list[str]:
    """The versions a CRD serves, in its order."""
    return [str(v.get("name")) for v in (crd.get("spec") or {}).get("versions") or []
            if isinstance(v, dict) and v.get("served")]


class CustomResourceStrategy(Strategy):
    """One served version of a CRD's kind (see module)."""

    def __init__(self, crd: Object, version: str):
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        entry = version_of(crd, version)
        subresources = entry.get("subresources") or {}
        schema = (entry.get("schema") or {}).get("openAPIV3Schema") or {}
        kind = str(names.get("kind", ""))
        self.crd_name = str((crd.get("metadata") or {}).get("name", ""))
        self.info = KindInfo(
            group=str(spec.get("group", "")), version=version, kind=kind, plural=str(names.get("plural", "")),
            singular=str(names.get("singular") or kind.lower()), namespaced=spec.get("scope") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            has_status="status" in subresources, schema=schema, go_type=None)
        self.list_kind = str(names.get("listKind") or f"{kind}List")
        self.scale = subresources.get("scale")
        self.deprecated = bool(entry.get("deprecated"))
        self.deprecation_warning = entry.get("deprecationWarning")
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
