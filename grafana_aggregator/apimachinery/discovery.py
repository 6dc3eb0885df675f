"""Discovery documents (`/api`, `/apis`) and the Accept negotiation that picks legacy or aggregated form.

Pure functions build the documents; the resources only serialise them.  Negotiation follows
k8s.io/apiserver: the first Accept clause that names a form the server can produce wins.  Aggregated
`apidiscovery.k8s.io/v2beta1` is recognised when emulating a Kubernetes older than 1.33, and, unlike
kube 1.33 (its `AggregatedDiscoveryRemoveBetaType` gate), also later whenever the client does not ask
for v2 at all: kubectl 1.27–1.29 ask only for v2beta1, and on legacy discovery they fetch every
group-version and print errors for each unavailable one (docs/compatibility.md).

The core group: `/api` lists version `v1`, which serves no resources here; kubectl maps the kind `List`
of `kubectl get -o yaml` files only for a discovered `v1`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attrs import frozen

from .strategy import KindInfo

DISCOVERY_GROUP = "apidiscovery.k8s.io"
AGGREGATED_KIND = "APIGroupDiscoveryList"


@frozen
class MediaRange:
    """One clause of an Accept header."""

    type: str
    subtype: str
    params: dict[str, str]


def parse_accept(header: str) -> list[MediaRange]:
    """Split an Accept header into its clauses, in the client's order (q-values are not reordered, as in kube)."""
    ranges = []
    for clause in header.split(","):
        clause = clause.strip()
        if not clause:
            continue
        media, *raw_params = (p.strip() for p in clause.split(";"))
        kind, _, subtype = media.partition("/")
        params = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(kind.strip().lower(), subtype.strip().lower() or "*", params))
    return ranges


@frozen
class Negotiated:
    """What form a discovery response takes: `legacy`, or aggregated with its apidiscovery version."""

    form: str
    version: str = ""

    @property
    def content_type(self) -> bytes:
        if self.form == "legacy":
            return b"application/json"
        return f"application/json;g={DISCOVERY_GROUP};v={self.version};as={AGGREGATED_KIND}".encode()


def negotiate_discovery(accept: str | None, emulated_minor: int) -> Negotiated | None:
    """Pick the discovery form for an Accept header; None when nothing acceptable can be produced (406)."""
    if not accept or not accept.strip():
        return Negotiated("legacy")
    ranges = parse_accept(accept)
    versions = ("v2", "v2beta1") if emulated_minor < 33 or not any(_aggregated(m, "v2") for m in ranges) else ("v2",)
    for media in ranges:
        if media.params.get("g") == DISCOVERY_GROUP or media.params.get("as") == AGGREGATED_KIND:
            if (media.type, media.subtype) == ("application", "json") and media.params.get("g") == DISCOVERY_GROUP \
                    and media.params.get("as") == AGGREGATED_KIND and media.params.get("v") in versions:
                return Negotiated("aggregated", media.params["v"])
            continue
        if (media.type, media.subtype) in (("application", "json"), ("application", "*"), ("*", "*")):
            return Negotiated("legacy")
    return None


def _aggregated(media: MediaRange, version: str) -> bool:
    """Whether an Accept clause asks for the aggregated discovery list in the given version."""
    return ((media.type, media.subtype) == ("application", "json") and media.params.get("g") == DISCOVERY_GROUP
            and media.params.get("as") == AGGREGATED_KIND and media.params.get("v") == version)


def aggregated_list(version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """An `APIGroupDiscoveryList` holding the given groups."""
    return {"kind": AGGREGATED_KIND, "apiVersion": f"{DISCOVERY_GROUP}/{version}", "metadata": {}, "items": items}


#: The versions of the core group `/api` lists.
CORE_VERSIONS = ("v1",)


def legacy_core_versions(versions: Sequence[str], server_address: str) -> dict[str, Any]:
    """`/api` in legacy form, as kube writes it (no apiVersion; the address clients reach the server at)."""
    body: dict[str, Any] = {"kind": "APIVersions", "versions": list(versions)}
    if versions:
        body["serverAddressByClientCIDRs"] = [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    return body


def aggregated_core_groups(versions: Sequence[str]) -> list[dict[str, Any]]:
    """The items of the aggregated `/api` list: the core group (no name) with its versions, none of which has
    resources here."""
    if not versions:
        return []
    return [{"metadata": {}, "versions": [{"version": v, "freshness": "Current"} for v in versions]}]


def core_resource_list(version: str) -> dict[str, Any]:
    """`/api/<version>`: the core group-version's APIResourceList; kube writes it without apiVersion."""
    return {"kind": "APIResourceList", "groupVersion": version, "resources": []}


def legacy_group_list(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """`/apis` in legacy form."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


#: kube pins its own group above every APIService (20001, past the 20000 maximum): "It's good to be king."
APIREGISTRATION_GROUP = "apiregistration.k8s.io"
APIREGISTRATION_PRIORITY = 20001


def _priority(apiservice: dict[str, Any], key: str) -> int:
    spec = apiservice.get("spec", {})
    if key == "groupPriorityMinimum" and spec.get("group") == APIREGISTRATION_GROUP:
        return APIREGISTRATION_PRIORITY
    value = spec.get(key, 0)
    return value if isinstance(value, int) else 0


_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def kube_version_key(version: str) -> tuple[int, int, int, str]:
    """A sort key putting versions in kube's preference order (GA > beta > alpha, higher first)."""
    match = _KUBE_VERSION.match(version)
    if not match:
        return (0, 0, 0, version)
    stability = {"": 3, "beta": 2, "alpha": 1}[match.group(2) or ""]
    return (1, stability, int(match.group(1)) * 1_000_000 + int(match.group(3) or 0), "")


def _version_order(apiservice: dict[str, Any]) -> tuple[Any, ...]:
    key = kube_version_key(apiservice.get("spec", {}).get("version", ""))
    # Higher priority first; kube-like versions above others, then the kube-aware order (descending);
    # non-kube-like versions ascending by name.
    return (-_priority(apiservice, "versionPriority"), -key[0], -key[1], -key[2], key[3])


def sorted_by_group_and_version(apiservices: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """kube's SortedByGroupAndVersion: groups by their highest priority (ties by name), versions by priority."""
    by_priority = sorted(apiservices, key=lambda a: (-_priority(a, "groupPriorityMinimum"),
                                                     a.get("metadata", {}).get("name", "")))
    buckets: dict[str, list[dict[str, Any]]] = {}
    for apiservice in by_priority:
        buckets.setdefault(apiservice.get("spec", {}).get("group", ""), []).append(apiservice)
    return [sorted(bucket, key=_version_order) for group, bucket in buckets.items() if group]


def _group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group(bucket: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The legacy APIGroup of one group's APIServices (already in preference order)."""
    group = bucket[0]["spec"]["group"]
    versions = [_group_version(group, a["spec"]["version"]) for a in bucket]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def legacy_groups(apiservices: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `groups` of the legacy APIGroupList: every APIService's group, in kube's order."""
    return [api_group(bucket) for bucket in sorted_by_group_and_version(apiservices)]


def api_resource_list(group: str, version: str, kinds: Sequence[KindInfo]) -> dict[str, Any]:
    """The APIResourceList of a locally served group-version."""
    resources: list[dict[str, Any]] = []
    for info in kinds:
        entry: dict[str, Any] = {"name": info.plural, "singularName": info.singular, "namespaced": info.namespaced,
                                 "kind": info.kind, "verbs": list(info.verbs)}
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        resources.append(entry)
        if info.has_status:
            resources.append({"name": f"{info.plural}/status", "singularName": "", "namespaced": info.namespaced,
                              "kind": info.kind, "verbs": ["get", "patch", "update"]})
        if info.has_scale:
            resources.append({"name": f"{info.plural}/scale", "singularName": "", "namespaced": info.namespaced,
                              "group": "autoscaling", "version": "v1", "kind": "Scale",
                              "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
            "resources": resources}


def aggregated_resources(kinds: Sequence[KindInfo]) -> list[dict[str, Any]]:
    """The aggregated-discovery resources of a locally served group-version."""
    resources = []
    for info in kinds:
        kind = {"group": info.group, "version": info.version, "kind": info.kind}
        entry: dict[str, Any] = {"resource": info.plural, "responseKind": kind,
                                 "scope": "Namespaced" if info.namespaced else "Cluster",
                                 "singularResource": info.singular, "verbs": list(info.verbs)}
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        subresources = []
        if info.has_status:
            subresources.append({"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]})
        if info.has_scale:
            subresources.append({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1",
                                                                           "kind": "Scale"},
                                 "verbs": ["get", "patch", "update"]})
        if subresources:
            entry["subresources"] = subresources
        resources.append(entry)
    return resources


def aggregated_groups(apiservices: Iterable[dict[str, Any]],
                      resources_for: Callable[[str, str], list[dict[str, Any]] | None]) -> list[dict[str, Any]]:
    """The items of an APIGroupDiscoveryList: every APIService's group-version, with its resources when known.

    resources_for(group, version) returns the resources, or None when they are not known (a remote
    backend not yet reached): that version is listed as Stale, as kube lists a failing backend.
    """
    items = []
    for bucket in sorted_by_group_and_version(apiservices):
        versions = []
        for apiservice in bucket:
            group, version = apiservice["spec"]["group"], apiservice["spec"]["version"]
            resources = resources_for(group, version)
            entry: dict[str, Any] = {"version": version}
            if resources:
                entry["resources"] = resources
            entry["freshness"] = "Current" if resources is not None else "Stale"
            versions.append(entry)
        items.append({"metadata": {"name": bucket[0]["spec"]["group"]}, "versions": versions})
    return items
