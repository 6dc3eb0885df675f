# -*- test-case-name: tests.test_local_apiservices, tests.test_rest_reads -*-
"""Keeps a Local APIService for every group-version this process serves, from the start and for as long as it runs.

Like kube-apiserver's autoregistration of its built-in groups (kube-aggregator.md §7): each object is
created when missing, labelled `kube-aggregator.kubernetes.io/automanaged: onstart`, and brought back to
the expected spec when someone changed it; as kube's local availability controller does, its `Available`
condition is kept `True`, reason `Local`.  Unlike kube's `onstart` objects, which stay deleted until the
next restart, these come back at once: the groups served here are only discoverable through their
APIServices, so `kubectl delete apiservice --all` would otherwise leave the server without any API.

It is a "sync this key" controller on the work queue (`workqueue.py`), reading the shared informer: every
Local APIService is synced at start (once the informer has listed the store) and on each informer event
about it.  A sync writes only when something is wrong, with the stored resourceVersion as a precondition,
and records field ownership as kube's writes through the loopback client do: the manager is
`kube-apiserver` (kube's client sends no fieldManager, so the manager is its User-Agent's product,
`kube-apiserver`), operation Update, the status write as the `status` subresource.

As in kube, an APIService whose automanaged label is gone (or has a value other than `onstart` or
`true`) is the user's: it is left alone, as long as it exists.  The readiness check
`poststarthook/local-apiservice-registration` passes once every Local APIService has been registered once.
"""

from __future__ import annotations

import copy
import datetime
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..apimachinery import apply as ssa
from ..apimachinery.strategy import Strategy, rfc3339
from ..apimachinery.writes import LIST_MAP_KEYS
from ..registry.apiservice import (
    APISERVICES,
    AUTOMANAGED_LABEL,
    LOCAL_MESSAGE,
    LOCAL_REASON,
    available_condition,
    local_available_condition,
    set_condition,
)
from ..storage import AlreadyExistsError, ConflictError, IStore, NotFoundError, StorageFullError, WatchEvent
from ..storage.informer import Informer
from ..storage.interface import Object
from .autoregister import MANAGED_VALUES, ONSTART
from .workqueue import Retry, WorkQueue

_log = Logger()

#: Who the writes are recorded as in managedFields: kube-apiserver's loopback client (User-Agent product).
FIELD_MANAGER = "kube-apiserver"
API_VERSION = "apiregistration.k8s.io/v1"
#: The first retry delay after a failed write (a full disk, say); it doubles up to MAX_BACKOFF.
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0


@frozen
class LocalAPIService:
    """A group-version served here, with its discovery priorities."""

    group: str
    version: str
    group_priority_minimum: int
    version_priority: int

    @property
    def name(self) -> str:
        return f"{self.version}.{self.group}"


def expected_spec(local: LocalAPIService) -> dict[str, Any]:
    """The spec a Local APIService must have."""
    return {"group": local.group, "version": local.version, "groupPriorityMinimum": local.group_priority_minimum,
            "versionPriority": local.version_priority}


def _normalized(spec: Any) -> Any:
    """A spec without the fields that mean nothing when empty (kube compares the decoded structs)."""
    if not isinstance(spec, dict):
        return spec
    return {key: value for key, value in spec.items()
            if not (key in ("service", "caBundle", "insecureSkipTLSVerify") and value in (None, "", False))}


def _labels(obj: Object) -> dict[str, Any]:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


def _is_local_condition(obj: Object) -> bool:
    condition = available_condition(obj)
    return (condition is not None and condition.get("status") == "True" and condition.get("reason") == LOCAL_REASON
            and condition.get("message") == LOCAL_MESSAGE)


class LocalAPIServiceRegistration(Service):
    """Creates, repairs and re-creates the Local APIServices; `registered` fires once each was registered once.

    :param store: where the APIServices are written.
    :param informer: the shared view of the stored APIServices (what is read, and what drives the syncs).
    :param strategy: the APIService strategy, for defaulting and the Local condition of new objects.
    :param locals_: the group-versions served here.
    :param now: the wall-clock time of creationTimestamp, managedFields and the condition.
    :param clock: time for the work queue (retries after a failed write).
    """

    def __init__(self, store: IStore, informer: Informer, strategy: Strategy, locals_: Sequence[LocalAPIService],
                 now: Callable[[], datetime.datetime], clock: IReactorTime):
        self._store = store
        self._informer = informer
        self._strategy = strategy
        self._locals = {local.name: local for local in locals_}
        self._now = now
        self._clock = clock
        self._queue: WorkQueue | None = None
        #: The names registered at least once since the start.
        self._registered: set[str] = set()
        #: The names left alone because they lost the automanaged label (said once, until that changes).
        self._left_alone: set[str] = set()
        #: Fires (with None) once every Local APIService has been registered in this start.
        self.registered: Deferred[None] | None = None
        self.done = False
        informer.add_listener(self._changed)

    def add(self, local: LocalAPIService) -> None:
        """Keep one more Local APIService from now on (a group-version installed after start)."""
        self._locals[local.name] = local
        if self._queue is not None and self.running and self._informer.synced():
            self._queue.add(local.name)

    def remove(self, name: str) -> None:
        """Stop keeping a Local APIService (its group-version is no longer served here) and delete it, as kube's
        CRD registration does, unless someone took it over (its automanaged label is gone)."""
        if self._locals.pop(name, None) is None:
            return
        self._registered.discard(name)
        if self.running:
            deleting = Deferred.fromCoroutine(self._delete(name))
            deleting.addErrback(lambda failure: _log.failure("deleting Local APIService {name} failed", failure,
                                                             name=name))

    async def _delete(self, name: str) -> None:
        current = self._informer.get(APISERVICES, "", name)
        if current is None or _labels(current).get(AUTOMANAGED_LABEL) not in (ONSTART, "true"):
            return
        try:
            await self._store.delete(APISERVICES, "", name,
                                     expected_resource_version=int(current["metadata"]["resourceVersion"]))
        except (NotFoundError, ConflictError):
            return
        _log.info("deleted Local APIService {name}: its group-version is no longer served", name=name)

    def check(self) -> str | None:
        """The `poststarthook/local-apiservice-registration` health check."""
        return None if self.done else "the Local APIServices are not registered yet"

    def present(self) -> str | None:
        """None once every Local APIService is stored (registered by this replica or by the leading one)."""
        if self._informer.synced() and all(self._informer.get(APISERVICES, "", name) is not None
                                           for name in self._locals):
            return None
        return "the Local APIServices are not registered yet"

    # Service life cycle.

    def startService(self) -> None:
        super().startService()
        self.registered = Deferred()
        self.done = False
        self._registered = set()
        self._left_alone = set()
        self._queue = WorkQueue(self._clock, self._sync, "local-apiservices", initial_backoff=INITIAL_BACKOFF,
                                max_backoff=MAX_BACKOFF)
        self._informer.ready.addCallback(self._informer_ready)

    def stopService(self) -> None:
        super().stopService()
        if self._queue is not None:
            self._queue.stop()
        self._queue = None

    def _informer_ready(self, result: None) -> None:
        if self._queue is not None and self.running:
            self._queue.add_all(self._locals)

    def _changed(self, event: WatchEvent) -> None:
        if self._queue is not None and self.running and event.collection == APISERVICES and event.name in self._locals:
            self._queue.add(event.name)

    # One Local APIService.

    async def _sync(self, name: str) -> None:
        local = self._locals.get(name)
        if local is None or not self._informer.synced():
            return
        try:
            current = self._informer.get(APISERVICES, "", name)
            if current is None:
                await self._create(local)
            else:
                await self._repair(local, current)
        except (AlreadyExistsError, ConflictError, NotFoundError):
            # The informer had not yet seen a change made meanwhile; its event queues a fresh sync too.
            raise Retry() from None
        except StorageFullError:
            # The store logged the failed write; the queue tries again after a backoff.
            raise Retry() from None
        self._done(name)

    async def _create(self, local: LocalAPIService) -> None:
        now = self._now()
        obj: Object = {
            "apiVersion": API_VERSION, "kind": "APIService",
            "metadata": {"name": local.name, "labels": {AUTOMANAGED_LABEL: ONSTART}, "uid": str(uuid.uuid4()),
                         "generation": 1, "creationTimestamp": rfc3339(now)},
            "spec": expected_spec(local),
        }
        self._strategy.default(obj)
        self._strategy.prepare_for_create(obj)
        obj = ssa.update_managed_fields(None, obj, FIELD_MANAGER, "Update", rfc3339(now), API_VERSION,
                                        reset_fields=("status",), list_map_keys=LIST_MAP_KEYS)
        await self._store.create(APISERVICES, "", local.name, obj)
        self._left_alone.discard(local.name)
        if local.name in self._registered:
            _log.info("re-created Local APIService {name}: it was deleted", name=local.name)
        else:
            _log.info("registered Local APIService {name}", name=local.name)

    async def _repair(self, local: LocalAPIService, current: Object) -> None:
        """Bring an existing Local APIService back to what it must be, unless it is not ours to change."""
        name = local.name
        label = _labels(current).get(AUTOMANAGED_LABEL)
        if label not in MANAGED_VALUES:
            if name not in self._left_alone:
                self._left_alone.add(name)
                _log.info("leaving APIService {name} alone: it is not labelled {label}", name=name,
                          label=AUTOMANAGED_LABEL)
            return
        self._left_alone.discard(name)
        spec = expected_spec(local)
        spec_wrong = _normalized(current.get("spec")) != spec
        label_wrong = label != ONSTART
        status_wrong = not _is_local_condition(current)
        if not (spec_wrong or label_wrong or status_wrong):
            return
        now = self._now()
        wanted = copy.deepcopy(current)
        meta = wanted["metadata"]
        if spec_wrong:
            wanted["spec"] = spec
            meta["generation"] = int(meta.get("generation") or 1) + 1
        if label_wrong:
            meta["labels"] = {**_labels(current), AUTOMANAGED_LABEL: ONSTART}
        if spec_wrong or label_wrong:
            wanted = ssa.update_managed_fields(current, wanted, FIELD_MANAGER, "Update", rfc3339(now), API_VERSION,
                                               reset_fields=("status",), list_map_keys=LIST_MAP_KEYS)
        if status_wrong:
            before = wanted
            wanted = copy.deepcopy(before)
            set_condition(wanted, local_available_condition(now))
            wanted = ssa.update_managed_fields(before, wanted, FIELD_MANAGER, "Update", rfc3339(now), API_VERSION,
                                               subresource="status", reset_fields=("metadata", "spec"),
                                               list_map_keys=LIST_MAP_KEYS)
        await self._store.update(APISERVICES, "", name, wanted,
                                 expected_resource_version=int(current["metadata"]["resourceVersion"]))
        _log.info("repaired Local APIService {name}:{spec}{label}{status}", name=name,
                  spec=" spec" if spec_wrong else "", label=" label" if label_wrong else "",
                  status=" status" if status_wrong else "")

    def _done(self, name: str) -> None:
        if self.done:
            return
        self._registered.add(name)
        if self._registered >= set(self._locals):
            self.done = True
            if self.registered is not None and not self.registered.called:
                self.registered.callback(None)
