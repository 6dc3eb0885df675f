"""The watch verb: a chunked stream of JSON watch events for a collection or one object, fed by the store,
with bookmarks, selector transitions, and an end by timeout, disconnect or server shutdown.

Every option (selectors, resourceVersion, timeoutSeconds, kube's watch ListOptions rules) is checked before
the 200 is written: once the stream has started, an error can only cut it short.

Each event is encoded and framed as an HTTP/1.1 chunk once however many watchers receive it (`_encoded_event`),
and the chunks go out through `streams.ChunkedStream`: written for every watcher by one delayed call once the
change's own answer is out, below twisted.web's `Request.write` (see `streams`).  A watcher whose client stops reading is ended once its backlog passes
`streams.MAX_BACKLOG`, as kube-apiserver ends a watcher whose buffer is full; the client sees a clean end of the
stream and watches again from the last resourceVersion it read.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Collection, Mapping
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ..storage import EXPIRED, ExpiredError, IWatch, WatchEvent
from .negotiation import JSON, Output
from .query import (
    COSTLY_LIST,
    costly_selectors,
    flag,
    let_reactor_run,
    list_options,
    parse_resource_version,
    timeout_seconds,
)
from .resourcerequest import ResourceRequest, content_type
from .status import StatusError
from .strategy import Object
from . import streams
from .streams import ChunkedStream, chunk

_log = Logger()

#: A watch without timeoutSeconds ends after a random time in [MIN_REQUEST_TIMEOUT, 2×), as in kube.
MIN_REQUEST_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 60.0


async def watch(call: ResourceRequest, watches: set[WatchStream]) -> None:
    """GET with `?watch=true` or under `/watch/`: stream the changes, registered in `watches` while open."""
    options = list_options(call.query, watch=True, allowed=call.kind.field_labels)
    labels, fields = options.labels, options.fields
    if call.target.name:
        # /watch/.../<name> watches one object.
        name = call.target.name
        base_fields = fields

        class _Named:
            def matches(self, values: Mapping[str, str]) -> bool:
                return values.get("metadata.name") == name and bool(base_fields.matches(values))

        fields = _Named()
    timeout = timeout_seconds(call.query, MIN_REQUEST_TIMEOUT * (1 + random.random()))
    if options.resource_version and options.resource_version != "0":
        parse_resource_version(options.resource_version)
    if costly_selectors(call.query):
        await let_reactor_run(call.clock)
    stream = WatchStream(call, watches, labels, fields, flag(call.query, "allowWatchBookmarks"), timeout)
    await stream.start(options.resource_version)


# The last event encoded, as (object, type, line, chunk): one change reaches every watcher of a resource in a row,
# so each is encoded and framed once however many watch it.  Stored objects are never mutated once stored.
_last_encoded: list[Any] = [None, "", b"", b""]


def _encoded_event(kind: str, obj: Object) -> tuple[bytes, bytes]:
    """One watch event as a JSON line, and the line framed as a chunk, made once for all the watchers that get it."""
    last = _last_encoded
    if last[0] is obj and last[1] == kind:
        return last[2], last[3]
    line = json.dumps({"type": kind, "object": obj}, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
    framed = chunk(line)
    last[:] = [obj, kind, line, framed]
    return line, framed


class WatchStream:
    """A chunked stream of watch events for one request, fed by the store and ended by timeout or disconnect."""

    def __init__(self, call: ResourceRequest, watches: set[WatchStream], labels: Any, fields: Any, bookmarks: bool,
                 timeout: float, max_backlog: int | None = None):
        self._call = call
        self._request = call.request
        self._watches = watches
        self._labels = labels
        self._fields = fields
        self._bookmarks = bookmarks
        self._timeout = timeout
        self._watch: IWatch | None = None
        self._out: ChunkedStream | None = None
        self._max_backlog = streams.MAX_BACKLOG if max_backlog is None else max_backlog
        self._table = call.output.form == "table"
        self._timers: list[IDelayedCall] = []
        self._done = False
        self._last_rv = 0
        # Most watches select everything; they need not work out each object's labels and fields.
        self._everything = (bool(getattr(labels, "is_empty", lambda: False)())
                            and bool(getattr(fields, "is_empty", lambda: False)()))

    def end(self) -> None:
        """End the stream cleanly (the client sees the end of the response, not a reset)."""
        self._end()

    @property
    def resource(self) -> tuple[str, str, str]:
        """The group, version and resource (plural) this stream watches."""
        info = self._call.info
        return info.group, info.version, info.plural

    def _ended(self) -> bool:
        """Whether the stream has ended (the client may have gone while the reactor ran)."""
        return self._done

    async def start(self, version: str) -> None:
        call = self._call
        store = call.store
        self._request.notifyFinish().addBoth(self._finished)  # type: ignore[attr-defined]
        initial: list[Object] = []
        if not version or version == "0":
            try:
                result = await store.list(call.target.collection, call.target.namespace)
            except Exception as error:
                raise call.storage_error(error, "") from None
            if len(result.items) > COSTLY_LIST:
                await let_reactor_run(call.clock)
            initial = [i for i in result.items if call.matches(i, self._labels, self._fields)]
            since = result.resource_version
        else:
            since = parse_resource_version(version)
        self._last_rv = since
        request = self._request
        if self._ended():
            return  # the client went away meanwhile
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type(Output(call.output.form, JSON)))
        request.setHeader(b"Cache-Control", b"no-cache, private")
        request.setHeader(b"Transfer-Encoding", b"chunked")
        request.write(b"")
        out = self._out = ChunkedStream(request, call.clock, self._overflowed, self._max_backlog)
        # The initial events go out a batch at a time, the reactor running in between (the changes made meanwhile
        # come after them, from `since`).
        for start in range(0, len(initial), COSTLY_LIST):
            if start:
                await let_reactor_run(call.clock)
                if self._ended():
                    return
            out.write(b"".join(self._line("ADDED", obj) for obj in initial[start:start + COSTLY_LIST]))
        try:
            self._watch = store.watch(call.target.collection, call.target.namespace, since, self._event)
        except ExpiredError as error:
            self._send_error(StatusError(410, str(error), "Expired"))
            self._end()
            return
        self._watches.add(self)
        self._timers.append(call.clock.callLater(self._timeout, self._end))
        if self._bookmarks:
            self._timers.append(call.clock.callLater(BOOKMARK_INTERVAL, self._bookmark))

    def _event(self, event: WatchEvent) -> None:
        if self._done:
            return
        if event.type == EXPIRED:
            # The store can no longer follow this watch: kube's watch cache answers the same, and clients relist.
            self._watch = None
            self._send_error(StatusError(410, "The resourceVersion for the provided watch is too old.", "Expired"))
            self._end()
            return
        self._last_rv = event.resource_version
        if self._everything:
            self._send(event.type, event.object)
            return
        matches = self._call.matches(event.object, self._labels, self._fields)
        if event.type != "MODIFIED" or event.previous is None:
            if matches:
                self._send(event.type, event.object)
            return
        matched = self._call.matches(event.previous, self._labels, self._fields)
        if matches:
            self._send("MODIFIED" if matched else "ADDED", event.object)
        elif matched:
            # Out of the selector now: the watcher sees it go, as kube's watch cache reports it.
            gone = copy.deepcopy(event.previous)
            gone.setdefault("metadata", {})["resourceVersion"] = str(event.resource_version)
            self._send("DELETED", gone)

    def _bookmark(self) -> None:
        if self._done:
            return
        info = self._call.info
        self._write({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version,
                                                     "metadata": {"resourceVersion": str(self._last_rv)}}})
        self._timers.append(self._call.clock.callLater(BOOKMARK_INTERVAL, self._bookmark))

    def _line(self, kind: str, obj: Object) -> bytes:
        """One event as the line this watch sends (a one-row Table when Tables were asked for)."""
        if self._table:
            table = self._call.table([obj], {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")})
            return json.dumps({"type": kind, "object": table}, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8") + b"\n"
        return _encoded_event(kind, obj)[0]

    def _send(self, kind: str, obj: Object) -> None:
        out = self._out
        if self._done or out is None:
            return
        obj = self._call.kind.on_read(obj)
        if self._table:
            out.write(self._line(kind, obj))
        else:
            out.write(*_encoded_event(kind, obj))

    def _overflowed(self, backlog: int) -> None:
        """The client has not read what it was sent: end the watch (it watches again from what it last read)."""
        info = self._call.info
        _log.info("ending a watch of {resource}.{group}: the client has not read {backlog} bytes of events "
                  "(the limit is {limit})", resource=info.plural, group=info.group, backlog=backlog,
                  limit=self._max_backlog)
        self._end()

    def _send_error(self, error: StatusError) -> None:
        self._write({"type": "ERROR", "object": error.to_status()})

    def _write(self, event: dict[str, Any]) -> None:
        out = self._out
        if self._done or out is None:
            return
        out.write(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n")

    def _end(self) -> None:
        if self._done:
            return
        self._stop()
        if self._out is not None:
            self._out.finish()
        else:
            self._request.finish()

    def _finished(self, result: object) -> None:
        self._stop()
        if self._out is not None:
            self._out.close()

    def _stop(self) -> None:
        self._done = True
        self._watches.discard(self)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []


def end_watches(watches: set[WatchStream], group: str, version: str, keep: Collection[str] = ()) -> int:
    """End the open watches of a group-version's resources that are no longer served (their CRD is gone), all
    but those in keep, as kube ends them; the number ended."""
    ending = [stream for stream in watches
              if stream.resource[:2] == (group, version) and stream.resource[2] not in keep]
    for stream in ending:
        stream.end()
    return len(ending)
