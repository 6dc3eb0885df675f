# -*- test-case-name: tests.test_remote_openapi -*-
"""The OpenAPI documents of remote backends: how they are fetched, filtered and kept for `/openapi/v2` and `/v3`.

As kube-aggregator's OpenAPI controllers do (kube-aggregator.md §5), a remote APIService's backend is
asked, as `system:kube-aggregator`, for:

- its `/openapi/v3` index, and then the document of the APIService's own group-version, fetched again
  only when the hash the index gives it changes (and then with `If-None-Match`);
- its `/openapi/v2` as JSON (with `If-None-Match`), filtered to the paths under `/apis/<g>/<v>/` and
  the definitions, parameters and responses they reference, transitively.

Each request is bounded by a timeout on the injected clock.  As kube keeps the last successfully
downloaded spec (`cached.LastSuccess`), a failing backend keeps its last good documents.  While an
APIService that just turned Available has not had its documents fetched once, it is *loading*:
`/openapi/*` waits a moment for it rather than answer without its kinds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import UNKNOWN_LENGTH

from ..apimachinery.openapi import group_version_key
from .upstream import Backend

_log = Logger()

JSON = dict[str, Any]

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
# Fetching


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
        except (ValueError, RecursionError) as error:
            raise OpenAPIFetchError(f"failed to parse {what}: {error}") from None
        if not isinstance(document, dict):
            raise OpenAPIFetchError(f"failed to parse {what}: not a JSON object")
        return document


@define
class RemoteDocuments:
    """What is kept of one remote APIService: its documents and what validates them."""

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
    #: The last fetch failed (logged once, until one succeeds again).
    failing: bool = False
    #: Bumped by every change of `v3` or `v2`.
    changes: int = field(default=0, eq=False)


class OpenAPIFetcher:
    """Brings one APIService's RemoteDocuments up to date from its backend, as the aggregator, within a timeout."""

    def __init__(self, clock: IReactorTime, timeout: float = FETCH_TIMEOUT):
        self._clock = clock
        self._timeout = timeout

    async def update(self, documents: RemoteDocuments, client: Any, backend: Backend) -> None:
        """Fetch what changed; raises on failure (keeping the last good documents)."""
        if backend.url != documents.backend_url:
            # Hashes and ETags of another backend validate nothing here.
            documents.backend_url = backend.url
            documents.index_hash = documents.v3_etag = documents.v2_etag = None
        try:
            await self._update_v3(documents, client, backend)
        except OpenAPIFetchError:
            # A bad answer, not an unreachable backend: /openapi/v2 may still be good.
            await self._update_v2(documents, client, backend)
            raise
        await self._update_v2(documents, client, backend)

    async def _update_v3(self, documents: RemoteDocuments, client: Any, backend: Backend) -> None:
        key = group_version_key(documents.group, documents.version)
        answer = await self._get(client, f"{backend.url}/openapi/v3", None)
        if answer.code == 404:
            # A backend without /openapi/v3: its group-version is found through /openapi/v2 (kubectl-wire.md §8.3).
            _set_v3(documents, None, None, None)
            return
        paths = answer.document("/openapi/v3").get("paths")
        entry = paths.get(key) if isinstance(paths, dict) else None
        if not isinstance(entry, dict):
            _set_v3(documents, None, None, None)
            return
        url = entry.get("serverRelativeURL")
        hashes = parse_qs(urlsplit(url).query).get("hash", []) if isinstance(url, str) else []
        index_hash = hashes[0] if hashes else None
        if index_hash is not None and index_hash == documents.index_hash and documents.v3 is not None:
            return
        etag = documents.v3_etag if documents.v3 is not None else None
        answer = await self._get(client, f"{backend.url}/openapi/v3/{key}", etag)
        if answer.code == 304 and documents.v3 is not None:
            documents.index_hash = index_hash
            return
        _set_v3(documents, answer.document(f"/openapi/v3/{key}"), index_hash, answer.etag)

    async def _update_v2(self, documents: RemoteDocuments, client: Any, backend: Backend) -> None:
        etag = documents.v2_etag if documents.v2 is not None else None
        answer = await self._get(client, f"{backend.url}/openapi/v2", etag)
        if answer.code == 304 and documents.v2 is not None:
            return
        part = filter_swagger(answer.document("/openapi/v2"), f"/apis/{documents.group}/{documents.version}/")
        documents.v2_etag = answer.etag
        if part != documents.v2:
            documents.v2 = part
            documents.changes += 1

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


def _set_v3(documents: RemoteDocuments, document: JSON | None, index_hash: str | None, etag: str | None) -> None:
    documents.index_hash = index_hash
    documents.v3_etag = etag
    if document != documents.v3:
        documents.v3 = document
        documents.changes += 1


# --------------------------------------------------------------------------------------------------------------
# What /openapi/* serves from


class RemoteOpenAPI:
    """The documents of every remote APIService, and which of them are still loading.

    Written by the remote OpenAPI controller, read by the `/openapi` resource.
    """

    def __init__(self) -> None:
        self._remotes: dict[str, RemoteDocuments] = {}
        self._loading: set[str] = set()
        self._waiting: list[Deferred[None]] = []
        self._dropped = 0

    @property
    def generation(self) -> int:
        """Changes whenever what `v3_documents()` or `v2_parts()` return changes."""
        return self._dropped + sum(remote.changes for remote in self._remotes.values())

    def documents(self, name: str, group: str, version: str) -> RemoteDocuments:
        """The documents kept for an APIService of that group-version (new ones if it changed group-version)."""
        remote = self._remotes.get(name)
        if remote is not None and (remote.group, remote.version) != (group, version):
            self.drop(name)
            remote = None
        if remote is None:
            remote = self._remotes[name] = RemoteDocuments(group, version)
        return remote

    def drop(self, name: str) -> None:
        """Forget an APIService's documents (it was deleted or turned local)."""
        remote = self._remotes.pop(name, None)
        if remote is not None and (remote.v3 is not None or remote.v2 is not None):
            self._dropped += remote.changes + 1
        self.loaded(name)

    def has_documents(self, name: str) -> bool:
        """Whether an APIService's documents were fetched (at least one of them)."""
        remote = self._remotes.get(name)
        return remote is not None and (remote.v3 is not None or remote.v2 is not None)

    def loading(self, name: str, group: str, version: str) -> None:
        """An APIService of that group-version turned Available and its documents are on their way."""
        self.documents(name, group, version)
        self._loading.add(name)

    def loaded(self, name: str) -> None:
        """An APIService's documents arrived, or will not."""
        self._loading.discard(name)
        if not self._loading:
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(None)

    def still_loading(self) -> list[str]:
        """The group-version keys (`apis/<g>/<v>`) whose documents are on their way."""
        keys = []
        for name in sorted(self._loading):
            remote = self._remotes.get(name)
            if remote is not None:
                keys.append(group_version_key(remote.group, remote.version))
        return keys

    def settled(self) -> Deferred[None]:
        """Fires when nothing is loading (at once when nothing is)."""
        waiter: Deferred[None] = Deferred(lambda d: self._waiting.remove(d) if d in self._waiting else None)
        if not self._loading:
            waiter.callback(None)
        else:
            self._waiting.append(waiter)
        return waiter

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
