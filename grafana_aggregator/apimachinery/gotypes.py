# -*- test-case-name: tests.test_parity -*-
"""The Go types behind a built-in kind, and what Go's decoders say about JSON that does not fit them.

kube-apiserver decodes a built-in kind's request body into its Go struct (sigs.k8s.io/json, a fork of
encoding/json): a value of the wrong JSON type is refused there, before any validation, with
`json: cannot unmarshal <what> into Go struct field <Struct>.<path> of type <type>`.  A strategic
merge patch is applied to an unstructured map, which runtime.DefaultUnstructuredConverter turns into
the struct, with its own messages (`cannot convert string to int32`).  The struct tags also carry
the strategic-merge-patch strategies (`patchStrategy`, `patchMergeKey`) and `omitempty`.

A `GoType` describes such a struct (and its fields' types) with exactly the names Go's reflection
prints, so the messages here are kube's.  A kind without one (a custom resource) has none of this:
its bodies must name their kind, and strategic merge patch is not offered.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

#: The kinds of GoType: the JSON shapes Go decodes differently.
STRUCT, MAP, SLICE, STRING, BOOL, INT, FLOAT, BYTES, TIME, RAW = (
    "struct", "map", "slice", "string", "bool", "int", "float", "bytes", "time", "raw")


@frozen
class GoField:
    """A struct field: its JSON name, its type and its tags."""

    name: str
    type: GoType
    #: `json:",omitempty"`: an empty value is left out when the struct is encoded.
    omitempty: bool = True
    #: `patchStrategy` (`merge`, `replace`, `retainKeys` or two of them joined by a comma).
    patch_strategy: str = ""
    #: `patchMergeKey`: the field a list of objects is merged by.
    patch_merge_key: str = ""


@frozen
class GoType:
    """A Go type as the JSON decoders see it.

    name is what reflect.Type.String() prints (`v1.APIServiceSpec`, `int32`, `map[string]string`,
    `[]v1.APIServiceCondition`); fields are a struct's fields in declaration order; elem is the
    element type of a map or slice.
    """

    kind: str
    name: str
    fields: tuple[GoField, ...] = ()
    elem: GoType | None = None
    #: The size of an integer type (int32 refuses numbers past 2^31-1).
    bits: int = 64
    _by_name: Mapping[str, GoField] = field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    def field(self, name: str) -> GoField | None:
        """The struct field a JSON key decodes into (names match exactly: kube decodes case-sensitively)."""
        return self._by_name.get(name)

    @property
    def struct_name(self) -> str:
        """reflect.Type.Name(): the bare name of a named type (`APIServiceSpec`)."""
        return self.name.rpartition(".")[2] if not self.name.startswith(("[]", "map[")) else ""

    @property
    def reflect_kind(self) -> str:
        """reflect.Kind.String() of the type."""
        if self.kind in (STRUCT, TIME, RAW):
            return "struct"
        if self.kind == BYTES:
            return "slice"
        if self.kind == INT:
            return f"uint{self.bits}" if self.name.startswith("uint") else f"int{self.bits}"
        if self.kind == FLOAT:
            return "float64"
        return self.kind


def struct(name: str, *fields: GoField) -> GoType:
    """A named struct type."""
    return GoType(STRUCT, name, fields)


def slice_of(elem: GoType) -> GoType:
    """`[]T`."""
    return GoType(SLICE, f"[]{elem.name}", elem=elem)


def map_of(elem: GoType) -> GoType:
    """`map[string]T`."""
    return GoType(MAP, f"map[string]{elem.name}", elem=elem)


STRING_TYPE = GoType(STRING, "string")
BOOL_TYPE = GoType(BOOL, "bool")
INT32_TYPE = GoType(INT, "int32", bits=32)
INT64_TYPE = GoType(INT, "int64", bits=64)
BYTES_TYPE = GoType(BYTES, "[]uint8", elem=GoType(INT, "uint8", bits=8))
#: metav1.Time: decoded by its own UnmarshalJSON (an RFC 3339 string, or null).
TIME_TYPE = GoType(TIME, "v1.Time")
#: metav1.FieldsV1: any JSON, kept raw.
FIELDS_V1_TYPE = GoType(RAW, "v1.FieldsV1")
UID_TYPE = GoType(STRING, "types.UID")


def named_string(name: str) -> GoType:
    """A named string type (`type ConditionStatus string`)."""
    return GoType(STRING, name)


def type_meta_fields() -> tuple[GoField, ...]:
    """The inlined metav1.TypeMeta: apiVersion and kind."""
    return (GoField("apiVersion", STRING_TYPE), GoField("kind", STRING_TYPE))


OWNER_REFERENCE_TYPE = struct(
    "v1.OwnerReference",
    GoField("apiVersion", STRING_TYPE, omitempty=False), GoField("kind", STRING_TYPE, omitempty=False),
    GoField("name", STRING_TYPE, omitempty=False), GoField("uid", UID_TYPE, omitempty=False),
    GoField("controller", BOOL_TYPE), GoField("blockOwnerDeletion", BOOL_TYPE),
)
MANAGED_FIELDS_ENTRY_TYPE = struct(
    "v1.ManagedFieldsEntry",
    GoField("manager", STRING_TYPE), GoField("operation", named_string("v1.ManagedFieldsOperationType")),
    GoField("apiVersion", STRING_TYPE), GoField("time", TIME_TYPE), GoField("fieldsType", STRING_TYPE),
    GoField("fieldsV1", FIELDS_V1_TYPE), GoField("subresource", STRING_TYPE),
)
#: metav1.ObjectMeta, with its patch strategies (finalizers merge; ownerReferences merge by uid).
OBJECT_META_TYPE = struct(
    "v1.ObjectMeta",
    GoField("name", STRING_TYPE), GoField("generateName", STRING_TYPE), GoField("namespace", STRING_TYPE),
    GoField("selfLink", STRING_TYPE), GoField("uid", UID_TYPE), GoField("resourceVersion", STRING_TYPE),
    GoField("generation", INT64_TYPE), GoField("creationTimestamp", TIME_TYPE),
    GoField("deletionTimestamp", TIME_TYPE), GoField("deletionGracePeriodSeconds", INT64_TYPE),
    GoField("labels", map_of(STRING_TYPE)), GoField("annotations", map_of(STRING_TYPE)),
    GoField("ownerReferences", slice_of(OWNER_REFERENCE_TYPE), patch_strategy="merge", patch_merge_key="uid"),
    GoField("finalizers", slice_of(STRING_TYPE), patch_strategy="merge"),
    GoField("managedFields", slice_of(MANAGED_FIELDS_ENTRY_TYPE)),
)
#: The ObjectMeta collections Go leaves out of an object when they are empty (`omitempty`).
OMITTED_WHEN_EMPTY = ("labels", "annotations", "ownerReferences", "finalizers")


def drop_empty_metadata(obj: dict[str, Any]) -> None:
    """Leave out empty or null labels, annotations, ownerReferences and finalizers, as Go's encoder does."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return
    for key in OMITTED_WHEN_EMPTY:
        if key in meta and meta[key] in (None, {}, []):
            del meta[key]


# -- Go's formatting ---------------------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """strconv.Quote: a double-quoted Go string literal."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif char in "\a\b\f\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif char.isprintable() or char == " ":
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest decimal digits that round-trip abs(value), and where the decimal point goes in them."""
    sign, digits, exponent = decimal.Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(str(d) for d in digits)
    point = len(text) + exponent
    stripped = text.lstrip("0")
    point -= len(text) - len(stripped)
    return stripped.rstrip("0") or "0", point


def go_float(value: float) -> str:
    """A float64 as fmt's %v prints it: strconv's 'g' with the shortest digits (an exponent from 1e+06 and
    below 1e-04)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    sign = "-" if math.copysign(1, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits, point = _shortest_digits(value)
    exp = point - 1
    if exp < -4 or exp >= 6:
        tail = digits[1:]
        return f"{sign}{digits[0]}{'.' + tail if tail else ''}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return sign + _fixed(digits, point)


def go_float_fixed(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64): the shortest digits, never an exponent."""
    if value == 0:
        return "0"
    digits, point = _shortest_digits(value)
    return ("-" if value < 0 else "") + _fixed(digits, point)


def _fixed(digits: str, point: int) -> str:
    """Digits with the decimal point placed (no exponent)."""
    if point <= 0:
        return f"0.{'0' * -point}{digits}"
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return f"{digits[:point]}.{digits[point:]}"


def go_format(value: Any) -> str:
    """A decoded JSON value as fmt's %v prints it (maps with sorted keys, slices space-separated)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{go_format(value[key])}" for key in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(item) for item in value) + "]"
    return str(value)


def go_format_s(value: Any) -> str:
    """A decoded JSON value as fmt's %s prints it (a non-string is `%!s(int64=5)`)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "%!s(<nil>)"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{go_format_s(value[key])}" for key in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_format_s(item) for item in value) + "]"
    return f"%!s({go_type_name(value)}={go_format(value)})"


def go_type_name(value: Any) -> str:
    """reflect.TypeOf(value).String() for a value decoded into interface{} (ints kept as int64)."""
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "<nil>"


def _go_kind(value: Any) -> str:
    """reflect.Kind.String() of a value decoded into interface{}."""
    return {"map[string]interface {}": "map", "[]interface {}": "slice"}.get(go_type_name(value),
                                                                             go_type_name(value))


def go_json(value: Any) -> str:
    """json.Marshal of a decoded value: compact, map keys sorted, `<`, `>` and `&` escaped."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(key)}:{go_json(value[key])}" for key in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    if isinstance(value, float) and math.isfinite(value):
        return _json_float(value)
    text = json.dumps(value, ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_float(value: float) -> str:
    """encoding/json's float64: fixed notation from 1e-6 up to 1e21, else an exponent without padding."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits, point = _shortest_digits(value)
    if 1e-6 <= abs(value) < 1e21:
        return sign + _fixed(digits, point)
    exp = point - 1
    tail = digits[1:]
    return f"{sign}{digits[0]}{'.' + tail if tail else ''}e{'-' if exp < 0 else '+'}{abs(exp)}"


def _number_literal(value: int | float) -> str:
    """The JSON text of a number, as Go's decoder quotes it back (`number 44.5`)."""
    return str(value) if isinstance(value, int) else repr(value)


# -- encoding/json: what a request body's decode says ------------------------------------------------------


def decode_error(value: Any, go_type: GoType) -> str | None:
    """The error sigs.k8s.io/json reports decoding a JSON value into go_type, or None when it fits.

    Go keeps the first type error and decodes on; an error from a type's own UnmarshalJSON (metav1.Time)
    stops the decode and is reported instead.
    """
    decoder = _Decoder()
    aborted = decoder.value(value, go_type, None, ())
    return aborted or decoder.saved


class _Decoder:
    """One decode: the first type error saved, with the struct and field path it happened in."""

    def __init__(self) -> None:
        self.saved: str | None = None

    def save(self, message: str) -> None:
        if self.saved is None:
            self.saved = message

    @staticmethod
    def type_error(what: str, type_name: str, struct_name: str | None, stack: tuple[str, ...]) -> str:
        if struct_name is not None or stack:
            return (f"json: cannot unmarshal {what} into Go struct field {struct_name or ''}.{'.'.join(stack)} "
                    f"of type {type_name}")
        return f"json: cannot unmarshal {what} into Go value of type {type_name}"

    def value(self, value: Any, go_type: GoType, struct_name: str | None, stack: tuple[str, ...]) -> str | None:
        """Decode one value; returns an error that stops the whole decode, saves one that does not."""
        kind = go_type.kind
        if kind == RAW or value is None:
            return None
        if kind == TIME:
            if isinstance(value, str):
                return parse_rfc3339_error(value)
            # metav1.Time.UnmarshalJSON decodes into a string first; the outer decoder adds its context.
            return self.type_error(json_kind(value), "string", struct_name, stack)
        if isinstance(value, dict):
            if kind == STRUCT:
                for key, member in value.items():
                    found = go_type.field(key)
                    if found is None:
                        continue
                    aborted = self.value(member, found.type, go_type.struct_name, stack + (key,))
                    if aborted:
                        return aborted
            elif kind == MAP:
                assert go_type.elem is not None
                for member in value.values():
                    aborted = self.value(member, go_type.elem, struct_name, stack)
                    if aborted:
                        return aborted
            else:
                self.save(self.type_error("object", go_type.name, struct_name, stack))
            return None
        if isinstance(value, list):
            if kind in (SLICE, BYTES):
                assert go_type.elem is not None
                for item in value:
                    aborted = self.value(item, go_type.elem, struct_name, stack)
                    if aborted:
                        return aborted
            else:
                self.save(self.type_error("array", go_type.name, struct_name, stack))
            return None
        if isinstance(value, bool):
            if kind != BOOL:
                self.save(self.type_error("bool", go_type.name, struct_name, stack))
            return None
        if isinstance(value, str):
            if kind == BYTES:
                problem = base64_error(value)
                if problem:
                    self.save(problem)
            elif kind != STRING:
                self.save(self.type_error("string", go_type.name, struct_name, stack))
            return None
        if isinstance(value, (int, float)):
            if kind == INT:
                if not isinstance(value, int) or not _fits(value, go_type):
                    self.save(self.type_error(f"number {_number_literal(value)}", go_type.name, struct_name, stack))
            elif kind != FLOAT:
                self.save(self.type_error("number", go_type.name, struct_name, stack))
        return None


def _fits(value: int, go_type: GoType) -> bool:
    span: int = 2 ** go_type.bits
    if go_type.name.startswith("uint"):
        return 0 <= value < span
    return -(span // 2) <= value < span // 2


def json_kind(value: Any) -> str:
    """How Go's encoding/json names a JSON value in an UnmarshalTypeError (the one place this is worked out)."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "number"


# -- runtime.DefaultUnstructuredConverter: what a strategic merge patch's result says ----------------------


def from_unstructured_error(value: Any, go_type: GoType) -> str | None:
    """The error runtime.DefaultUnstructuredConverter.FromUnstructured reports turning a map into go_type."""
    if value is None:
        return None
    kind = go_type.kind
    source = _go_kind(value)
    if kind in (STRING, BOOL, INT):
        return _simple_conversion_error(value, source, go_type)
    if kind == TIME:
        if isinstance(value, str):
            return parse_rfc3339_error(value)
        return f"json: cannot unmarshal {json_kind(value)} into Go value of type string"
    if kind == RAW:
        return None
    if kind == MAP:
        if not isinstance(value, dict):
            return f"cannot restore map from {source}"
        assert go_type.elem is not None
        for member in value.values():
            problem = from_unstructured_error(member, go_type.elem)
            if problem:
                return problem
        return None
    if kind == BYTES:
        if isinstance(value, str):
            problem = base64_error(value) if value else None
            return f"error decoding from json: {problem}" if problem else None
        if not isinstance(value, list):
            return f"cannot restore slice from {source}"
    elif kind == SLICE and not isinstance(value, list):
        return f"cannot restore slice from {source}"
    if kind in (SLICE, BYTES):
        assert go_type.elem is not None
        for item in value:
            problem = from_unstructured_error(item, go_type.elem)
            if problem:
                return problem
        return None
    if kind == STRUCT:
        if not isinstance(value, dict):
            return f"cannot restore struct from: {source}"
        for member in go_type.fields:
            if member.name in value:
                problem = from_unstructured_error(value[member.name], member.type)
                if problem:
                    return problem
        return None
    return None


def _simple_conversion_error(value: Any, source: str, go_type: GoType) -> str | None:
    """reflect's assignability and convertibility rules between JSON scalars and Go's simple types."""
    target = go_type.kind
    if source == "string":
        return None if target == STRING else f"unrecognized type: {go_type.reflect_kind}"
    if source == "bool":
        return None if target == BOOL else f"unrecognized type: {go_type.reflect_kind}"
    if source == "int64":
        if target == INT:
            return None  # reflect converts, wrapping past the type's range
        if target == STRING:
            return f"cannot convert int64 to {go_type.name}"
        return f"unrecognized type: {go_type.reflect_kind}"
    if source == "float64":
        if target == INT:
            return None if float(value).is_integer() else f"cannot convert float64 to {go_type.name}"
        return f"unrecognized type: {go_type.reflect_kind}"
    return f"unrecognized type: {go_type.reflect_kind}"


def convert_from_unstructured(value: Any, go_type: GoType) -> Any:
    """What the typed object holds after the conversion: integers wrapped to their type's size, as reflect does."""
    if isinstance(value, dict):
        if go_type.kind == STRUCT:
            out = {}
            for key, member in value.items():
                found = go_type.field(key)
                out[key] = convert_from_unstructured(member, found.type) if found else member
            return out
        if go_type.kind == MAP and go_type.elem is not None:
            return {key: convert_from_unstructured(member, go_type.elem) for key, member in value.items()}
        return value
    if isinstance(value, list) and go_type.kind in (SLICE, BYTES) and go_type.elem is not None:
        return [convert_from_unstructured(item, go_type.elem) for item in value]
    if go_type.kind == INT and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = int(value)
        span = 2 ** go_type.bits
        number %= span
        if not go_type.name.startswith("uint") and number >= span // 2:
            number -= span
        return number
    return value


# -- encoding/base64 and time.Parse, for their error messages -------------------------------------------------

_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def base64_error(text: str) -> str | None:
    """The error base64.StdEncoding.Decode reports for text (`illegal base64 data at input byte N`), or None."""
    src = text.encode("utf-8")
    position = 0
    while position < len(src):
        position, error = _decode_quantum(src, position)
        if error is not None:
            return f"illegal base64 data at input byte {error}"
        if position < 0:
            return None
    return None


def _decode_quantum(src: bytes, si: int) -> tuple[int, int | None]:
    """One quantum of encoding/base64's decodeQuantum: (the next position, or -1 when done; the error offset)."""
    j = 0
    while j < 4:
        if si == len(src):
            if j == 0:
                return -1, None
            return si, si - j
        char = src[si]
        si += 1
        if char in _BASE64:
            j += 1
            continue
        if char in (0x0A, 0x0D):
            continue
        if char != 0x3D:  # '='
            return si, si - 1
        if j in (0, 1):
            return si, si - 1
        if j == 2:
            while si < len(src) and src[si] in (0x0A, 0x0D):
                si += 1
            if si == len(src):
                return si, len(src)
            if src[si] != 0x3D:
                return si, si - 1
            si += 1
        while si < len(src) and src[si] in (0x0A, 0x0D):
            si += 1
        if si < len(src):
            return si, si
        return -1, None
    return si, None


RFC3339_LAYOUT = "2006-01-02T15:04:05Z07:00"
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: The layout of RFC 3339 split into Go's chunks: (literal prefix, element).
_LAYOUT_CHUNKS = (("", "2006"), ("-", "01"), ("-", "02"), ("T", "15"), (":", "04"), (":", "05"), ("", "Z07:00"))


class _ParseFailed(Exception):
    """time.Parse failed; the message is Go's ParseError text."""


def _time_quote(text: str) -> str:
    """The time package's own quote(): `\\xNN` for each byte of a non-ASCII or control character."""
    out = ['"']
    for char in text:
        if ord(char) >= 0x80 or char < " ":
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        else:
            out.append("\\" + char if char in '"\\' else char)
    out.append('"')
    return "".join(out)


def _cannot_parse(value: str, rest: str, element: str) -> _ParseFailed:
    return _ParseFailed(f"parsing time {_time_quote(value)} as {_time_quote(RFC3339_LAYOUT)}: cannot parse "
                        f"{_time_quote(rest)} as {_time_quote(element)}")


def _getnum(text: str, fixed: bool) -> tuple[int, str] | None:
    """time's getnum: one or two leading digits (exactly two when fixed)."""
    if not text[:1].isdigit() or not text[:1].isascii():
        return None
    if not text[1:2].isdigit() or not text[1:2].isascii():
        return None if fixed else (int(text[0]), text[1:])
    return int(text[:2]), text[2:]


def parse_rfc3339_error(value: str) -> str | None:
    """The error time.Parse(time.RFC3339, value) reports (metav1.Time's decode), or None when it parses."""
    try:
        _parse_rfc3339(value)
    except _ParseFailed as error:
        return str(error)
    return None


def _parse_rfc3339(value: str) -> None:
    rest = value
    year = month = day = 0
    for prefix, element in _LAYOUT_CHUNKS:
        if not rest.startswith(prefix):
            raise _cannot_parse(value, rest, prefix)
        rest = rest[len(prefix):]
        hold = rest
        range_error = ""
        number: tuple[int, str] | None
        if element == "2006":
            if len(rest) < 4 or not rest[:1].isdigit() or not rest[:4].isascii() or not rest[:4].isdigit():
                raise _cannot_parse(value, hold, element)
            year, rest = int(rest[:4]), rest[4:]
            continue
        if element == "Z07:00":
            if rest.startswith("Z"):
                rest = rest[1:]
            elif len(rest) < 6 or rest[3] != ":" or rest[0] not in "+-" or _getnum(rest[1:3], True) is None \
                    or _getnum(rest[4:6], True) is None:
                raise _cannot_parse(value, hold, element)
            else:
                hours, minutes = int(rest[1:3]), int(rest[4:6])
                rest = rest[6:]
                if hours > 24:
                    range_error = "time zone offset hour"
                elif minutes > 60:
                    range_error = "time zone offset minute"
            if range_error:
                raise _ParseFailed(f"parsing time {_time_quote(value)}: {range_error} out of range")
            continue
        number = _getnum(rest, element != "15")
        if number is None:
            raise _cannot_parse(value, hold, element)
        amount, rest = number
        if element == "01":
            month = amount
            range_error = "month" if not 1 <= amount <= 12 else ""
        elif element == "02":
            day = amount
        elif element == "15":
            range_error = "hour" if amount >= 24 else ""
        elif element == "04":
            range_error = "minute" if amount >= 60 else ""
        else:
            range_error = "second" if amount >= 60 else ""
            fraction = re.match(r"[.,][0-9]+", rest)
            if not range_error and fraction:
                rest = rest[fraction.end():]
        if range_error:
            raise _ParseFailed(f"parsing time {_time_quote(value)}: {range_error} out of range")
    if rest:
        raise _ParseFailed(f"parsing time {_time_quote(value)}: extra text: {_time_quote(rest)}")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if day < 1 or day > (29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]):
        raise _ParseFailed(f"parsing time {_time_quote(value)}: day out of range")
