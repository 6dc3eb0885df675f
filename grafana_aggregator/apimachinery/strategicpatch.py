# -*- test-case-name: tests.test_strategic_patch -*-
"""Strategic merge patch (`application/strategic-merge-patch+json`) as kube-apiserver applies it to a built-in kind.

The semantics are those of k8s.io/apimachinery's `strategicpatch.StrategicMergeMapPatch` on the server
(parallel lists merged, unmatched nulls ignored), driven by the patch strategies of the kind's Go
struct tags (a `GoType`):

- objects merge key by key; `null` deletes a key;
- a list whose field is tagged `patchStrategy:"merge"` merges: lists of objects by their
  `patchMergeKey` (APIService `status.conditions` by `type`, `metadata.ownerReferences` by `uid`),
  lists of scalars as a set (`metadata.finalizers`); every other list is replaced;
- directives: `$patch: replace` or `delete` on an object; `$patch: delete` (by merge key) or
  `replace` inside a merged list; `$retainKeys` (keep only the listed keys of an object);
  `$deleteFromPrimitiveList/<field>` (remove scalars from a merged list); and
  `$setElementOrder/<field>` (the order of the merged list).  `$patch: merge` is refused, as kube
  refuses it.

Merged lists come out in kube's order: the patch's items (in `$setElementOrder` order when given),
interleaved with the items only the server had, by their order in the original list.

Errors carry kube's messages.  Where kube answers 400 or 422 so does this; where kube lets a plain
error through as a 500 (a missing merge key, an unknown `$patch` value, ...) this answers 400 with the
same message, since the client sent something wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from attrs import frozen

from .gotypes import BYTES, RAW, SLICE, STRUCT, TIME, GoType, go_format, go_format_s, go_quote, go_type_name
from .negotiation import MAX_BODY_VALUES, MAX_DEPTH, count_values, depth_detail, too_many_values
from .status import StatusError

#: Raw types (kept as JSON, not modelled field by field) whose Go structs carry no patch tags at any depth.
FREE_FORM_TYPES = frozenset({"v1.JSONSchemaProps"})

DIRECTIVE = "$patch"
REPLACE, DELETE, MERGE = "replace", "delete", "merge"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
SET_ELEMENT_ORDER = "$setElementOrder"

#: mergepatch's sentinel errors that kube answers with 400 BadRequest.
BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST = "invalid patch format of primitive list"
BAD_PATCH_FORMAT_FOR_RETAIN_KEYS = "invalid patch format of retainKeys"
BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER = "invalid patch format of setElementOrder list"
#: What kube answers (422, no detail) for a list of lists.
GENERIC_INVALID = "the server rejected our request due to an error in our request"

_MAP_TYPE = "map[string]interface {}"
_SLICE_TYPE = "[]interface {}"
_MISSING: Any = object()


class PatchError(StatusError):
    """A strategic merge patch that cannot be applied: 400 with strategicpatch's message, or kube's generic 422."""

    def __init__(self, message: str, code: int = 400):
        if code == 422:
            super().__init__(422, GENERIC_INVALID, "Invalid", {})
        else:
            super().__init__(code, message, "BadRequest")


# -- the patch body -----------------------------------------------------------------------------------------


@frozen
class DecodedPatch:
    """A decoded patch body and the fields it repeats (paths as sigs.k8s.io/json names them)."""

    patch: dict[str, Any] | None
    duplicates: tuple[str, ...] = ()


def decode_patch(body: bytes) -> DecodedPatch:
    """Decode a strategic merge patch into a map, as kube's `json.Unmarshal` into map[string]interface{} does.

    Malformed JSON and a body that is not an object are 400 with encoding/json's message; `null` is
    an empty patch.
    """
    separators, deepest = _shape(body)
    if separators >= MAX_BODY_VALUES:  # at least one value more than there are commas
        raise too_many_values(MAX_BODY_VALUES)
    if deepest > MAX_DEPTH:
        raise StatusError(400, depth_detail(), "BadRequest")
    try:
        raw = json.loads(body.decode("utf-8", "replace"), object_pairs_hook=_Pairs, parse_constant=_not_json)
    except ValueError:
        raise StatusError(400, json_syntax_error(body) or "invalid JSON", "BadRequest") from None
    duplicates: list[str] = []
    value = _build(raw, "", duplicates)
    if count_values(value, MAX_BODY_VALUES)[0] > MAX_BODY_VALUES:
        raise too_many_values(MAX_BODY_VALUES)
    if value is None:
        return DecodedPatch(None, tuple(duplicates))
    if not isinstance(value, dict):
        kind = {"[]interface {}": "array", "string": "string", "bool": "bool"}.get(go_type_name(value), "number")
        raise StatusError(400, f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}",
                          "BadRequest")
    return DecodedPatch(value, tuple(duplicates))


_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_ALL_BUT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _shape(data: bytes) -> tuple[int, int]:
    """The commas of a JSON text and how deeply its objects and arrays nest (strings skipped), without parsing
    it: cheap limits checked before decoding."""
    outside = _STRINGS.sub(b"", data)
    brackets = outside.translate(None, _ALL_BUT_BRACKETS)
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                break
    return outside.count(b","), deepest


def _not_json(name: str) -> Any:
    """NaN and Infinity are not JSON (Go's decoder refuses them)."""
    raise ValueError(name)


class _Pairs(list[tuple[str, Any]]):
    """An object's members in order, duplicates kept (so their paths can be reported)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    """A decoded string as Go holds it: an unpaired surrogate escape becomes U+FFFD."""
    return _SURROGATE.sub("\ufffd", value)


def _build(value: Any, path: str, duplicates: list[str]) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, _Pairs):
        result: dict[str, Any] = {}
        for key, member in value:
            key = _text(key)
            child = f"{path}.{key}" if path else key
            if key in result and child not in duplicates:
                duplicates.append(child)
            result[key] = _build(member, child, duplicates)
        return result
    if isinstance(value, list):
        return [_build(item, f"{path}[{index}]", duplicates) for index, item in enumerate(value)]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2 ** 63) <= value < 2 ** 63:
        return float(value)  # past int64, Go's PreserveInts falls back to float64
    return value


def _quote_char(char: int) -> str:
    """encoding/json's quoteChar."""
    if char == ord("'"):
        return "'\\''"
    if char == ord('"'):
        return "'\"'"
    return "'" + go_quote(chr(char))[1:-1] + "'"


class _SyntaxError(Exception):
    pass


def json_syntax_error(data: bytes) -> str | None:
    """encoding/json's SyntaxError text for data (`invalid character 'x' looking for beginning of value`), or None.

    Nesting deeper than this server's MAX_DEPTH is refused here too (Go allows 10,000 levels).
    """
    try:
        _Scanner(data).document()
    except _SyntaxError as error:
        return str(error)
    return None


_SPACE = re.compile(rb"[ \t\r\n]+")
_PLAIN = re.compile(rb'[^"\\\x00-\x1f]+')


class _Scanner:
    """A validating pass over JSON that fails where, and as, encoding/json's scanner fails."""

    def __init__(self, data: bytes):
        self.data = data
        self.depth = 0

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _SyntaxError(depth_detail())

    def fail(self, at: int, context: str) -> _SyntaxError:
        if at >= len(self.data):
            return _SyntaxError("unexpected end of JSON input")
        return _SyntaxError(f"invalid character {_quote_char(self.data[at])} {context}")

    def space(self, at: int) -> int:
        match = _SPACE.match(self.data, at)
        return match.end() if match else at

    def document(self) -> None:
        at = self.space(0)
        at = self.space(self.value(at))
        if at < len(self.data):
            raise self.fail(at, "after top-level value")

    def value(self, at: int) -> int:
        data = self.data
        if at >= len(data):
            raise self.fail(at, "")
        char = data[at]
        if char in b"{[":
            self.nest()
            try:
                return self.container(at)
            finally:
                self.depth -= 1
        if char == ord('"'):
            return self.string(at)
        if char == ord("-") or ord("0") <= char <= ord("9"):
            return self.number(at)
        for word in (b"true", b"false", b"null"):
            if char == word[0]:
                for offset in range(1, len(word)):
                    if at + offset >= len(data) or data[at + offset] != word[offset]:
                        raise self.fail(at + offset, f"in literal {word.decode()} (expecting "
                                                     f"{_quote_char(word[offset])})")
                return at + len(word)
        raise self.fail(at, "looking for beginning of value")

    def container(self, at: int) -> int:
        data = self.data
        if data[at] == ord("{"):
            at = self.space(at + 1)
            if at < len(data) and data[at] == ord("}"):
                return at + 1
            while True:
                if at >= len(data) or data[at] != ord('"'):
                    raise self.fail(at, "looking for beginning of object key string")
                at = self.space(self.string(at))
                if at >= len(data) or data[at] != ord(":"):
                    raise self.fail(at, "after object key")
                at = self.space(self.value(self.space(at + 1)))
                if at < len(data) and data[at] == ord(","):
                    at = self.space(at + 1)
                    continue
                if at < len(data) and data[at] == ord("}"):
                    return at + 1
                raise self.fail(at, "after object key:value pair")
        at = self.space(at + 1)
        if at < len(data) and data[at] == ord("]"):
            return at + 1
        while True:
            at = self.space(self.value(at))
            if at < len(data) and data[at] == ord(","):
                at = self.space(at + 1)
                continue
            if at < len(data) and data[at] == ord("]"):
                return at + 1
            raise self.fail(at, "after array element")

    def string(self, at: int) -> int:
        data = self.data
        at += 1
        while True:
            plain = _PLAIN.match(data, at)
            if plain:
                at = plain.end()
            if at >= len(data):
                raise self.fail(at, "")
            char = data[at]
            if char == ord('"'):
                return at + 1
            if char == ord("\\"):
                at += 1
                if at >= len(data):
                    raise self.fail(at, "")
                if data[at] == ord("u"):
                    for offset in range(1, 5):
                        if at + offset >= len(data) or data[at + offset] not in b"0123456789abcdefABCDEF":
                            raise self.fail(at + offset, "in \\u hexadecimal character escape")
                    at += 5
                    continue
                if data[at] not in b'"\\/bfnrt':
                    raise self.fail(at, "in string escape code")
                at += 1
                continue
            if char < 0x20:
                raise self.fail(at, "in string literal")
            at += 1

    def number(self, at: int) -> int:
        data = self.data

        def digit(position: int) -> bool:
            return position < len(data) and ord("0") <= data[position] <= ord("9")

        if data[at] == ord("-"):
            at += 1
            if not digit(at):
                raise self.fail(at, "in numeric literal")
        if data[at] == ord("0"):
            at += 1
        else:
            while digit(at):
                at += 1
        if at < len(data) and data[at] == ord("."):
            at += 1
            if not digit(at):
                raise self.fail(at, "after decimal point in numeric literal")
            while digit(at):
                at += 1
        if at < len(data) and data[at] in b"eE":
            at += 1
            if at < len(data) and data[at] in b"+-":
                at += 1
            if not digit(at):
                raise self.fail(at, "in exponent of numeric literal")
            while digit(at):
                at += 1
        return at


# -- the patch strategies of the Go type --------------------------------------------------------------------


@frozen
class _PatchMeta:
    strategies: tuple[str, ...]
    merge_key: str


def _lookup_struct(schema: GoType, key: str) -> tuple[GoType, _PatchMeta]:
    """forkedjson.LookupPatchMetadataForStruct: the field's type and its patch tags."""
    if schema.kind not in (STRUCT, TIME, RAW):
        raise PatchError(f"merging an object in json but data type is not struct, instead is: {schema.reflect_kind}")
    if schema.kind == RAW and schema.name in FREE_FORM_TYPES:
        # A type kept as raw JSON here (a CRD's JSONSchemaProps) that has no patch tags: lists are replaced.
        return schema, _PatchMeta(("",), "")
    found = schema.field(key)
    if found is None:
        found = next((f for f in schema.fields if f.name.lower() == key.lower()), None)
    if found is None:
        raise PatchError(f"unable to find api field in struct {schema.struct_name} for the json field {go_quote(key)}")
    return found.type, _PatchMeta(tuple(found.patch_strategy.split(",")), found.patch_merge_key)


def _lookup_slice(schema: GoType, key: str) -> tuple[GoType, _PatchMeta]:
    """LookupPatchMetadataForSlice: the element type of a list field, and the field's patch tags."""
    field_type, meta = _lookup_struct(schema, key)
    if field_type.kind == RAW:
        return field_type, meta
    if field_type.kind not in (SLICE, BYTES) or field_type.elem is None:
        raise PatchError(f"expected slice or array type, but got: {schema.reflect_kind}")
    if field_type.elem.kind in (SLICE, BYTES):
        raise PatchError("unexpected slice of slice")
    return field_type.elem, meta


def _strategy(meta: _PatchMeta) -> str:
    """extractRetainKeysPatchStrategy: the strategy besides retainKeys."""
    strategies = meta.strategies
    if len(strategies) == 1:
        return "" if strategies[0] == "retainKeys" else strategies[0]
    if len(strategies) == 2 and "retainKeys" in strategies:
        return strategies[1] if strategies[0] == "retainKeys" else strategies[0]
    raise PatchError(f"unexpected patch strategy: {go_format(list(strategies))}")


# -- values compared as Go compares interface{} values ------------------------------------------------------


def _key(value: Any) -> tuple[str, Any]:
    """A hashable stand-in for a decoded value: equal exactly when Go's == finds the interface values equal."""
    type_name = go_type_name(value)
    if isinstance(value, (dict, list)):
        return type_name, json.dumps(value, sort_keys=True)
    return type_name, value


def _bad_arg_type(expected: str, actual: Any) -> PatchError:
    actual_name = go_type_name(actual) if actual is not None else "%!s(<nil>)"
    return PatchError(f"expected a {expected}, but received a {actual_name}")


def _no_merge_key(item: dict[str, Any], merge_key: str) -> PatchError:
    return PatchError(f"map: {go_format(item)} does not contain declared merge key: {merge_key}")


def _bad_patch_type(directive: Any, item: dict[str, Any]) -> PatchError:
    return PatchError(f"unknown patch type: {go_format_s(directive)} in map: {go_format(item)}")


# -- merging ------------------------------------------------------------------------------------------------


def strategic_merge(original: dict[str, Any], patch: dict[str, Any] | None, schema: GoType) -> dict[str, Any]:
    """Apply a decoded strategic merge patch to original (both are modified, as kube modifies them)."""
    if patch is None:
        return original
    return _merge_map(original, patch, schema)


def _merge_map(original: dict[str, Any] | None, patch: dict[str, Any], schema: GoType) -> dict[str, Any]:
    if DIRECTIVE in patch:
        return _map_directive(patch[DIRECTIVE], patch)
    if original is None:
        original = {}
    _apply_retain_keys(original, patch)
    _merge_ordered_lists(original, patch, schema)
    for key in list(patch):
        value = patch[key]
        delete_list = False
        if key.startswith(DELETE_FROM_PRIMITIVE_LIST):
            key = _extract_key(key, DELETE_FROM_PRIMITIVE_LIST)
            delete_list = True
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key, _MISSING)
        if current is _MISSING or go_type_name(current) != go_type_name(value):
            if not delete_list:
                _discard_nulls(value)
                kept, keep = _remove_directives(value)
                if keep:
                    original[key] = kept
                else:
                    original.pop(key, None)
            continue
        if isinstance(current, dict):
            sub, meta = _lookup_struct(schema, key)
            original[key] = value if _strategy(meta) == REPLACE else _merge_map(current, value, sub)
        elif isinstance(current, list):
            sub, meta = _lookup_slice(schema, key)
            original[key] = _merge_slice_field(current, value, sub, _strategy(meta), meta.merge_key, delete_list)
        else:
            original[key] = value
    return original


def _map_directive(directive: Any, patch: dict[str, Any]) -> dict[str, Any]:
    """`$patch` on an object: replace it with the patch, or delete it; anything else is an error."""
    if directive == REPLACE and isinstance(directive, str):
        del patch[DIRECTIVE]
        return patch
    if directive == DELETE and isinstance(directive, str):
        return {}
    raise _bad_patch_type(directive, patch)


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """`$retainKeys`: clear the keys of original not listed; every key the patch sets must be listed."""
    if RETAIN_KEYS not in patch:
        return
    listed = patch.pop(RETAIN_KEYS)
    if not isinstance(listed, list):
        raise PatchError(BAD_PATCH_FORMAT_FOR_RETAIN_KEYS)
    keep = {_key(item) for item in listed}
    for key, value in patch.items():
        if value is None or key.startswith((DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER)):
            continue
        if _key(key) not in keep:
            raise PatchError(BAD_PATCH_FORMAT_FOR_RETAIN_KEYS)
    for key in [k for k in original if _key(k) not in keep]:
        del original[key]


def _extract_key(key: str, prefix: str) -> str:
    """The field a `$deleteFromPrimitiveList/<field>` or `$setElementOrder/<field>` directive names."""
    head, slash, field = key.partition("/")
    if not slash or head != prefix:
        raise PatchError(BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST if prefix == DELETE_FROM_PRIMITIVE_LIST
                         else BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER)
    return field


def _discard_nulls(value: Any) -> None:
    """Drop null members of objects, at any depth (a new value never holds nulls)."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for member in value.values():
            _discard_nulls(member)
    elif isinstance(value, list):
        for item in value:
            _discard_nulls(item)


def _remove_directives(value: Any) -> tuple[Any, bool]:
    """A value with every object carrying `$patch` removed; (None, False) when value itself is one."""
    if isinstance(value, dict):
        if DIRECTIVE in value:
            return None, False
        for key in list(value):
            kept, keep = _remove_directives(value[key])
            if keep:
                value[key] = kept
            else:
                del value[key]
        return value, True
    if isinstance(value, list):
        return [kept for kept, keep in map(_remove_directives, value) if keep], True
    return value, True


def _merge_ordered_lists(original: dict[str, Any], patch: dict[str, Any], schema: GoType) -> None:
    """`$setElementOrder/<field>`: merge the field's list, then order it as the directive says."""
    for directive_key in [k for k in patch if k.startswith(SET_ELEMENT_ORDER)]:
        order = patch.pop(directive_key)
        if not isinstance(order, list):
            raise _bad_arg_type(_SLICE_TYPE, order)
        key = _extract_key(directive_key, SET_ELEMENT_ORDER)
        original_list = original.get(key, _MISSING)
        patch_list = patch.get(key, _MISSING)
        if original_list is not _MISSING and not isinstance(original_list, list):
            raise _bad_arg_type(_SLICE_TYPE, original_list)
        if patch_list is not _MISSING and not isinstance(patch_list, list):
            raise _bad_arg_type(_SLICE_TYPE, patch_list)
        sub, meta = _lookup_slice(schema, key)
        strategy = _strategy(meta)
        _check_order(patch_list if patch_list is not _MISSING else [], order, meta.merge_key)
        if original_list is not _MISSING and patch_list is _MISSING:
            merged = original_list
        elif original_list is _MISSING and patch_list is not _MISSING:
            merged = _remove_directives(patch_list)[0]
        elif original_list is not _MISSING:
            merged = _merge_slice_field(original_list, patch_list, sub, strategy, meta.merge_key, False)
        else:
            continue
        if meta.merge_key:
            in_order, server_only = _partition_maps(merged, order, meta.merge_key)
        else:
            in_order, server_only = _partition_scalars(merged, order)
        base = original_list if original_list is not _MISSING else []
        kind = _element_kind(base, patch_list if patch_list is not _MISSING else [])
        original[key] = _normalize_order(in_order, server_only, order, base, meta.merge_key, kind)
        patch.pop(key, None)


def _check_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """validatePatchWithSetOrderList: the patch's items appear in the directive's list, in the same order."""
    if not order or not patch_list:
        return
    items = _split_deletes(patch_list)[0] if merge_key else patch_list
    at_patch = at_order = 0
    while at_patch < len(items) and at_order < len(order):
        if isinstance(items[at_patch], dict) and DIRECTIVE in items[at_patch]:
            at_patch += 1
            continue
        if _merge_key_equal(items[at_patch], order[at_order], merge_key):
            at_patch += 1
        at_order += 1
    if at_patch < len(items) and at_order >= len(order):
        raise PatchError(f"The order in patch list:\n{go_format(patch_list)}\n doesn't match {SET_ELEMENT_ORDER} "
                         f"list:\n{go_format(order)}\n")


def _merge_key_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return _key(left) == _key(right)
    if not isinstance(left, dict):
        raise _bad_arg_type(_MAP_TYPE, left)
    if not isinstance(right, dict):
        raise _bad_arg_type(_MAP_TYPE, right)
    if merge_key not in left:
        raise _no_merge_key(left, merge_key)
    if merge_key not in right:
        raise _no_merge_key(right, merge_key)
    return _key(left[merge_key]) == _key(right[merge_key])


def _merge_slice_field(original: list[Any], patch: Any, schema: GoType, strategy: str, merge_key: str,
                       delete_list: bool) -> list[Any]:
    """mergeSliceHandler: merge when the field's strategy says so (or for a deletion list), else replace."""
    if not isinstance(patch, list):
        raise _bad_arg_type(_SLICE_TYPE, patch)
    if strategy == MERGE or delete_list:
        return _merge_slice(original, patch, schema, merge_key, delete_list)
    return patch


def _element_kind(*lists: list[Any]) -> str:
    """sliceElementType: the Go type every item of the lists shares (lists of lists are refused)."""
    previous: str | None = None
    for items in lists:
        for item in items:
            current = go_type_name(item)
            if previous is None:
                if item is None:
                    raise PatchError(f"list element types are not identical: {go_format(list(lists))}")
                previous = current
                if current == _SLICE_TYPE:
                    raise PatchError("lists of lists are not supported", 422)
            elif previous != current:
                raise PatchError(f"list element types are not identical: {go_format(list(lists))}")
    if previous is None:
        raise PatchError("no elements in any of the given slices")
    return previous


def _merge_slice(original: list[Any], patch: list[Any], schema: GoType, merge_key: str,
                 delete_list: bool) -> list[Any]:
    if not original and not patch:
        return original
    kind = _element_kind(original, patch)
    if kind != _MAP_TYPE:
        if delete_list:
            removed = {_key(item) for item in patch}
            return [item for item in original if _key(item) not in removed]
        merged = _unique(original + patch)
    else:
        if not merge_key:
            raise PatchError(f"cannot merge lists without merge key for {schema.reflect_kind}")
        original, patch = _apply_list_directives(original, patch, merge_key)
        merged = _merge_by_key(original, patch, merge_key, schema)
    if merge_key:
        in_patch, server_only = _partition_maps(merged, patch, merge_key)
    else:
        in_patch, server_only = _partition_scalars(merged, patch)
    return _normalize_order(in_patch, server_only, patch, original, merge_key, kind)


def _unique(items: list[Any]) -> list[Any]:
    """Drop repeated scalars (their final order is decided by the patch and the original lists)."""
    seen: set[tuple[str, Any]] = set()
    out = []
    for item in items:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _apply_list_directives(original: list[Any], patch: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """mergeSliceWithSpecialElements: `$patch: delete` items remove by merge key; `$patch: replace` replaces."""
    plain = []
    replace = False
    for item in patch:
        if DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[DIRECTIVE]
        if directive == DELETE and isinstance(directive, str):
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            doomed = _key(item[merge_key])
            original = [kept for kept in original if not (merge_key in kept and _key(kept[merge_key]) == doomed)]
        elif directive == REPLACE and isinstance(directive, str):
            replace = True
        elif directive == MERGE and isinstance(directive, str):
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise _bad_patch_type(directive, item)
    if replace:
        return plain, []
    return original, plain


def _merge_by_key(original: list[Any], patch: list[Any], merge_key: str, schema: GoType) -> list[Any]:
    """mergeSliceWithoutSpecialElements: each patch item merges into the item with its key, or is appended."""
    merged = list(original)
    where: dict[tuple[str, Any], int] = {}
    for index, item in enumerate(merged):
        if merge_key in item:
            where.setdefault(_key(item[merge_key]), index)
    for item in patch:
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        key = _key(item[merge_key])
        position = where.get(key)
        if position is None:
            where[key] = len(merged)
            merged.append(item)
        else:
            merged[position] = _merge_map(merged[position], item, schema)
    return merged


def _partition_scalars(items: list[Any], by: list[Any]) -> tuple[list[Any], list[Any]]:
    present = {_key(item) for item in by}
    return [i for i in items if _key(i) in present], [i for i in items if _key(i) not in present]


def _partition_maps(items: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """partitionMapsByPresentInList: the items whose merge key appears in `by`, and the others."""
    first_non_map = next((index for index, item in enumerate(by) if not isinstance(item, dict)), None)
    where: dict[tuple[str, Any], int] = {}
    for index, item in enumerate(by):
        if isinstance(item, dict) and merge_key in item:
            where.setdefault(_key(item[merge_key]), index)
    present: list[Any] = []
    others: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad_arg_type(_MAP_TYPE, item)
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        position = where.get(_key(item[merge_key]))
        if first_non_map is not None and (position is None or first_non_map < position):
            raise PatchError(f"value for key {first_non_map} is not a map")
        (present if position is not None else others).append(item)
    return present, others


def _split_deletes(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """extractToDeleteItems: the items to keep, and those marked `$patch: delete`."""
    kept: list[Any] = []
    deleted: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad_arg_type(_MAP_TYPE, item)
        (deleted if item.get(DIRECTIVE) == DELETE else kept).append(item)
    return kept, deleted


def _position_of(merge_key: str, kind: str) -> Callable[[Any], tuple[str, Any]]:
    """What an item is found by in an order list: its merge key's value for objects, itself otherwise."""
    if kind == _MAP_TYPE:
        return lambda item: _key(item.get(merge_key) if isinstance(item, dict) else None)
    return _key


def _positions(order: Iterable[Any], find: Callable[[Any], tuple[str, Any]]) -> dict[tuple[str, Any], int]:
    where: dict[tuple[str, Any], int] = {}
    for index, item in enumerate(order):
        where.setdefault(find(item), index)
    return where


def _normalize_order(in_patch: list[Any], server_only: list[Any], patch_order: list[Any], server_order: list[Any],
                     merge_key: str, kind: str) -> list[Any]:
    """normalizeElementOrder: each part sorted by its own order list, then interleaved by the server's order."""
    in_patch = _sort_by(in_patch, patch_order, merge_key, kind)
    server_only = _sort_by(server_only, server_order, merge_key, kind)
    find = _position_of(merge_key, kind)
    where = _positions(server_order, find)
    out: list[Any] = []
    left, right = 0, 0
    while left < len(server_only) or right < len(in_patch):
        if left >= len(server_only):
            out.append(in_patch[right])
            right += 1
        elif right >= len(in_patch):
            out.append(server_only[left])
            left += 1
        else:
            lpos, rpos = where.get(find(server_only[left])), where.get(find(in_patch[right]))
            if lpos is not None and rpos is not None and lpos < rpos:
                out.append(server_only[left])
                left += 1
            else:
                out.append(in_patch[right])
                right += 1
    return out


def _sort_by(items: list[Any], order: list[Any], merge_key: str, kind: str) -> list[Any]:
    """normalizeSliceOrder: items in the order of `order` (stable), `$patch: delete` items last."""
    deleted: list[Any] = []
    if kind == _MAP_TYPE:
        for item in list(items) + list(order):
            if not isinstance(item, dict):
                raise _bad_arg_type(_MAP_TYPE, item)
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
        items, deleted = _split_deletes(items)
    find = _position_of(merge_key, kind)
    where = _positions(order, find)
    positions = [where.get(find(item)) for item in items]
    if all(p is not None for p in positions):
        ranked = sorted(range(len(items)), key=lambda i: positions[i])  # type: ignore[arg-type, return-value]
        return [items[i] for i in ranked] + deleted
    # An item missing from the order list: Go's insertion sort moves it to the front (its less() says so).
    result = list(items)
    for i in range(1, len(result)):
        j = i
        while j > 0:
            pj, pk = where.get(find(result[j])), where.get(find(result[j - 1]))
            if pj is not None and pk is not None and not pj < pk:
                break
            result[j], result[j - 1] = result[j - 1], result[j]
            j -= 1
    return result + deleted
