"""The generic Kubernetes REST handler: one group-version's kinds served from an IStore with kube's semantics.

`GroupVersionResource` is a leaf at `/apis/<group>/<version>`; it parses the rest of the path the
way k8s.io/apiserver does (`[namespaces/<ns>/]<resource>[/<name>[/<subresource>]]`) and runs the
verb: get, list, watch, create, update, patch (JSON, merge and apply patches), delete and
deletecollection, for the main resource and its status subresource, with dryRun, fieldValidation,
selectors, paging, Tables and YAML.  Each kind's differences live in its `Strategy`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from .strategy import Object, Strategy
from .fielderrors import FieldError, invalid
from ..storage import (
    AlreadyExistsError,
    Collection,
    ConflictError,
    ExpiredError,
    InvalidKeyError,
    IStore,
    IWatch,
    NotFoundError,
    WatchEvent,
)
from . import apply as ssa
from . import patch as patching
from .resource import AsyncResource
from .negotiation import (
    APPLY_PATCH,
    JSON,
    JSON_PATCH,
    MAX_BODY_BYTES,
    PATCH_TYPES,
    Decoded,
    Output,
    decode_object,
    decode_yaml,
    encode,
    media_type,
    negotiate_output,
)
from .selectors import parse_field_selector, parse_label_selector
from .status import StatusError, method_not_allowed, not_found_path
from .validation import validate_object_meta, validate_object_meta_update

_log = Logger()

GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
PATCH_RETRIES = 5
#: A watch without timeoutSeconds ends after a random time in [MIN_REQUEST_TIMEOUT, 2×), as in kube.
MIN_REQUEST_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 60.0
#: Metadata fields a client cannot set; the server owns them.
SYSTEM_METADATA = ("uid", "creationTimestamp", "resourceVersion", "generation", "selfLink", "deletionTimestamp",
                   "deletionGracePeriodSeconds")
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields",
})


def rfc3339(moment: datetime.datetime) -> str:
    """metav1.Time's wire form: seconds precision, UTC, Z suffix."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@frozen
class Target:
    """What a request path names inside a group-version."""

    kind: Strategy
    namespace: str | None
    name: str
    subresource: str

    @property
    def collection(self) -> Collection:
        return Collection(self.kind.info.group, self.kind.info.plural)

    @property
    def key_namespace(self) -> str:
        return self.namespace or ""


class GroupVersionResource(AsyncResource):
    """Everything under `/apis/<group>/<version>` for locally served kinds."""

    isLeaf = True

    def __init__(
        self,
        group: str,
        version: str,
        kinds: list[Strategy],
        store: IStore,
        clock: IReactorTime,
        resource_list: Callable[[], dict[str, Any]],
        watches: set[WatchStream] | None = None,
    ):
        super().__init__()
        self.group = group
        self.version = version
        self._kinds = {k.info.plural: k for k in kinds}
        self._store = store
        self._clock = clock
        self._resource_list = resource_list
        #: The open watch streams of this server, so a shutdown can end them cleanly.
        self.watches: set[WatchStream] = watches if watches is not None else set()

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)

    async def handle(self, request: IRequest) -> None:
        method = request.method.decode("ascii", "replace").upper()
        segments = [s.decode("utf-8", "replace") for s in (request.postpath or [])]
        if segments and segments[-1] == "" and len(segments) > 1:
            raise not_found_path()
        segments = [s for s in segments]
        query = parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True)
        output = negotiate_output(_header(request, b"accept"))
        if not segments or segments == [""]:
            if method not in ("GET", "HEAD"):
                raise method_not_allowed(method, request.path.decode("utf-8", "replace"))
            if output is None or output.form == "table":
                output = Output("json")
            respond(request, 200, self._resource_list(), output)
            return
        watch_prefix = segments[0] == "watch"
        if watch_prefix:
            segments = segments[1:]
        target = self._target(segments)
        if output is None:
            raise StatusError(406, "only the following media types are accepted: application/json, application/yaml, "
                                   "application/json;as=Table;v=v1;g=meta.k8s.io", "NotAcceptable")
        handler = _Request(self, request, target, query, output)
        watching = watch_prefix or _flag(query, "watch")
        if target.name and target.subresource not in ("", "status"):
            raise not_found_path()
        if target.subresource == "status" and not target.kind.info.has_status:
            raise not_found_path()
        if watching:
            if method != "GET":
                raise method_not_allowed(method, request.path.decode("utf-8", "replace"))
            await handler.watch()
            return
        actions: dict[tuple[bool, str], Callable[[], Awaitable[None]]] = {
            (False, "GET"): handler.list,
            (False, "POST"): handler.create,
            (False, "DELETE"): handler.delete_collection,
            (True, "GET"): handler.get,
            (True, "PUT"): handler.update,
            (True, "PATCH"): handler.patch,
            (True, "DELETE"): handler.delete,
        }
        action = actions.get((bool(target.name), method))
        if action is None or (target.subresource == "status" and method not in ("GET", "PUT", "PATCH")):
            raise method_not_allowed(method, request.path.decode("utf-8", "replace"))
        if not target.name and target.namespace is None and target.kind.info.namespaced and method != "GET":
            raise method_not_allowed(method, request.path.decode("utf-8", "replace"))
        await action()

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
        return Target(kind, namespace, name, subresource)

    @property
    def store(self) -> IStore:
        return self._store


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    values = query.get(name)
    return values is not None and values[0].lower() not in ("0", "false")


def _single(query: Mapping[str, list[str]], name: str) -> str:
    return query.get(name, [""])[0]


def respond(request: IRequest, code: int, body: Any, output: Output, warnings: Sequence[str] = ()) -> None:
    """Write a whole response in the negotiated encoding and finish the request."""
    data = encode(body, output.encoding)
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type(output))
    request.setHeader(b"Cache-Control", b"no-cache, private")
    request.setHeader(b"Content-Length", str(len(data)).encode())
    for warning in warnings:
        request.responseHeaders.addRawHeader(b"Warning", f'299 - "{_escape(warning)}"'.encode())
    if request.method != b"HEAD":
        request.write(data)
    request.finish()


def content_type(output: Output) -> bytes:
    """The Content-Type of a response in the given form (Tables say so, as kube-apiserver does)."""
    if output.form == "table":
        return f"{output.encoding};as=Table;v=v1;g=meta.k8s.io".encode()
    return output.encoding.encode()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class _Request:
    """One request's state and verbs."""

    def __init__(self, owner: GroupVersionResource, request: IRequest, target: Target,
                 query: Mapping[str, list[str]], output: Output):
        self.owner = owner
        self.request = request
        self.target = target
        self.kind = target.kind
        self.info = target.kind.info
        self.query = query
        self.output = output
        self.store = owner.store
        self.warnings: list[str] = []

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def qualified(self) -> str:
        return f"{self.info.plural}.{self.info.group}" if self.info.group else self.info.plural

    def not_found(self, name: str) -> StatusError:
        return StatusError(404, f'{self.qualified} "{name}" not found', "NotFound",
                           {"name": name, "group": self.info.group, "kind": self.info.plural})

    def already_exists(self, name: str) -> StatusError:
        return StatusError(409, f'{self.qualified} "{name}" already exists', "AlreadyExists",
                           {"name": name, "group": self.info.group, "kind": self.info.plural})

    def conflict(self, name: str, detail: str) -> StatusError:
        return StatusError(409, f'Operation cannot be fulfilled on {self.qualified} "{name}": {detail}', "Conflict",
                           {"name": name, "group": self.info.group, "kind": self.info.plural})

    def invalid(self, name: str, errors: list[FieldError]) -> StatusError:
        listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
        kind = f"{self.info.kind}.{self.info.group}" if self.info.group else self.info.kind
        return StatusError(422, f'{kind} "{name}" is invalid: {listed}', "Invalid", {
            "name": name, "group": self.info.group, "kind": self.info.kind,
            "causes": [{"reason": e.reason, "message": e.message, "field": e.path} for e in errors],
        })

    def storage_error(self, error: Exception, name: str) -> StatusError:
        if isinstance(error, NotFoundError):
            return self.not_found(name)
        if isinstance(error, AlreadyExistsError):
            return self.already_exists(name)
        if isinstance(error, ConflictError):
            return self.conflict(name, str(error))
        if isinstance(error, InvalidKeyError):
            return StatusError(400, str(error), "BadRequest")
        if isinstance(error, ExpiredError):
            return StatusError(410, str(error), "Expired")
        raise error

    def dry_run(self) -> bool:
        values = self.query.get("dryRun", [])
        for value in values:
            if value != "All":
                raise StatusError(400, f'dryRun: Unsupported value: "{value}": supported values: "All"', "BadRequest")
        return bool(values)

    def field_validation(self) -> str:
        value = _single(self.query, "fieldValidation") or "Warn"
        if value not in ("Ignore", "Warn", "Strict"):
            raise StatusError(400, f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", '
                                   f'"Strict", "Warn"', "BadRequest")
        return value

    def field_manager(self) -> str:
        manager = _single(self.query, "fieldManager")
        if manager:
            if len(manager) > 128:
                raise StatusError(422, "fieldManager: Too long: may not be more than 128 bytes", "Invalid")
            return manager
        agent = _header(self.request, b"user-agent") or ""
        return agent.split("/", 1)[0][:128] or "unknown"

    def read_body(self) -> bytes:
        content = self.request.content
        if content is None:
            return b""
        content.seek(0, 2)
        size = content.tell()
        if size > MAX_BODY_BYTES:
            raise StatusError(413, "Request entity too large: limit is 3145728", "RequestEntityTooLarge")
        content.seek(0)
        data: bytes = content.read()
        return data

    def decode_body(self) -> Decoded:
        data = self.read_body()
        if not data.strip():
            raise StatusError(400, "the request body is empty; an object is required", "BadRequest")
        return decode_object(data, _header(self.request, b"content-type"))

    def check_object(self, decoded: Decoded, obj: Any, url_name: str | None, from_body: bool = True) -> Object:
        """Check kind, apiVersion, namespace and name of a body against the URL and prune unknown fields."""
        if not isinstance(obj, dict):
            raise StatusError(400, "the request body must be a JSON or YAML object", "BadRequest")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not kind:
            raise StatusError(400, f"Object 'Kind' is missing in '{_short(obj)}'", "BadRequest")
        if not api_version:
            raise StatusError(400, f"Object 'apiVersion' is missing in '{_short(obj)}'", "BadRequest")
        if api_version != self.info.api_version or kind != self.info.kind:
            raise StatusError(400, f"the API version in the data ({api_version}) does not match the expected API "
                                   f"version ({self.info.api_version})" if api_version != self.info.api_version else
                              f"the kind in the data ({kind}) does not match the expected kind ({self.info.kind})",
                              "BadRequest")
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise StatusError(400, "metadata must be an object", "BadRequest")
        namespace = meta.get("namespace")
        if self.info.namespaced:
            if namespace and namespace != self.target.namespace:
                raise StatusError(400, "the namespace of the provided object does not match the namespace sent on "
                                       "the request", "BadRequest")
            meta["namespace"] = self.target.namespace
        elif namespace:
            # kube clears the namespace of cluster-scoped objects before validation.
            meta.pop("namespace", None)
        if url_name is not None and meta.get("name") != url_name:
            raise StatusError(400, f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                                   f"({url_name})", "BadRequest")
        self.apply_field_validation(decoded, obj, from_body)
        return obj

    def apply_field_validation(self, decoded: Decoded, obj: Object, from_body: bool = True) -> None:
        mode = self.field_validation()
        problems = [f'unknown field "{path}"' for path in prune_unknown_fields(obj, self.info.schema)]
        problems += [f'duplicate field "{name}"' for name in decoded.duplicates]
        if not problems or mode == "Ignore":
            return
        if mode == "Strict":
            prefix = (f'{self.info.kind} in version "{self.info.version}" cannot be handled as a {self.info.kind}: '
                      if from_body else "")
            raise StatusError(400, prefix + "strict decoding error: " + ", ".join(problems), "BadRequest")
        self.warnings.extend(problems)

    def respond(self, code: int, body: Any) -> None:
        if self.output.form == "table":
            body = self.table([body], {"resourceVersion": body.get("metadata", {}).get("resourceVersion", "")})
        respond(self.request, code, body, self.output, self.warnings)

    def table(self, items: list[Object], list_meta: dict[str, Any]) -> dict[str, Any]:
        return table_of(self.kind, items, list_meta, self.owner.now(), _single(self.query, "includeObject") or "Metadata")

    def status(self, name: str, uid: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": self.info.group, "kind": self.info.plural, "uid": uid}}

    def reset_fields(self) -> tuple[str, ...]:
        """Fields a write to this endpoint cannot set, so nobody owns them through it (kube's ResetFieldsStrategy)."""
        if self.target.subresource == "status":
            return ("metadata", "spec")
        return ("status",) if self.info.has_status else ()

    def validate_meta(self, obj: Object) -> list[FieldError]:
        return validate_object_meta(obj["metadata"], self.info.namespaced)

    # -- reads -----------------------------------------------------------------------------------

    async def get(self) -> None:
        try:
            obj = await self.store.get(self.target.collection, self.target.key_namespace, self.target.name)
        except Exception as error:
            raise self.storage_error(error, self.target.name) from None
        self.respond(200, obj)

    def selectors(self) -> tuple[Any, Any]:
        labels = parse_label_selector(_single(self.query, "labelSelector"))
        allowed = ["metadata.name", "metadata.namespace"]
        fields = parse_field_selector(_single(self.query, "fieldSelector"), allowed)
        return labels, fields

    def matches(self, obj: Object, labels: Any, fields: Any) -> bool:
        return bool(labels.matches(obj.get("metadata", {}).get("labels") or {})) and bool(
            fields.matches(self.kind.selectable_fields(obj)))

    async def list(self) -> None:
        labels, fields = self.selectors()
        version = _single(self.query, "resourceVersion")
        match = _single(self.query, "resourceVersionMatch")
        if match and not version:
            raise self.list_options_invalid("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden "
                                                                    "unless resourceVersion is provided")
        if match and match not in ("Exact", "NotOlderThan"):
            raise self.list_options_invalid("resourceVersionMatch", f'Unsupported value: "{match}": supported values: '
                                                                    f'"Exact", "NotOlderThan"')
        limit_text = _single(self.query, "limit")
        try:
            limit = int(limit_text) if limit_text else 0
        except ValueError:
            raise StatusError(400, f'limit: Invalid value: "{limit_text}": must be an integer', "BadRequest") from None
        continue_token = _single(self.query, "continue")
        result = await self.store.list(self.target.collection, self.target.namespace)
        if version and version != "0":
            try:
                wanted = int(version)
            except ValueError:
                raise StatusError(400, f'resourceVersion: Invalid value: "{version}": must be an integer',
                                  "BadRequest") from None
            if wanted > result.resource_version:
                raise StatusError(504, f"Too large resource version: {wanted}, current: {result.resource_version}",
                                  "Timeout", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                          "message": "Too large resource version"}],
                                              "retryAfterSeconds": 1})
            if match == "Exact" and wanted != result.resource_version:
                raise StatusError(410, "The resourceVersion for the provided list is too old.", "Expired")
        list_rv = result.resource_version
        start_after = ""
        if continue_token:
            list_rv, start_after = decode_continue(continue_token)
        items = [i for i in result.items if self.matches(i, labels, fields)]
        if start_after:
            items = [i for i in items if _key(i) > start_after]
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit > 0 and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            meta["continue"] = encode_continue(list_rv, _key(items[-1]))
            if not _single(self.query, "labelSelector") and not _single(self.query, "fieldSelector"):
                meta["remainingItemCount"] = remaining
        if self.output.form == "table":
            respond(self.request, 200, self.table(items, meta), self.output, self.warnings)
            return
        respond(self.request, 200, {"kind": self.info.list_kind, "apiVersion": self.info.api_version,
                                    "metadata": meta, "items": items}, self.output, self.warnings)

    def list_options_invalid(self, field: str, message: str) -> StatusError:
        return StatusError(422, f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}', "Invalid", {
            "group": "meta.k8s.io", "kind": "ListOptions",
            "causes": [{"reason": "FieldValueForbidden" if message.startswith("Forbidden") else "FieldValueNotSupported",
                        "message": message, "field": field}]})

    async def watch(self) -> None:
        labels, fields = self.selectors()
        if self.target.name:
            # /watch/.../<name> watches one object.
            name = self.target.name
            base_fields = fields

            class _Named:
                def matches(self, values: Mapping[str, str]) -> bool:
                    return values.get("metadata.name") == name and bool(base_fields.matches(values))

            fields = _Named()
        version = _single(self.query, "resourceVersion")
        timeout_text = _single(self.query, "timeoutSeconds")
        try:
            timeout = float(timeout_text) if timeout_text else MIN_REQUEST_TIMEOUT * (1 + random.random())
        except ValueError:
            raise StatusError(400, f'timeoutSeconds: Invalid value: "{timeout_text}"', "BadRequest") from None
        stream = WatchStream(self, labels, fields, _flag(self.query, "allowWatchBookmarks"), timeout)
        await stream.start(version)

    # -- writes ----------------------------------------------------------------------------------

    async def create(self) -> None:
        if self.target.subresource:
            raise method_not_allowed("POST", self.request.path.decode("utf-8", "replace"))
        decoded = self.decode_body()
        obj = self.check_object(decoded, decoded.value, None)
        meta = obj["metadata"]
        dry_run = self.dry_run()
        manager = self.field_manager()
        generate = meta.get("generateName")
        for attempt in range(5):
            candidate = copy.deepcopy(obj)
            cmeta = candidate["metadata"]
            if not cmeta.get("name") and generate:
                cmeta["name"] = generate + "".join(random.choice(GENERATE_NAME_ALPHABET) for _ in range(5))
            self.prepare_new(candidate)
            candidate = ssa.update_managed_fields(None, candidate, manager, "Update", rfc3339(self.owner.now()),
                                                  self.info.api_version, reset_fields=self.reset_fields(),
                                                  list_map_keys=LIST_MAP_KEYS)
            name = cmeta.get("name", "")
            if dry_run:
                try:
                    await self.store.get(self.target.collection, self.target.key_namespace, name)
                except NotFoundError:
                    candidate["metadata"].pop("resourceVersion", None)
                    self.respond(201, candidate)
                    return
                raise self.already_exists(name)
            try:
                stored = await self.store.create(self.target.collection, self.target.key_namespace, name, candidate)
            except AlreadyExistsError:
                if generate and not meta.get("name") and attempt < 4:
                    continue
                raise self.already_exists(name) from None
            except (InvalidKeyError, ConflictError) as error:
                raise self.storage_error(error, name) from None
            self.respond(201, stored)
            return

    def prepare_new(self, obj: Object) -> None:
        """Server-owned metadata, defaults, strategy preparation and validation of a new object."""
        meta = obj["metadata"]
        for key in SYSTEM_METADATA:
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self.owner.now())
        meta["generation"] = 1
        self.kind.default(obj)
        self.kind.prepare_for_create(obj)
        errors = _unique(self.validate_meta(obj) + self.kind.validate(obj))
        if errors:
            raise self.invalid(meta.get("name") or meta.get("generateName", ""), errors)

    async def update(self) -> None:
        decoded = self.decode_body()
        obj = self.check_object(decoded, decoded.value, self.target.name)
        version = obj["metadata"].get("resourceVersion")
        if not version:
            raise self.invalid(self.target.name, [invalid("metadata.resourceVersion", 0, "must be specified for an update")])
        try:
            expected = int(version)
        except (TypeError, ValueError):
            raise StatusError(400, f'invalid resource version: "{version}"', "BadRequest") from None
        try:
            old = await self.store.get(self.target.collection, self.target.key_namespace, self.target.name)
        except Exception as error:
            raise self.storage_error(error, self.target.name) from None
        if int(old["metadata"]["resourceVersion"]) != expected:
            raise self.conflict(self.target.name, "the object has been modified; please apply your changes to the "
                                                  "latest version and try again")
        new = self.prepare_update(obj, old, self.field_manager(), "Update")
        await self.write_update(new, old, expected, created=False)

    def prepare_update(self, new: Object, old: Object, manager: str, operation: str) -> Object:
        """Keep server-owned metadata, run the strategy (main resource or status), validate, track field owners."""
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        if not meta.get("uid"):
            meta["uid"] = old_meta.get("uid", "")
        for key in ("creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("selfLink", None)
        self.kind.default(new)
        if self.target.subresource == "status":
            self.kind.prepare_for_status_update(new, old)
            errors = self.kind.validate_status_update(new, old)
        else:
            self.kind.prepare_for_update(new, old)
            errors = _unique(validate_object_meta_update(meta, old_meta) + self.validate_meta(new) +
                             self.kind.validate_update(new, old))
            if self.kind.spec_changed(new, old):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if errors:
            raise self.invalid(self.target.name, errors)
        if operation != "Apply":
            new = ssa.update_managed_fields(old, new, manager, operation, rfc3339(self.owner.now()),
                                            self.info.api_version, subresource=self.target.subresource,
                                            reset_fields=self.reset_fields(), list_map_keys=LIST_MAP_KEYS)
        return new

    async def write_update(self, new: Object, old: Object, expected: int, created: bool) -> None:
        if self.dry_run():
            self.respond(201 if created else 200, new)
            return
        try:
            if created:
                stored = await self.store.create(self.target.collection, self.target.key_namespace, self.target.name,
                                                 new)
            else:
                stored = await self.store.update(self.target.collection, self.target.key_namespace, self.target.name,
                                                 new, expected_resource_version=expected)
        except Exception as error:
            raise self.storage_error(error, self.target.name) from None
        self.respond(201 if created else 200, stored)

    async def patch(self) -> None:
        content_type = media_type(_header(self.request, b"content-type"))
        if content_type not in PATCH_TYPES:
            raise StatusError(415, f"the body of the request was in an unknown format - accepted media types include: "
                                   f"{', '.join(PATCH_TYPES)}", "UnsupportedMediaType")
        body = self.read_body()
        force = _flag(self.query, "force")
        if "force" in self.query and content_type != APPLY_PATCH:
            raise options_invalid("PatchOptions", "force", "FieldValueForbidden",
                                  "Forbidden: may not be specified for non-apply patch")
        manager = _single(self.query, "fieldManager")
        if content_type == APPLY_PATCH and not manager:
            raise options_invalid("PatchOptions", "fieldManager", "FieldValueRequired",
                                  "Required value: is required for apply patch")
        manager = manager or self.field_manager()
        for attempt in range(PATCH_RETRIES):
            try:
                old: Object | None = await self.store.get(self.target.collection, self.target.key_namespace,
                                                          self.target.name)
            except NotFoundError:
                old = None
            except Exception as error:
                raise self.storage_error(error, self.target.name) from None
            if old is None and (content_type != APPLY_PATCH or self.target.subresource):
                raise self.not_found(self.target.name)
            try:
                await self._patch_once(content_type, body, old, manager, force)
                return
            except ConflictError:
                if attempt == PATCH_RETRIES - 1:
                    raise self.conflict(self.target.name, "the object has been modified; please apply your changes "
                                                          "to the latest version and try again") from None

    async def _patch_once(self, content_type: str, body: bytes, old: Object | None, manager: str, force: bool) -> None:
        now = rfc3339(self.owner.now())
        if content_type == APPLY_PATCH:
            decoded = decode_yaml(body)
            applied = self.check_object(decoded, decoded.value, self.target.name, from_body=False)
            reset = self.reset_fields()
            try:
                new = ssa.server_side_apply(old, applied, manager, force, now, self.info.api_version,
                                            reset_fields=reset, list_map_keys=LIST_MAP_KEYS,
                                            kind=self.info.kind, subresource=self.target.subresource)
            except StatusError:
                raise
            if old is None:
                new["metadata"]["name"] = self.target.name
                if self.info.namespaced:
                    new["metadata"]["namespace"] = self.target.namespace
                managed = new["metadata"].get("managedFields")
                self.prepare_new(new)
                if managed is not None:
                    new["metadata"]["managedFields"] = managed
                if self.dry_run():
                    new["metadata"].pop("resourceVersion", None)
                    self.respond(201, new)
                    return
                try:
                    stored = await self.store.create(self.target.collection, self.target.key_namespace,
                                                     self.target.name, new)
                except AlreadyExistsError:
                    raise ConflictError("created concurrently") from None
                except Exception as error:
                    raise self.storage_error(error, self.target.name) from None
                self.respond(201, stored)
                return
            new = self.prepare_update(new, old, manager, "Apply")
            await self._store_patched(new, old)
            return
        assert old is not None
        source = json.dumps(old).encode()
        if content_type == JSON_PATCH:
            patched = patching.apply_json_patch(json.loads(source), body)
        else:
            patched = patching.apply_merge_patch(json.loads(source), body)
        obj = self.check_object(Decoded(patched), patched, self.target.name, from_body=False)
        requested = obj["metadata"].get("resourceVersion")
        if requested and requested != old["metadata"]["resourceVersion"]:
            raise StatusError(409, f'Operation cannot be fulfilled on {self.qualified} "{self.target.name}": the '
                                   f'object has been modified; please apply your changes to the latest version and '
                                   f'try again', "Conflict",
                              {"name": self.target.name, "group": self.info.group, "kind": self.info.plural})
        new = self.prepare_update(obj, old, manager, "Update")
        await self._store_patched(new, old)

    async def _store_patched(self, new: Object, old: Object) -> None:
        expected = int(old["metadata"]["resourceVersion"])
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            self.respond(200, old)
            return
        if self.dry_run():
            self.respond(200, new)
            return
        try:
            stored = await self.store.update(self.target.collection, self.target.key_namespace, self.target.name, new,
                                             expected_resource_version=expected)
        except ConflictError:
            raise
        except Exception as error:
            raise self.storage_error(error, self.target.name) from None
        self.respond(200, stored)

    def delete_options(self) -> dict[str, Any]:
        data = self.read_body()
        options: dict[str, Any] = {}
        if data.strip():
            decoded = decode_object(data, _header(self.request, b"content-type")).value
            if not isinstance(decoded, dict):
                raise StatusError(400, "DeleteOptions must be an object", "BadRequest")
            options = decoded
        policy = _single(self.query, "propagationPolicy") or options.get("propagationPolicy")
        if policy and policy not in ("Orphan", "Background", "Foreground"):
            raise options_invalid("DeleteOptions", "propagationPolicy", "FieldValueNotSupported",
                                  f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
                                  f'"Orphan", "nil"')
        for value in options.get("dryRun") or []:
            if value != "All":
                raise StatusError(400, f'dryRun: Unsupported value: "{value}": supported values: "All"', "BadRequest")
        return options

    async def delete(self) -> None:
        if self.target.subresource:
            raise method_not_allowed("DELETE", self.request.path.decode("utf-8", "replace"))
        options = self.delete_options()
        preconditions = options.get("preconditions") or {}
        expected_rv = preconditions.get("resourceVersion")
        expected_uid = preconditions.get("uid")
        dry_run = self.dry_run() or bool(options.get("dryRun"))
        try:
            current = await self.store.get(self.target.collection, self.target.key_namespace, self.target.name)
            if dry_run:
                actual_rv = current["metadata"].get("resourceVersion")
                if expected_uid and current["metadata"].get("uid") != expected_uid:
                    raise ConflictError(f"Precondition failed: UID in precondition: {expected_uid}, UID in object "
                                        f"meta: {current['metadata'].get('uid')}")
                if expected_rv and str(expected_rv) != actual_rv:
                    raise ConflictError(f"Precondition failed: ResourceVersion in precondition: {expected_rv}, "
                                        f"ResourceVersion in object meta: {actual_rv}")
                deleted = current
            else:
                deleted = await self.store.delete(
                    self.target.collection, self.target.key_namespace, self.target.name,
                    expected_resource_version=int(expected_rv) if expected_rv else None,
                    expected_uid=expected_uid)
        except Exception as error:
            raise self.storage_error(error, self.target.name) from None
        self.respond_deleted(deleted)

    def respond_deleted(self, deleted: Object) -> None:
        if self.output.form == "table":
            self.respond(200, deleted)
            return
        respond(self.request, 200, self.status(self.target.name, deleted["metadata"].get("uid", "")), self.output,
                self.warnings)

    async def delete_collection(self) -> None:
        self.delete_options()
        labels, fields = self.selectors()
        dry_run = self.dry_run()
        result = await self.store.list(self.target.collection, self.target.namespace)
        deleted = []
        for item in result.items:
            if not self.matches(item, labels, fields):
                continue
            meta = item["metadata"]
            if not dry_run:
                try:
                    item = await self.store.delete(self.target.collection, meta.get("namespace", ""), meta["name"])
                except NotFoundError:
                    continue
            deleted.append(item)
        respond(self.request, 200, {"kind": self.info.list_kind, "apiVersion": self.info.api_version,
                                    "metadata": {"resourceVersion": str(self.store.current_resource_version())},
                                    "items": deleted}, self.output if self.output.form != "table" else Output("json"),
                self.warnings)


#: Lists that are maps keyed by some of their fields, for server-side apply.
LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {"status.conditions": ("type",)}


def options_invalid(kind: str, field: str, reason: str, message: str) -> StatusError:
    """422 for a bad request option, as kube reports an invalid PatchOptions or DeleteOptions."""
    return StatusError(422, f'{kind}.meta.k8s.io "" is invalid: {field}: {message}', "Invalid", {
        "group": "meta.k8s.io", "kind": kind, "causes": [{"reason": reason, "message": message, "field": field}]})


def _unique(errors: list[FieldError]) -> list[FieldError]:
    """Drop repeats (the handler and a strategy may both check the same metadata rule)."""
    seen: set[FieldError] = set()
    return [e for e in errors if not (e in seen or seen.add(e))]  # type: ignore[func-returns-value]


def _short(obj: Any) -> str:
    text = json.dumps(obj, separators=(",", ":"))
    return text if len(text) < 200 else text[:200] + "…"


def _key(obj: Object) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def encode_continue(resource_version: int, start_after: str) -> str:
    """The opaque continue token of a paged list."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": resource_version, "start": start_after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    """Read a continue token; a token this server did not issue is a 400."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(raw["rv"]), str(raw["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise StatusError(400, "continue key is not valid: the continue token was not issued by this server",
                          "BadRequest") from None


def prune_unknown_fields(obj: Object, schema: Mapping[str, Any]) -> list[str]:
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


def table_of(kind: Strategy, items: Sequence[Object], list_meta: dict[str, Any], now: datetime.datetime,
             include: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of objects of one kind, its rows carrying the objects as includeObject asks."""
    if include not in ("None", "Metadata", "Object"):
        raise StatusError(400, f'includeObject: Unsupported value: "{include}"', "BadRequest")
    rows = []
    for item in items:
        row: dict[str, Any] = {"cells": kind.table_cells(item, now)}
        if include == "Object":
            row["object"] = item
        elif include == "Metadata":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": item.get("metadata", {})}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [c.to_json() for c in kind.columns],
        "rows": rows,
    }


# The last event encoded, as (object, type, line): one change reaches every watcher of a resource in a row,
# so each is encoded once however many watch it.  Stored objects are never mutated once stored.
_last_encoded: list[Any] = [None, "", b""]


def _encoded_event(kind: str, obj: Object) -> bytes:
    """One watch event as a JSON line, encoded once for all the watchers that receive it."""
    if _last_encoded[0] is obj and _last_encoded[1] == kind:
        return _last_encoded[2]  # type: ignore[no-any-return]
    line = json.dumps({"type": kind, "object": obj}, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
    _last_encoded[:] = [obj, kind, line]
    return line


class WatchStream:
    """A chunked stream of watch events for one request, fed by the store and ended by timeout or disconnect."""

    def __init__(self, handler: _Request, labels: Any, fields: Any, bookmarks: bool, timeout: float):
        self._handler = handler
        self._request = handler.request
        self._labels = labels
        self._fields = fields
        self._bookmarks = bookmarks
        self._timeout = timeout
        self._watch: IWatch | None = None
        self._timers: list[IDelayedCall] = []
        self._done = False
        self._last_rv = 0
        # Most watches select everything; they need not work out each object's labels and fields.
        self._everything = (bool(getattr(labels, "is_empty", lambda: False)())
                            and bool(getattr(fields, "is_empty", lambda: False)()))

    def end(self) -> None:
        """End the stream cleanly (the client sees the end of the response, not a reset)."""
        self._end()

    async def start(self, version: str) -> None:
        handler = self._handler
        store = handler.store
        initial: list[Object] = []
        if not version or version == "0":
            result = await store.list(handler.target.collection, handler.target.namespace)
            initial = [i for i in result.items if handler.matches(i, self._labels, self._fields)]
            since = result.resource_version
        else:
            try:
                since = int(version)
            except ValueError:
                raise StatusError(400, f'resourceVersion: Invalid value: "{version}": must be an integer',
                                  "BadRequest") from None
        self._last_rv = since
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type(Output(handler.output.form, JSON)))
        request.setHeader(b"Cache-Control", b"no-cache, private")
        request.setHeader(b"Transfer-Encoding", b"chunked")
        request.notifyFinish().addBoth(self._finished)  # type: ignore[attr-defined]
        request.write(b"")
        for obj in initial:
            self._send("ADDED", obj)
        try:
            self._watch = store.watch(handler.target.collection, handler.target.namespace, since, self._event)
        except ExpiredError as error:
            self._send_error(StatusError(410, str(error), "Expired"))
            self._end()
            return
        clock = handler.owner._clock
        handler.owner.watches.add(self)
        self._timers.append(clock.callLater(self._timeout, self._end))
        if self._bookmarks:
            self._timers.append(clock.callLater(BOOKMARK_INTERVAL, self._bookmark))

    def _event(self, event: WatchEvent) -> None:
        if self._done:
            return
        self._last_rv = event.resource_version
        if self._everything:
            self._send(event.type, event.object)
            return
        matches = self._handler.matches(event.object, self._labels, self._fields)
        if event.type != "MODIFIED" or event.previous is None:
            if matches:
                self._send(event.type, event.object)
            return
        matched = self._handler.matches(event.previous, self._labels, self._fields)
        if matches:
            self._send("MODIFIED" if matched else "ADDED", event.object)
        elif matched:
            # Out of the selector now: the watcher sees it go, as kube's watch cache reports it.
            gone = copy.deepcopy(event.previous)
            gone.setdefault("metadata", {})["resourceVersion"] = str(event.resource_version)
            self._send("DELETED", gone)

    def _bookmark(self) -> None:
        if self._done:
            return
        info = self._handler.info
        self._write({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version,
                                                     "metadata": {"resourceVersion": str(self._last_rv)}}})
        self._timers.append(self._handler.owner._clock.callLater(BOOKMARK_INTERVAL, self._bookmark))

    def _send(self, kind: str, obj: Object) -> None:
        if self._handler.output.form == "table":
            obj = self._handler.table([obj], {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")})
            self._write({"type": kind, "object": obj})
            return
        if not self._done:
            self._request.write(_encoded_event(kind, obj))

    def _send_error(self, error: StatusError) -> None:
        self._write({"type": "ERROR", "object": error.to_status()})

    def _write(self, event: dict[str, Any]) -> None:
        if self._done:
            return
        self._request.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n")

    def _end(self) -> None:
        if self._done:
            return
        self._stop()
        self._request.finish()

    def _finished(self, result: object) -> None:
        self._stop()

    def _stop(self) -> None:
        self._done = True
        self._handler.owner.watches.discard(self)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []

