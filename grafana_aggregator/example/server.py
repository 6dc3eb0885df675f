# -*- test-case-name: tests.test_example_server -*-
"""The resource tree of the example server: `example.grafana.app/v0alpha1` behind request-header authentication.

Everything is computed from the process start time, the injected clock and the caller: `dummy` holds
the fixed objects test1..test3 (labelled `app: dummy` and `name: <name>`) in whatever namespace is
asked for, and lists them with kube's selectors and paging (`listing.py`); `dummy/<name>/sub` echoes
the identity the front proxy asserted; and `runtime` describes this process (grafana-aggregator.md §8)
as one object named after the server, created when it started, so `kubectl get runtime` has a row.

Authentication is front-proxy only: a client certificate that chains to the request-header CA (with
an allowed CN, when names are configured) plus a user name header.  Without that the caller is
anonymous and may read only the health endpoints and `/version`; a certificate that is presented but
rejected is a 401 everywhere, as in kube.  Any authenticated caller may do everything there is to do.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from .. import __version__
from ..apimachinery.negotiation import Output, encode, negotiate_output
from ..apimachinery.resourcerequest import content_type
from ..apimachinery.strategy import AGE_COLUMN, NAME_COLUMN, TableColumn, rfc3339
from ..apimachinery.tables import table_of
from ..apimachinery.status import StatusError, not_found_path, unauthorized, write_json, write_status
from ..web.discovery import CoreResource
from ..apimachinery.strategy import LocalGroupVersion
from ..identity.auth import PUBLIC_PATHS, Authenticator, Credentials, UserInfo
from ..apimachinery.discovery import aggregated_list, aggregated_resources, api_resource_list, legacy_group_list, negotiate_discovery
from ..web.health import ENDPOINTS, HealthChecks, HealthResource
from ..web.openapi import OpenAPIResource
from ..apimachinery.strategy import type_meta_properties
from ..apimachinery.strategy import KindInfo, Object, Strategy
from ..web.site import api_call, request_user
from ..web.root import PeerChain, Router, VersionResource, transport_chain, version_info
from ..apimachinery.resource import ApiResource, StatusResource
from .listing import list_page

_log = Logger()

GROUP = "example.grafana.app"
VERSION = "v0alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
#: The Kubernetes version `/version` reports (it also picks kubectl's binary in version-dispatching setups).
EMULATED_VERSION = (1, 33)
#: Discovery is negotiated as a 1.32 server would, so apidiscovery v2beta1 is offered besides v2 (Grafana's
#: example server is built on k8s libraries that still serve it); `negotiate_discovery` ties v2beta1 to < 1.33.
DISCOVERY_MINOR = 32
#: The objects every namespace's `dummy` collection holds.
DUMMY_NAMES = ("test1", "test2", "test3")
#: The label every dummy object carries besides `name: <its name>`.
DUMMY_APP_LABEL = ("app", "dummy")
#: The server's name (Grafana's example server calls itself so): the name of its one RuntimeInfo object.
SERVER_NAME = "example-apiserver"
#: Where an all-namespaces `dummy` list places its objects.
DEFAULT_NAMESPACE = "default"
SUBRESOURCE = "sub"
SUBRESOURCE_KIND = "DummySubresource"
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"https://{GROUP}/{VERSION}/dummy")

DUMMY_SCHEMA: dict[str, Any] = {
    "description": "DummyResource is a fixed object served by the example API server (test1, test2 and test3).",
    "type": "object",
    "properties": {
        **type_meta_properties(),
        "spec": {"description": "Spec is the text `dummy: <name>`.", "type": "string"},
    },
}

RUNTIME_SCHEMA: dict[str, Any] = {
    "description": "RuntimeInfo describes the running example API server process.",
    "type": "object",
    "properties": {
        **type_meta_properties("The server's name and, as creationTimestamp, when it started."),
        "startupTime": {"description": "When the process started, in milliseconds since the Unix epoch.",
                        "type": "integer", "format": "int64"},
        "buildVersion": {"description": "The version of the server.", "type": "string"},
        "buildCommit": {"description": "The commit the server was built from, when known.", "type": "string"},
        "enterpriseBuildCommit": {"description": "The enterprise commit, when known.", "type": "string"},
        "buildBranch": {"description": "The branch the server was built from, when known.", "type": "string"},
        "buildStamp": {"description": "When the server was built, in seconds since the Unix epoch (0 if unknown).",
                       "type": "integer", "format": "int64"},
        "enterprise": {"description": "Whether this is an enterprise build.", "type": "boolean"},
        "packaging": {"description": "How the server was packaged.", "type": "string"},
    },
}

DUMMY_INFO = KindInfo(
    group=GROUP, version=VERSION, kind="DummyResource", plural="dummy", singular="dummy", namespaced=True,
    has_status=False, verbs=("get", "list"), schema=DUMMY_SCHEMA, description=DUMMY_SCHEMA["description"],
)
RUNTIME_INFO = KindInfo(
    group=GROUP, version=VERSION, kind="RuntimeInfo", plural="runtime", singular="runtime", namespaced=False,
    has_status=False, verbs=("list",), schema=RUNTIME_SCHEMA, description=RUNTIME_SCHEMA["description"],
)


class DummyStrategy(Strategy):
    """DummyResource: read-only; its Table has the default Name and Age columns."""

    info = DUMMY_INFO


class RuntimeStrategy(Strategy):
    """RuntimeInfo: read-only; its Table shows the server's name, version and age (commit and packaging wide)."""

    info = RUNTIME_INFO
    columns = (
        NAME_COLUMN,
        TableColumn("Version", "string", "", RUNTIME_SCHEMA["properties"]["buildVersion"]["description"]),
        AGE_COLUMN,
        TableColumn("Commit", "string", "", RUNTIME_SCHEMA["properties"]["buildCommit"]["description"], 1),
        TableColumn("Packaging", "string", "", RUNTIME_SCHEMA["properties"]["packaging"]["description"], 1),
    )

    def table_cells(self, obj: Object, now: datetime.datetime) -> list[Any]:
        name, age = super().table_cells(obj, now)
        return [name, obj.get("buildVersion", ""), age, obj.get("buildCommit", ""), obj.get("packaging", "")]


def example_group_version() -> LocalGroupVersion:
    """The one group-version served, with its kinds (what the OpenAPI documents are built from)."""
    return LocalGroupVersion(GROUP, VERSION, (DummyStrategy(), RuntimeStrategy()))


@frozen
class BuildInfo:
    """What `runtime` reports about the build."""

    version: str = __version__
    commit: str = ""
    enterprise_commit: str = ""
    branch: str = ""
    stamp: int = 0
    enterprise: bool = False
    packaging: str = "python"


# --------------------------------------------------------------------------------------------------------------
# Documents and objects (pure functions)


def group_version_entry() -> dict[str, str]:
    """The GroupVersionForDiscovery of the served group-version."""
    return {"groupVersion": API_VERSION, "version": VERSION}


def api_group() -> dict[str, Any]:
    """`/apis/example.grafana.app`."""
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [group_version_entry()],
            "preferredVersion": group_version_entry()}


def group_list() -> dict[str, Any]:
    """`/apis` in legacy form."""
    return legacy_group_list([{"name": GROUP, "versions": [group_version_entry()],
                               "preferredVersion": group_version_entry()}])


def resource_list() -> dict[str, Any]:
    """`/apis/example.grafana.app/v0alpha1`: dummy, dummy/sub and runtime."""
    document = api_resource_list(GROUP, VERSION, [DUMMY_INFO, RUNTIME_INFO])
    resources: list[dict[str, Any]] = []
    for entry in document["resources"]:
        resources.append(entry)
        if entry["name"] == DUMMY_INFO.plural:
            resources.append({"name": f"{DUMMY_INFO.plural}/{SUBRESOURCE}", "singularName": "",
                              "namespaced": True, "kind": SUBRESOURCE_KIND, "verbs": ["get"]})
    document["resources"] = resources
    return document


def aggregated_discovery(version: str) -> dict[str, Any]:
    """`/apis` as an APIGroupDiscoveryList of the given apidiscovery version."""
    resources = aggregated_resources([DUMMY_INFO, RUNTIME_INFO])
    for entry in resources:
        if entry["resource"] == DUMMY_INFO.plural:
            entry["subresources"] = [{"subresource": SUBRESOURCE, "verbs": ["get"],
                                      "responseKind": {"group": GROUP, "version": VERSION, "kind": SUBRESOURCE_KIND}}]
    item = {"metadata": {"name": GROUP},
            "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}]}
    return aggregated_list(version, [item])


def dummy_uid(name: str) -> str:
    """The uid of a dummy object: derived from its name, so it is the same on every request and restart."""
    return str(uuid.uuid5(_UID_NAMESPACE, name))


def dummy_object(name: str, namespace: str, started: datetime.datetime) -> Object:
    """One DummyResource."""
    return {
        "kind": DUMMY_INFO.kind,
        "apiVersion": API_VERSION,
        "metadata": {"name": name, "namespace": namespace, "uid": dummy_uid(name), "resourceVersion": "1",
                     "creationTimestamp": rfc3339(started), "labels": dummy_labels(name)},
        "spec": f"dummy: {name}",
    }


def dummy_labels(name: str) -> dict[str, str]:
    """The labels of a dummy object, for label selectors to choose by: `app: dummy` and `name: <name>`."""
    return dict([DUMMY_APP_LABEL, ("name", name)])


def dummy_objects(namespace: str, started: datetime.datetime) -> list[Object]:
    """The dummy objects of a namespace."""
    return [dummy_object(name, namespace, started) for name in DUMMY_NAMES]


def runtime_info(started: datetime.datetime, build: BuildInfo) -> Object:
    """The RuntimeInfo of this process (`runtime` lists exactly this one object)."""
    return {
        "kind": RUNTIME_INFO.kind,
        "apiVersion": API_VERSION,
        "metadata": {"name": SERVER_NAME, "creationTimestamp": rfc3339(started)},
        "startupTime": int(started.timestamp() * 1000),
        "buildVersion": build.version,
        "buildCommit": build.commit,
        "enterpriseBuildCommit": build.enterprise_commit,
        "buildBranch": build.branch,
        "buildStamp": build.stamp,
        "enterprise": build.enterprise,
        "packaging": build.packaging,
    }


def identity(user: UserInfo) -> dict[str, Any]:
    """A caller as `dummy/sub` echoes it."""
    return {"user": user.name, "uid": user.uid, "groups": list(user.groups),
            "extra": {key: list(values) for key, values in user.extra.items()}}


def subresource(name: str, namespace: str, user: UserInfo) -> Object:
    """The DummySubresource of one dummy object, for the given caller."""
    return {"kind": SUBRESOURCE_KIND, "apiVersion": API_VERSION, "status": "OK",
            "info": f"subresource {SUBRESOURCE} of dummy {namespace}/{name}", "identity": identity(user)}


def table(items: Sequence[Object], list_meta: dict[str, Any], now: datetime.datetime, include: str) -> Object:
    """A meta.k8s.io/v1 Table of dummy objects (Name, Age), rows carrying objects as includeObject asks."""
    return table_of(DummyStrategy(), items, list_meta, now, include)


def runtime_table(info: Object, now: datetime.datetime, include: str) -> Object:
    """The one-row Table of the RuntimeInfo object (Name, Version, Age; Commit and Packaging with -o wide)."""
    return table_of(RuntimeStrategy(), [info], {}, now, include)


# --------------------------------------------------------------------------------------------------------------
# Resources


def _dummy_not_found(name: str) -> StatusError:
    return StatusError(404, "dummy not found", "NotFound", {"name": name, "group": GROUP, "kind": DUMMY_INFO.plural})


def _not_acceptable() -> StatusError:
    return StatusError(406, "only the following media types are accepted: application/json, application/yaml, "
                            "application/json;as=Table;v=v1;g=meta.k8s.io", "NotAcceptable")


def _path(request: IRequest) -> str:
    path: bytes = request.path
    return path.decode("utf-8", "replace")


def _text(request: IRequest, text: str) -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-cache, private")
    return text.encode("utf-8")


def _encoded(request: IRequest, body: Any, output: Output) -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", content_type(output))
    request.setHeader(b"Cache-Control", b"no-cache, private")
    return encode(body, output.encoding)


class ExampleApisResource(ApiResource):
    """`/apis` and everything below it: discovery, the dummy and runtime resources, and the custom routes."""

    isLeaf = True

    def __init__(self, clock: IReactorTime, started: datetime.datetime, build: BuildInfo = BuildInfo()):
        super().__init__()
        self._clock = clock
        self._started = started
        self._build = build

    def now(self) -> datetime.datetime:
        """The current time, from the injected clock."""
        return datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)

    async def handle(self, request: IRequest) -> None:
        """Everything here is read-only: other methods already got the MethodNotAllowed Status."""
        segments = [s.decode("utf-8", "replace") for s in (request.postpath or [])]
        data = self._route(request, segments)
        request.setHeader(b"Content-Length", b"%d" % len(data))
        request.write(data)
        request.finish()

    def _route(self, request: IRequest, segments: list[str]) -> bytes:
        if segments in ([], [""]):
            return self._discovery(request)
        group, *rest = segments
        if group != GROUP:
            raise not_found_path()
        if rest in ([], [""]):
            return write_json(request, 200, api_group())
        version, *rest = rest
        if version != VERSION:
            raise not_found_path()
        return self._group_version(request, rest)

    def _discovery(self, request: IRequest) -> bytes:
        accept = request.getHeader(b"accept")
        negotiated = negotiate_discovery(accept.decode("latin-1") if accept else None, DISCOVERY_MINOR)
        if negotiated is None:
            raise StatusError(406, "only the following media types are accepted: application/json, "
                                   "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                              "NotAcceptable")
        if negotiated.form == "aggregated":
            body = aggregated_discovery(negotiated.version)
        else:
            body = group_list()
        data = write_json(request, 200, body)
        request.setHeader(b"Content-Type", negotiated.content_type)
        request.setHeader(b"Vary", b"Accept")
        return data

    def _group_version(self, request: IRequest, rest: list[str]) -> bytes:
        if rest in ([], [""]):
            return write_json(request, 200, resource_list())
        if rest in (["aaa"], ["bbb"]):
            return _text(request, f"Root level handler ({rest[0]})")
        namespace: str | None = None
        if rest[0] == "namespaces":
            if len(rest) < 3 or not rest[1]:
                raise not_found_path()
            namespace, rest = rest[1], rest[2:]
            if rest == ["ccc"]:
                return _text(request, f"Custom namespace route ccc: {namespace}")
        resource, *tail = rest
        if resource == DUMMY_INFO.plural:
            return self._dummy(request, namespace, tail)
        if resource == RUNTIME_INFO.plural and namespace is None and not tail:
            _refuse_watch(request, RUNTIME_INFO)
            output = negotiate_output(_header(request, b"accept"))
            if output is None:
                raise _not_acceptable()
            info = runtime_info(self._started, self._build)
            if output.form == "table":
                info = runtime_table(info, self.now(), _query(request).get("includeObject", [""])[0] or "Metadata")
            return _encoded(request, info, output)
        raise not_found_path()

    def _dummy(self, request: IRequest, namespace: str | None, tail: list[str]) -> bytes:
        if len(tail) > 2 or (tail and not tail[0]) or (tail and namespace is None):
            raise not_found_path()
        if len(tail) == 2 and tail[1] != SUBRESOURCE:
            raise not_found_path()
        if len(tail) == 2:
            name = tail[0]
            if name not in DUMMY_NAMES:
                raise _dummy_not_found(name)
            user = request_user(request)
            if user is None:
                raise unauthorized()
            return write_json(request, 200, subresource(name, namespace or "", user))
        output = negotiate_output(_header(request, b"accept"))
        if output is None:
            raise _not_acceptable()
        query = _query(request)
        include = query.get("includeObject", [""])[0] or "Metadata"
        if not tail:
            _refuse_watch(request, DUMMY_INFO)
            items, meta = list_page(query, namespace, lambda ns: dummy_objects(ns, self._started), DEFAULT_NAMESPACE)
            if output.form == "table":
                return _encoded(request, table(items, meta, self.now(), include), output)
            return _encoded(request, {"kind": DUMMY_INFO.list_kind, "apiVersion": API_VERSION, "metadata": meta,
                                      "items": items}, output)
        name = tail[0]
        if name not in DUMMY_NAMES:
            raise _dummy_not_found(name)
        obj = dummy_object(name, namespace or "", self._started)
        if output.form == "table":
            obj = table([obj], {"resourceVersion": "1"}, self.now(), include)
        return _encoded(request, obj, output)


def _query(request: IRequest) -> dict[str, list[str]]:
    """The request's query parameters, each with all its values."""
    return parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True)


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def _refuse_watch(request: IRequest, info: KindInfo) -> None:
    """No kind here supports watch: kube's MethodNotSupported Status."""
    values = _query(request).get("watch")
    if values is not None and values[0].lower() not in ("0", "false"):
        raise StatusError(405, f'watch is not supported on resources of kind "{info.plural}.{info.group}"',
                          "MethodNotAllowed", {"group": info.group, "kind": info.plural})


def build_example_tree(*, health: HealthChecks, clock: IReactorTime, started: datetime.datetime,
                       build: BuildInfo = BuildInfo()) -> Router:
    """The served paths, before authentication."""
    tree = Router()
    tree.putChild(b"version", VersionResource(version_info(EMULATED_VERSION)))
    for endpoint in ENDPOINTS:
        tree.putChild(endpoint.encode(), HealthResource(endpoint, health))
    tree.putChild(b"api", CoreResource(emulated_minor=DISCOVERY_MINOR, versions=()))
    tree.putChild(b"apis", ExampleApisResource(clock, started, build))
    tree.putChild(b"openapi", OpenAPIResource([example_group_version()], EMULATED_VERSION))
    return tree


# --------------------------------------------------------------------------------------------------------------
# Authentication


#: First path segments anonymous callers may GET: the health endpoints and /version.
PUBLIC_SEGMENTS = frozenset(p.strip("/").encode() for p in PUBLIC_PATHS)


@implementer(IResource)
class ExampleRoot:
    """Authenticates each request by request header, confines anonymous callers to health and /version, logs it."""

    isLeaf = False

    def __init__(self, tree: Resource, authenticator: Authenticator, peer_certificates: PeerChain = transport_chain):
        self._tree = tree
        self._authenticator = authenticator
        self._peer_certificates = peer_certificates

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        refusal = self._admit(name, request)
        if refusal is not None:
            return StatusResource(refusal)
        return self._tree.getChildWithDefault(name, request)  # type: ignore[no-any-return]

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("children belong to the wrapped tree")

    def render(self, request: IRequest) -> bytes | int:
        refusal = self._admit(b"", request)
        if refusal is not None:
            return write_status(request, refusal)
        return self._tree.render(request)  # type: ignore[no-any-return]

    def _admit(self, first_segment: bytes, request: IRequest) -> StatusError | None:
        channel = getattr(request, "channel", None)
        credentials = Credentials(headers=request.requestHeaders, peer_chain=self._peer_certificates(request),
                                  connection=getattr(channel, "transport", None))
        method = request.method.decode("ascii", "replace")
        path = _path(request)
        user = self._authenticator.authenticate(credentials)
        if user is None:
            _log.info("refused {method} {path}: the client certificate is not accepted", method=method, path=path)
            return unauthorized()
        if user.is_anonymous and not (method in ("GET", "HEAD") and first_segment in PUBLIC_SEGMENTS):
            _log.info("refused {method} {path}: anonymous", method=method, path=path)
            return unauthorized()
        api_call(request).user = user
        _log.info("{method} {path} user={user} groups={groups}", method=method, path=path, user=user.name,
                  groups=",".join(user.groups))
        return None


def build_example_root(tree: Resource, authenticator: Authenticator,
                       peer_certificates: PeerChain = transport_chain) -> ExampleRoot:
    """The authenticating root over a tree from `build_example_tree`."""
    return ExampleRoot(tree, authenticator, peer_certificates)
