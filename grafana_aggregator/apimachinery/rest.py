"""The generic Kubernetes REST handler: one group-version's kinds served from an IStore with kube's semantics.

`GroupVersionResource` is a leaf at `/apis/<group>/<version>`; it parses the rest of the path the
way k8s.io/apiserver does (`[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]`) into a `Target`
and hands the call to its verb: `reads` (get, list), `writes` (create, update, patch and apply,
delete, deletecollection) or `watch`, for the main resource and its status subresource.  Each
kind's differences live in its `Strategy`.

A request is checked before its verb runs: a namespace or name that cannot be a storage key is a 400, and the
options of a write (fieldManager, dryRun, fieldValidation, force) are refused with kube's 422 before the body
is read, so no bad input reaches a store call or starts an answer it cannot finish.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..storage import IStore
from . import reads, writes
from .discovery import api_resource_list
from .negotiation import PATCH_TYPES, STRATEGIC_MERGE_PATCH, Output, media_type, negotiate_output
from .query import flag, write_options
from .gotypes import go_quote
from .resource import ApiResource
from .scale import serve_scale
from .resourcerequest import ResourceRequest, Target, add_warning, request_header, respond
from .status import StatusError, method_not_allowed, not_found_path
from .strategy import LocalGroupVersion, Strategy
from .watch import WatchStream, watch

__all__ = ["GroupVersionResource", "Target", "serve_locally"]

Verb = Callable[[ResourceRequest], Awaitable[None]]

#: The verb of a request on an object (True) or a collection (False), by HTTP method.
VERBS: dict[tuple[bool, str], Verb] = {
    (False, "GET"): reads.list_collection,
    (False, "POST"): writes.create,
    (False, "DELETE"): writes.delete_collection,
    (True, "GET"): reads.get,
    (True, "PUT"): writes.update,
    (True, "PATCH"): writes.patch,
    (True, "DELETE"): writes.delete,
}


class GroupVersionResource(ApiResource):
    """Everything under `/apis/<group>/<version>` for locally served kinds."""

    isLeaf = True
    #: Which methods a path allows depends on the path: `handle` decides.
    allowed_methods = None

    def __init__(
        self,
        group: str,
        version: str,
        kinds: list[Strategy],
        store: IStore,
        clock: IReactorTime,
        watches: set[WatchStream] | None = None,
    ):
        super().__init__()
        self.group = group
        self.version = version
        self._kinds = {k.info.plural: k for k in kinds}
        self._store = store
        self._clock = clock
        self._resource_list = api_resource_list(group, version, [k.info for k in kinds])
        #: The open watch streams of this server, so a shutdown can end them cleanly.
        self.watches: set[WatchStream] = watches if watches is not None else set()

    async def handle(self, request: IRequest) -> None:
        method = request.method.decode("ascii", "replace").upper()
        segments = [s.decode("utf-8", "replace") for s in (request.postpath or [])]
        if segments and segments[-1] == "" and len(segments) > 1:
            raise not_found_path()
        query = parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True)
        output = negotiate_output(request_header(request, b"accept"))
        if not segments or segments == [""]:
            if method not in ("GET", "HEAD"):
                raise method_not_allowed()
            if output is None or output.form == "table":
                output = Output("json")
            respond(request, 200, self._resource_list, output)
            return
        watch_prefix = segments[0] == "watch"
        if watch_prefix:
            segments = segments[1:]
        target = self._target(segments)
        for warning in target.kind.warnings():
            add_warning(request, warning)
        if output is None:
            raise StatusError(406, "only the following media types are accepted: application/json, application/yaml, "
                                   "application/json;as=Table;v=v1;g=meta.k8s.io", "NotAcceptable")
        call = ResourceRequest(request, target, query, output, self._store, self._clock)
        if target.name and target.subresource not in ("", "status", "scale"):
            raise not_found_path()
        if target.subresource == "status" and not target.kind.info.has_status:
            raise not_found_path()
        if target.subresource == "scale":
            if not target.kind.info.has_scale or watch_prefix or flag(query, "watch"):
                raise not_found_path()
            if method in ("PUT", "PATCH"):
                _check_write_options(method, call)
            await serve_scale(call, method, target.kind.scale_paths())
            return
        if watch_prefix or flag(query, "watch"):
            if method != "GET":
                raise method_not_allowed()
            await watch(call, self.watches)
            return
        refusal = target.kind.refuse_create() if method == "POST" else None
        if refusal:
            raise StatusError(405, refusal, "MethodNotAllowed")
        verb = VERBS.get((bool(target.name), method))
        if verb is None or (target.subresource == "status" and method not in ("GET", "PUT", "PATCH")):
            raise method_not_allowed()
        if not target.name and target.namespace is None and target.kind.info.namespaced and method != "GET":
            raise method_not_allowed()
        _check_write_options(method, call)
        await verb(call)

    def _target(self, segments: list[str]) -> Target:
        namespace: str | None = None
        if segments[0] == "namespaces" and len(segments) >= 3:
            namespace, segments = segments[1], segments[2:]
        kind = self._kinds.get(segments[0])
        if kind is None or len(segments) > 3:
            raise not_found_path()
        if namespace is not None and not kind.info.namespaced:
            raise not_found_path()
        name = segments[1] if len(segments) > 1 else ""
        subresource = segments[2] if len(segments) > 2 else ""
        if len(segments) > 1 and not name:
            raise not_found_path()
        if name and kind.info.namespaced and namespace is None:
            raise not_found_path()
        if namespace is not None:
            _check_segment("Namespace", namespace)
        if name:
            _check_segment("Name", name)
        return Target(kind, namespace, name, subresource)

    @property
    def store(self) -> IStore:
        return self._store


#: The options kind of each write method, as kube names them in its 422s.
_OPTIONS_KINDS = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}


def _check_write_options(method: str, call: ResourceRequest) -> None:
    """A write's options, checked as kube's Validate*Options check them, before the body is read (a patch of a
    type that is not served is left to its 415)."""
    kind = _OPTIONS_KINDS.get(method)
    if kind is None:
        return
    patch_type = None
    if method == "PATCH":
        patch_type = media_type(call.header(b"content-type"))
        if patch_type not in PATCH_TYPES and patch_type != STRATEGIC_MERGE_PATCH:
            return
    write_options(call.query, kind, patch_type)


def _segment_problems(value: str) -> list[str]:
    """Why a namespace or name in the URL cannot be a storage key: kube's IsValidPathSegmentName, and what this
    server's stores also refuse (NUL, backslashes, names past 253 bytes or starting with a dot)."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    problems = [f"may not contain {shown}" for char, shown in (("/", "'/'"), ("%", "'%'"), ("\\", "'\\'"),
                                                                ("\0", "NUL")) if char in value]
    if value.startswith("."):
        problems.append("may not start with '.'")
    if len(value.encode("utf-8", "surrogatepass")) > 253:
        problems.append("may not be longer than 253 bytes")
    return problems


def _check_segment(what: str, value: str) -> None:
    """A 400 for a namespace or name in the URL that no object can have (kube's NamespaceKeyFunc message)."""
    problems = _segment_problems(value)
    if problems:
        shown = go_quote(value) if len(value) <= 100 else go_quote(value[:100]) + "…"
        raise StatusError(400, f"{what} parameter invalid: {shown}: {';'.join(problems)}", "BadRequest")


def serve_locally(groups: Sequence[LocalGroupVersion], store: IStore, clock: IReactorTime,
                  watches: set[WatchStream]) -> list[tuple[LocalGroupVersion, GroupVersionResource]]:
    """The handler of each group-version served in this process, all sharing one set of open watches."""
    return [(gv, GroupVersionResource(gv.group, gv.version, list(gv.kinds), store, clock, watches=watches))
            for gv in groups]
