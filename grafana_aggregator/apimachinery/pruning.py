"""Unknown-field pruning: kube drops the fields a kind's schema does not declare from every object written.

The paths dropped are what fieldValidation then warns about (Warn) or refuses (Strict).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


#: The fields of metav1.ObjectMeta; any other key under `metadata` is unknown.
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields",
})


def prune_unknown_fields(obj: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Remove fields the kind's schema does not declare and return their paths (kube drops them too)."""
    unknown: list[str] = []
    if not schema:
        return unknown
    _prune(obj, schema, "", unknown, top=True)
    return unknown


def _prune(value: Any, schema: Mapping[str, Any], path: str, unknown: list[str], top: bool = False) -> None:
    if not isinstance(value, dict):
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                _prune(item, schema["items"], f"{path}[{index}]", unknown)
        return
    if path == "metadata":
        for key in list(value):
            if key not in OBJECT_META_FIELDS:
                unknown.append(f"{path}.{key}")
                del value[key]
        return
    properties = schema.get("properties")
    if properties is None:
        return
    for key in list(value):
        if top and key in ("apiVersion", "kind", "metadata"):
            if key == "metadata":
                _prune(value[key], {}, "metadata", unknown)
            continue
        if key not in properties:
            if schema.get("additionalProperties") not in (None, False) or schema.get(
                    "x-kubernetes-preserve-unknown-fields"):
                continue
            unknown.append(f"{path}.{key}" if path else key)
            del value[key]
            continue
        _prune(value[key], properties[key], f"{path}.{key}" if path else key, unknown)
