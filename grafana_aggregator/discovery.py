"""Discovery documents (`/api`, `/apis`) and the Accept negotiation that picks legacy or aggregated form.

Pure functions build the documents; the resources only serialise them.  Negotiation follows
k8s.io/apiserver: the first Accept clause that names a form the server can produce wins; aggregated
`apidiscovery.k8s.io/v2beta1` is only recognised when emulating a Kubernetes older than 1.33 (the
`AggregatedDiscoveryRemoveBetaType` gate), so 1.27–1.29 clients then get the legacy form.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from .apimachinery.status import StatusError, method_not_allowed, not_found_path, write_json, write_status

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
    versions = ("v2", "v2beta1") if emulated_minor < 33 else ("v2",)
    for media in parse_accept(accept):
        if media.params.get("g") == DISCOVERY_GROUP or media.params.get("as") == AGGREGATED_KIND:
            if (media.type, media.subtype) == ("application", "json") and media.params.get("g") == DISCOVERY_GROUP \
                    and media.params.get("as") == AGGREGATED_KIND and media.params.get("v") in versions:
                return Negotiated("aggregated", media.params["v"])
            continue
        if (media.type, media.subtype) in (("application", "json"), ("application", "*"), ("*", "*")):
            return Negotiated("legacy")
    return None


def aggregated_list(version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """An `APIGroupDiscoveryList` holding the given groups."""
    return {"kind": AGGREGATED_KIND, "apiVersion": f"{DISCOVERY_GROUP}/{version}", "metadata": {}, "items": items}


def legacy_core_versions() -> dict[str, Any]:
    """`/api` in legacy form: this server has no core group, so no versions."""
    return {"kind": "APIVersions", "versions": []}


def legacy_group_list(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """`/apis` in legacy form."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class DiscoveryResource(Resource):
    """`/api` or `/apis`: the negotiated document; deeper paths are left to the children this resource is given."""

    def __init__(self, core: bool, emulated_minor: int):
        super().__init__()
        self._core = core
        self._emulated_minor = emulated_minor

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        if path == b"":
            return self
        return _NotFound()

    def render(self, request: IRequest) -> bytes:
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            return write_status(request, method_not_allowed(method, request.path.decode("utf-8", "replace")))
        accept = request.getHeader(b"accept")
        negotiated = negotiate_discovery(accept.decode("latin-1") if accept else None, self._emulated_minor)
        if negotiated is None:
            return write_status(request, StatusError(
                406, f"only the following media types are accepted: application/json, "
                     f"application/json;g={DISCOVERY_GROUP};v=v2;as={AGGREGATED_KIND}"))
        if negotiated.form == "aggregated":
            body = aggregated_list(negotiated.version, [])
        else:
            body = legacy_core_versions() if self._core else legacy_group_list([])
        data = write_json(request, 200, body)
        request.setHeader(b"Content-Type", negotiated.content_type)
        request.setHeader(b"Vary", b"Accept")
        return data


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return write_status(request, not_found_path())
