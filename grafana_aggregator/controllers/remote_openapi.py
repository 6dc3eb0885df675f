# -*- test-case-name: tests.test_remote_openapi -*-
"""The OpenAPI documents of remote backends, fetched and cached so `/openapi/v2` and `/openapi/v3` include them.

As kube-aggregator's OpenAPI controllers do (kube-aggregator.md §5), every remote APIService's backend
is asked, as `system:kube-aggregator`, for:

- its `/openapi/v3` index, and then the document of the APIService's own group-version, fetched again
  only when the hash the index gives it changes (and then with `If-None-Match`);
- its `/openapi/v2` as JSON (with `If-None-Match`), filtered to the paths under `/apis/<g>/<v>/` and
  the definitions, parameters and responses they reference, transitively.

Fetches run concurrently, each request bounded by a timeout on the injected clock, at start, whenever an
APIService or ExternalName changes, and every 60 s.  As kube keeps the last successfully downloaded
spec (`cached.LastSuccess`) and drops it only when the APIService is removed, a failing or unavailable
backend keeps its last good documents; an unavailable APIService is not asked at all (kube's download
would be a 503 from its own proxy).  Documents go when the APIService is deleted or turns local.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from attrs import define
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import UNKNOWN_LENGTH

from ..apimachinery.openapi import group_version_key
from ..registry.apiservice import is_available, is_local
from ..storage import WatchEvent
from ..aggregation.upstream import Backend, resolve_backend
from .apiservice_index import APISERVICES, APIServiceIndex

_log = Logger()

JSON = dict[str, Any]

REFRESH_INTERVAL = 60.0
#: How long one request to a backend (headers and body) may take.
FETCH_TIMEOUT = 30.0
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024

#: The Swagger 2.0 sections a `$ref` may point into and that follow a filtered spec.
_V2_SECTIONS = ("definitions", "parameters", "responses")


class OpenAPIFetchError(Exception):
    """A backend answered an OpenAPI request with something other than a usable document."""


# --------------------------------------------------------------------------------------------------------------
# Filtering a Swagger 2.0 document


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _references(value: Any) -> Iterator[tuple[str, str]]:
    """Every local `$ref` in a JSON value, as (section, name), e.g. ("definitions", "io.k8s…ObjectMeta")."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/"):
                section, _, name = ref[2:].partition("/")
                if section in _V2_SECTIONS and name and "/" not in name:
                    yield section, _unescape(name)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def filter_swagger(swagger: JSON, prefix: str) -> JSON:
    """The paths of a Swagger 2.0 document under `prefix` and what they reference, transitively.

    The result has `paths` and `definitions`, and `parameters` and `responses` when any is referenced;
    references to names the document does not define are left dangling, as kube does.
    """
    source_paths = swagger.get("paths")
    paths = {path: item for path, item in source_paths.items()
             if path.startswith(prefix)} if isinstance(source_paths, dict) else {}
    kept: dict[str, JSON] = {section: {} for section in _V2_SECTIONS}
    pending = list(_references(paths))
    while pending:
        section, name = pending.pop()
        defined = swagger.get(section)
        if name in kept[section] or not isinstance(defined, dict) or name not in defined:
            continue
        kept[section][name] = defined[name]
        pending.extend(_references(defined[name]))
    part: JSON = {"paths": dict(sorted(paths.items())), "definitions": dict(sorted(kept["definitions"].items()))}
    for section in ("parameters", "responses"):
        if kept[section]:
            part[section] = dict(sorted(kept[section].items()))
    return part


# --------------------------------------------------------------------------------------------------------------
# The controller


@define
class _Answer:
    """A backend's response: status code, ETag (or None) and body."""

    code: int
    etag: str | None
    body: bytes

    def document(self, what: str) -> JSON:
        """The JSON object of a 200 answer; OpenAPIFetchError otherwise.

        The content type is not checked: kube-aggregator serves its own `/openapi/v3` index as text/plain.
        """
        if self.code != 200:
            raise OpenAPIFetchError(f"failed to retrieve {what}: http error {self.code}: {self.body[:200]!r}")
        try:
            document = json.loads(self.body)
        except ValueError as error:
            raise OpenAPIFetchError(f"failed to parse {what}: {error}") from None
        if not isinstance(document, dict):
            raise OpenAPIFetchError(f"failed to parse {what}: not a JSON object")
        return document


@define
class _Remote:
    """What is kept of one remote APIService: its documents, what validates them, and the fetch in flight."""

    group: str
    version: str
    priority: int = 0
    backend_url: str | None = None
    #: The `?hash=` the backend's index gave the group-version when `v3` was fetched.
    index_hash: str | None = None
    v3_etag: str | None = None
    v3: JSON | None = None
    v2_etag: str | None = None
    v2: JSON | None = None
    fetching: Deferred[None] | None = None
    again: bool = False
    failing: bool = False


def _group_version(apiservice: dict[str, Any]) -> tuple[str, str]:
    spec = apiservice.get("spec") or {}
    return str(spec.get("group") or ""), str(spec.get("version") or "")


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


class RemoteOpenAPI(TimerService):
    """Keeps the OpenAPI v3 document and the filtered Swagger 2.0 part of every remote group-version."""

    def __init__(self, index: APIServiceIndex, client_for: Callable[[Backend], Any], clock: IReactorTime,
                 interval: float = REFRESH_INTERVAL, timeout: float = FETCH_TIMEOUT):
        super().__init__(interval, self._tick)
        self.clock = clock
        self._index = index
        self._client_for = client_for
        self._clock = clock
        self._timeout = timeout
        self._remotes: dict[str, _Remote] = {}
        #: Incremented whenever what `v3_documents()` or `v2_parts()` return changes.
        self.generation = 0
        index.listeners.append(self._changed)

    def startService(self) -> None:
        super().startService()
        ready = self._index.ready
        if ready is not None and not ready.called:
            # The index lists what storage holds only once synced, without events: look again then.
            ready.addCallback(self._synced)

    def _synced(self, result: Any) -> Any:
        if self.running:
            self.refresh()
        return result

    def stopService(self) -> Any:
        stopped = super().stopService()
        for remote in self._remotes.values():
            if remote.fetching is not None:
                remote.fetching.cancel()
        return stopped

    # ----------------------------------------------------------------------------------------------------------
    # Public

    def v3_documents(self) -> dict[str, JSON]:
        """The OpenAPI v3 document of each remote group-version, keyed `apis/<g>/<v>` (do not mutate them)."""
        return {group_version_key(remote.group, remote.version): remote.v3
                for _, remote in sorted(self._remotes.items()) if remote.v3 is not None}

    def v2_parts(self) -> list[JSON]:
        """The filtered Swagger 2.0 part (paths, definitions …) of each remote group-version, in merge order.

        kube's order: by the highest groupPriorityMinimum of the group, descending, then by APIService name.
        """
        top: dict[str, int] = {}
        for remote in self._remotes.values():
            top[remote.group] = max(top.get(remote.group, remote.priority), remote.priority)
        ordered = sorted(self._remotes.items(), key=lambda item: (-top[item[1].group], item[0]))
        return [remote.v2 for _, remote in ordered if remote.v2 is not None]

    def refresh(self) -> Deferred[Any]:
        """Fetch every available remote APIService's documents concurrently; fires when all are done (never fails)."""
        remote = {a["metadata"]["name"]: a for a in self._index.apiservices() if not is_local(a)}
        for name in list(self._remotes):
            if name not in remote:
                self._drop(name)
        fetches = [self._fetch_soon(name, apiservice)
                   for name, apiservice in sorted(remote.items()) if is_available(apiservice)]
        return DeferredList(fetches, consumeErrors=True)

    # ----------------------------------------------------------------------------------------------------------
    # Scheduling

    def _tick(self) -> None:
        # Not returned: a backend that never answers must not hold back the next tick of the others.
        self.refresh()

    def _changed(self, event: WatchEvent) -> None:
        if not self.running:
            return
        if event.collection == APISERVICES:
            if event.type == "DELETED" or is_local(event.object):
                self._drop(event.name)
                return
            previous = event.previous or {}
            if not is_available(event.object):
                return
            if previous.get("spec") != event.object.get("spec") or not is_available(previous):
                self._fetch_soon(event.name, event.object)
            return
        # An ExternalName changed: fetch again from the available APIServices that point at it.
        for apiservice in self._index.apiservices():
            service = (apiservice.get("spec") or {}).get("service") or {}
            if (service.get("namespace"), service.get("name")) == (event.namespace, event.name) \
                    and is_available(apiservice):
                self._fetch_soon(apiservice["metadata"]["name"], apiservice)

    def _drop(self, name: str) -> None:
        remote = self._remotes.pop(name, None)
        if remote is None:
            return
        if remote.fetching is not None:
            remote.fetching.cancel()
        if remote.v3 is not None or remote.v2 is not None:
            self.generation += 1

    def _fetch_soon(self, name: str, apiservice: dict[str, Any]) -> Deferred[None]:
        group, version = _group_version(apiservice)
        remote = self._remotes.get(name)
        if remote is not None and (remote.group, remote.version) != (group, version):
            self._drop(name)
            remote = None
        if remote is None:
            remote = self._remotes[name] = _Remote(group, version)
        if remote.fetching is not None:
            remote.again = True
            return remote.fetching
        fetching = Deferred.fromCoroutine(self._fetch(name, remote))
        # A fetch that completed synchronously has already cleared its state; only a pending one is recorded.
        remote.fetching = None if fetching.called else fetching
        return fetching

    async def _fetch(self, name: str, remote: _Remote) -> None:
        try:
            while True:
                remote.again = False
                await self._fetch_once(name, remote)
                if not remote.again:
                    break
        finally:
            remote.fetching = None

    # ----------------------------------------------------------------------------------------------------------
    # Fetching

    async def _fetch_once(self, name: str, remote: _Remote) -> None:
        apiservice = next((a for a in self._index.apiservices() if a["metadata"]["name"] == name), None)
        if apiservice is None or is_local(apiservice) or not is_available(apiservice):
            return
        remote.priority = int((apiservice.get("spec") or {}).get("groupPriorityMinimum") or 0)
        try:
            backend = resolve_backend(apiservice, self._index.externalname_for(apiservice))
            client = self._client_for(backend)
        except Exception as error:
            self._report_failure(name, remote, "resolving the backend", error)
            return
        if backend.url != remote.backend_url:
            # Hashes and ETags of another backend validate nothing here.
            remote.backend_url = backend.url
            remote.index_hash = remote.v3_etag = remote.v2_etag = None
        ok = True
        for what, update in (("/openapi/v3", self._update_v3), ("/openapi/v2", self._update_v2)):
            try:
                await update(name, remote, client, backend)
            except Exception as error:
                ok = False
                if self._remotes.get(name) is not remote or not self.running:
                    return
                self._report_failure(name, remote, what, error)
                if not isinstance(error, OpenAPIFetchError):
                    # Unreachable or timed out (not merely a bad answer): do not wait for it twice.
                    return
        if ok and remote.failing:
            remote.failing = False
            _log.info("OpenAPI of {apiservice} fetched again", apiservice=name)

    def _report_failure(self, name: str, remote: _Remote, what: str, error: Exception) -> None:
        if not remote.failing:
            _log.info("loading OpenAPI {what} of {apiservice} failed, keeping the last documents: {error}",
                      what=what, apiservice=name, error=_describe(error))
        remote.failing = True

    async def _update_v3(self, name: str, remote: _Remote, client: Any, backend: Backend) -> None:
        key = group_version_key(remote.group, remote.version)
        answer = await self._get(client, f"{backend.url}/openapi/v3", None)
        if answer.code == 404:
            # A backend without /openapi/v3: its group-version is found through /openapi/v2 (kubectl-wire.md §8.3).
            self._set_v3(name, remote, None, None, None)
            return
        paths = answer.document("/openapi/v3").get("paths")
        entry = paths.get(key) if isinstance(paths, dict) else None
        if not isinstance(entry, dict):
            self._set_v3(name, remote, None, None, None)
            return
        url = entry.get("serverRelativeURL")
        hashes = parse_qs(urlsplit(url).query).get("hash", []) if isinstance(url, str) else []
        index_hash = hashes[0] if hashes else None
        if index_hash is not None and index_hash == remote.index_hash and remote.v3 is not None:
            return
        etag = remote.v3_etag if remote.v3 is not None else None
        answer = await self._get(client, f"{backend.url}/openapi/v3/{key}", etag)
        if answer.code == 304 and remote.v3 is not None:
            remote.index_hash = index_hash
            return
        self._set_v3(name, remote, answer.document(f"/openapi/v3/{key}"), index_hash, answer.etag)

    async def _update_v2(self, name: str, remote: _Remote, client: Any, backend: Backend) -> None:
        etag = remote.v2_etag if remote.v2 is not None else None
        answer = await self._get(client, f"{backend.url}/openapi/v2", etag)
        if answer.code == 304 and remote.v2 is not None:
            return
        part = filter_swagger(answer.document("/openapi/v2"), f"/apis/{remote.group}/{remote.version}/")
        if self._remotes.get(name) is not remote:
            return
        remote.v2_etag = answer.etag
        if part != remote.v2:
            remote.v2 = part
            self.generation += 1

    def _set_v3(self, name: str, remote: _Remote, document: JSON | None, index_hash: str | None,
                etag: str | None) -> None:
        if self._remotes.get(name) is not remote:
            return
        remote.index_hash = index_hash
        remote.v3_etag = etag
        if document != remote.v3:
            remote.v3 = document
            self.generation += 1

    async def _get(self, client: Any, url: str, etag: str | None) -> _Answer:
        """GET a URL from a backend as the aggregator, within the timeout, not following redirects."""
        deadline = self._clock.seconds() + self._timeout
        headers = {"X-Remote-User": ["system:kube-aggregator"], "X-Remote-Group": ["system:masters"],
                   "Accept": ["application/json"]}
        if etag is not None:
            headers["If-None-Match"] = [etag]
        requested: Deferred[Any] = client.get(url, headers=headers, allow_redirects=False)
        response = await requested.addTimeout(self._timeout, self._clock)
        if response.length is not UNKNOWN_LENGTH and response.length > MAX_DOCUMENT_BYTES:
            raise OpenAPIFetchError(f"{url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")
        reading: Deferred[bytes] = response.content()
        body = await reading.addTimeout(max(deadline - self._clock.seconds(), 0.0), self._clock)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise OpenAPIFetchError(f"{url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")
        etags = response.headers.getRawHeaders("etag") or []
        return _Answer(code=response.code, etag=etags[0] if etags else None, body=body)
