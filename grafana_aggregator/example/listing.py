# -*- test-case-name: tests.test_example_listing -*-
"""Listing the example server's `dummy` objects as kube's generic registry store lists a collection.

The objects never change (one resourceVersion, "1"), so a list is a pure function of its options:
label and field selectors (`metadata.name`, `metadata.namespace`), `limit` pages with kube's continue
tokens and `remainingItemCount`, and `resourceVersion`/`resourceVersionMatch`.  Each rule and message
is the one k8s.io/apiserver applies, so kubectl (`-l`, `--field-selector`, `--chunk-size`) and
client-go pagers behave here as against any kube-apiserver:

- Items are in storage-key order: the name within a namespace, `<namespace>/<name>` across namespaces.
- A page of `limit` items carries a continue token when any stored item follows its last item (even
  one the selectors would drop), and `remainingItemCount` only when no selector was given.
- The token is kube's: unpadded URL-safe base64 of `{"v":"meta.k8s.io/v1","rv":<rv>,"start":<key>}`,
  the key relative to the listed collection and just after the last item (`<key>\\x00`).  A token that
  does not decode is the 400 `invalid continue token: continue key is not valid…` with the reason kube
  gives; `resourceVersion` next to a token is the 400 `specifying resource version is not allowed
  when using continue`.  A token whose resourceVersion is negative continues at the current list.
- An exact `metadata.name` requirement in one namespace reads that one key: no paging, no token.
- An all-namespaces list holds the objects of `default` and of the namespace an exact
  `metadata.namespace` requirement names (kube narrows such a list to that namespace).
- Versions: this collection only ever had resourceVersion 1.  Asking for a later one, or continuing a
  token of a later one, is kube's 504 `Too large resource version`; `resourceVersionMatch=Exact` for an
  earlier one is kube's 410 `The resourceVersion for the provided list is too old.`  (kube's other 410,
  a continue token older than etcd's compaction, cannot happen: there is no older version.)
"""

from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Callable, Sequence
from typing import Any

from ..apimachinery.gotypes import json_kind
from ..apimachinery.query import ListOptions, Query, list_options, list_options_invalid, parse_resource_version
from ..apimachinery.status import StatusError
from ..apimachinery.strategy import Object
from ..apimachinery.validation import is_dns1123_label

#: The one resourceVersion of the collection (and of every object in it).
RESOURCE_VERSION = 1
CONTINUE_VERSION = "meta.k8s.io/v1"

_INVALID_KEY = "continue key is not valid"
_INT64 = (-(1 << 63), (1 << 63) - 1)
_URL_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# --------------------------------------------------------------------------------------------------------------
# Continue tokens


def encode_continue(resource_version: int, start: str) -> str:
    """kube's continue token: unpadded URL-safe base64 of the JSON `{"v","rv","start"}`."""
    raw = json.dumps({"v": CONTINUE_VERSION, "rv": resource_version, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    """The resourceVersion and start key of a continue token, or kube's 400 `invalid continue token: …`."""
    try:
        return _decode_continue(token)
    except _InvalidToken as error:
        raise StatusError(400, f"invalid continue token: {error}", "BadRequest") from None


class _InvalidToken(Exception):
    """Why a continue token is not valid, worded as storage.DecodeContinue words it."""


def _decode_continue(token: str) -> tuple[int, str]:
    data = _raw_url_b64decode(token.encode("utf-8"))
    fields = _unmarshal_token(data)
    version, resource_version, start = fields["v"], fields["rv"], fields["start"]
    if version != CONTINUE_VERSION:
        raise _InvalidToken(f"{_INVALID_KEY}: server does not recognize this encoded version {version}")
    if resource_version == 0:
        raise _InvalidToken(f"{_INVALID_KEY}: incorrect encoded start resourceVersion (version {CONTINUE_VERSION})")
    if not start:
        raise _InvalidToken(f"{_INVALID_KEY}: encoded start key empty (version {CONTINUE_VERSION})")
    key = start if start.startswith("/") else "/" + start
    if _clean_path(key) != key:  # kube refuses keys that would climb out of the listed collection
        raise _InvalidToken(f"{_INVALID_KEY}: {start}")
    return resource_version, key[1:]


def _clean_path(path: str) -> str:
    """Go's path.Clean for a rooted path (posixpath keeps a leading `//`; Go does not)."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _raw_url_b64decode(data: bytes) -> bytes:
    """Go's base64.RawURLEncoding.DecodeString: no padding, newlines ignored, errors at a byte offset."""
    for offset, byte in enumerate(data):
        if byte not in _URL_ALPHABET and byte not in b"\r\n":
            raise _InvalidToken(f"{_INVALID_KEY}: illegal base64 data at input byte {offset}")
    symbols = bytes(b for b in data if b in _URL_ALPHABET)
    if len(symbols) % 4 == 1:
        raise _InvalidToken(f"{_INVALID_KEY}: illegal base64 data at input byte {len(data) - 1}")
    return base64.urlsafe_b64decode(symbols + b"=" * (-len(symbols) % 4))


class _Number(str):
    """A JSON number that is not an integer, kept as its literal (Go names it in type errors)."""


class _Constant(Exception):
    """NaN or Infinity, which Python's json accepts and Go's does not."""


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


#: The continue token's fields: JSON name → Go type.
_TOKEN_FIELDS = {"v": "string", "rv": "int64", "start": "string", "rc": "int64"}


def _unmarshal_token(data: bytes) -> dict[str, Any]:
    """encoding/json.Unmarshal into storage's continueToken, with Go's error messages."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        value = json.loads(text, parse_float=_Number, parse_constant=_reject_constant)
    except _Constant as constant:
        where = "in numeric literal" if str(constant).startswith("-") else "looking for beginning of value"
        raise _InvalidToken(f"{_INVALID_KEY}: invalid character {_quote_char(ord(str(constant).lstrip('-')[0]))} "
                            f"{where}") from None
    except json.JSONDecodeError as error:
        raise _InvalidToken(f"{_INVALID_KEY}: {_syntax_error(text, error)}") from None
    except RecursionError:  # nested deeper than Python decodes: refused with Go's words for nesting past its limit
        raise _InvalidToken(f"{_INVALID_KEY}: exceeded max depth") from None
    fields: dict[str, Any] = {"v": "", "rv": 0, "start": "", "rc": 0}
    if value is None:
        return fields
    if not isinstance(value, dict):
        raise _InvalidToken(f"{_INVALID_KEY}: json: cannot unmarshal {_json_kind(value)} into Go value of type "
                            "storage.continueToken")
    first_error: str | None = None
    for key, item in value.items():
        name = key if key in _TOKEN_FIELDS else next((f for f in _TOKEN_FIELDS if f == key.lower()), None)
        if name is None or item is None:
            continue
        go_type = _TOKEN_FIELDS[name]
        if go_type == "string" and isinstance(item, str) and not isinstance(item, _Number):
            fields[name] = item.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        elif (go_type == "int64" and isinstance(item, int) and not isinstance(item, bool)
              and _INT64[0] <= item <= _INT64[1]):
            fields[name] = item
        elif first_error is None:
            kind = _json_kind(item)
            if kind == "number" and go_type == "int64":
                kind = f"number {item}"
            first_error = (f"json: cannot unmarshal {kind} into Go struct field continueToken.{name} "
                           f"of type {go_type}")
    if first_error is not None:
        raise _InvalidToken(f"{_INVALID_KEY}: {first_error}")
    return fields


def _json_kind(value: Any) -> str:
    """encoding/json's name for a value, a number kept as its text (`_Number`) included."""
    return "number" if isinstance(value, _Number) else json_kind(value)


def _syntax_error(text: str, error: json.JSONDecodeError) -> str:
    """encoding/json's SyntaxError text for what Python's decoder found."""
    if error.pos >= len(text) or error.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    position = error.pos
    if error.msg.startswith("Expecting value") and text[position] in "ntf":
        return _literal_error(text, position)
    if error.msg.startswith("Expecting value") and text[position] == "-":
        position += 1
        context = "in numeric literal"
    elif error.msg.startswith("Expecting value") or error.msg.startswith("Unexpected UTF-8 BOM"):
        context = "looking for beginning of value"
    elif error.msg.startswith("Extra data"):
        context = "after top-level value"
    elif error.msg.startswith("Expecting property name"):
        context = "looking for beginning of object key string"
    elif error.msg.startswith("Expecting ':'"):
        context = "after object key"
    elif error.msg.startswith("Expecting ','"):
        context = "after object key:value pair" if _innermost(text, position) == "{" else "after array element"
    elif error.msg.startswith("Invalid control character"):
        context = "in string literal"
    elif error.msg.startswith("Invalid \\uXXXX"):
        position = next((i for i in range(position + 2, min(position + 6, len(text)))
                         if text[i] not in "0123456789abcdefABCDEF"), position)
        context = "in \\u hexadecimal character escape"
    elif error.msg.startswith("Invalid \\escape"):
        position += 1
        context = "in string escape code"
    else:
        return error.msg
    if position >= len(text):
        return "unexpected end of JSON input"
    return f"invalid character {_quote_char(_first_byte(text[position]))} {context}"


def _literal_error(text: str, position: int) -> str:
    """Go's error for a value starting like null, true or false that is not one."""
    literal = {"n": "null", "t": "true", "f": "false"}[text[position]]
    for expected, found in zip(literal, text[position:]):
        if found != expected:
            return (f"invalid character {_quote_char(_first_byte(found))} in literal {literal} "
                    f"(expecting {_quote_char(ord(expected))})")
    return "unexpected end of JSON input"


def _innermost(text: str, end: int) -> str:
    """The innermost bracket open at `end` ("{" or "["), skipping strings."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _first_byte(char: str) -> int:
    if "\udc80" <= char <= "\udcff":  # an undecodable byte, kept by surrogateescape
        return ord(char) - 0xDC00
    return char.encode("utf-8", "surrogatepass")[0]


def _quote_char(byte: int) -> str:
    """encoding/json's quoteChar: the offending byte as Go quotes it."""
    if byte == ord("'"):
        return "'\\''"
    if byte == ord('"'):
        return "'\"'"
    escapes = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 92: "\\\\"}
    if byte in escapes:
        return f"'{escapes[byte]}'"
    if byte < 0x20 or byte == 0x7F:
        return f"'\\x{byte:02x}'"
    if 0x80 <= byte <= 0xA0 or byte == 0xAD:  # Go quotes the byte as the rune U+00XX; these are not printable
        return f"'\\u{byte:04x}'"
    return f"'{chr(byte)}'"


# --------------------------------------------------------------------------------------------------------------
# Lists


def too_large(wanted: int) -> StatusError:
    """kube's 504 for a resourceVersion the collection has not reached."""
    return StatusError(504, f"Too large resource version: {wanted}, current: {RESOURCE_VERSION}", "Timeout",
                       {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                        "retryAfterSeconds": 1})


def list_page(query: Query, namespace: str | None, objects_in: Callable[[str], Sequence[Object]],
              default_namespace: str) -> tuple[list[Object], dict[str, Any]]:
    """The items and list metadata a `dummy` list answers, for a namespace or (None) all namespaces.

    `objects_in(ns)` gives the objects of one namespace; raises StatusError as kube would answer.
    """
    options = list_options(query)
    if options.match and options.continue_token:
        raise list_options_invalid("resourceVersionMatch",
                                   "Forbidden: resourceVersionMatch is forbidden when continue is provided")
    pinned = options.fields.requires_exact_match("metadata.namespace")
    if pinned is not None and is_dns1123_label(pinned):
        pinned = None
    scoped = namespace is not None or pinned is not None
    name = options.fields.requires_exact_match("metadata.name")
    if name is not None and scoped and not options.continue_token:
        # kube reads the one key the name selects: no paging and no token, whatever the limit.
        _check_version(options)
        scope = namespace or pinned or default_namespace
        items = [o for o in objects_in(scope) if o["metadata"]["name"] == name and _selected(o, options)]
        return items, {"resourceVersion": str(RESOURCE_VERSION)}
    start = ""
    if options.continue_token:
        token_version, start = decode_continue(options.continue_token)
        if options.resource_version not in ("", "0"):
            raise StatusError(400, "specifying resource version is not allowed when using continue", "BadRequest")
        if token_version > RESOURCE_VERSION:
            raise too_large(token_version)
    else:
        _check_version(options)
    if namespace is not None:
        keyed = [(o["metadata"]["name"], o) for o in objects_in(namespace)]
    else:
        namespaces = sorted({default_namespace, *([pinned] if pinned else [])})
        keyed = [(f"{ns}/{o['metadata']['name']}", o) for ns in namespaces for o in objects_in(ns)]
    following = [(key, obj) for key, obj in sorted(keyed, key=lambda pair: pair[0]) if key >= start]
    return _page(following, options)


def _page(following: list[tuple[str, Object]], options: ListOptions) -> tuple[list[Object], dict[str, Any]]:
    """Fill a page as etcd3's GetList does: the token points just past the last item taken."""
    items: list[Object] = []
    meta: dict[str, Any] = {"resourceVersion": str(RESOURCE_VERSION)}
    limit = options.limit
    for index, (key, obj) in enumerate(following):
        if limit > 0 and len(items) >= limit:
            meta["continue"] = encode_continue(RESOURCE_VERSION, following[index - 1][0] + "\x00")
            if options.labels.is_empty() and options.fields.is_empty():
                meta["remainingItemCount"] = len(following) - limit
            break
        if _selected(obj, options):
            items.append(obj)
    return items, meta


def _selected(obj: Object, options: ListOptions) -> bool:
    meta = obj.get("metadata", {})
    fields = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    return bool(options.labels.matches(meta.get("labels") or {})) and bool(options.fields.matches(fields))


def _check_version(options: ListOptions) -> None:
    """`resourceVersion` (with `resourceVersionMatch`) against the collection's one version."""
    version = options.resource_version
    if not version or version == "0":
        return
    wanted = parse_resource_version(version)
    if wanted > RESOURCE_VERSION:
        raise too_large(wanted)
    if options.match == "Exact" and wanted != RESOURCE_VERSION:
        raise StatusError(410, "The resourceVersion for the provided list is too old.", "Expired")
