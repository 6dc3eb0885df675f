"""The query string and options of a REST call, parsed with kube's exact errors: dryRun, fieldValidation, fieldManager,
selectors, ListOptions with continue tokens, PatchOptions and DeleteOptions (propagationPolicy, preconditions).

Every verb family reads its options here, so a bad option is reported the same way whichever verb meets it, and
`rest.py` checks a request's options before its verb runs, so that a bad one is refused before any answer starts
(a watch's 200 included).  Numbers are parsed as Go's strconv parses them into kube's int64 options: no spaces,
underscores or non-ASCII digits, nothing past int64 (so never the thousands of digits Python's int() refuses).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from .gotypes import json_kind
from .fielderrors import FieldError, forbidden, invalid, not_supported, required, too_long
from .negotiation import APPLY_PATCH, BodyError, decode_object, load_json
from .selectors import parse_field_selector, parse_label_selector
from .gotypes import go_quote
from .status import StatusError

#: A request's query string: each parameter with all its values, as `urllib.parse.parse_qs` gives them.
Query = Mapping[str, list[str]]

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
_SIGNED = re.compile(r"[+-]?[0-9]+")
#: kube's FieldManagerMaxLength, in bytes.
FIELD_MANAGER_MAX_LENGTH = 128


def flag(query: Query, name: str) -> bool:
    """A boolean parameter: present and not `0`/`false`."""
    values = query.get(name)
    return values is not None and values[0].lower() not in ("0", "false")


def single(query: Query, name: str) -> str:
    """The first value of a parameter, or the empty string."""
    return query.get(name, [""])[0]


def _shown(text: str) -> str:
    """A parameter's value as a message quotes it (Go's %q), cut short when it is long."""
    return go_quote(text) if len(text) <= 64 else go_quote(text[:64]) + "…"


def parse_int64(name: str, text: str) -> int:
    """An int64 parameter as strconv.ParseInt(text, 10, 64) reads it; anything else is a 400 naming it."""
    if not _SIGNED.fullmatch(text):
        raise StatusError(400, f"{name}: Invalid value: {_shown(text)}: must be an integer", "BadRequest")
    digits = text.lstrip("+-").lstrip("0") or "0"
    value = (-int(digits) if text.startswith("-") else int(digits)) if len(digits) <= 19 else None
    if value is None or not _INT64[0] <= value <= _INT64[1]:
        raise StatusError(400, f"{name}: Invalid value: {_shown(text)}: must be an integer from {_INT64[0]} to "
                               f"{_INT64[1]}", "BadRequest")
    return value


def options_invalid(kind: str, field: str, reason: str, message: str) -> StatusError:
    """422 for a bad request option, as kube reports an invalid PatchOptions or DeleteOptions."""
    return invalid_options(kind, [FieldError(reason, field, message)])


def invalid_options(kind: str, errors: Sequence[FieldError]) -> StatusError:
    """kube's 422 for options that fail their validation (NewInvalid of `<kind>.meta.k8s.io`), errors aggregated."""
    listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    return StatusError(422, f'{kind}.meta.k8s.io "" is invalid: {listed}', "Invalid", {
        "group": "meta.k8s.io", "kind": kind,
        "causes": [{"reason": e.reason, "message": e.message, "field": e.path} for e in errors]})


def _check_dry_run(values: Iterable[Any]) -> None:
    for value in values:
        if value != "All":
            raise StatusError(400, f'dryRun: Unsupported value: "{value}": supported values: "All"', "BadRequest")


def _dry_run_errors(values: Sequence[str]) -> list[FieldError]:
    """ValidateDryRun: every value must be All (the bad list is printed as JSON, as Go prints a []string)."""
    if all(v == "All" for v in values):
        return []
    shown = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)
    return [FieldError("FieldValueNotSupported", "dryRun", f'Unsupported value: {shown}: supported values: "All"')]


def dry_run(query: Query) -> bool:
    """`?dryRun=All`: run the write without storing it."""
    values = query.get("dryRun", [])
    _check_dry_run(values)
    return bool(values)


def field_validation(query: Query) -> str:
    """`?fieldValidation=`: what unknown and duplicate fields cost (Ignore, Warn, the default, or Strict)."""
    value = single(query, "fieldValidation") or "Warn"
    if value not in ("Ignore", "Warn", "Strict"):
        raise StatusError(400, f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", '
                               f'"Strict", "Warn"', "BadRequest")
    return value


def _field_manager_errors(manager: str) -> list[FieldError]:
    """ValidateFieldManager: at most 128 bytes, every character printable."""
    errors: list[FieldError] = []
    if len(manager.encode("utf-8", "surrogatepass")) > FIELD_MANAGER_MAX_LENGTH:
        errors.append(too_long("fieldManager", FIELD_MANAGER_MAX_LENGTH))
    position = 0
    for char in manager:
        if not char.isprintable():
            errors.append(FieldError("FieldValueInvalid", "fieldManager",
                                     f"Invalid value: {_shown(manager)}: invalid character U+{ord(char):04X} "
                                     f"(at position {position})"))
        position += len(char.encode("utf-8", "surrogatepass"))
    return errors


def field_manager(query: Query, user_agent: str | None) -> str:
    """`?fieldManager=`, or the client's User-Agent product as kube defaults it."""
    manager = single(query, "fieldManager")
    if manager:
        if len(manager) > 128:
            raise StatusError(422, "fieldManager: Too long: may not be more than 128 bytes", "Invalid")
        return manager
    agent = user_agent or ""
    return agent.split("/", 1)[0][:128] or "unknown"


def write_options(query: Query, kind: str, patch_type: str | None = None) -> None:
    """Check the options of a write as kube's Validate{Create,Update,Patch,Delete}Options do, before the write:
    all their errors in one 422 for `kind` (CreateOptions, UpdateOptions, PatchOptions or DeleteOptions)."""
    errors: list[FieldError] = []
    manager = single(query, "fieldManager")
    if kind == "PatchOptions":
        if patch_type == APPLY_PATCH:
            if not manager:
                errors.append(required("fieldManager", "is required for apply patch"))
        elif "force" in query:
            errors.append(forbidden("force", "may not be specified for non-apply patch"))
    if kind != "DeleteOptions":
        errors += _field_manager_errors(manager)
    errors += _dry_run_errors(query.get("dryRun", []))
    if kind != "DeleteOptions":
        validation = single(query, "fieldValidation")
        if validation not in ("", "Ignore", "Strict", "Warn"):
            errors.append(not_supported("fieldValidation", validation, ["", "Ignore", "Strict", "Warn"]))
    if errors:
        raise invalid_options(kind, errors)


#: The fields every kind can be selected by (kube's ObjectMetaFieldsSet).
OBJECT_META_FIELDS = ("metadata.name", "metadata.namespace")


def selectors(query: Query, allowed: Collection[str] = OBJECT_META_FIELDS) -> tuple[Any, Any]:
    """The label and field selectors of a list, watch or deletecollection (fields among the kind's allowed)."""
    labels = parse_label_selector(single(query, "labelSelector"))
    fields = parse_field_selector(single(query, "fieldSelector"), allowed)
    return labels, fields


#: Selectors longer than this (in characters) take milliseconds to parse: a list or watch lets the reactor run
#: between parsing them and reading the store.
COSTLY_SELECTORS = 1024
#: A list of more objects than this lets the reactor run between reading the store and answering.
COSTLY_LIST = 500


async def let_reactor_run(clock: IReactorTime) -> None:
    """Give the reactor a turn between two costly steps of one request (milliseconds each), so that no request
    holds it for long: other requests, timers and I/O run in between."""
    await deferLater(clock, 0, lambda: None)


def costly_selectors(query: Query) -> bool:
    """Whether the selectors were long enough that parsing them took milliseconds of the reactor's time."""
    return len(single(query, "labelSelector")) + len(single(query, "fieldSelector")) > COSTLY_SELECTORS


def parse_resource_version(text: str) -> int:
    """A `resourceVersion` parameter; this store's versions are integers (at most 64 bits, digits only)."""
    digits = text.lstrip("+-").lstrip("0") or "0"
    value = None
    if _SIGNED.fullmatch(text) and len(digits) <= 20:
        value = -int(digits) if text.startswith("-") else int(digits)
    if value is None or not _INT64[0] <= value <= _UINT64_MAX:
        raise StatusError(400, f"resourceVersion: Invalid value: {_shown(text)}: must be an integer", "BadRequest")
    return value


def timeout_seconds(query: Query, default: float) -> float:
    """A watch's `timeoutSeconds`: an int64; a negative one ends the watch at once (kube's timer fires at once),
    none or 0 gives the default."""
    text = single(query, "timeoutSeconds")
    if not text:
        return default
    seconds = parse_int64("timeoutSeconds", text)
    return default if seconds == 0 else float(max(seconds, 0))


# -- ListOptions -----------------------------------------------------------------------------------


@frozen
class ListOptions:
    """What a list asks for, checked before the store is read."""

    labels: Any
    fields: Any
    #: `resourceVersion`, unparsed: "" and "0" mean any version.
    resource_version: str
    #: `resourceVersionMatch`: "", "Exact" or "NotOlderThan".
    match: str
    #: At most this many items per page; 0 (or less) for all.
    limit: int
    continue_token: str
    #: A label or field selector was given (so the remaining items cannot be counted).
    selective: bool


def list_options(query: Query, watch: bool = False, allowed: Collection[str] = OBJECT_META_FIELDS) -> ListOptions:
    """Selectors, resourceVersion, resourceVersionMatch, limit and continue of a list (or watch), with kube's
    errors: a 400 for a parameter that does not parse, the 422 of ValidateListOptions for a bad combination.
    The resourceVersion is left for the store's own parse (`parse_resource_version` for this server's)."""
    labels, fields = selectors(query, allowed)
    version = single(query, "resourceVersion")
    match = single(query, "resourceVersionMatch")
    continue_token = single(query, "continue")
    limit_text = single(query, "limit")
    limit = parse_int64("limit", limit_text) if limit_text else 0
    errors: list[FieldError] = []
    if watch:
        if match:
            errors.append(forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless "
                                                            "sendInitialEvents is provided"))
            if match != "NotOlderThan":
                errors.append(not_supported("resourceVersionMatch", match, ["NotOlderThan"]))
            if continue_token:
                errors.append(forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue "
                                                                "is provided"))
    elif match:
        if not version:
            errors.append(forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden unless "
                                                            "resourceVersion is provided"))
        if continue_token:
            errors.append(forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is "
                                                            "provided"))
        if match not in ("Exact", "NotOlderThan"):
            errors.append(not_supported("resourceVersionMatch", match, ["Exact", "NotOlderThan", ""]))
        if match == "Exact" and version == "0":
            errors.append(forbidden("resourceVersionMatch", 'resourceVersionMatch "exact" is forbidden for '
                                                            'resourceVersion "0"'))
    if errors:
        raise invalid_options("ListOptions", errors)
    selective = bool(single(query, "labelSelector") or single(query, "fieldSelector"))
    return ListOptions(labels, fields, version, match, limit, continue_token, selective)


def list_options_invalid(field: str, message: str) -> StatusError:
    """422 for a bad ListOptions field."""
    return StatusError(422, f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}', "Invalid", {
        "group": "meta.k8s.io", "kind": "ListOptions",
        "causes": [{"reason": "FieldValueForbidden" if message.startswith("Forbidden") else "FieldValueNotSupported",
                    "message": message, "field": field}]})


def encode_continue(resource_version: int, start_after: str) -> str:
    """The opaque continue token of a paged list."""
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": resource_version, "start": start_after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    """Read a continue token; a token this server did not issue is a 400."""
    refused = StatusError(400, "continue key is not valid: the continue token was not issued by this server",
                          "BadRequest")
    try:
        raw = load_json(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), 16).value
    except (ValueError, binascii.Error, BodyError):
        raise refused from None
    version = raw.get("rv") if isinstance(raw, dict) else None
    start = raw.get("start") if isinstance(raw, dict) else None
    if (not isinstance(version, int) or isinstance(version, bool) or not 0 < version <= _INT64[1]
            or not isinstance(start, str)):
        raise refused
    return version, start


# -- PatchOptions and DeleteOptions ----------------------------------------------------------------


@frozen
class PatchOptions:
    """Who patches and whether an apply takes over conflicting fields."""

    manager: str
    force: bool


def patch_options(query: Query, patch_type: str, user_agent: str | None) -> PatchOptions:
    """`force` (apply only) and `fieldManager` (required for apply) of a patch of the given media type."""
    force = flag(query, "force")
    if "force" in query and patch_type != APPLY_PATCH:
        raise options_invalid("PatchOptions", "force", "FieldValueForbidden",
                              "Forbidden: may not be specified for non-apply patch")
    manager = single(query, "fieldManager")
    if patch_type == APPLY_PATCH and not manager:
        raise options_invalid("PatchOptions", "fieldManager", "FieldValueRequired",
                              "Required value: is required for apply patch")
    return PatchOptions(manager or field_manager(query, user_agent), force)


#: DeleteOptions' fields and their Go types, as json.Unmarshal names them in its errors.
_DELETE_OPTIONS_TYPES = {
    "kind": "string", "apiVersion": "string", "gracePeriodSeconds": "int64", "preconditions": "v1.Preconditions",
    "orphanDependents": "bool", "propagationPolicy": "v1.DeletionPropagation", "dryRun": "[]string",
    "ignoreStoreReadErrorWithClusterBreakingPotential": "bool",
}
_PRECONDITIONS_TYPES = {"uid": "types.UID", "resourceVersion": "string"}


def _fits(value: Any, go_type: str) -> bool:
    """Whether a decoded JSON value (not null) decodes into a Go field of this type."""
    if go_type == "int64":
        return isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]
    if go_type == "bool":
        return isinstance(value, bool)
    if go_type == "[]string":
        return isinstance(value, list)
    if go_type == "v1.Preconditions":
        return isinstance(value, dict)
    return isinstance(value, str)


def _type_error(value: Any, struct: str, path: str, go_type: str) -> StatusError:
    shown = json_kind(value)
    if go_type == "int64" and shown == "number":
        shown = f"number {json.dumps(value)}"
    return StatusError(400, f"json: cannot unmarshal {shown} into Go struct field {struct}.{path} of type {go_type}",
                       "BadRequest")


def _decoded_delete_options(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A DeleteOptions body decoded into kube's Go struct: a field of the wrong JSON type is json.Unmarshal's 400
    (kube itself lets that error through as a 500); unknown fields are dropped, nulls mean unset."""
    decoded = decode_object(body, content_type).value
    if decoded is None:
        return {}  # `null` decodes into nothing, as json.Unmarshal leaves the struct alone
    if not isinstance(decoded, dict):
        raise StatusError(400, f"json: cannot unmarshal {json_kind(decoded)} into Go value of type "
                               f"v1.DeleteOptions", "BadRequest")
    options: dict[str, Any] = {}
    for name, go_type in _DELETE_OPTIONS_TYPES.items():
        value = decoded.get(name)
        if value is None:
            continue
        if not _fits(value, go_type):
            raise _type_error(value, "DeleteOptions", name, go_type)
        if go_type == "[]string":
            for item in value:
                if not isinstance(item, str):
                    raise _type_error(item, "DeleteOptions", name, "string")
        if go_type == "v1.Preconditions":
            value = {key: value[key] for key in _PRECONDITIONS_TYPES if value.get(key) is not None}
            for key, key_type in _PRECONDITIONS_TYPES.items():
                if key in value and not isinstance(value[key], str):
                    raise _type_error(value[key], "Preconditions", f"preconditions.{key}", key_type)
        options[name] = value
    return options


def delete_options(query: Query, body: bytes, content_type: str | None) -> dict[str, Any]:
    """The DeleteOptions of a delete: the body's, with the query's parameters first; both checked as kube does
    (types as json.Unmarshal, then ValidateDeleteOptions' 422)."""
    options: dict[str, Any] = _decoded_delete_options(body, content_type) if body.strip() else {}
    if single(query, "propagationPolicy"):
        options["propagationPolicy"] = single(query, "propagationPolicy")
    if "orphanDependents" in query:
        options["orphanDependents"] = flag(query, "orphanDependents")
    if single(query, "gracePeriodSeconds"):
        options["gracePeriodSeconds"] = parse_int64("gracePeriodSeconds", single(query, "gracePeriodSeconds"))
    if "dryRun" in query:
        options["dryRun"] = query["dryRun"]
    errors: list[FieldError] = []
    policy = options.get("propagationPolicy")
    if "orphanDependents" in options and policy is not None:
        errors.append(invalid("propagationPolicy", policy, "orphanDependents and deletionPropagation cannot be both "
                                                           "set"))
    if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
        errors.append(not_supported("propagationPolicy", policy, ["Foreground", "Background", "Orphan", "nil"]))
    errors += _dry_run_errors(options.get("dryRun") or [])
    if errors:
        raise invalid_options("DeleteOptions", errors)
    return options
