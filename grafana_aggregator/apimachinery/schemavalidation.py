# -*- test-case-name: tests.test_schemavalidation -*-
"""Validation of a custom resource against its CRD's structural `openAPIV3Schema`, with kube's paths and messages.

Mirrors what kube-apiserver runs for a custom resource: k8s.io/kube-openapi's validate package as wrapped by
apiextensions-apiserver (pkg/apiserver/validation: the `<path> in body ...` messages turned into field errors),
then the embedded-resource checks (pkg/apiserver/schema/objectmeta) and the `x-kubernetes-list-type` checks
(pkg/apiserver/schema/listtype). Pure functions on decoded JSON; pruning and defaulting happen elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from email.utils import parseaddr
from functools import lru_cache
from typing import Any, cast

from .fielderrors import FieldError, required
from .gotypes import go_float, go_float_fixed, go_format, go_json, go_quote
from .validation import (
    is_dns1035_label,
    name_is_dns_subdomain,
    validate_object_meta,
    validate_path_segment_name,
)

#: The value kube prints for a failure that carries no field path (a nil field.Path).
NIL_PATH = "<nil>"

_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_FLOAT32_MAX = 3.4028234663852886e38
_JSON_INT_LIMIT = float(1 << 53)
_UNSET: Any = object()

# kube-openapi's error codes, as far as apiextensions' conversion tells them apart.
_TYPE, _REQUIRED, _TOO_LONG, _ENUM, _MAX_ITEMS, _TOO_MANY_PROPS, _OTHER, _PLAIN = range(8)


class _Error:
    """A kube-openapi error: a Validation (code, name, value) or a plain error (`_PLAIN`, no field)."""

    __slots__ = ("code", "name", "message", "value", "limit", "values")

    def __init__(self, code: int, name: str, message: str, value: Any = _UNSET, limit: int = -1,
                 values: tuple[Any, ...] = ()) -> None:
        self.code, self.name, self.message, self.value = code, name, message, value
        self.limit, self.values = limit, values


class _Result:
    """validate.Result: errors de-duplicated by message, and the match count that picks anyOf/oneOf's best failure."""

    __slots__ = ("errors", "_seen", "matches")

    def __init__(self, *errors: _Error) -> None:
        self.errors: list[_Error] = []
        self._seen: set[str] = set()
        self.matches = 0
        self.add(*errors)

    def add(self, *errors: _Error | None) -> None:
        for error in errors:
            if error is not None and error.message not in self._seen:
                self._seen.add(error.message)
                self.errors.append(error)

    def merge(self, *others: _Result | None) -> _Result:
        for other in others:
            if other is not None:
                self.add(*other.errors)
                self.matches += other.matches
        return self

    @property
    def valid(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------------------------------------------------------
# Go's printing of values.


def _bad_value(value: Any) -> str:
    """A field.Error's bad value: %v for numbers and booleans, %q for strings, JSON otherwise."""
    if isinstance(value, (bool, int, float)):
        return go_format(value)
    if isinstance(value, str):
        return go_quote(value)
    return go_json(value)


# ---------------------------------------------------------------------------------------------------------------
# JSON values as Go's reflection sees them.


def _kind(data: Any) -> str:
    """The Go kind a decoded JSON value has in kube: bool, int (int64), float (float64), str, list or dict."""
    if isinstance(data, bool):
        return "bool"
    if isinstance(data, int):
        return "int" if _INT64[0] <= data <= _INT64[1] else "float"
    if isinstance(data, float):
        return "float"
    if isinstance(data, str):
        return "str"
    if isinstance(data, list):
        return "list"
    if isinstance(data, Mapping):
        return "dict"
    return "other"


#: The numeric formats kube's number validator honours, by type.
_NUMBER_FORMATS = {"integer": ("int32", "int64"), "number": ("float", "double")}

_JSON_TYPE = {"bool": ("boolean", ""), "int": ("integer", "int64"), "float": ("number", "float64"),
              "str": ("string", ""), "list": ("array", ""), "dict": ("object", "")}


def _typed(value: Any) -> Any:
    """A hashable form in which values equal only when reflect.DeepEqual would call them equal."""
    kind = _kind(value)
    if kind == "list":
        return ("list", tuple(_typed(item) for item in value))
    if kind == "dict":
        return ("dict", tuple(sorted((k, _typed(v)) for k, v in value.items())))
    if kind == "float":
        return ("float", float(value))
    return (kind, value)


def _is_json_integer(value: float) -> bool:
    """swag.IsFloat64AJSONInteger: integral (to a relative 1e-9) and within ±2^53."""
    if math.isnan(value) or math.isinf(value) or abs(value) > _JSON_INT_LIMIT:
        return False
    if value == int(value):
        return True
    if value < 0:
        return False
    truncated = float(int(value))
    diff = abs(value - truncated)
    if truncated == 0:
        return diff < 1e-9 * 5e-324
    return diff / (value + truncated) < 1e-9


def _schema_types(schema: Mapping[str, Any]) -> list[str]:
    """The schema's types after apiextensions' conversion: int-or-string means `integer,string`."""
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    return [schema["type"]] if schema.get("type") else []


#: The string formats kube validates (apiextensions formats.go), by name without dashes.
_STRING_FORMATS = frozenset({
    "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid", "uuid3", "uuid4", "uuid5",
    "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor", "rgbcolor", "byte", "password", "date", "duration",
    "datetime", "k8sshortname", "k8slongname",
})


def _effective_format(schema: Mapping[str, Any], types: list[str]) -> str:
    """StripUnsupportedFormatsPostProcessor: the format kube keeps for this schema, or ""."""
    fmt = schema.get("format") or ""
    if not isinstance(fmt, str) or not fmt:
        return ""
    only = types[0] if len(types) == 1 else ""
    if only in ("", "string"):
        return fmt if fmt.replace("-", "") in _STRING_FORMATS else ""
    if only == "integer":
        return fmt if fmt in ("int32", "int64") else ""
    if only == "number":
        return fmt if fmt in ("float", "double") else ""
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Formats (kube-openapi strfmt's default registry).

_HOSTNAME = re.compile(r"^([a-zA-Z0-9\w]((-?[a-zA-Z0-9\w]{0,62})?)|([a-zA-Z0-9\w](([a-zA-Z0-9\-\w]{0,61}"
                       r"[a-zA-Z0-9\w])?)(\.)){1,}([a-zA-Z\w]){2,63})$")
_UUID = {
    "uuid": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
    "uuid3": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
    "uuid4": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"),
    "uuid5": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"),
}
_DATE_TIME_TAIL = re.compile(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$")
_GO_DURATION = re.compile(r"[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|[-+]?0")
_LOOSE_DURATION = re.compile(r"(\d+)\s*([A-Za-zµ]+)")
_DURATION_UNITS = (("ns", "nano"), ("us", "µs", "micro"), ("ms", "milli"), ("s", "sec"), ("m", "min"),
                   ("h", "hr", "hour"), ("d", "day"), ("w", "wk", "week"))
_MAC = re.compile(r"^([0-9A-Fa-f]{2}([:-]))(?:[0-9A-Fa-f]{2}\2){4}[0-9A-Fa-f]{2}$|"
                  r"^([0-9A-Fa-f]{2}([:-]))(?:[0-9A-Fa-f]{2}\4){6}[0-9A-Fa-f]{2}$|"
                  r"^([0-9A-Fa-f]{2}([:-]))(?:[0-9A-Fa-f]{2}\6){18}[0-9A-Fa-f]{2}$|"
                  r"^[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}$|"
                  r"^[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4}){3}$|^[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4}){9}$")
_CREDIT_CARD = re.compile(r"^(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|6(?:011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|"
                          r"3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35\d{3})\d{11})$")
_SSN = re.compile(r"^\d{3}[- ]?\d{2}[- ]?\d{4}$")
_HEXCOLOR = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_RGB_PART = r"\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*"
_RGBCOLOR = re.compile(rf"^rgb\({_RGB_PART},{_RGB_PART},{_RGB_PART}\)$")
_SHORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LONG_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _is_date(value: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_date_time(value: str) -> bool:
    if len(value) < 4:
        return False
    parts = value.lower().split("t")
    if len(parts) < 2 or not _is_date(parts[0]):
        return False
    match = _DATE_TIME_TAIL.match(parts[1])
    if match is None:
        return False
    return match.group(1) <= "23" and match.group(2) <= "59" and match.group(3) <= "59"


def _is_duration(value: str) -> bool:
    if _GO_DURATION.fullmatch(value):
        return True
    found = False
    for count, unit in _LOOSE_DURATION.findall(value):
        unit = unit.strip().lower()
        for variants in _DURATION_UNITS:
            if any(unit == variant or (i == len(variants) - 1 and unit.startswith(variant))
                   for i, variant in enumerate(variants)):
                found = True
    return found


def _is_request_uri(value: str) -> bool:
    """url.ParseRequestURI: an absolute path, or a scheme followed by anything without spaces or controls."""
    if any(ord(char) < 0x20 or char in " \x7f" for char in value):
        return False
    return value.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:.", value) is not None


def _is_email(value: str) -> bool:
    name, address = parseaddr(value)
    return bool(address) and "@" in address and not address.startswith("@") and not address.endswith("@")


def _is_hostname(value: str) -> bool:
    return bool(_HOSTNAME.match(value)) and len(value) <= 255 and all(len(part) <= 63 for part in value.split("."))


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """net.ParseIP-ish, allowing IPv4 parts with leading zeros as ParseIPSloppy does."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        pass
    parts = value.split(".")
    if len(parts) == 4 and all(part.isdigit() and int(part) <= 255 for part in parts):
        return ipaddress.IPv4Address(".".join(str(int(part)) for part in parts))
    return None


def _is_cidr(value: str) -> bool:
    address, slash, prefix = value.partition("/")
    if not slash or not prefix.isdigit() or _parse_ip(address) is None:
        return False
    return int(prefix) <= (32 if ":" not in address else 128)


def _is_isbn10(value: str) -> bool:
    value = re.sub(r"[\s-]", "", value)
    if not re.fullmatch(r"[0-9]{9}X|[0-9]{10}", value):
        return False
    total = sum((i + 1) * int(value[i]) for i in range(9)) + 10 * (10 if value[9] == "X" else int(value[9]))
    return total % 11 == 0


def _is_isbn13(value: str) -> bool:
    value = re.sub(r"[\s-]", "", value)
    if not re.fullmatch(r"[0-9]{13}", value):
        return False
    total = sum((1, 3)[i % 2] * int(value[i]) for i in range(12))
    return int(value[12]) == (10 - total % 10) % 10


def _is_credit_card(value: str) -> bool:
    digits = re.sub(r"[^0-9]+", "", value)
    if not _CREDIT_CARD.match(digits):
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        number = int(char) * (2 if i % 2 else 1)
        total += number - 9 if number >= 10 else number
    return total % 10 == 0


def _is_base64(value: str) -> bool:
    if not _BASE64.match(value):
        return False
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        return False
    return True


_FORMAT_CHECKS: dict[str, Any] = {
    "bsonobjectid": lambda v: bool(re.fullmatch(r"[0-9a-fA-F]{24}", v)),
    "uri": _is_request_uri,
    "email": _is_email,
    "hostname": _is_hostname,
    "ipv4": lambda v: _parse_ip(v) is not None and "." in v,
    "ipv6": lambda v: _parse_ip(v) is not None and ":" in v,
    "cidr": _is_cidr,
    "mac": lambda v: bool(_MAC.match(v)),
    **{name: (lambda rx: lambda v: bool(rx.match(v)))(rx) for name, rx in _UUID.items()},
    "isbn": lambda v: _is_isbn10(v) or _is_isbn13(v),
    "isbn10": _is_isbn10,
    "isbn13": _is_isbn13,
    "creditcard": _is_credit_card,
    "ssn": lambda v: len(v) == 11 and bool(_SSN.match(v)),
    "hexcolor": lambda v: bool(_HEXCOLOR.match(v)),
    "rgbcolor": lambda v: bool(_RGBCOLOR.match(v)),
    "byte": _is_base64,
    "password": lambda v: True,
    "date": _is_date,
    "duration": _is_duration,
    "datetime": _is_date_time,
    "k8sshortname": lambda v: len(v) <= 63 and bool(_SHORT_NAME.match(v)),
    "k8slongname": lambda v: len(v) <= 253 and bool(_LONG_NAME.match(v)),
}


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str] | str:
    """A schema pattern compiled once; the compile error's text when it does not compile."""
    try:
        return re.compile(pattern)
    except re.error as error:
        return f"error parsing regexp: {error}"


# ---------------------------------------------------------------------------------------------------------------
# kube-openapi's SchemaValidator.


def _in_body(name: str, text: str) -> str:
    """The kube-openapi message with `in body` after the name."""
    return f"{name} in body {text}"


def _invalid_type(name: str, type_name: str, value: Any) -> _Error:
    return _Error(_TYPE, name, _in_body(name, f"must be of type {type_name}: {go_quote(value)}"), value)


def _check_type(types: list[str], nullable: bool, fmt: str, data: Any, path: str) -> _Result:
    """typeValidator."""
    if data is None:
        if types and "null" not in types and not nullable:
            return _Result(_invalid_type(path, ",".join(types), "null"))
        result = _Result()
        result.matches += 1
        return result
    kind = _kind(data)
    json_type, json_format = _JSON_TYPE.get(kind, ("", ""))
    float_int = json_type == "number" and "integer" in types and _is_json_integer(float(data))
    int_float = json_type == "integer" and "number" in types
    if kind not in ("str", "list") and fmt and not (json_type in types or json_format == fmt or float_int
                                                    or int_float):
        return _Result(_invalid_type(path, fmt, json_format))
    if not ("number" in types or "integer" in types) and fmt and kind in ("str", "list"):
        result = _Result()
        result.matches += 1
        return result
    if not (json_type in types or float_int or int_float):
        return _Result(_invalid_type(path, ",".join(types), json_type))
    result = _Result()
    result.matches += 1
    return result


def _check_composition(schema: Mapping[str, Any], data: Any, path: str) -> _Result:
    """schemaPropsValidator: anyOf, oneOf, allOf and not, each branch validated at the same path."""
    main = _Result()
    any_of = schema.get("anyOf") or []
    if any_of:
        best: _Result | None = None
        first_success: _Result | None = None
        for branch in any_of:
            result = _check(branch, data, path)
            if result.valid:
                best, first_success = None, result
                break
            if best is None or result.matches > best.matches:
                best = result
        if first_success is None:
            main.add(_Error(_PLAIN, "", f"{go_quote(path)} must validate at least one schema (anyOf)"))
        main.merge(best if best is not None else first_success)
    one_of = schema.get("oneOf") or []
    if one_of:
        best, first_success, validated = None, None, 0
        for branch in one_of:
            result = _check(branch, data, path)
            if result.valid:
                validated += 1
                best = None
                first_success = first_success or result
                continue
            if validated == 0 and (best is None or result.matches > best.matches):
                best = result
        if validated != 1:
            detail = "Found none valid" if validated == 0 else f"Found {validated} valid alternatives"
            main.add(_Error(_PLAIN, "", f"{go_quote(path)} must validate one and only one schema (oneOf). {detail}"))
            main.merge(best)
        else:
            main.merge(first_success)
    all_of = schema.get("allOf") or []
    if all_of:
        validated = 0
        for branch in all_of:
            result = _check(branch, data, path)
            validated += result.valid
            main.merge(result)
        if validated != len(all_of):
            detail = ". None validated" if validated == 0 else ""
            main.add(_Error(_PLAIN, "", f"{go_quote(path)} must validate all the schemas (allOf){detail}"))
    if isinstance(schema.get("not"), Mapping) and _check(schema["not"], data, path).valid:
        main.add(_Error(_PLAIN, "", f"{go_quote(path)} must not validate the schema (not)"))
    main.matches += 1
    return main


def _check_string(schema: Mapping[str, Any], data: str, path: str) -> _Result | None:
    """stringValidator: maxLength, minLength, pattern; the first failure only. Lengths count runes."""
    max_length, min_length = schema.get("maxLength"), schema.get("minLength")
    if isinstance(max_length, int) and len(data) > max_length:
        return _Result(_Error(_TOO_LONG, path, _in_body(path, f"should be at most {max_length} chars long"), data,
                              max_length))
    if isinstance(min_length, int) and len(data) < min_length:
        return _Result(_Error(_OTHER, path, _in_body(path, f"should be at least {min_length} chars long"), data))
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and pattern:
        compiled = _compile(pattern)
        if isinstance(compiled, str):
            return _Result(_Error(_OTHER, path, _in_body(path, f"should match '{pattern}, but pattern is invalid: "
                                                               f"{compiled}'"), data))
        if not compiled.search(data):
            return _Result(_Error(_OTHER, path, _in_body(path, f"should match '{pattern}'"), data))
    return None


def _check_format(fmt: str, data: str, path: str) -> _Result | None:
    """formatValidator."""
    if _FORMAT_CHECKS[fmt.replace("-", "")](data):
        return None
    return _Result(_invalid_type(path, fmt, data))


def _range_error(value: Any, type_name: str, fmt: str, prefix: str, path: str) -> _Error | None:
    """IsValueValidAgainstRange: whether the number fits the declared type and format."""
    text = str(value) if _kind(value) == "int" else go_float_fixed(float(value))
    ok = True
    if type_name == "integer":
        bounds = _INT32 if fmt == "int32" else _INT64
        ok = re.fullmatch(r"[-+]?[0-9]+", text) is not None and bounds[0] <= int(text) <= bounds[1]
    elif fmt == "float":
        ok = abs(float(value)) <= _FLOAT32_MAX
    if ok:
        return None
    if fmt:
        return _Error(_PLAIN, "", f"{prefix} value must be of type {type_name} with format {fmt} in {path}")
    return _Error(_PLAIN, "", f"{prefix} value must be of type {type_name} (default format) in {path}")


def _bound(path: str, data: Any, limit: float, exclusive: bool, upper: bool, native: bool) -> _Error | None:
    """Maximum/Minimum (NativeType when the boundary fits the type): ints compare with a truncated bound."""
    if native and _kind(data) == "int":
        bound: int | float = int(limit)
        shown = str(bound)
    else:
        bound = limit
        shown = go_float(float(limit))
    if upper:
        failed = data >= bound if exclusive else data > bound
        text = f"should be less than {shown}" if exclusive else f"should be less than or equal to {shown}"
    else:
        failed = data <= bound if exclusive else data < bound
        text = f"should be greater than {shown}" if exclusive else f"should be greater than or equal to {shown}"
    return _Error(_OTHER, path, _in_body(path, text), data) if failed else None


def _multiple(path: str, data: Any, factor: float, native: bool) -> _Error | None:
    """MultipleOf (MultipleOfNativeType when the factor fits the type)."""
    if native and _kind(data) == "int":
        int_factor = int(factor)
        if int_factor <= 0:
            return _Error(_OTHER, path, f"factor MultipleOf declared for {path} must be positive: {int_factor}",
                          int_factor)
        if data % int_factor if data >= 0 else -(-data % int_factor):
            return _Error(_OTHER, path, _in_body(path, f"should be a multiple of {int_factor}"), data)
        return None
    if factor <= 0:
        return _Error(_OTHER, path, f"factor MultipleOf declared for {path} must be positive: {go_float(factor)}",
                      factor)
    ratio = (1 / factor * data) if factor < 1 else (data / factor)
    if not _is_json_integer(ratio):
        return _Error(_OTHER, path, _in_body(path, f"should be a multiple of {go_float(float(factor))}"), data)
    return None


def _check_number(schema: Mapping[str, Any], types: list[str], data: Any, path: str) -> _Result:
    """numberValidator: the value's range for its format, then multipleOf, minimum, maximum."""
    type_name = types[0] if len(types) == 1 and types[0] in ("integer", "number") else ""
    declared = schema.get("format")
    fmt = declared if isinstance(declared, str) and declared in _NUMBER_FORMATS.get(type_name, ()) else ""
    result = _Result()
    result.add(_range_error(data, type_name, fmt, "Checked", path))
    parts = []
    for key, prefix in (("multipleOf", "MultipleOf"), ("minimum", "Minimum boundary"),
                        ("maximum", "Maximum boundary")):
        limit = schema.get(key)
        part = _Result()
        if isinstance(limit, (int, float)) and not isinstance(limit, bool):
            part.add(_range_error(limit, type_name, fmt, prefix, path))
            native = part.valid
            if key == "multipleOf":
                part.add(_multiple(path, data, limit, native))
            else:
                part.add(_bound(path, data, limit, bool(schema.get("exclusiveMaximum" if key == "maximum" else
                                                                   "exclusiveMinimum")), key == "maximum", native))
        parts.append(part)
    result.merge(*parts)
    result.matches += 1
    return result


def _check_array(schema: Mapping[str, Any], data: list[Any], path: str) -> _Result:
    """schemaSliceValidator: each item at `<path>[i]`, then minItems, maxItems, uniqueItems."""
    result = _Result()
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(data):
            result.merge(_check(items, item, f"{path}[{index}]"))
    min_items, max_items = schema.get("minItems"), schema.get("maxItems")
    if isinstance(min_items, int) and len(data) < min_items:
        result.add(_Error(_OTHER, path, _in_body(path, f"should have at least {min_items} items"), len(data)))
    if isinstance(max_items, int) and len(data) > max_items:
        result.add(_Error(_MAX_ITEMS, path, _in_body(path, f"should have at most {max_items} items"), len(data),
                          max_items))
    if schema.get("uniqueItems") and len({_typed(item) for item in data}) != len(data):
        result.add(_Error(_OTHER, path, _in_body(path, "shouldn't contain duplicates")))
    result.matches += 1
    return result


def _enum_match(data: Any, option: Any) -> bool:
    """Whether data, converted to the option's Go type where Go allows it, is DeepEqual to the option."""
    data_kind, option_kind = _kind(data), _kind(option)
    if data_kind in ("int", "float") and option_kind in ("int", "float"):
        return bool((int(data) if option_kind == "int" else float(data)) == option)
    return bool(_typed(data) == _typed(option))


def _check_enum(schema: Mapping[str, Any], data: Any, path: str) -> _Result | None:
    """basicCommonValidator: enum."""
    options = schema.get("enum")
    if not options or any(_enum_match(data, option) for option in options if option is not None):
        return None
    text = _in_body(path, f"should be one of {go_format(list(options))}")
    return _Result(_Error(_ENUM, path, text, _UNSET if data is None else data, values=tuple(options)))


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_object(schema: Mapping[str, Any], data: Mapping[str, Any], path: str) -> _Result:
    """objectValidator: property counts, additionalProperties, properties, then required."""
    result = _Result()
    count = len(data)
    min_properties, max_properties = schema.get("minProperties"), schema.get("maxProperties")
    if isinstance(min_properties, int) and count < min_properties:
        result.add(_Error(_OTHER, path, _in_body(path, f"should have at least {min_properties} properties"), count))
    if isinstance(max_properties, int) and count > max_properties:
        result.add(_Error(_TOO_MANY_PROPS, path, _in_body(path, f"should have at most {max_properties} properties"),
                          count, max_properties))
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    if additional is False:
        for key in sorted(data):
            if key not in properties:
                result.add(_Error(_OTHER, path, f"{path}.{key} in body is a forbidden property", key))
    elif isinstance(additional, Mapping):
        for key in sorted(data):
            if key not in properties:
                result.merge(_check(additional, data[key], f"{path}.{key}"))
    for name in sorted(properties):
        if name in data:
            result.merge(_check(properties[name], data[name], _child(path, name)))
    for name in schema.get("required") or ():
        if name not in data:
            full = f"{path}.{name}"
            result.add(_Error(_REQUIRED, full, _in_body(full, "is required")))
    return result


def _check(schema: Mapping[str, Any], data: Any, path: str) -> _Result:
    """SchemaValidator.Validate: the applicable validators in kube-openapi's order, each counted as a match."""
    types = _schema_types(schema)
    fmt = _effective_format(schema, types)
    nullable = bool(schema.get("nullable"))
    result = _Result()
    if data is None:
        result.merge(_check_type(types, nullable, fmt, data, path), _check_enum(schema, data, path))
        return result
    kind = _kind(data)
    steps: list[_Result | None] = []
    if types or fmt:
        steps.append(_check_type(types, nullable, fmt, data, path))
    steps.append(_check_composition(schema, data, path))
    if kind == "str":
        steps.append(_check_string(schema, data, path))
        if fmt and fmt.replace("-", "") in _FORMAT_CHECKS:
            steps.append(_check_format(fmt, data, path))
    if kind in ("int", "float"):
        steps.append(_check_number(schema, types, data, path))
    if kind == "list":
        steps.append(_check_array(schema, data, path))
    steps.append(_check_enum(schema, data, path))
    if kind == "dict":
        steps.append(_check_object(schema, data, path))
    for step in steps:
        result.merge(step)
        result.matches += 1
    result.matches += 1
    return result


def _to_field_error(error: _Error, prefix: str) -> FieldError:
    """kubeOpenAPIResultToFieldErrors: each kube-openapi error as the field.Error apiextensions makes of it."""
    root = prefix or NIL_PATH
    if error.code == _PLAIN:
        return FieldError("FieldValueInvalid", root, f'Invalid value: "": {error.message}')
    name = error.name.removeprefix(".") if error.name not in ("", ".") else ""
    path = (f"{prefix}.{name}" if prefix else name) if name else root
    value = "" if error.value is _UNSET or error.value is None else error.value
    if error.code == _REQUIRED:
        return required(path)
    if error.code == _ENUM:
        allowed = [option if isinstance(option, str) else go_json(option) for option in error.values]
        detail = ", ".join(go_quote(option) for option in allowed)
        return FieldError("FieldValueNotSupported", path, f"Unsupported value: {_bad_value(value)}: "
                                                          f"supported values: {detail}")
    if error.code == _TOO_LONG:
        unit = "byte" if error.limit == 1 else "bytes"
        return FieldError("FieldValueTooLong", path, f"Too long: may not be more than {error.limit} {unit}")
    if error.code in (_MAX_ITEMS, _TOO_MANY_PROPS):
        unit = "item" if error.limit == 1 else "items"
        return FieldError("FieldValueTooMany", path, f"Too many: {value}: must have at most {error.limit} {unit}")
    reason = "FieldValueTypeInvalid" if error.code == _TYPE else "FieldValueInvalid"
    return FieldError(reason, path, f"Invalid value: {_bad_value(value)}: {error.message}")


# ---------------------------------------------------------------------------------------------------------------
# field.Path helpers for the structural walks (embedded resources, list types).


def _path_child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, f"Invalid value: {_bad_value(value)}: {detail}")


def _sub_schema(schema: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The schema of a map entry: its property, else additionalProperties when that is a schema."""
    properties = schema.get("properties") or {}
    if key in properties:
        return cast(Mapping[str, Any], properties[key])
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, Mapping) else None


def _entry_path(schema: Mapping[str, Any], path: str, key: str) -> str:
    """field.Path's Child for a property, Key (`[key]`) for a map entry."""
    return _path_child(path, key) if key in (schema.get("properties") or {}) else f"{path}[{key}]"


def _json_type_name(value: Any) -> str:
    return {"bool": "bool", "int": "number", "float": "number", "str": "string", "list": "array"}.get(
        _kind(value), "object")


def _validate_embedded(data: Mapping[str, Any], path: str) -> list[FieldError]:
    """validateEmbeddedResource: apiVersion and kind present and well formed, metadata as ObjectMeta."""
    errors: list[FieldError] = []
    for key in ("apiVersion", "kind"):
        if key not in data:
            errors.append(required(_path_child(path, key)))
    for key in sorted(data):
        value = data[key]
        child = _path_child(path, key)
        if key in ("apiVersion", "kind"):
            if not isinstance(value, str):
                errors.append(_invalid(child, value, "must be a string"))
            elif not value:
                errors.append(_invalid(child, value, "must not be empty"))
            elif key == "apiVersion" and value != "/" and value.count("/") > 1:
                errors.append(_invalid(child, value, f"unexpected GroupVersion string: {value}"))
            elif key == "kind" and (problems := is_dns1035_label(value.lower())):
                errors.append(_invalid(child, value, "may have mixed case, but should otherwise match: "
                                       + ",".join(problems)))
        elif key == "metadata" and value is not None:
            if not isinstance(value, Mapping):
                errors.append(_invalid(child, value, f"json: cannot unmarshal {_json_type_name(value)} into Go "
                                                     "value of type v1.ObjectMeta"))
                continue
            meta = dict(value)
            if not meta.get("name"):
                meta["name"] = "fakename"
            namespace = meta.get("namespace")
            errors.extend(validate_object_meta(meta, bool(namespace), validate_path_segment_name, child))
    return errors


def _walk_embedded(schema: Mapping[str, Any] | None, data: Any, path: str) -> list[FieldError]:
    """objectmeta.validate: every embedded resource in the object, depth-first."""
    if schema is None:
        return []
    errors: list[FieldError] = []
    if isinstance(data, Mapping):
        if schema.get("x-kubernetes-embedded-resource"):
            errors.extend(_validate_embedded(data, path))
        for key in sorted(data):
            errors.extend(_walk_embedded(_sub_schema(schema, key), data[key], _entry_path(schema, path, key)))
    elif isinstance(data, list):
        items = schema.get("items")
        for index, item in enumerate(data):
            errors.extend(_walk_embedded(items if isinstance(items, Mapping) else None, item, f"{path}[{index}]"))
    return errors


def _duplicate_indices(values: Iterable[Any]) -> list[int]:
    """validateListSet: the index of each value's second occurrence."""
    seen: dict[Any, int] = {}
    duplicates = []
    for index, value in enumerate(values):
        key = go_json(value) if _kind(value) in ("list", "dict") else _typed(value)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            duplicates.append(index)
    return duplicates


def _duplicate(path: str, value: Any) -> FieldError:
    return FieldError("FieldValueDuplicate", path, f"Duplicate value: {_bad_value(value)}")


def _list_map_errors(schema: Mapping[str, Any], data: list[Any], path: str) -> list[FieldError]:
    """validateListMap: items are objects, and no two share their key fields' values."""
    for index, item in enumerate(data):
        if item is not None and not isinstance(item, Mapping):
            return [_invalid(f"{path}[{index}]", item, "must be an object for an array of list-type map")]
    if len(data) <= 1:
        return []
    keys_fields = list(schema.get("x-kubernetes-list-map-keys") or [])
    keys = [{field: item[field] for field in keys_fields if field in item} if item else {} for item in data]
    if len(keys_fields) == 1:
        [field] = keys_fields
        unspecified = ("unspecified",)
        scalars = [key[field] if field in key else unspecified for key in keys]
        seen: dict[Any, int] = {}
        errors = []
        for index, scalar in enumerate(scalars):
            marker = scalar if scalar is unspecified else (
                go_json(scalar) if _kind(scalar) in ("list", "dict") else _typed(scalar))
            seen[marker] = seen.get(marker, 0) + 1
            if seen[marker] == 2:
                errors.append(_duplicate(f"{path}[{index}]", keys[index]))
        return errors
    return [_duplicate(f"{path}[{index}]", keys[index]) for index in _duplicate_indices(keys)]


def _walk_list_types(schema: Mapping[str, Any] | None, data: Any, path: str) -> list[FieldError]:
    """ValidateListSetsAndMaps: the set and map invariants of every list in the object."""
    if schema is None:
        return []
    errors: list[FieldError] = []
    if isinstance(data, Mapping):
        for key in sorted(data):
            errors.extend(_walk_list_types(_sub_schema(schema, key), data[key], _entry_path(schema, path, key)))
    elif isinstance(data, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            errors.extend(_duplicate(f"{path}[{index}]", data[index]) for index in _duplicate_indices(data))
        elif list_type == "map":
            errors.extend(_list_map_errors(schema, data, path))
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(data):
                errors.extend(_walk_list_types(items, item, f"{path}[{index}]"))
    return errors


# ---------------------------------------------------------------------------------------------------------------
# The API.


def validate(obj: Any, schema: Mapping[str, Any], path: str = "") -> list[FieldError]:
    """The field errors kube reports for obj under the structural schema, in kube's order, de-duplicated.

    path is the field path the schema applies at (`status` for the status subresource's schema); as in kube
    it prefixes the error paths but not the `<name> in body` text. Property names are visited in sorted
    order (kube's Go maps have none), value checks first, then embedded resources, then list-type rules.
    """
    result = _check(schema, obj, "")
    errors = [_to_field_error(error, path) for error in result.errors]
    errors.extend(_walk_embedded(schema, obj, path))
    errors.extend(_walk_list_types(schema, obj, path))
    return errors


def validate_metadata_name(metadata: Mapping[str, Any], path: str = "metadata") -> list[FieldError]:
    """A custom resource's metadata.name (or generateName) checked as kube does: a DNS subdomain."""
    errors: list[FieldError] = []
    name, generate_name = metadata.get("name") or "", metadata.get("generateName") or ""
    if isinstance(generate_name, str) and generate_name:
        errors.extend(_invalid(f"{path}.generateName", generate_name, message)
                      for message in name_is_dns_subdomain(generate_name, True))
    if not isinstance(name, str):
        errors.append(FieldError("FieldValueTypeInvalid", f"{path}.name",
                                 f"Invalid value: {_bad_value(name)}: must be of type string"))
    elif name:
        errors.extend(_invalid(f"{path}.name", name, message) for message in name_is_dns_subdomain(name, False))
    elif not generate_name:
        errors.append(required(f"{path}.name", "name or generateName is required"))
    return errors


def cel_rules(schema: Mapping[str, Any], path: str = "") -> list[tuple[str, str, str]]:
    """Every `x-kubernetes-validations` rule as (path, rule, message), depth-first in property order.

    Paths use `[*]` for any array item or map value. The message is the rule's own, else kube's default
    `failed rule: <rule>`, so a caller can report each rule it does not enforce.
    """
    found: list[tuple[str, str, str]] = []
    for rule in schema.get("x-kubernetes-validations") or ():
        if isinstance(rule, Mapping) and isinstance(rule.get("rule"), str):
            given = rule.get("message")
            message = given if isinstance(given, str) and given else f"failed rule: {rule['rule']}"
            found.append((path, rule["rule"], message))
    for name in sorted(schema.get("properties") or {}):
        found.extend(cel_rules(schema["properties"][name], _path_child(path, name)))
    for key in ("items", "additionalProperties"):
        child = schema.get(key)
        if isinstance(child, Mapping):
            found.extend(cel_rules(child, f"{path}[*]"))
    for key in ("allOf", "anyOf", "oneOf"):
        for branch in schema.get(key) or ():
            found.extend(cel_rules(branch, path))
    if isinstance(schema.get("not"), Mapping):
        found.extend(cel_rules(schema["not"], path))
    return found
