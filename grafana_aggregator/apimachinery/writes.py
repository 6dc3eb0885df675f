"""The write verbs: create, update, patch (JSON patch, merge patch, strategic merge patch for built-in kinds, and
server-side apply), delete and deletecollection, for a kind's main resource and its status subresource.

Each write runs the kind's Strategy (defaults, preparation, validation), keeps server-owned metadata and
managedFields, honours dryRun and preconditions, and maps storage errors to kube's Status errors.
"""

from __future__ import annotations

import copy
import json
import random
import re
import uuid
from typing import Any

from ..storage import (
    AlreadyExistsError,
    ConflictError,
    InvalidKeyError,
    NotFoundError,
    StorageFullError,
    StorageUnavailableError,
)
from . import apply as ssa
from . import patch as patching
from . import strategicpatch
from .fielderrors import FieldError, invalid
from .gotypes import (
    convert_from_unstructured,
    decode_error,
    drop_empty_metadata,
    from_unstructured_error,
    go_format,
    go_json,
    go_quote,
)
from .negotiation import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_TYPES,
    STRATEGIC_MERGE_PATCH,
    Decoded,
    Output,
    check_object_size,
    decode_yaml,
    media_type,
)
from .query import delete_options, dry_run, field_manager, field_validation, patch_options, selectors
from .resourcerequest import ResourceRequest, respond
from .status import StatusError, method_not_allowed
from .strategy import KindInfo, Object, Strategy, rfc3339
from .validation import validate_object_meta, validate_object_meta_update

GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
PATCH_RETRIES = 5
#: Metadata fields a client cannot set; the server owns them.
SYSTEM_METADATA = ("uid", "creationTimestamp", "resourceVersion", "generation", "selfLink", "deletionTimestamp",
                   "deletionGracePeriodSeconds")
#: Lists that are maps keyed by some of their fields, for server-side apply.
LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {"status.conditions": ("type",)}
_MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


# -- create ----------------------------------------------------------------------------------------


async def create(call: ResourceRequest) -> None:
    """POST to a collection: a new object, its name generated from generateName when it has none."""
    if call.target.subresource:
        raise method_not_allowed()
    decoded = call.decode_body()
    obj = call.check_object(decoded, decoded.value, None)
    meta = obj["metadata"]
    dry = dry_run(call.query)
    manager = field_manager(call.query, call.header(b"user-agent"))
    generate = meta.get("generateName")
    for attempt in range(5):
        candidate = copy.deepcopy(obj)
        cmeta = candidate["metadata"]
        if not cmeta.get("name") and generate:
            cmeta["name"] = generate + "".join(random.choice(GENERATE_NAME_ALPHABET) for _ in range(5))
        prepare_new(call, candidate)
        candidate = ssa.update_managed_fields(None, candidate, manager, "Update", rfc3339(call.now()),
                                              call.info.api_version, reset_fields=reset_fields(call),
                                              list_map_keys=call.kind.list_map_keys)
        name = cmeta.get("name", "")
        if dry:
            try:
                await call.store.get(call.target.collection, call.target.key_namespace, name)
            except NotFoundError:
                candidate["metadata"].pop("resourceVersion", None)
                call.respond(201, candidate)
                return
            raise call.already_exists(name)
        try:
            stored = await call.store.create(call.target.collection, call.target.key_namespace, name,
                                             call.kind.to_storage(candidate))
        except AlreadyExistsError:
            if generate and not meta.get("name") and attempt < 4:
                continue
            raise call.already_exists(name) from None
        except (InvalidKeyError, ConflictError, StorageFullError, StorageUnavailableError) as error:
            raise call.storage_error(error, name) from None
        call.respond(201, stored)
        return


def prepare_new(call: ResourceRequest, obj: Object) -> None:
    """Server-owned metadata, defaults, strategy preparation and validation of a new object."""
    meta = obj["metadata"]
    for key in SYSTEM_METADATA:
        meta.pop(key, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = rfc3339(call.now())
    meta["generation"] = 1
    drop_empty_metadata(obj)
    call.kind.default(obj)
    call.kind.prepare_for_create(obj)
    errors = _unique(_validate_meta(call, obj) + call.kind.validate(obj))
    if errors:
        raise call.invalid(meta.get("name") or meta.get("generateName", ""), errors)
    call.warnings.extend(call.kind.write_warnings(obj))


# -- update ----------------------------------------------------------------------------------------


async def update(call: ResourceRequest) -> None:
    """PUT an object: a whole new version, which must name the resourceVersion it replaces."""
    target = call.target
    decoded = call.decode_body()
    obj = call.check_object(decoded, decoded.value, target.name)
    version = obj["metadata"].get("resourceVersion")
    if not version:
        raise call.invalid(target.name, [invalid("metadata.resourceVersion", 0, "must be specified for an update")])
    try:
        expected = int(version)
    except (TypeError, ValueError):
        raise StatusError(400, f'invalid resource version: "{version}"', "BadRequest") from None
    try:
        old = call.kind.on_read(await call.store.get(target.collection, target.key_namespace, target.name))
    except Exception as error:
        raise call.storage_error(error, target.name) from None
    if int(old["metadata"]["resourceVersion"]) != expected:
        raise call.conflict(target.name, _MODIFIED)
    new = prepare_update(call, obj, old, field_manager(call.query, call.header(b"user-agent")), "Update")
    await _write_update(call, new, expected)


def prepare_update(call: ResourceRequest, new: Object, old: Object, manager: str, operation: str) -> Object:
    """Keep server-owned metadata, run the strategy (main resource or status), validate, track field owners."""
    kind, subresource = call.kind, call.target.subresource
    meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
    if not meta.get("uid"):
        meta["uid"] = old_meta.get("uid", "")
    for key in ("creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    meta.pop("selfLink", None)
    drop_empty_metadata(new)
    kind.default(new)
    if subresource == "status":
        kind.prepare_for_status_update(new, old)
        errors = kind.validate_status_update(new, old)
    else:
        kind.prepare_for_update(new, old)
        errors = _unique(validate_object_meta_update(meta, old_meta) + _validate_meta(call, new) +
                         kind.validate_update(new, old))
        if kind.spec_changed(new, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
    if errors:
        raise call.invalid(call.target.name, errors)
    if subresource != "status":
        call.warnings.extend(kind.write_warnings(new))
    if operation != "Apply":
        new = ssa.update_managed_fields(old, new, manager, operation, rfc3339(call.now()),
                                        call.info.api_version, subresource=subresource,
                                        reset_fields=reset_fields(call), list_map_keys=call.kind.list_map_keys)
    return new


async def _write_update(call: ResourceRequest, new: Object, expected: int) -> None:
    if dry_run(call.query):
        call.respond(200, new)
        return
    try:
        stored = await _store_update(call, new, expected)
    except Exception as error:
        raise call.storage_error(error, call.target.name) from None
    call.respond(200, stored)


async def _store_update(call: ResourceRequest, new: Object, expected: int) -> Object:
    """Store an update, or delete the object when the update removes its last finalizer while it is being
    deleted (as kube does); the object to answer with."""
    target = call.target
    if finalized(new):
        await call.store.delete(target.collection, target.key_namespace, target.name,
                                expected_resource_version=expected)
        return new
    stored: Object = await call.store.update(target.collection, target.key_namespace, target.name,
                                             call.kind.to_storage(new), expected_resource_version=expected)
    return stored


def finalized(obj: Object) -> bool:
    """Whether an update leaves an object that is being deleted with no finalizer: kube deletes it then."""
    meta = obj.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


def reset_fields(call: ResourceRequest) -> tuple[str, ...]:
    """Fields a write to this endpoint cannot set, so nobody owns them through it (kube's ResetFieldsStrategy)."""
    if call.target.subresource == "status":
        return ("metadata", "spec")
    return ("status",) if call.info.has_status else ()


def _validate_meta(call: ResourceRequest, obj: Object) -> list[FieldError]:
    return validate_object_meta(obj["metadata"], call.info.namespaced)


def _unique(errors: list[FieldError]) -> list[FieldError]:
    """Drop repeats (the handler and a strategy may both check the same metadata rule)."""
    seen: set[FieldError] = set()
    return [e for e in errors if not (e in seen or seen.add(e))]  # type: ignore[func-returns-value]


# -- patch and apply -------------------------------------------------------------------------------


async def patch(call: ResourceRequest) -> None:
    """PATCH an object with a JSON patch, a merge patch or an apply (which may create it), retrying on conflicts."""
    target = call.target
    patch_type = media_type(call.header(b"content-type"))
    accepted = accepted_patch_types(call.info)
    if patch_type not in accepted:
        raise StatusError(415, f"the body of the request was in an unknown format - accepted media types include: "
                               f"{', '.join(accepted)}", "UnsupportedMediaType")
    body = call.read_body()
    options = patch_options(call.query, patch_type, call.header(b"user-agent"))
    for attempt in range(PATCH_RETRIES):
        try:
            old: Object | None = call.kind.on_read(
                await call.store.get(target.collection, target.key_namespace, target.name))
        except NotFoundError:
            old = None
        except Exception as error:
            raise call.storage_error(error, target.name) from None
        if old is None and (patch_type != APPLY_PATCH or target.subresource):
            raise call.not_found(target.name)
        try:
            await _patch_once(call, patch_type, body, old, options.manager, options.force)
            return
        except ConflictError:
            if attempt == PATCH_RETRIES - 1:
                raise call.conflict(target.name, _MODIFIED) from None


def accepted_patch_types(info: KindInfo) -> tuple[str, ...]:
    """The patch types a kind accepts, in kube's order: strategic merge patch only for a built-in kind."""
    if info.go_type is None:
        return PATCH_TYPES
    return (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)


def _patch_invalid(value: str, detail: str) -> StatusError:
    """kube's 422 for a patch whose result does not decode: `field.Invalid(patch, <value>, <error>)`, no kind."""
    message = f"Invalid value: {go_quote(value)}: {detail}"
    return StatusError(422, f' "" is invalid: patch: {message}', "Invalid", {
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "patch"}]})


def _strategic_merge(call: ResourceRequest, body: bytes, old: Object) -> Object:
    """Apply a strategic merge patch to a copy of old, and check the result as kube converts it into the Go type.

    Unknown fields in the result and fields the patch repeats are dropped with a warning (Warn), refused
    with a 422 (Strict) or ignored, as kube's patch handler does.
    """
    go_type = call.info.go_type
    assert go_type is not None
    mode = field_validation(call.query)
    decoded = strategicpatch.decode_patch(body)
    patched = strategicpatch.strategic_merge(json.loads(json.dumps(old)), decoded.patch, go_type)
    check_object_size(patched, max_values=call.max_values)

    def shown() -> str:
        """The patch as kube's message shows it (`%+v` of the map, after the merge took its directives out)."""
        return go_format(decoded.patch if decoded.patch is not None else {})

    problem = from_unstructured_error(patched, go_type)
    if problem:
        raise _patch_invalid(shown(), problem)
    converted: Object = convert_from_unstructured(patched, go_type)
    problems = [f'duplicate field "{path}"' for path in decoded.duplicates] if mode != "Ignore" else []
    problems += sorted(f'unknown field "{path}"' for path in call.kind.prune(converted))
    if problems and mode == "Strict":
        raise _patch_invalid(shown(), "strict decoding error: " + ", ".join(problems))
    if problems and mode == "Warn":
        call.warnings.extend(problems)
    return converted


async def _patch_once(call: ResourceRequest, patch_type: str, body: bytes, old: Object | None, manager: str,
                      force: bool) -> None:
    """One attempt at a patch; a ConflictError means the object changed underneath and the patch is retried."""
    target, info = call.target, call.info
    now = rfc3339(call.now())
    if patch_type == APPLY_PATCH:
        decoded = decode_yaml(body, 2 * call.max_values)
        applied = call.check_object(decoded, decoded.value, target.name, from_body=False, apply=True)
        new = ssa.server_side_apply(old, applied, manager, force, now, info.api_version,
                                    reset_fields=reset_fields(call), list_map_keys=call.kind.list_map_keys,
                                    kind=info.kind, subresource=target.subresource, max_values=call.max_values)
        if old is None:
            await _create_applied(call, new)
            return
        new = prepare_update(call, new, old, manager, "Apply")
        await _store_patched(call, new, old)
        return
    assert old is not None
    source = json.dumps(old).encode()
    if patch_type == STRATEGIC_MERGE_PATCH:
        patched = _strategic_merge(call, body, old)
        obj = call.check_object(Decoded(patched), patched, target.name, from_body=False, validate_fields=False)
    else:
        if patch_type == JSON_PATCH:
            patched = patching.apply_json_patch(json.loads(source), body, call.max_values)
        else:
            patched = patching.apply_merge_patch(json.loads(source), body, call.max_values)
        problem = decode_error(patched, info.go_type) if info.go_type is not None else None
        if problem:
            raise _patch_invalid(go_json(patched), problem)
        obj = call.check_object(Decoded(patched), patched, target.name, from_body=False)
    requested = obj["metadata"].get("resourceVersion")
    if requested and requested != old["metadata"]["resourceVersion"]:
        raise call.conflict(target.name, _MODIFIED)
    new = prepare_update(call, obj, old, manager, "Update")
    await _store_patched(call, new, old)


async def _create_applied(call: ResourceRequest, new: Object) -> None:
    """An apply of an object that does not exist yet creates it, keeping the managedFields the apply worked out."""
    target = call.target
    new["metadata"]["name"] = target.name
    if call.info.namespaced:
        new["metadata"]["namespace"] = target.namespace
    managed = new["metadata"].get("managedFields")
    prepare_new(call, new)
    if managed is not None:
        new["metadata"]["managedFields"] = managed
    if dry_run(call.query):
        new["metadata"].pop("resourceVersion", None)
        call.respond(201, new)
        return
    try:
        stored = await call.store.create(target.collection, target.key_namespace, target.name,
                                         call.kind.to_storage(new))
    except AlreadyExistsError:
        raise ConflictError("created concurrently") from None
    except Exception as error:
        raise call.storage_error(error, target.name) from None
    call.respond(201, stored)


async def _store_patched(call: ResourceRequest, new: Object, old: Object) -> None:
    target = call.target
    expected = int(old["metadata"]["resourceVersion"])
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
    if new == old:
        call.respond(200, old)
        return
    if dry_run(call.query):
        call.respond(200, new)
        return
    try:
        stored = await _store_update(call, new, expected)
    except ConflictError:
        raise
    except Exception as error:
        raise call.storage_error(error, target.name) from None
    call.respond(200, stored)


# -- delete ----------------------------------------------------------------------------------------


async def delete(call: ResourceRequest) -> None:
    """DELETE one object, honouring the uid and resourceVersion preconditions of its DeleteOptions."""
    target = call.target
    if target.subresource:
        raise method_not_allowed()
    options = delete_options(call.query, call.read_body(), call.header(b"content-type"))
    preconditions = options.get("preconditions") or {}
    expected_rv = preconditions.get("resourceVersion")
    expected_uid = preconditions.get("uid")
    dry = dry_run(call.query) or bool(options.get("dryRun"))
    try:
        current = await call.store.get(target.collection, target.key_namespace, target.name)
        if dry or (expected_rv and not re.fullmatch("[0-9]{1,20}", str(expected_rv))):
            # (a precondition that is not a resourceVersion of this store never holds: kube's 409, not int()'s error)
            actual_rv = current["metadata"].get("resourceVersion")
            if expected_uid and current["metadata"].get("uid") != expected_uid:
                raise ConflictError(f"Precondition failed: UID in precondition: {expected_uid}, UID in object "
                                    f"meta: {current['metadata'].get('uid')}")
            if expected_rv and str(expected_rv) != actual_rv:
                raise ConflictError(f"Precondition failed: ResourceVersion in precondition: {expected_rv}, "
                                    f"ResourceVersion in object meta: {actual_rv}")
            deleted = current
            if current["metadata"].get("finalizers") or call.kind.finalizes_deletion:
                call.respond(200, mark_deleted(current, call.now(), call.kind))
                return
        elif current["metadata"].get("finalizers") or call.kind.finalizes_deletion:
            call.respond(200, await _delete_finalized(call, current, expected_rv, expected_uid))
            return
        else:
            deleted = await call.store.delete(
                target.collection, target.key_namespace, target.name,
                expected_resource_version=int(expected_rv) if expected_rv else None,
                expected_uid=expected_uid)
    except Exception as error:
        raise call.storage_error(error, target.name) from None
    if call.output.form == "table":
        call.respond(200, deleted)
        return
    respond(call.request, 200, _deleted_status(call, deleted["metadata"].get("uid", "")), call.output, call.warnings)


def mark_deleted(obj: Object, now: Any, kind: Strategy) -> Object:
    """A copy of an object with finalizers as a delete leaves it: deletionTimestamp set (once), grace period 0,
    and what the kind adds (a CRD's cleanup finalizer)."""
    marked = copy.deepcopy(obj)
    meta = marked["metadata"]
    if not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = rfc3339(now)
        meta["deletionGracePeriodSeconds"] = 0
        if "generation" in meta:
            meta["generation"] = int(meta["generation"]) + 1
        kind.prepare_for_delete(marked, now)
    return marked


async def _delete_finalized(call: ResourceRequest, current: Object, expected_rv: Any, expected_uid: Any) -> Object:
    """Delete an object that has finalizers, as kube's graceful deletion does: it stays, marked with a
    deletionTimestamp, until its last finalizer is removed (the update that removes it deletes it).

    The preconditions are checked against the current object; the update names its resourceVersion, so a
    change made meanwhile is never lost: the object is read again and the preconditions checked on it (kube's
    GuaranteedUpdate), a few times before the 409.
    """
    target = call.target
    for attempt in range(PATCH_RETRIES):
        meta = current["metadata"]
        if expected_uid and meta.get("uid") != expected_uid:
            raise ConflictError(f"Precondition failed: UID in precondition: {expected_uid}, UID in object meta: "
                                f"{meta.get('uid')}")
        if expected_rv and str(expected_rv) != meta.get("resourceVersion"):
            raise ConflictError(f"Precondition failed: ResourceVersion in precondition: {expected_rv}, "
                                f"ResourceVersion in object meta: {meta.get('resourceVersion')}")
        if meta.get("deletionTimestamp"):
            return current
        marked = mark_deleted(current, call.now(), call.kind)
        try:
            stored: Object = await call.store.update(target.collection, target.key_namespace, target.name, marked,
                                                     expected_resource_version=int(meta["resourceVersion"]))
            return stored
        except ConflictError:
            if attempt < PATCH_RETRIES - 1:
                current = await call.store.get(target.collection, target.key_namespace, target.name)
    raise ConflictError(_MODIFIED)


def _deleted_status(call: ResourceRequest, uid: str) -> dict[str, Any]:
    """The Success Status a delete answers with."""
    info = call.info
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": call.target.name, "group": info.group, "kind": info.plural, "uid": uid}}


async def delete_collection(call: ResourceRequest) -> None:
    """DELETE a collection: every selected object, answered with the list of those deleted."""
    delete_options(call.query, call.read_body(), call.header(b"content-type"))
    labels, fields = selectors(call.query, call.kind.field_labels)
    dry = dry_run(call.query)
    result = await call.store.list(call.target.collection, call.target.namespace)
    deleted = []
    for item in result.items:
        if not call.matches(item, labels, fields):
            continue
        meta = item["metadata"]
        if meta.get("finalizers") or call.kind.finalizes_deletion:
            if dry:
                item = mark_deleted(item, call.now(), call.kind)
            elif not meta.get("deletionTimestamp"):
                try:
                    item = await call.store.update(call.target.collection, meta.get("namespace", ""), meta["name"],
                                                   mark_deleted(item, call.now(), call.kind),
                                                   expected_resource_version=int(meta["resourceVersion"]))
                except (NotFoundError, ConflictError):
                    continue
        elif not dry:
            try:
                item = await call.store.delete(call.target.collection, meta.get("namespace", ""), meta["name"])
            except NotFoundError:
                continue
        deleted.append(call.kind.on_read(item))
    respond(call.request, 200, {"kind": call.info.list_kind, "apiVersion": call.info.api_version,
                                "metadata": {"resourceVersion": str(call.store.current_resource_version())},
                                "items": deleted}, call.output if call.output.form != "table" else Output("json"),
            call.warnings)
