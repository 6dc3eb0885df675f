"""The query string and options of a REST call, parsed with kube's exact errors: dryRun, fieldValidation, fieldManager,
selectors, ListOptions with continue tokens, PatchOptions and DeleteOptions (propagationPolicy).

Every verb family reads its options here, so a bad option is reported the same way whichever verb meets it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import frozen

from .negotiation import APPLY_PATCH, decode_object
from .selectors import parse_field_selector, parse_label_selector
from .status import StatusError

#: A request's query string: each parameter with all its values, as `urllib.parse.parse_qs` gives them.
Query = Mapping[str, list[str]]


def flag(query: Query, name: str) -> bool:
    """A boolean parameter: present and not `0`/`false`."""
    values = query.get(name)
    return values is not None and values[0].lower() not in ("0", "false")


def single(query: Query, name: str) -> str:
    """The first value of a parameter, or the empty string."""
    return query.get(name, [""])[0]


def options_invalid(kind: str, field: str, reason: str, message: str) -> StatusError:
    """422 for a bad request option, as kube reports an invalid PatchOptions or DeleteOptions."""
    return StatusError(422, f'{kind}.meta.k8s.io "" is invalid: {field}: {message}', "Invalid", {
        "group": "meta.k8s.io", "kind": kind, "causes": [{"reason": reason, "message": message, "field": field}]})


def _check_dry_run(values: Iterable[Any]) -> None:
    for value in values:
        if value != "All":
            raise StatusError(400, f'dryRun: Unsupported value: "{value}": supported values: "All"', "BadRequest")


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


def field_manager(query: Query, user_agent: str | None) -> str:
    """`?fieldManager=`, or the client's User-Agent product as kube defaults it."""
    manager = single(query, "fieldManager")
    if manager:
        if len(manager) > 128:
            raise StatusError(422, "fieldManager: Too long: may not be more than 128 bytes", "Invalid")
        return manager
    agent = user_agent or ""
    return agent.split("/", 1)[0][:128] or "unknown"


def selectors(query: Query) -> tuple[Any, Any]:
    """The label and field selectors of a list, watch or deletecollection."""
    labels = parse_label_selector(single(query, "labelSelector"))
    allowed = ["metadata.name", "metadata.namespace"]
    fields = parse_field_selector(single(query, "fieldSelector"), allowed)
    return labels, fields


def parse_resource_version(text: str) -> int:
    """A `resourceVersion` parameter; this store's versions are integers."""
    try:
        return int(text)
    except ValueError:
        raise StatusError(400, f'resourceVersion: Invalid value: "{text}": must be an integer', "BadRequest") from None


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
    #: At most this many items per page; 0 for all.
    limit: int
    continue_token: str
    #: A label or field selector was given (so the remaining items cannot be counted).
    selective: bool


def list_options(query: Query) -> ListOptions:
    """Selectors, resourceVersionMatch and limit of a list, with kube's errors."""
    labels, fields = selectors(query)
    version = single(query, "resourceVersion")
    match = single(query, "resourceVersionMatch")
    if match and not version:
        raise list_options_invalid("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden "
                                                           "unless resourceVersion is provided")
    if match and match not in ("Exact", "NotOlderThan"):
        raise list_options_invalid("resourceVersionMatch", f'Unsupported value: "{match}": supported values: '
                                                           f'"Exact", "NotOlderThan"')
    limit_text = single(query, "limit")
    try:
        limit = int(limit_text) if limit_text else 0
    except ValueError:
        raise StatusError(400, f'limit: Invalid value: "{limit_text}": must be an integer', "BadRequest") from None
    selective = bool(single(query, "labelSelector") or single(query, "fieldSelector"))
    return ListOptions(labels, fields, version, match, limit, single(query, "continue"), selective)


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
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(raw["rv"]), str(raw["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise StatusError(400, "continue key is not valid: the continue token was not issued by this server",
                          "BadRequest") from None


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


def delete_options(query: Query, body: bytes, content_type: str | None) -> dict[str, Any]:
    """The DeleteOptions of a delete: the body's, with `?propagationPolicy=` first; both checked as kube does."""
    options: dict[str, Any] = {}
    if body.strip():
        decoded = decode_object(body, content_type).value
        if not isinstance(decoded, dict):
            raise StatusError(400, "DeleteOptions must be an object", "BadRequest")
        options = decoded
    policy = single(query, "propagationPolicy") or options.get("propagationPolicy")
    if policy and policy not in ("Orphan", "Background", "Foreground"):
        raise options_invalid("DeleteOptions", "propagationPolicy", "FieldValueNotSupported",
                              f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
                              f'"Orphan", "nil"')
    _check_dry_run(options.get("dryRun") or [])
    return options
