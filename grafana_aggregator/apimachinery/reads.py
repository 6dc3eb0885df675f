"""The read verbs: get one object and list a collection (selectors, resourceVersion semantics, paging with continue
tokens), each answered as objects or as a Table.

A list's options are all checked before the store is read; selectors match each object in time proportional to
its own labels (see selectors.py), so a selector of thousands of terms costs no more per object than a short one.
A list with long selectors, or of many objects, lets the reactor run between its costly steps (parsing, reading
the store, answering, and encoding a long YAML answer a batch at a time), so that no single step holds it for
long.
"""

from __future__ import annotations

from typing import Any

from .negotiation import YAML, Encoded, encode
from .query import (
    COSTLY_LIST,
    costly_selectors,
    decode_continue,
    encode_continue,
    let_reactor_run,
    list_options,
    parse_resource_version,
    single,
)
from ..storage import ExpiredError
from .resourcerequest import ResourceRequest, respond
from .status import StatusError
from .strategy import Object


async def get(call: ResourceRequest) -> None:
    """GET one object."""
    target = call.target
    try:
        if not single(call.query, "resourceVersion"):
            await call.store.sync()  # resourceVersion "": consistent, as kube reads it (not "0": any)
        obj = await call.store.get(target.collection, target.key_namespace, target.name)
    except Exception as error:
        raise call.storage_error(error, target.name) from None
    call.respond(200, call.kind.on_read(obj))


async def list_collection(call: ResourceRequest) -> None:
    """GET a collection: the selected items, a page of them when limited, as of the resourceVersion asked for."""
    options = list_options(call.query, allowed=call.kind.field_labels)
    version = options.resource_version
    if options.continue_token and version not in ("", "0"):
        raise StatusError(400, "specifying resource version is not allowed when using continue", "BadRequest")
    if costly_selectors(call.query):
        await let_reactor_run(call.clock)
    token_rv, start_after = decode_continue(options.continue_token) if options.continue_token else (0, "")
    try:
        if options.continue_token:
            # Every page comes from the first page's snapshot, as etcd (and kube over it) serves them.
            result = await call.store.list_at(call.target.collection, call.target.namespace, token_rv)
        else:
            if not version:
                await call.store.sync()  # resourceVersion "": consistent, as kube reads it (not "0": any)
            result = await call.store.list(call.target.collection, call.target.namespace)
    except ExpiredError:
        raise StatusError(410, "The provided continue parameter is too old to display a consistent list result. "
                               "You can start a new list without the continue parameter.", "Expired") from None
    except Exception as error:
        raise call.storage_error(error, "") from None
    if len(result.items) > COSTLY_LIST:
        await let_reactor_run(call.clock)
    if version and version != "0":
        wanted = parse_resource_version(version)
        if wanted > result.resource_version:
            raise StatusError(504, f"Too large resource version: {wanted}, current: {result.resource_version}",
                              "Timeout", {"causes": [{"reason": "ResourceVersionTooLarge",
                                                      "message": "Too large resource version"}],
                                          "retryAfterSeconds": 1})
        if options.match == "Exact" and wanted != result.resource_version:
            raise StatusError(410, "The resourceVersion for the provided list is too old.", "Expired")
    list_rv = token_rv or result.resource_version
    on_read = call.kind.on_read
    items = [item for item in map(on_read, result.items) if call.matches(item, options.labels, options.fields)]
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
        await _answer_list(call, call.table(items, meta), "rows")
        return
    await _answer_list(call, {"kind": call.info.list_kind, "apiVersion": call.info.api_version, "metadata": meta,
                              "items": items}, "items")


#: A YAML answer of more items than this is encoded a batch at a time, the reactor running in between: PyYAML
#: takes about a millisecond an object (JSON, written by C, a few microseconds).
YAML_BATCH = 25


async def _answer_list(call: ResourceRequest, body: dict[str, Any], key: str) -> None:
    """Answer with a list (or Table) whose items are under `key`, its last member."""
    items = body[key]
    if call.output.encoding == YAML and len(items) > YAML_BATCH:
        gone: list[object] = []
        call.request.notifyFinish().addBoth(gone.append)  # type: ignore[attr-defined]
        parts = [encode({name: value for name, value in body.items() if name != key}, YAML), f"{key}:\n".encode()]
        for start in range(0, len(items), YAML_BATCH):
            if start:
                await let_reactor_run(call.clock)
                if gone:
                    return  # the client went away meanwhile
            parts.append(encode(items[start:start + YAML_BATCH], YAML))
        respond(call.request, 200, Encoded(b"".join(parts)), call.output, call.warnings)
        return
    respond(call.request, 200, body, call.output, call.warnings)


def _key(obj: Object) -> str:
    """Where an object sorts in a paged list (and where a continue token resumes)."""
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
