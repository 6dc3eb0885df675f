"""Content negotiation for API objects: JSON, YAML and meta.k8s.io Tables out; JSON and YAML in.

Bodies are decoded strictly enough to report what Kubernetes reports (malformed input is 400,
unsupported media types 415, duplicate fields are noted for fieldValidation=Strict), and within limits
that keep a hostile body from costing more than a few milliseconds of the reactor's time: at most
MAX_DEPTH levels of nesting (checked before Python's decoder could recurse), at most so many values
(checked before decoding too), no number Go could not decode (nor the integers Python's int() refuses),
no invalid UTF-8 or lone surrogates.  YAML becomes JSON as kube's sigs.k8s.io/yaml makes it (go-yaml v2's
scalars: timestamps stay strings, `y`/`n` are booleans, no base-60 numbers; !!binary is decoded, other
tags ignored, merge keys merged), built from libyaml's events without recursion, aliases counted as what
they expand to so that a "billion laughs" is refused at once.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import marshal
import math
import re
from typing import Any

import yaml
from attrs import frozen

from .discovery import parse_accept
from .status import StatusError

JSON = "application/json"
YAML = "application/yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)

#: kube-apiserver's limit on a request body (3 MiB).
MAX_BODY_BYTES = 3 * 1024 * 1024


@frozen
class Output:
    """How to serialise a response: `json`, `yaml`, or a Table (`table`) encoded as JSON or YAML."""

    form: str
    encoding: str = JSON


def negotiate_output(accept: str | None) -> Output | None:
    """Pick the response form from an Accept header; None when nothing acceptable can be produced (406)."""
    if not accept or not accept.strip():
        return Output("json")
    for media in parse_accept(accept):
        full = f"{media.type}/{media.subtype}"
        if full not in (JSON, YAML, "application/*", "*/*"):
            continue
        encoding = YAML if full == YAML else JSON
        wanted_as = media.params.get("as")
        if wanted_as is None:
            if media.params.get("g") or media.params.get("v"):
                continue
            return Output("json" if encoding == JSON else "yaml", encoding)
        if wanted_as == "Table" and media.params.get("g") == "meta.k8s.io" and media.params.get("v") in ("v1", "v1beta1"):
            return Output("table", encoding)
        # PartialObjectMetadata and other forms are not offered: try the next clause.
    return None


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters such as charset dropped), lower-cased."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


# -- limits ----------------------------------------------------------------------------------------

#: How deeply objects and arrays may nest in a body (and in what a patch makes of an object).  kube's
#: decoders allow 10,000 levels (encoding/json's maxNestingDepth, go-yaml's max depth); every layer here walks
#: objects recursively and Python allows about 1,000 frames, so this server allows far fewer.  An APIService or
#: ExternalName nests about 6 levels deep, its managedFields 4 more.
MAX_DEPTH = 100

#: How many JSON values (objects, arrays, strings, numbers, booleans and nulls; keys are not counted) an object
#: may hold besides its metadata.managedFields: what a create, update, patch or apply may store.  kube has no
#: such count (only the 3 MiB body limit); here every value costs microseconds in each step of a write, and this
#: count keeps a write of the largest object, managedFields and all, well under 100 ms of the reactor's time.
#: A stored APIService holds about 30 values (and as many in its managedFields).
MAX_OBJECT_VALUES = 1_000

#: How many values an object body may hold (create, update, merge patch, apply): an object and the
#: managedFields a client sends back with it (as `kubectl replace` and `edit` do).
MAX_DOCUMENT_VALUES = 2 * MAX_OBJECT_VALUES

#: How many JSON values any body may hold: a JSON patch of kube's 10,000 operations holds about 40,000.
MAX_BODY_VALUES = 60_000


class BodyError(Exception):
    """Why a body could not be decoded; `kind` is one of the constants below, `detail` says what was found."""

    SYNTAX, UNICODE, SURROGATE, DEPTH, VALUES, NUMBER = "syntax", "unicode", "surrogate", "depth", "values", "number"

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def depth_detail() -> str:
    """What a body nested too deeply is told."""
    return f"exceeded max depth of {MAX_DEPTH}: objects and arrays may nest at most {MAX_DEPTH} levels deep here"


def values_detail(limit: int, what: str = "the body", besides: str = "") -> str:
    """What a body (or a patched object) holding too many values is told."""
    return (f"{what} holds more than {limit} JSON values (objects, arrays, strings, numbers, booleans and "
            f"nulls){besides}, the most this server accepts")


def too_many_values(limit: int, what: str = "the body", besides: str = "") -> StatusError:
    """The 413 for a body, or an object a patch makes, holding too many values."""
    return StatusError(413, f"Request entity too large: {values_detail(limit, what, besides)}",
                       "RequestEntityTooLarge")


def count_values(value: Any, limit: int, depth_limit: int = MAX_DEPTH) -> tuple[int, int]:
    """The number of JSON values in `value` and how deeply it nests, without recursion; stops early (returning
    counts past the limits) as soon as it holds more than `limit` values or nests deeper than `depth_limit`."""
    count = 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > limit:
            return count, deepest
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if depth > depth_limit:
                return count, deepest
        stack.extend((child, depth) for child in children)
    return count, deepest


def check_object_size(value: Any, what: str = "the object", max_values: int = MAX_OBJECT_VALUES) -> None:
    """Refuse with a 413 an object (a body, or what a patch or apply makes) that holds more than max_values (the
    kind's limit, MAX_OBJECT_VALUES by default) values besides its managedFields, or managedFields of more than
    twice that; and with a 400 one that nests more than MAX_DEPTH levels deep."""
    total, deepest = count_values(value, MAX_BODY_VALUES)
    if deepest > MAX_DEPTH:
        raise StatusError(400, f"{what} is invalid: {depth_detail()}", "BadRequest")
    metadata = value.get("metadata") if isinstance(value, dict) else None
    managed = metadata.get("managedFields") if isinstance(metadata, dict) else None
    managed_values = count_values(managed, MAX_BODY_VALUES)[0] if managed is not None else 0
    if total - managed_values > max_values:
        raise too_many_values(max_values, what, " besides metadata.managedFields")
    if managed_values > 2 * max_values:
        raise too_many_values(2 * max_values, f"the metadata.managedFields of {what}")


def copy_json(value: Any) -> Any:
    """A deep copy of a decoded JSON value (dicts, lists and scalars), several times faster than copy.deepcopy
    (which it falls back to for anything marshal does not take, such as a subclass of str)."""
    if isinstance(value, (dict, list)):
        try:
            return marshal.loads(marshal.dumps(value))
        except ValueError:
            return copy.deepcopy(value)
    return value


# -- JSON ------------------------------------------------------------------------------------------

@frozen
class Decoded:
    """A decoded request body, and the duplicate field names seen while decoding (for fieldValidation)."""

    value: Any
    duplicates: tuple[str, ...] = ()


#: A JSON string, escapes included (unrolled so that long strings do not backtrack).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_WHITESPACE = b" \t\r\n"
_ALL_BUT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: A \u escape of a UTF-16 surrogate: the decoded strings must then be checked for lone halves.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_MAX_FLOAT_DIGITS = 310
#: Digits as 0 and exponent marks as e, to look for numbers that may be too large for Python's int() or for a
#: float64 (19 digits in a row, or a three-digit exponent; in a string, just such text) in C: only then are
#: numbers parsed by the slower checking hooks.
_NUMBER_SHAPES = bytes.maketrans(b"123456789E", b"000000000e")
_BIG_NUMBER_SHAPES = (b"0" * 19, b"e000", b"e+000", b"e-000")


def _check_json_shape(data: bytes, max_values: int) -> None:
    """Refuse JSON text with more than max_values values or deeper than MAX_DEPTH before it is decoded, in time
    proportional to the text and in C (Python's decoder would recurse for the depth and spend microseconds
    per value).  For valid JSON the counts are exact; for invalid JSON they never fall short of what the decoder
    reads before it fails."""
    openers = data.count(b"[") + data.count(b"{")
    if openers <= MAX_DEPTH and openers + data.count(b",") < max_values:
        return
    # Strings hold commas and brackets that are not structure.  Keys and string values together number at
    # most twice the values, so more strings than that settle the count at once.
    most_strings = 2 * max_values + 1
    skeleton, strings = _JSON_STRING.subn(b"0", data, count=most_strings)
    if strings >= most_strings:
        raise BodyError(BodyError.VALUES, values_detail(max_values))
    skeleton = skeleton.translate(None, _WHITESPACE)
    openers = skeleton.count(b"[") + skeleton.count(b"{")
    # Every member and element is a value, as is the top level; a non-empty container has one more member
    # than it has commas.
    values = 1 + skeleton.count(b",") + openers - skeleton.count(b"[]") - skeleton.count(b"{}")
    if values > max_values:
        raise BodyError(BodyError.VALUES, values_detail(max_values))
    if openers <= MAX_DEPTH:
        return
    brackets = skeleton.translate(None, _ALL_BUT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BodyError(BodyError.DEPTH, depth_detail())
        else:
            depth -= 1
            if depth < 0:
                return  # the decoder stops here: a closing bracket with nothing open


def _number_text(text: str) -> str:
    """A number literal short enough to quote in a message."""
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _cannot_unmarshal(text: str) -> BodyError:
    return BodyError(BodyError.NUMBER, f"json: cannot unmarshal number {_number_text(text)} into Go value of "
                                       f"type float64")


def _parse_int(text: str) -> int:
    """An integer literal; one too large even for a float64 is refused, as Go's decoder refuses it (and Python's
    int() would refuse more than 4,300 digits)."""
    if len(text) > _MAX_FLOAT_DIGITS or math.isinf(float(text)):
        raise _cannot_unmarshal(text)
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _cannot_unmarshal(text)
    return value


def _whole_float_as_int(text: str) -> int | float:
    """A float as a YAML body's number reaches kube: through JSON, where Go writes whole numbers below 1e21 as
    integers (100.0 becomes 100)."""
    value = _parse_float(text)
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def _reject_constant(name: str) -> Any:
    """NaN and Infinity, which Python's decoder accepts and JSON does not."""
    raise BodyError(BodyError.SYNTAX, f"invalid character '{name.lstrip('-')[0]}' looking for beginning of value")


def _lone_surrogate(value: Any) -> str | None:
    """The first lone UTF-16 surrogate in any string of a decoded value (a `\\ud800` escape not in a pair)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: Any = (item,)
        elif isinstance(item, dict):
            texts = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as error:
                    return f"\\u{ord(text[error.start]):04x}"
    return None


def load_json(data: bytes, max_values: int = MAX_BODY_VALUES, *, yaml_numbers: bool = False,
              duplicates: bool = True) -> Decoded:
    """Decode JSON text within the limits, noting duplicate keys; BodyError says what is wrong with it.

    Invalid UTF-8 and lone surrogates are refused (kube would put U+FFFD in their place), and so are NaN,
    Infinity and numbers beyond float64.  With `yaml_numbers`, whole floats become integers, as they do when a
    YAML body is turned into JSON.  Without `duplicates`, repeated keys are not looked for (faster).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(BodyError.UNICODE, f"invalid UTF-8 at byte {error.start}") from None
    _check_json_shape(data, max_values)
    repeated: list[tuple[dict[str, Any], str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(items)
        if len(result) != len(items):
            seen: set[str] = set()
            repeated.extend((result, key) for key, _ in items
                            if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        return result

    hooks: dict[str, Any] = {"object_pairs_hook": pairs} if duplicates else {}
    shapes = data.translate(_NUMBER_SHAPES)
    if any(shape in shapes for shape in _BIG_NUMBER_SHAPES):
        hooks.update(parse_int=_parse_int, parse_float=_parse_float)
    if yaml_numbers:
        hooks["parse_float"] = _whole_float_as_int
    try:
        value = json.loads(text, parse_constant=_reject_constant, **hooks)
    except json.JSONDecodeError as error:
        raise BodyError(BodyError.SYNTAX, f"{error.msg} at line {error.lineno} column {error.colno}") from None
    if b"\\u" in data and _SURROGATE_ESCAPE.search(data):
        surrogate = _lone_surrogate(value)
        if surrogate is not None:
            raise BodyError(BodyError.SURROGATE, f"{surrogate} is half of a UTF-16 surrogate pair, not a character")
    return Decoded(value, tuple(_duplicate_paths(value, repeated)) if repeated else ())


def _duplicate_paths(root: Any, repeated: list[tuple[dict[str, Any], str]]) -> list[str]:
    """The full paths (`spec.versionPriority`, `items[0].name`) of repeated keys, as sigs.k8s.io/json names them:
    the decoder builds objects inside out, so where each object sits is found once the whole value is built."""
    where: dict[int, str] = {}
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            where[id(value)] = path
            stack.extend((child, f"{path}.{key}" if path else key) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(value))
    paths = []
    for mapping, key in repeated:
        parent = where.get(id(mapping), "")
        paths.append(f"{parent}.{key}" if parent else key)
    return paths


def decode_json(data: bytes, max_values: int = MAX_DOCUMENT_VALUES) -> Decoded:
    """Decode a JSON body, noting duplicate keys: malformed JSON is a 400 with the decoder's message, a body
    holding more than max_values values a 413."""
    try:
        return load_json(data, max_values)
    except BodyError as error:
        raise _body_status(error, max_values, "couldn't get version/kind; json parse error: ") from None


def _body_status(error: BodyError, max_values: int, prefix: str) -> StatusError:
    if error.kind == BodyError.VALUES:
        return too_many_values(max_values)
    if error.kind == BodyError.UNICODE:
        return StatusError(400, f"the request body is not valid UTF-8: {error.detail}", "BadRequest")
    if error.kind == BodyError.SURROGATE:
        return StatusError(400, f"the request body is not valid Unicode: {error.detail}", "BadRequest")
    return StatusError(400, prefix + error.detail, "BadRequest")


# -- YAML ------------------------------------------------------------------------------------------

_YAML_STR = "tag:yaml.org,2002:str"
_YAML_BINARY = "tag:yaml.org,2002:binary"
_YAML_MERGE = "tag:yaml.org,2002:merge"
_YAML_BOOL = "tag:yaml.org,2002:bool"
_YAML_INT = "tag:yaml.org,2002:int"
_YAML_FLOAT = "tag:yaml.org,2002:float"
_YAML_NULL = "tag:yaml.org,2002:null"
_YAML_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_RESOLVABLE = (_YAML_STR, _YAML_BOOL, _YAML_INT, _YAML_FLOAT, _YAML_NULL, _YAML_TIMESTAMP)

#: go-yaml v2's plain scalars with a fixed meaning (as kube's sigs.k8s.io/yaml reads them).
_YAML_WORDS: dict[str, tuple[str, Any]] = {
    **{w: (_YAML_BOOL, True) for w in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")},
    **{w: (_YAML_BOOL, False) for w in ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off",
                                         "OFF")},
    **{w: (_YAML_NULL, None) for w in ("", "~", "null", "Null", "NULL")},
    **{w: (_YAML_FLOAT, math.nan) for w in (".nan", ".NaN", ".NAN")},
    **{w: (_YAML_FLOAT, math.inf) for w in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
    **{w: (_YAML_FLOAT, -math.inf) for w in ("-.inf", "-.Inf", "-.INF")},
    "<<": (_YAML_MERGE, "<<"),
}
_WORD_HINTS = frozenset("yYnNtTfFoO~")
_YAML_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
                           r"(([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(\.[0-9]*)?"
                           r"(([ \t]*)Z|[-+][0-9]{1,2}(:[0-9]{2})?)?)?")
_DIGITS = {2: frozenset("01"), 8: frozenset("01234567"), 10: frozenset("0123456789"),
           16: frozenset("0123456789abcdefABCDEF")}
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _go_parse_int(text: str, signed: bool = True) -> tuple[int | None, bool]:
    """strconv.ParseInt(text, 0, 64) (or ParseUint): the value, or None and whether the error is one of range."""
    digits, negative = text, False
    if signed and digits[:1] in ("+", "-"):
        negative, digits = digits[0] == "-", digits[1:]
    base = 10
    if digits[:2] in ("0x", "0X"):
        base, digits = 16, digits[2:]
    elif digits[:2] in ("0o", "0O"):
        base, digits = 8, digits[2:]
    elif digits[:2] in ("0b", "0B"):
        base, digits = 2, digits[2:]
    elif len(digits) > 1 and digits[0] == "0":
        base, digits = 8, digits[1:]
    if not digits or not _DIGITS[base].issuperset(digits):
        return None, False
    if base == 10 and len(digits) > 20:
        return None, True
    value = -int(digits, base) if negative else int(digits, base)
    low, high = _INT64 if signed else (0, (1 << 64) - 1)
    return (value, False) if low <= value <= high else (None, True)


def _resolve_yaml(tag: str, text: str) -> tuple[str, Any]:
    """go-yaml v2's resolve(): the tag and value of a plain scalar (or of one with a resolvable tag)."""
    if tag != _YAML_STR and tag != _YAML_BINARY and (not text or text[0] in "+-.0123456789" or text[0] in
                                                      _WORD_HINTS):
        if text in _YAML_WORDS:
            return _YAML_WORDS[text]
        hint = text[0]
        if hint == ".":
            if _YAML_FLOAT_RE.fullmatch(text):
                value = float(text)
                if not math.isinf(value):
                    return _YAML_FLOAT, value
        elif hint not in _WORD_HINTS:
            if (tag in ("", _YAML_TIMESTAMP)) and _TIMESTAMP_RE.fullmatch(text):
                return _YAML_TIMESTAMP, text
            plain = text.replace("_", "")
            number, _ = _go_parse_int(plain)
            if number is not None:
                return _YAML_INT, number
            number, out_of_range = _go_parse_int(plain, signed=False)
            if number is not None:
                return _YAML_INT, number
            if _YAML_FLOAT_RE.fullmatch(plain):
                value = float(plain)
                if not math.isinf(value):
                    return _YAML_FLOAT, value
            if out_of_range:
                # A big.Int: written into JSON as it is, where kube's decoder finds it beyond float64 unless it
                # is a (short) hexadecimal, octal or binary literal.
                if plain[:2] not in ("0x", "0X", "0o", "0O", "0b", "0B"):
                    raise _yaml_error(_cannot_unmarshal(plain).detail)
                return _YAML_INT, int(plain, 0)
    return _YAML_STR, text


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


class _YamlFailure(Exception):
    """A YAML body that does not decode, with the message kube's go-yaml would give (after `yaml: `)."""


def _yaml_error(message: str) -> _YamlFailure:
    return _YamlFailure(message)


def _yaml_scalar(event: Any) -> Any:
    """The JSON value of a scalar, as go-yaml v2 decodes it into interface{} and sigs.k8s.io/yaml turns it into
    JSON: timestamps stay strings, !!binary is decoded, unknown tags are ignored, NaN and ±Inf are refused."""
    tag = event.tag or ""
    text = event.value
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise _yaml_error(f"\\u{ord(text[error.start]):04x} is half of a UTF-16 surrogate pair, not a "
                              f"character") from None
    if tag == "!":
        return text
    if not tag and not event.implicit[0]:
        return text  # quoted
    if tag == _YAML_BINARY:
        try:
            raw = base64.b64decode(text.replace("\n", "").replace("\r", ""), validate=True)
        except (binascii.Error, ValueError):
            raise _yaml_error("!!binary value contains invalid base64 data") from None
        return raw.decode("utf-8", "replace")
    if tag and tag not in _RESOLVABLE:
        return text
    resolved_tag, value = _resolve_yaml(tag, text)
    if tag and tag not in (resolved_tag, _YAML_STR):
        if tag == _YAML_FLOAT and resolved_tag == _YAML_INT:
            value = float(value)
        else:
            raise _yaml_error(f"cannot decode {_short_tag(resolved_tag)} `{_number_text(text)}` as a "
                              f"{_short_tag(tag)}")
    if tag == _YAML_STR:
        return text
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _yaml_error(f"json: unsupported value: {'NaN' if math.isnan(value) else '+Inf' if value > 0 else '-Inf'}")
        if value.is_integer() and abs(value) < 1e21:
            return int(value)  # JSON writes it as an integer
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        try:
            return float(value)
        except OverflowError:
            raise _yaml_error(_cannot_unmarshal(text).detail) from None
    return value


def _yaml_key(value: Any) -> str:
    """A mapping key as sigs.k8s.io/yaml turns it into a JSON object's key."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if value is None:
        raise _yaml_error("unsupported map key: null")
    raise _yaml_error(f"invalid map key: {_kind(value)}")


def _kind(value: Any) -> str:
    return "a mapping" if isinstance(value, dict) else "a sequence" if isinstance(value, list) else "a scalar"


class _Collection:
    """An open sequence or mapping of the document being built."""

    __slots__ = ("value", "anchor", "size", "height", "key", "expect_key", "merge")

    def __init__(self, value: Any, anchor: str | None):
        self.value = value
        self.anchor = anchor
        self.size = 1
        self.height = 1
        self.key: str | None = None
        self.expect_key = isinstance(value, dict)
        self.merge = False


class _YamlBuilder:
    """Builds one YAML document's JSON value from parser events, without recursion: nesting past MAX_DEPTH,
    more than max_values values (aliases counted as what they expand to, so a "billion laughs" stops at once),
    aliases of unknown or unfinished anchors and non-scalar keys are refused; merge keys work as in go-yaml v2."""

    def __init__(self, max_values: int):
        self.max_values = max_values
        self.values = 0
        self.stack: list[_Collection] = []
        self.anchors: dict[str, tuple[Any, int, int]] = {}
        self.duplicates: list[str] = []
        self.root: Any = None

    def count(self, size: int, alias: bool) -> None:
        self.values += size
        if self.values > self.max_values:
            if alias:
                raise _yaml_error(f"document contains excessive aliasing: it expands to more than "
                                  f"{self.max_values} values")
            raise BodyError(BodyError.VALUES, values_detail(self.max_values))

    def scalar(self, event: Any) -> None:
        top = self.stack[-1] if self.stack else None
        if top is not None and top.expect_key:
            if event.value == "<<" and ((not event.tag and event.implicit[0]) or event.tag == _YAML_MERGE):
                top.merge = True
            else:
                top.key = _yaml_key(_yaml_scalar(event))
            top.expect_key = False
            if event.anchor:
                self.anchors[event.anchor] = (_yaml_scalar(event), 1, 0)
            return
        value = _yaml_scalar(event)
        self.count(1, False)
        if event.anchor:
            self.anchors[event.anchor] = (value, 1, 0)
        self.add(value, 1, 0)

    def alias(self, event: Any) -> None:
        anchor = event.anchor
        if anchor not in self.anchors:
            if any(c.anchor == anchor for c in self.stack):
                raise _yaml_error(f"anchor '{anchor}' value contains itself")
            raise _yaml_error(f"unknown anchor '{anchor}' referenced")
        value, size, height = self.anchors[anchor]
        top = self.stack[-1] if self.stack else None
        if top is not None and top.expect_key:
            top.key = _yaml_key(value)
            top.expect_key = False
            return
        if len(self.stack) + height > MAX_DEPTH:
            raise BodyError(BodyError.DEPTH, depth_detail())
        self.count(size, True)
        self.add(copy_json(value), size, height)

    def start(self, event: Any, value: Any) -> None:
        top = self.stack[-1] if self.stack else None
        if top is not None and top.expect_key:
            raise _yaml_error(f"invalid map key: {_kind(value)} cannot be a key")
        if len(self.stack) >= MAX_DEPTH:
            raise BodyError(BodyError.DEPTH, depth_detail())
        self.count(1, False)
        self.stack.append(_Collection(value, event.anchor))

    def end(self) -> None:
        done = self.stack.pop()
        if done.anchor:
            self.anchors[done.anchor] = (done.value, done.size, done.height)
        self.add(done.value, done.size, done.height)

    def add(self, value: Any, size: int, height: int) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if top.merge:
            self.merge(top.value, value)
        else:
            key = top.key
            assert key is not None
            if key in top.value:
                self.duplicates.append(self.path(key))
            top.value[key] = value
        top.key, top.merge, top.expect_key = None, False, True

    def path(self, key: str) -> str:
        """The full path of a key of the innermost open mapping (`spec.versionPriority`)."""
        path = ""
        for collection in self.stack[:-1]:
            if isinstance(collection.value, list):
                path += f"[{len(collection.value)}]"
            elif collection.key is not None:
                path = f"{path}.{collection.key}" if path else str(collection.key)
        return f"{path}.{key}" if path else key

    @staticmethod
    def merge(target: dict[str, Any], source: Any) -> None:
        """go-yaml v2's merge: a mapping, or a sequence of mappings (the earlier ones winning), set into the
        mapping being built over what it already holds."""
        sources = list(reversed(source)) if isinstance(source, list) else [source]
        if not all(isinstance(s, dict) for s in sources):
            raise _yaml_error("map merge requires map or sequence of maps as the value")
        for mapping in sources:
            target.update(copy_json(mapping))


def _yaml_parser(text: str) -> Any:
    """An event parser: libyaml's when PyYAML has it (about twenty times faster), else PyYAML's own."""
    loader_class = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    return loader_class(text)


def _yaml_documents(text: str, max_values: int) -> list[tuple[Any, list[str]]]:
    """The non-empty documents of a YAML stream, each as a JSON value with its duplicate keys."""
    parser = _yaml_parser(text)
    documents: list[tuple[Any, list[str]]] = []
    builder = _YamlBuilder(max_values)
    try:
        while True:
            event = parser.get_event()
            if isinstance(event, yaml.StreamEndEvent):
                return documents
            if isinstance(event, yaml.DocumentStartEvent):
                builder.stack, builder.root, builder.duplicates, builder.anchors = [], None, [], {}
            elif isinstance(event, yaml.DocumentEndEvent):
                if builder.root is not None:
                    documents.append((builder.root, builder.duplicates))
                    if len(documents) > 1:
                        return documents
            elif isinstance(event, yaml.ScalarEvent):
                builder.scalar(event)
            elif isinstance(event, yaml.AliasEvent):
                builder.alias(event)
            elif isinstance(event, yaml.SequenceStartEvent):
                builder.start(event, [])
            elif isinstance(event, yaml.MappingStartEvent):
                builder.start(event, {})
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                builder.end()
    finally:
        parser.dispose()


def _yaml_message(error: yaml.YAMLError) -> str:
    """go-yaml's way of saying where a YAML body is malformed: `line N: problem` (libyaml's marks, as go-yaml
    numbers them: a scanner error's line is counted from 1, a parser error's is the line after the problem)."""
    problem = getattr(error, "problem", None)
    if not problem:
        return str(error).split("\n", 1)[0]
    mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
    line = 0
    if mark is not None and mark.line != 0:
        line = mark.line + (1 if isinstance(error, yaml.scanner.ScannerError) else 0)
    elif context is not None and context.line != 0:
        line = context.line
    return f"line {line}: {problem}" if line else str(problem)


def load_yaml(data: bytes, max_values: int = MAX_DOCUMENT_VALUES) -> Decoded:
    """Decode a single YAML document as kube turns YAML into JSON; BodyError says what is wrong with it.

    JSON (what kubectl sends, even as application/apply-patch+yaml) is decoded as JSON, much faster.
    """
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            return load_json(data, max_values, yaml_numbers=True)
        except BodyError as error:
            if error.kind != BodyError.SYNTAX:
                raise
        # Flow-style YAML such as {a: b}: decoded as YAML below.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(BodyError.UNICODE, f"invalid UTF-8 at byte {error.start}") from None
    try:
        documents = _yaml_documents(text, max_values)
    except _YamlFailure as error:
        raise BodyError(BodyError.SYNTAX, f"yaml: {error}") from None
    except yaml.YAMLError as error:
        raise BodyError(BodyError.SYNTAX, f"yaml: {_yaml_message(error)}") from None
    if len(documents) > 1:
        raise BodyError(BodyError.SYNTAX, "the request body holds more than one YAML document")
    if not documents:
        return Decoded(None)
    value, duplicates = documents[0]
    return Decoded(value, tuple(duplicates))


def decode_yaml(data: bytes, max_values: int = MAX_DOCUMENT_VALUES) -> Decoded:
    """Decode a single YAML document; malformed YAML is a 400, a body holding more than max_values values a 413."""
    try:
        return load_yaml(data, max_values)
    except BodyError as error:
        if error.kind == BodyError.SYNTAX and error.detail == "the request body holds more than one YAML document":
            raise StatusError(400, error.detail, "BadRequest") from None
        raise _body_status(error, max_values, "error converting YAML to JSON: ") from None


def decode_object(data: bytes, content_type: str | None, max_values: int = MAX_OBJECT_VALUES) -> Decoded:
    """Decode a create/update body by Content-Type (JSON when none is given); other types are 415, an object
    holding more values than the kind's max_values a 413 (check_object_size)."""
    kind = media_type(content_type)
    if kind in ("", JSON):
        decoded = decode_json(data, 2 * max_values)
    elif kind in (YAML, "application/x-yaml", "text/yaml"):
        decoded = decode_yaml(data, 2 * max_values)
    else:
        decoded = None
    if decoded is not None:
        check_object_size(decoded.value, max_values=max_values)
        return decoded
    raise StatusError(415, f"the body of the request was in an unknown format - accepted media types include: "
                           f"{JSON}, {YAML}", "UnsupportedMediaType")


@frozen
class Encoded:
    """A response body already encoded in the negotiated encoding (a large one, encoded a part at a time)."""

    data: bytes


def encode(value: Any, encoding: str) -> bytes:
    """Serialise a response body in the negotiated encoding (an Encoded body is already serialised)."""
    if isinstance(value, Encoded):
        return value.data
    if encoding == YAML:
        return yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True).encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
