"""JSON patch (RFC 6902) and JSON merge patch (RFC 7386) as kube-apiserver applies them to an object.

The behaviour, quirks included, is that of gopkg.in/evanphx/json-patch.v4 behind k8s.io/apiserver's patch handler
(default `fieldValidation=Warn`), and so are the status codes and messages of the errors.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from grafana_aggregator.apimachinery.status import StatusError

#: kube-apiserver's limit on the operations of one JSON patch.
MAX_JSON_PATCH_OPERATIONS = 10000

_INDEX = re.compile(r"[+-]?[0-9]+")
_ABSENT: Any = object()


class _PatchFailed(Exception):
    """An operation of a JSON patch that cannot be applied."""


def _invalid_json() -> StatusError:
    """The error for a body that is not JSON at all."""
    return StatusError(400, "invalid JSON patch", "BadRequest")


def _cannot_apply() -> StatusError:
    """The error kube-apiserver returns for any JSON patch operation that fails (its details are not kept)."""
    return StatusError(422, "the server rejected our request due to an error in our request", "Invalid", {})


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON."""
    raise ValueError(name)


def _load(patch_bytes: bytes) -> Any:
    """The decoded body, or the 400 kube gives to bodies that are not valid JSON."""
    try:
        return json.loads(patch_bytes.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:
        raise _invalid_json() from None


def _go_kind(value: Any) -> str:
    """How Go's encoding/json names a JSON value's kind in an UnmarshalTypeError."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "number"


def _decode_error(detail: str) -> StatusError:
    """The 400 for a patch document of the wrong shape."""
    return StatusError(400, f"error decoding patch: json: cannot unmarshal {detail}", "BadRequest")


def _check_operations(document: Any) -> list[dict[str, Any] | None]:
    """The operations of a JSON patch, after the strict decode kube makes into []handlers.jsonPatchOp."""
    if document is None:
        return []
    if not isinstance(document, list):
        raise _decode_error(f"{_go_kind(document)} into Go value of type []handlers.jsonPatchOp")
    for operation in document:
        if operation is None:
            continue
        if not isinstance(operation, dict):
            raise _decode_error(f"{_go_kind(operation)} into Go value of type handlers.jsonPatchOp")
        for name in ("op", "path", "from"):
            value = operation.get(name)
            if value is not None and not isinstance(value, str):
                raise _decode_error(f"{_go_kind(value)} into Go struct field jsonPatchOp.{name} of type string")
    return document


def apply_json_patch(obj: dict[str, Any], patch_bytes: bytes) -> dict[str, Any]:
    """Apply an `application/json-patch+json` body to `obj`, returning a new object.

    Errors: 400 for a body that is not JSON or not a list of operations, 413 past 10000 operations, and 422 with
    kube's generic message when an operation cannot be applied (failed `test`, missing path, bad index, ...).
    """
    operations = _check_operations(_load(patch_bytes))
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise StatusError(413, "Request entity too large: The allowed maximum operations in a JSON patch is "
                               f"{MAX_JSON_PATCH_OPERATIONS}, got {len(operations)}", "RequestEntityTooLarge")
    document: Any = copy.deepcopy(obj)
    try:
        for operation in operations:
            document = _apply_operation(document, operation or {})
    except _PatchFailed:
        raise _cannot_apply() from None
    if not isinstance(document, dict):
        raise _cannot_apply()
    return document


def _decode_pointer_token(token: str) -> str:
    """RFC 6901 unescaping: `~1` is `/`, `~0` is `~`."""
    return re.sub("~[01]", lambda m: "/" if m.group(0) == "~1" else "~", token)


def _index(key: str) -> int:
    """strconv.Atoi of an array index."""
    if not _INDEX.fullmatch(key):
        raise _PatchFailed(f"invalid index {key!r}")
    return int(key)


def _resolve(document: Any, path: str) -> tuple[dict[str, Any] | list[Any], str]:
    """The container a path points into and the last, unescaped, token (json-patch's findObject)."""
    tokens = path.split("/")
    if len(tokens) < 2:
        raise _PatchFailed(f"doc is missing path: {path}")
    container = document
    for token in tokens[1:-1]:
        child = _get(container, _decode_pointer_token(token))
        if not isinstance(child, (dict, list)):
            raise _PatchFailed(f"doc is missing path: {path}")
        container = child
    if not isinstance(container, (dict, list)):
        raise _PatchFailed(f"doc is missing path: {path}")
    return container, _decode_pointer_token(tokens[-1])


def _list_position(items: list[Any], key: str, size: int) -> int:
    """An index into a list of `size` slots, negative indices counting from the end."""
    index = _index(key)
    if index < 0:
        if index < -size:
            raise _PatchFailed(f"invalid index {index}")
        index += size
    if index >= size:
        raise _PatchFailed(f"invalid index {index}")
    return index


def _get(container: Any, key: str) -> Any:
    """The value at key; a missing object member reads as null, as in json-patch v4."""
    if isinstance(container, dict):
        return container.get(key)
    if isinstance(container, list):
        return container[_list_position(container, key, len(container))]
    raise _PatchFailed("not a container")


def _add(container: dict[str, Any] | list[Any], key: str, value: Any) -> None:
    """Set an object member, or insert into an array (`-` appends)."""
    if isinstance(container, dict):
        container[key] = value
    elif key == "-":
        container.append(value)
    else:
        container.insert(_list_position(container, key, len(container) + 1), value)


def _remove(container: dict[str, Any] | list[Any], key: str) -> None:
    """Remove an existing object member or array element."""
    if isinstance(container, dict):
        if key not in container:
            raise _PatchFailed(f"Unable to remove nonexistent key: {key}")
        del container[key]
    else:
        del container[_list_position(container, key, len(container))]


def _required(operation: dict[str, Any], name: str) -> str:
    """A string member the operation must have."""
    value = operation.get(name)
    if value is None:
        raise _PatchFailed(f"operation missing {name} field")
    return str(value)


def _apply_operation(document: Any, operation: dict[str, Any]) -> Any:
    """One operation applied in place; returns the (possibly replaced) document."""
    kind = operation.get("op")
    value = copy.deepcopy(operation.get("value"))
    if kind == "add":
        container, key = _resolve(document, _required(operation, "path"))
        _add(container, key, value)
    elif kind == "remove":
        container, key = _resolve(document, _required(operation, "path"))
        _remove(container, key)
    elif kind == "replace":
        path = _required(operation, "path")
        if path == "":
            if not isinstance(value, (dict, list)):
                raise _PatchFailed("replace operation value must be object or array")
            return value
        container, key = _resolve(document, path)
        _get(container, key)
        if isinstance(container, dict):
            container[key] = value
        else:
            container[_list_position(container, key, len(container))] = value
    elif kind == "move":
        container, key = _resolve(document, _required(operation, "from"))
        moved = _get(container, key)
        _remove(container, key)
        container, key = _resolve(document, _required(operation, "path"))
        _add(container, key, moved)
    elif kind == "copy":
        container, key = _resolve(document, _required(operation, "from"))
        copied = copy.deepcopy(_get(container, key))
        container, key = _resolve(document, _required(operation, "path"))
        _add(container, key, copied)
    elif kind == "test":
        _test(document, operation)
    else:
        raise _PatchFailed(f"Unexpected kind: {kind}")
    return document


def _test(document: Any, operation: dict[str, Any]) -> None:
    """The `test` operation: a missing member equals null; numbers compare by type as written."""
    path = _required(operation, "path")
    expected = operation.get("value", _ABSENT)
    if path == "":
        if expected is _ABSENT or not json_equal(document, expected):
            raise _PatchFailed("testing value failed")
        return
    container, key = _resolve(document, path)
    actual = _get(container, key)
    if actual is None:
        if expected is not _ABSENT and expected is not None:
            raise _PatchFailed("testing value failed")
    elif expected is _ABSENT or not json_equal(actual, expected):
        raise _PatchFailed("testing value failed")


def json_equal(left: Any, right: Any) -> bool:
    """Structural equality of decoded JSON that, unlike ==, tells true from 1 and 1 from 1.0."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(json_equal(v, right[k]) for k, v in left.items())
    if isinstance(left, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right))
    return bool(left == right)


def apply_merge_patch(obj: dict[str, Any], patch_bytes: bytes) -> dict[str, Any]:
    """Apply an `application/merge-patch+json` body to `obj`, returning a new object.

    null deletes a member, objects merge recursively and anything else replaces. A body that is not JSON, not an
    object, or null is a 400.
    """
    patch = _load(patch_bytes)
    if patch is None:
        raise StatusError(400, "Invalid JSON Patch", "BadRequest")
    if not isinstance(patch, dict):
        raise _decode_error(f"{_go_kind(patch)} into Go value of type map[string]interface {{}}")
    result = copy.deepcopy(obj)
    _merge_members(result, patch)
    return result


def _merge_members(document: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge a patch object into a document object in place."""
    for key, value in patch.items():
        if value is None:
            document.pop(key, None)
            continue
        current = document.get(key)
        if current is None:
            document[key] = _prune_nulls(copy.deepcopy(value))
        elif not isinstance(current, dict):
            document[key] = _prune_nulls(copy.deepcopy(value))
        elif not isinstance(value, dict):
            document[key] = copy.deepcopy(value)
        else:
            _merge_members(current, value)


def _prune_nulls(value: Any) -> Any:
    """Drop null members of objects, also inside arrays (json-patch v4 does so for values it inserts)."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for member in value.values():
            _prune_nulls(member)
    elif isinstance(value, list):
        for item in value:
            _prune_nulls(item)
    return value
