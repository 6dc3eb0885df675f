"""The custom resources benchmark's objects and readings (issue 15): CRDs with a realistic schema, their instances,
the `Established` events of a CRD watch, and the groups a discovery document lists.

Kept apart from the section (bench/sections.py `crds`) as pure functions, so what the section counts as
"established" or "listed" is tested.
"""

from __future__ import annotations

import json
import re
from typing import Any

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
#: The version every bench CRD serves.
CR_VERSION = "v1"
#: The names of the bench's CRDs: `widgets.<group>`, the group ending in this suffix.
GROUP_SUFFIX = ".crds.bench"
CRD_NAME = re.compile(r"widgets\.[a-z0-9-]+\.crds\.bench")

#: A realistic schema for a Widget: typed fields, bounds, a required field, a default, an enum, a map, a list of
#: objects and a status, so a create pays for validation, defaulting and pruning as a real kind's would.
WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1, "maxLength": 256},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 100, "default": 1},
                "mode": {"type": "string", "enum": ["Active", "Paused", "Draining"], "default": "Active"},
                "timeoutSeconds": {"type": "number", "minimum": 0},
                "suspend": {"type": "boolean"},
                "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
                "ports": {"type": "array", "maxItems": 16, "items": {
                    "type": "object", "required": ["port"],
                    "properties": {"name": {"type": "string"},
                                   "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                   "protocol": {"type": "string", "enum": ["TCP", "UDP"], "default": "TCP"}}}},
            },
        },
        "status": {
            "type": "object",
            "properties": {"phase": {"type": "string"}, "observedGeneration": {"type": "integer"}},
        },
    },
}


def widget_crd(group: str) -> dict[str, Any]:
    """A namespaced CRD `widgets.<group>` serving Widget in CR_VERSION with WIDGET_SCHEMA and a status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}", "labels": {"bench": "crds"}},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": CR_VERSION, "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": WIDGET_SCHEMA}, "subresources": {"status": {}}}],
        },
    }


def widget(group: str, namespace: str, name: str) -> dict[str, Any]:
    """A Widget as a client would send it: `replicas` and the ports' `protocol` left to their defaults, and one field
    the schema does not know (`spec.colour`), which is pruned."""
    return {
        "apiVersion": f"{group}/{CR_VERSION}", "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {"image": "grafana/grafana:12.3.0", "mode": "Paused", "timeoutSeconds": 30, "suspend": False,
                 "labels": {"tier": "backend", "team": "platform"},
                 "ports": [{"name": "http", "port": 3000}, {"name": "grpc", "port": 3001, "protocol": "TCP"}],
                 "colour": "blue"},
    }


def defaulted_and_pruned(stored: dict[str, Any]) -> bool:
    """Whether a Widget made from `widget()` came back as its schema says: defaults filled in, the unknown field
    gone, and what was sent kept."""
    spec = stored.get("spec") or {}
    ports = spec.get("ports") or []
    return (spec.get("replicas") == 1 and "colour" not in spec and spec.get("mode") == "Paused"
            and [port.get("protocol") for port in ports] == ["TCP", "TCP"])


def established_marks(line: bytes) -> list[str]:
    """The bench CRD named by one line of a CRD watch stream when that event shows it `Established`, else none."""
    try:
        event = json.loads(line)
    except ValueError:
        return []
    if not isinstance(event, dict) or event.get("type") not in ("ADDED", "MODIFIED"):
        return []
    crd = event.get("object") or {}
    name = (crd.get("metadata") or {}).get("name", "")
    if not isinstance(name, str) or not CRD_NAME.fullmatch(name):
        return []
    conditions = (crd.get("status") or {}).get("conditions") or []
    if any(isinstance(c, dict) and c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        return [name]
    return []


def legacy_groups(body: bytes) -> set[str]:
    """The group names of a legacy discovery document (`APIGroupList`)."""
    return {str(group.get("name")) for group in json.loads(body).get("groups") or []}


def aggregated_groups(body: bytes, with_resources: bool = False) -> set[str]:
    """The group names of an aggregated discovery document (`APIGroupDiscoveryList`); with_resources, only those with
    a version that lists resources (a CRD's group is usable by kubectl only then; a remote group whose backend is
    unknown is listed with none, as Stale)."""
    return {str((item.get("metadata") or {}).get("name")) for item in json.loads(body).get("items") or []
            if not with_resources or any(version.get("resources") for version in item.get("versions") or [])}
