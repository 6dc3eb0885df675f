# -*- test-case-name: tests.test_scale -*-
"""The `scale` subresource: an `autoscaling/v1` Scale read from and written into the kind's own object, as kube
serves it for a CRD with `subresources.scale` (what `kubectl scale` and autoscalers use).

GET answers the Scale of the object; PUT and PATCH (JSON or merge patch of the Scale, or a server-side apply of
one, whose manager comes to own the replicas field) set the object's replicas at `specReplicasPath`, through the
kind's usual update (its validation, managedFields with subresource `scale`), with the Scale's resourceVersion,
when it has one, as the precondition; without one, a write that races another
is made again on the new object (kube's GuaranteedUpdate), not answered with a 409.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..storage import ConflictError
from . import patch as patching
from .fielderrors import invalid
from .gotypes import (
    INT32_TYPE,
    OBJECT_META_TYPE,
    STRING_TYPE,
    GoField,
    decode_error,
    struct,
    type_meta_fields,
)
from . import apply as ssa
from .negotiation import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, Output, decode_object, decode_yaml, media_type
from .query import dry_run, field_manager, patch_options
from .resourcerequest import ResourceRequest, respond
from .status import StatusError, method_not_allowed
from .strategy import Object, rfc3339
from .writes import PATCH_RETRIES, prepare_update, reset_fields

API_VERSION = "autoscaling/v1"
KIND = "Scale"
#: The patch types a Scale accepts (kube's custom-resource handler refuses strategic merge patch here too).
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)
_MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"
#: autoscaling/v1 Scale as Go decodes it, for kube's messages about bodies that do not fit it.
SCALE_TYPE = struct(
    "v1.Scale",
    *type_meta_fields(), GoField("metadata", OBJECT_META_TYPE),
    GoField("spec", struct("v1.ScaleSpec", GoField("replicas", INT32_TYPE))),
    GoField("status", struct("v1.ScaleStatus", GoField("replicas", INT32_TYPE, omitempty=False),
                             GoField("selector", STRING_TYPE))),
)


def lookup(obj: Object, simple_path: str) -> tuple[bool, Any]:
    """The value at a CRD's simple JSONPath (`.spec.replicas`): (found, value)."""
    value: Any = obj
    for part in simple_path.lstrip(".").split("."):
        if not part or not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def scale_of(obj: Object, paths: dict[str, Any]) -> Object:
    """The Scale of an object, as kube's scaleFromCustomResource builds it (a missing replicas count is 0)."""
    meta = obj.get("metadata") or {}
    spec_replicas = _replicas(obj, str(paths.get("specReplicasPath") or ""))
    status_replicas = _replicas(obj, str(paths.get("statusReplicasPath") or ""))
    scale_meta = {key: meta[key] for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                  if meta.get(key)}
    scale: Object = {"kind": KIND, "apiVersion": API_VERSION, "metadata": scale_meta,
                     "spec": {"replicas": spec_replicas} if spec_replicas else {},
                     "status": {"replicas": status_replicas}}
    selector_path = str(paths.get("labelSelectorPath") or "")
    if selector_path:
        found, selector = lookup(obj, selector_path)
        if found and isinstance(selector, str) and selector:
            scale["status"]["selector"] = selector
    return scale


def _replicas(obj: Object, path: str) -> int:
    found, value = lookup(obj, path) if path else (False, None)
    if not found or value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise StatusError(500, f"the value at {path} is not an integer: {json.dumps(value)}", "InternalError")
    return value


def _set(obj: Object, simple_path: str, value: Any) -> None:
    parts = simple_path.lstrip(".").split(".")
    target = obj
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value


async def serve_scale(call: ResourceRequest, method: str, paths: dict[str, Any]) -> None:
    """GET, PUT or PATCH of `<object>/scale`."""
    target = call.target
    if method not in ("GET", "PUT", "PATCH"):
        raise method_not_allowed()
    put_scale: Any = None
    patch_body = b""
    apply = patching.apply_merge_patch
    applied: Any = None
    manager = field_manager(call.query, call.header(b"user-agent"))
    force = False
    if method == "PUT":
        put_scale = decode_object(call.read_body(), call.header(b"content-type"), call.max_values).value
    elif method == "PATCH":
        patch_type = media_type(call.header(b"content-type"))
        if patch_type not in PATCH_TYPES:
            raise StatusError(415, "the body of the request was in an unknown format - accepted media types "
                                   f"include: {', '.join(PATCH_TYPES)}", "UnsupportedMediaType")
        if patch_type == APPLY_PATCH:
            options = patch_options(call.query, APPLY_PATCH, call.header(b"user-agent"))
            manager, force = options.manager, options.force
            applied = decode_yaml(call.read_body()).value
        else:
            apply = patching.apply_json_patch if patch_type == JSON_PATCH else patching.apply_merge_patch
            patch_body = call.read_body()
    for attempt in range(PATCH_RETRIES):
        try:
            current = await call.store.get(target.collection, target.key_namespace, target.name)
        except Exception as error:
            raise call.storage_error(error, target.name) from None
        current = call.kind.on_read(current)
        if method == "GET":
            _answer(call, 200, scale_of(current, paths))
            return
        old_scale = scale_of(current, paths)
        if applied is not None:
            new_scale = applied
        else:
            new_scale = put_scale if method == "PUT" else apply(copy.deepcopy(old_scale), patch_body)
        replicas = _check_scale(call, new_scale)
        requested = (new_scale.get("metadata") or {}).get("resourceVersion")
        if method == "PATCH" and requested == old_scale["metadata"].get("resourceVersion"):
            requested = None  # (taken from the object patched, not asked for by the patch: no precondition)
        if requested and requested != current["metadata"]["resourceVersion"]:
            raise call.conflict(target.name, _MODIFIED)
        replicas_path = str(paths.get("specReplicasPath") or ".spec.replicas")
        if applied is not None:
            new = _apply_scale(call, current, applied, replicas_path, manager, force)
        else:
            wanted = copy.deepcopy(current)
            _set(wanted, replicas_path, replicas)
            new = prepare_update(call, wanted, current, manager, "Update")
        if dry_run(call.query):
            _answer(call, 200, scale_of(new, paths))
            return
        try:
            stored = await call.store.update(target.collection, target.key_namespace, target.name,
                                             call.kind.to_storage(new),
                                             expected_resource_version=int(current["metadata"]["resourceVersion"]))
        except ConflictError:
            if requested or attempt == PATCH_RETRIES - 1:
                raise call.conflict(target.name, _MODIFIED) from None
            continue
        except Exception as error:
            raise call.storage_error(error, target.name) from None
        _answer(call, 200, scale_of(stored, paths))
        return


def _apply_scale(call: ResourceRequest, current: Object, applied: dict[str, Any], replicas_path: str, manager: str,
                 force: bool) -> Object:
    """A server-side apply of a Scale, as kube maps it onto the object: the manager applies (and comes to own,
    with subresource `scale`) the object's replicas field, or releases it when the Scale has no spec.replicas;
    a field another manager owns is a 409 conflict unless forced."""
    info = call.info
    meta = current["metadata"]
    config: Object = {"apiVersion": info.api_version, "kind": info.kind,
                      "metadata": {key: meta[key] for key in ("name", "namespace") if key in meta}}
    spec: dict[str, Any] = applied["spec"] if isinstance(applied.get("spec"), dict) else {}
    if "replicas" in spec:
        _set(config, replicas_path, spec.get("replicas") or 0)
    new = ssa.server_side_apply(copy.deepcopy(current), config, manager, force, rfc3339(call.now()), info.api_version,
                                reset_fields=reset_fields(call), list_map_keys=call.kind.list_map_keys,
                                kind=info.kind, subresource="scale", max_values=call.max_values)
    return prepare_update(call, new, current, manager, "Apply")


def _check_scale(call: ResourceRequest, scale: Any) -> int:
    """The replicas a written Scale asks for, after kube's checks (type meta, name, spec.replicas ≥ 0)."""
    if not isinstance(scale, dict):
        raise StatusError(400, "the request body must be a JSON or YAML object", "BadRequest")
    api_version, kind = scale.get("apiVersion") or API_VERSION, scale.get("kind") or KIND
    if api_version != API_VERSION or kind != KIND:
        raise StatusError(400, f"the body must be an {API_VERSION} {KIND}, not {api_version} {kind}", "BadRequest")
    meta = scale.get("metadata") or {}
    if not isinstance(meta, dict):
        raise StatusError(400, "metadata must be an object", "BadRequest")
    problem = decode_error(scale, SCALE_TYPE)
    if problem:
        raise StatusError(400, f'Scale in version "v1" cannot be handled as a Scale: {problem}', "BadRequest")
    if meta.get("name") not in (None, "", call.target.name):
        raise StatusError(400, f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                               f"({call.target.name})", "BadRequest")
    replicas: int = (scale.get("spec") or {}).get("replicas") or 0
    if replicas < 0:
        error = invalid("spec.replicas", replicas, "must be greater than or equal to 0")
        raise StatusError(422, f'{KIND}.autoscaling "{call.target.name}" is invalid: {error}', "Invalid", {
            "name": call.target.name, "group": "autoscaling", "kind": KIND,
            "causes": [{"reason": error.reason, "message": error.message, "field": error.path}]})
    return replicas


def _answer(call: ResourceRequest, code: int, scale: Object) -> None:
    """Scales are answered as objects even when a Table was asked for (kube has no table for them)."""
    output = call.output if call.output.form != "table" else Output("json")
    respond(call.request, code, scale, output, call.warnings)


__all__ = ["API_VERSION", "KIND", "lookup", "scale_of", "serve_scale"]
