"""The read verbs: get one object and list a collection (selectors, resourceVersion semantics, paging with continue
tokens), each answered as objects or as a Table.
"""

from __future__ import annotations

from typing import Any

from .query import decode_continue, encode_continue, list_options, parse_resource_version
from .resourcerequest import ResourceRequest, respond
from .status import StatusError
from .strategy import Object


async def get(call: ResourceRequest) -> None:
    """GET one object."""
    target = call.target
    try:
        obj = await call.store.get(target.collection, target.key_namespace, target.name)
    except Exception as error:
        raise call.storage_error(error, target.name) from None
    call.respond(200, obj)


async def list_collection(call: ResourceRequest) -> None:
    """GET a collection: the selected items, a page of them when limited, as of the resourceVersion asked for."""
    options = list_options(call.query)
    version = options.resource_version
    result = await call.store.list(call.target.collection, call.target.namespace)
    if version and version != "0":
        wanted = parse_resource_version(version)
        if wanted > result.resource_version:
            raise StatusError(504, f"Too large resource version: {wanted}, current: {result.resource_version}",
                              "Timeout", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                      "message": "Too large resource version"}],
                                          "retryAfterSeconds": 1})
        if options.match == "Exact" and wanted != result.resource_version:
            raise StatusError(410, "The resourceVersion for the provided list is too old.", "Expired")
    list_rv = result.resource_version
    start_after = ""
    if options.continue_token:
        list_rv, start_after = decode_continue(options.continue_token)
    items = [i for i in result.items if call.matches(i, options.labels, options.fields)]
    if start_after:
        items = [i for i in items if _key(i) > start_after]
    meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
    limit = options.limit
    if limit > 0 and len(items) > limit:
        remaining = len(items) - limit
        items = items[:limit]
        meta["continue"] = encode_continue(list_rv, _key(items[-1]))
        if not options.selective:
            meta["remainingItemCount"] = remaining
    if call.output.form == "table":
        respond(call.request, 200, call.table(items, meta), call.output, call.warnings)
        return
    respond(call.request, 200, {"kind": call.info.list_kind, "apiVersion": call.info.api_version,
                                "metadata": meta, "items": items}, call.output, call.warnings)


def _key(obj: Object) -> str:
    """Where an object sorts in a paged list (and where a continue token resumes)."""
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
