"""JSON patch (RFC 6902) and JSON merge patch (RFC 7386) as kube-apiserver applies them to an object.

The behaviour, quirks included, is that of gopkg.in/evanphx/json-patch.v4 behind k8s.io/apiserver's patch handler
(default `fieldValidation=Warn`), and so are the status codes and messages of the errors.

A patch cannot make an object grow past what this server handles quickly: as in kube, at most 10,000 operations
(413) and at most 3 MiB of `copy` operations (kube's JSONPatchMaxCopyBytes, a 422); and, stricter than kube, at
most MAX_OBJECT_VALUES values copied in all (422), an object that never grows by more than MAX_DOCUMENT_VALUES
values while it is patched (413) and a patched object within negotiation's limits (check_object_size: 413, and
MAX_DEPTH levels: 422).  A few kilobytes of `copy` operations that each double a value are refused after a few
doublings, in microseconds.
"""

from __future__ import annotations

import json
import re
from typing import Any

from grafana_aggregator.apimachinery.gotypes import json_kind
from grafana_aggregator.apimachinery.negotiation import (
    MAX_BODY_VALUES,
    MAX_DEPTH,
    MAX_OBJECT_VALUES,
    BodyError,
    check_object_size,
    copy_json,
    count_values,
    depth_detail,
    load_json,
    too_many_values,
)
from grafana_aggregator.apimachinery.status import StatusError

#: kube-apiserver's limit on the operations of one JSON patch.
MAX_JSON_PATCH_OPERATIONS = 10000
#: kube-apiserver's limit on what the `copy` operations of one JSON patch add up to, in bytes of JSON
#: (JSONPatchMaxCopyBytes, json-patch's AccumulatedCopySizeLimit).
MAX_COPY_BYTES = 3 * 1024 * 1024
#: This server's limit on the values the `copy` operations of one JSON patch add up to.
MAX_COPY_VALUES = MAX_OBJECT_VALUES
#: Go's encoding/json writes these as six-character escapes (HTML safety, JavaScript line terminators).
_GO_ESCAPED = {"<": 5, ">": 5, "&": 5, "\u2028": 3, "\u2029": 3, "\b": 4, "\f": 4}

_INDEX = re.compile(r"[+-]?[0-9]+")
_ABSENT: Any = object()


class _PatchFailed(Exception):
    """An operation of a JSON patch that cannot be applied."""


def _invalid_json() -> StatusError:
    """The error for a body that is not JSON at all."""
    return StatusError(400, "invalid JSON patch", "BadRequest")


def _cannot_apply(cause: str | None = None) -> StatusError:
    """The error kube-apiserver returns for any JSON patch operation that fails (its details are not kept).

    A patch refused for a limit says which in a cause, so that the client can act on it.
    """
    details: dict[str, Any] = {}
    if cause is not None:
        details["causes"] = [{"reason": "FieldValueInvalid", "message": cause}]
    return StatusError(422, "the server rejected our request due to an error in our request", "Invalid", details)


def _load(patch_bytes: bytes, max_values: int) -> Any:
    """The decoded body, or the 400 kube gives to bodies that are not valid JSON (413 past max_values values)."""
    try:
        return load_json(patch_bytes, max_values, duplicates=False).value
    except BodyError as error:
        if error.kind == BodyError.VALUES:
            raise too_many_values(max_values, "the patch") from None
        if error.kind == BodyError.NUMBER:
            raise StatusError(400, f"error decoding patch: {error.detail}", "BadRequest") from None
        if error.kind in (BodyError.SYNTAX, BodyError.UNICODE):
            raise _invalid_json() from None
        raise StatusError(400, f"invalid JSON patch: {error.detail}", "BadRequest") from None


def go_json_size(value: Any) -> int:
    """How many bytes Go's encoding/json writes for a value (what json-patch counts for a `copy`)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode("utf-8", "surrogatepass"))
    for escaped, extra in _GO_ESCAPED.items():
        if escaped in text:
            size += extra * text.count(escaped)
    return size


class _Size:
    """How many values the document being patched holds, and what its `copy` operations have added up to."""

    def __init__(self, document: Any, max_values: int):
        self.values = count_values(document, MAX_BODY_VALUES)[0]
        #: How far the document may grow while it is patched (check_patched has the last word).
        self.limit = self.values + 2 * max_values
        self.copied_values = 0
        self.copied_bytes = 0

    def grow(self, value: Any) -> None:
        self.values += count_values(value, MAX_BODY_VALUES)[0]
        if self.values > self.limit:
            raise too_many_values(self.limit, "the patched object")

    def shrink(self, value: Any) -> None:
        self.values -= count_values(value, MAX_BODY_VALUES)[0]

    def copy(self, value: Any) -> Any:
        """A copy of the value for a `copy` operation, within kube's byte limit and this server's limits."""
        count, height = count_values(value, MAX_COPY_VALUES - self.copied_values)
        self.copied_values += count
        if self.copied_values > MAX_COPY_VALUES:
            raise _cannot_apply(f"Unable to complete the copy, the values copied add up to more than "
                                f"{MAX_COPY_VALUES}, the most this server copies for one patch")
        if height > MAX_DEPTH:
            raise _cannot_apply(f"Unable to complete the copy: the patched object {depth_detail()}")
        self.copied_bytes += go_json_size(value)
        if self.copied_bytes > MAX_COPY_BYTES:
            raise _cannot_apply(f"Unable to complete the copy, the accumulated size increase of copy is "
                                f"{self.copied_bytes}, exceeding the limit {MAX_COPY_BYTES}")
        copied = copy_json(value)
        self.grow(copied)
        return copied


def check_patched(document: Any, max_values: int = MAX_OBJECT_VALUES) -> None:
    """Refuse what a patch made of an object when it holds too many values (413) or nests too deeply (422)."""
    if count_values(document, MAX_BODY_VALUES)[1] > MAX_DEPTH:
        raise _cannot_apply(f"the patched object {depth_detail()}")
    check_object_size(document, "the patched object", max_values)


def _decode_error(detail: str) -> StatusError:
    """The 400 for a patch document of the wrong shape."""
    return StatusError(400, f"error decoding patch: json: cannot unmarshal {detail}", "BadRequest")


def _check_operations(document: Any) -> list[dict[str, Any] | None]:
    """The operations of a JSON patch, after the strict decode kube makes into []handlers.jsonPatchOp."""
    if document is None:
        return []
    if not isinstance(document, list):
        raise _decode_error(f"{json_kind(document)} into Go value of type []handlers.jsonPatchOp")
    for operation in document:
        if operation is None:
            continue
        if not isinstance(operation, dict):
            raise _decode_error(f"{json_kind(operation)} into Go value of type handlers.jsonPatchOp")
        for name in ("op", "path", "from"):
            value = operation.get(name)
            if value is not None and not isinstance(value, str):
                raise _decode_error(f"{json_kind(value)} into Go struct field jsonPatchOp.{name} of type string")
    return document


def apply_json_patch(obj: dict[str, Any], patch_bytes: bytes, max_values: int = MAX_OBJECT_VALUES) -> dict[str, Any]:
    """Apply an `application/json-patch+json` body to `obj`, returning a new object.

    Errors: 400 for a body that is not JSON or not a list of operations, 413 past 10000 operations, and 422 with
    kube's generic message when an operation cannot be applied (failed `test`, missing path, bad index, ...);
    the limits on copies and on the patched object are in the module docstring.
    """
    operations = _check_operations(_load(patch_bytes, MAX_BODY_VALUES))
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise StatusError(413, "Request entity too large: The allowed maximum operations in a JSON patch is "
                               f"{MAX_JSON_PATCH_OPERATIONS}, got {len(operations)}", "RequestEntityTooLarge")
    document: Any = copy_json(obj)
    size = _Size(document, max_values)
    try:
        for operation in operations:
            document = _apply_operation(document, operation or {}, size)
    except _PatchFailed:
        raise _cannot_apply() from None
    if not isinstance(document, dict):
        raise _cannot_apply()
    check_patched(document, max_values)
    return document


def _decode_pointer_token(token: str) -> str:
    """RFC 6901 unescaping: `~1` is `/`, `~0` is `~`."""
    if "~" not in token:
        return token
    return re.sub("~[01]", lambda m: "/" if m.group(0) == "~1" else "~", token)


def _index(key: str) -> int:
    """strconv.Atoi of an array index."""
    digits = key.lstrip("+-").lstrip("0") or "0"
    if not _INDEX.fullmatch(key) or len(digits) > 19:
        raise _PatchFailed(f"invalid index {key[:40]!r}")  # not a number, or out of int's range (never int()'s)
    return -int(digits) if key.startswith("-") else int(digits)


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


def _add(container: dict[str, Any] | list[Any], key: str, value: Any, size: _Size) -> None:
    """Set an object member, or insert into an array (`-` appends)."""
    if isinstance(container, dict):
        if key in container:
            size.shrink(container[key])
        container[key] = value
    elif key == "-":
        container.append(value)
    else:
        container.insert(_list_position(container, key, len(container) + 1), value)


def _remove(container: dict[str, Any] | list[Any], key: str) -> Any:
    """Remove an existing object member or array element, returning it."""
    if isinstance(container, dict):
        if key not in container:
            raise _PatchFailed(f"Unable to remove nonexistent key: {key}")
        return container.pop(key)
    return container.pop(_list_position(container, key, len(container)))


def _required(operation: dict[str, Any], name: str) -> str:
    """A string member the operation must have."""
    value = operation.get(name)
    if value is None:
        raise _PatchFailed(f"operation missing {name} field")
    return str(value)


def _apply_operation(document: Any, operation: dict[str, Any], size: _Size) -> Any:
    """One operation applied in place; returns the (possibly replaced) document."""
    kind = operation.get("op")
    if kind in ("add", "replace"):
        value = copy_json(operation.get("value"))
    if kind == "add":
        container, key = _resolve(document, _required(operation, "path"))
        size.grow(value)
        _add(container, key, value, size)
    elif kind == "remove":
        container, key = _resolve(document, _required(operation, "path"))
        size.shrink(_remove(container, key))
    elif kind == "replace":
        path = _required(operation, "path")
        if path == "":
            if not isinstance(value, (dict, list)):
                raise _PatchFailed("replace operation value must be object or array")
            size.shrink(document)
            size.grow(value)
            return value
        container, key = _resolve(document, path)
        size.shrink(_get(container, key))
        size.grow(value)
        if isinstance(container, dict):
            container[key] = value
        else:
            container[_list_position(container, key, len(container))] = value
    elif kind == "move":
        container, key = _resolve(document, _required(operation, "from"))
        moved = _get(container, key)
        _remove(container, key)
        container, key = _resolve(document, _required(operation, "path"))
        _add(container, key, moved, size)
    elif kind == "copy":
        container, key = _resolve(document, _required(operation, "from"))
        original = _get(container, key)
        container, key = _resolve(document, _required(operation, "path"))
        _add(container, key, size.copy(original), size)
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


def apply_merge_patch(obj: dict[str, Any], patch_bytes: bytes, max_values: int = MAX_OBJECT_VALUES) -> dict[str, Any]:
    """Apply an `application/merge-patch+json` body to `obj`, returning a new object.

    null deletes a member, objects merge recursively and anything else replaces. A body that is not JSON, not an
    object, or null is a 400.
    """
    patch = _load(patch_bytes, 2 * max_values)
    if patch is None:
        raise StatusError(400, "Invalid JSON Patch", "BadRequest")
    if not isinstance(patch, dict):
        raise _decode_error(f"{json_kind(patch)} into Go value of type map[string]interface {{}}")
    result: dict[str, Any] = copy_json(obj)
    _merge_members(result, patch)
    check_patched(result, max_values)
    return result


def _merge_members(document: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge a patch object into a document object in place."""
    for key, value in patch.items():
        if value is None:
            document.pop(key, None)
            continue
        current = document.get(key)
        if current is None:
            document[key] = _prune_nulls(copy_json(value))
        elif not isinstance(current, dict):
            document[key] = _prune_nulls(copy_json(value))
        elif not isinstance(value, dict):
            document[key] = copy_json(value)
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
