# -*- test-case-name: tests.test_remote_discovery -*-
"""The discovery documents of remote backends, kept so that `/apis` lists their resources.

The availability probe fetches each backend's `/apis/<group>/<version>` (kube's legacy discovery
document, the one every aggregated server serves); what it answers is stored here before the
APIService is marked Available, and dropped once it is marked unavailable.  `/apis` lists a
remote group-version's resources only while its APIService is Available, so discovery never lags
availability: both change with the one status write.
"""

from __future__ import annotations

import json
from typing import Any

#: Discovery documents larger than this are refused.
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024

Resources = list[dict[str, Any]]


class DiscoveryDocumentError(ValueError):
    """A backend answered its discovery request with something that is not an APIResourceList."""


def aggregated_from_resource_list(group: str, version: str, document: dict[str, Any]) -> Resources:
    """Convert a legacy APIResourceList into aggregated-discovery resources (subresources under their parent)."""
    resources: dict[str, dict[str, Any]] = {}
    subresources: list[tuple[str, dict[str, Any]]] = []
    for entry in document.get("resources") or []:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("kind"):
            continue
        kind = {"group": entry.get("group") or group, "version": entry.get("version") or version,
                "kind": entry["kind"]}
        name = str(entry["name"])
        if "/" in name:
            parent, _, subresource = name.partition("/")
            subresources.append((parent, {"subresource": subresource, "responseKind": kind,
                                          "verbs": list(entry.get("verbs") or [])}))
            continue
        item: dict[str, Any] = {"resource": name, "responseKind": kind,
                                "scope": "Namespaced" if entry.get("namespaced") else "Cluster",
                                "singularResource": entry.get("singularName") or "",
                                "verbs": list(entry.get("verbs") or [])}
        if entry.get("shortNames"):
            item["shortNames"] = list(entry["shortNames"])
        if entry.get("categories"):
            item["categories"] = list(entry["categories"])
        resources[name] = item
    for parent, described in subresources:
        if parent in resources:
            resources[parent].setdefault("subresources", []).append(described)
    return list(resources.values())


def resources_from_discovery(group: str, version: str, body: bytes) -> Resources:
    """The aggregated-discovery resources of a backend's `/apis/<group>/<version>` answer.

    DiscoveryDocumentError when the body is not an APIResourceList of that group-version.
    """
    if len(body) > MAX_DOCUMENT_BYTES:
        raise DiscoveryDocumentError(f"the discovery document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise DiscoveryDocumentError(f"the discovery document is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("resources", []), list):
        raise DiscoveryDocumentError("the discovery document is not an APIResourceList")
    expected = f"{group}/{version}" if group else version
    if document.get("groupVersion", expected) != expected:
        raise DiscoveryDocumentError(f"the discovery document is of {document.get('groupVersion')!r}, "
                                     f"not of {expected!r}")
    return aggregated_from_resource_list(group, version, document)


class DiscoveryCache:
    """The resources of each remote APIService, by name, as its backend last answered the probe."""

    def __init__(self) -> None:
        self._resources: dict[str, Resources] = {}
        #: Grows whenever what `resources` returns changes, so discovery documents can be cached.
        self.generation = 0

    def resources(self, name: str) -> Resources | None:
        """The resources of the APIService, or None when its backend has not answered (listed Stale)."""
        return self._resources.get(name)

    def store(self, name: str, resources: Resources) -> None:
        """Keep what the APIService's backend answered."""
        if self._resources.get(name) != resources:
            self._resources[name] = resources
            self.generation += 1

    def forget(self, name: str) -> None:
        """Drop the APIService's resources (its backend failed, or it is gone)."""
        if self._resources.pop(name, None) is not None:
            self.generation += 1
