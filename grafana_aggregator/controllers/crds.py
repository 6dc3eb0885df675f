# -*- test-case-name: tests.test_crd_controller -*-
"""The controllers kube's apiextensions-apiserver runs on CustomResourceDefinitions, as one work queue of CRD names:

- **naming**: accepts the names a CRD asks for unless another CRD of its group holds them (`NamesAccepted`,
  `status.acceptedNames`), re-checking the group's other CRDs when one changes;
- **establishing**: `Established` once the names are accepted (kube waits for its HA masters; one store here);
- **validation rules**: our own `ValidationRulesEnforced=False` condition while the CRD has
  `x-kubernetes-validations` rules, which this server does not evaluate (said, never silently ignored);
- **finalizer**: a CRD being deleted with the `customresourcecleanup.apiextensions.k8s.io` finalizer has its
  instances deleted (Terminating, InstanceDeletionInProgress), then the finalizer removed, which deletes it.

The status rules themselves are the pure functions of registry/crdstatus.py; this module reads the CRDs from the
informer and writes the results with the resourceVersion it read, so a concurrent change is retried, not lost.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..apimachinery.gotypes import go_quote
from ..apimachinery.strategy import Object, Strategy
from ..apimachinery.writes import mark_deleted
from ..registry.crdstatus import (
    CLEANUP_FINALIZER,
    INSTANCE_DELETION_IN_PROGRESS,
    INSTANCE_DELETION_PENDING,
    cleanup_done_condition,
    deletion_failed_condition,
    establish_status,
    find_condition,
    naming_status,
    new_condition,
    set_condition,
    terminating_condition,
)
from ..registry.customresourcedefinition import approval_condition, unenforced_rules
from ..registry.customresourcedefinition import CUSTOMRESOURCEDEFINITIONS
from ..storage import (
    AlreadyExistsError,
    Collection,
    ConflictError,
    IStore,
    NotFoundError,
    StorageFullError,
    StorageUnavailableError,
    WatchEvent,
)
from ..storage.informer import Informer
from .workqueue import Retry, WorkQueue

_log = Logger()

CRDS = CUSTOMRESOURCEDEFINITIONS
#: kube's condition on a CRD of a protected group (*.k8s.io, *.kubernetes.io): is its API approved?
APPROVAL_CONDITION = "KubernetesAPIApprovalPolicyConformant"
#: Ours: whether the CRD's x-kubernetes-validations rules are enforced (they are not: no CEL evaluator).
VALIDATION_RULES_ENFORCED = "ValidationRulesEnforced"
#: How long a cleanup waits before looking again at instances that are still there (finalizers of their own).
CLEANUP_RECHECK_SECONDS = 1.0


def rules_condition(crd: Object) -> dict[str, str] | None:
    """The ValidationRulesEnforced condition a CRD must carry, or None when it has no rules."""
    rules = unenforced_rules(crd)
    if not rules:
        return None
    shown = "; ".join(f"{go_quote(rule)} at {path or '<root>'}" for _, path, rule, _ in rules[:5])
    more = f" and {len(rules) - 5} more" if len(rules) > 5 else ""
    return new_condition(VALIDATION_RULES_ENFORCED, "False", "CELNotSupported",
                         f"{len(rules)} x-kubernetes-validations rule(s) are accepted but not enforced by this "
                         f"server: {shown}{more}")


class CRDController(Service):
    """Keeps every CRD's status (names, Established, approval, rules) and carries out CRD deletions (see the
    module)."""

    def __init__(self, store: IStore, informer: Informer, clock: IReactorTime, now: Callable[[], datetime.datetime]):
        self._store = store
        self._informer = informer
        self._clock = clock
        self._now = now
        self._queue: WorkQueue | None = None
        informer.add_listener(self._changed)

    def startService(self) -> None:
        super().startService()
        self._queue = WorkQueue(self._clock, self._sync, "crd-status", initial_backoff=0.2, max_backoff=30.0)
        self._informer.ready.addCallback(self._informer_ready)

    def stopService(self) -> None:
        super().stopService()
        if self._queue is not None:
            self._queue.stop()
        self._queue = None

    def _informer_ready(self, result: object) -> None:
        if self._queue is not None and self.running:
            self._queue.add_all(str(crd["metadata"]["name"]) for crd in self._informer.list(CRDS))

    def _changed(self, event: WatchEvent) -> None:
        if event.collection != CRDS or self._queue is None or not self.running or not self._informer.synced():
            return
        if not _cleanup_started(event.object):
            # (A cleanup under way runs on its own schedule: its own status writes re-adding it would run it again
            # at once, so a failing step would loop without its backoff.)
            self._queue.add(event.name)
        # A change of names can free or take names another CRD of the group asked for.
        group = (event.object.get("spec") or {}).get("group")
        for crd in self._informer.list(CRDS):
            name = str(crd["metadata"]["name"])
            if name != event.name and (crd.get("spec") or {}).get("group") == group and not _names_settled(crd):
                self._queue.add(name)

    async def _sync(self, name: str) -> None:
        crd = self._informer.get(CRDS, "", name)
        if crd is None:
            return
        try:
            if crd["metadata"].get("deletionTimestamp"):
                if CLEANUP_FINALIZER in (crd["metadata"].get("finalizers") or []):
                    await self._clean_up(crd)
                return
            await self._keep_status(crd)
        except (ConflictError, NotFoundError, AlreadyExistsError, StorageFullError, StorageUnavailableError):
            raise Retry() from None

    async def _keep_status(self, crd: Object) -> None:
        now = self._now()
        status = naming_status(crd, self._informer.list(CRDS), now)
        updated = copy.deepcopy(crd)
        if status is not None:
            updated["status"] = status
        established = establish_status(updated, now)
        if established is not None:
            updated["status"] = established
        _keep_condition(updated, VALIDATION_RULES_ENFORCED, rules_condition(updated), now)
        _keep_condition(updated, APPROVAL_CONDITION, approval_condition(updated), now)
        if updated != crd:
            await self._write(updated)

    async def _write(self, crd: Object) -> Object:
        meta = crd["metadata"]
        stored: Object = await self._store.update(CRDS, "", meta["name"], crd,
                                                  expected_resource_version=int(meta["resourceVersion"]))
        return stored

    async def _clean_up(self, crd: Object) -> None:
        """Delete every instance, then write the outcome and drop the finalizer; the CRD goes with the last one."""
        name = str(crd["metadata"]["name"])
        spec, now = crd.get("spec") or {}, self._now()
        collection = Collection(str(spec.get("group", "")), str((spec.get("names") or {}).get("plural", "")))
        progress = terminating_condition(*INSTANCE_DELETION_IN_PROGRESS)
        current = find_condition(crd, "Terminating")
        if current is None or current.get("reason") != progress["reason"]:
            updated = copy.deepcopy(crd)
            set_condition(updated, progress, now)
            crd = await self._write(updated)
        try:
            remaining = await self._delete_instances(collection, now)
        except StorageUnavailableError as error:
            failed = copy.deepcopy(crd)
            set_condition(failed, deletion_failed_condition("InstanceDeletionFailed", f"could not list instances: "
                                                                                       f"{error}"), now)
            await self._write(failed)
            raise Retry() from None
        if remaining:
            _log.info("CRD {crd}: waiting for {count} instance(s) with finalizers", crd=name, count=remaining)
            if self._queue is not None:
                self._queue.add_after(name, CLEANUP_RECHECK_SECONDS)
            return
        done = copy.deepcopy(crd)
        set_condition(done, cleanup_done_condition(crd), now)
        done["metadata"]["finalizers"] = [f for f in done["metadata"].get("finalizers") or []
                                          if f != CLEANUP_FINALIZER]
        meta = done["metadata"]
        if not meta["finalizers"]:
            # As kube's update that removes the last finalizer: the final state is written (watchers see the
            # Terminating outcome), and then the CRD goes.
            del meta["finalizers"]
            final = await self._write(done)
            await self._store.delete(CRDS, "", name,
                                     expected_resource_version=int(final["metadata"]["resourceVersion"]))
            _log.info("deleted CRD {crd}: its instances are gone", crd=name)
        else:
            await self._write(done)

    async def _delete_instances(self, collection: Collection, now: datetime.datetime) -> int:
        """Delete (or mark for deletion) every instance; the number still there afterwards."""
        remaining = 0
        for item in (await self._store.list(collection, None)).items:
            meta = item["metadata"]
            namespace = str(meta.get("namespace") or "")
            try:
                if meta.get("finalizers"):
                    remaining += 1
                    if not meta.get("deletionTimestamp"):
                        await self._store.update(collection, namespace, meta["name"],
                                                 mark_deleted(item, now, Strategy()),
                                                 expected_resource_version=int(meta["resourceVersion"]))
                else:
                    await self._store.delete(collection, namespace, meta["name"])
            except (NotFoundError, ConflictError):
                remaining += 1
        return remaining


def _cleanup_started(crd: Object) -> bool:
    """Whether this controller has taken up the CRD's deletion (its Terminating condition is past
    InstanceDeletionPending, which the DELETE sets)."""
    condition = find_condition(crd, "Terminating")
    return bool((crd.get("metadata") or {}).get("deletionTimestamp")) and condition is not None and \
        condition.get("reason") != INSTANCE_DELETION_PENDING[1]


def _keep_condition(crd: Object, condition_type: str, wanted: dict[str, str] | None, now: datetime.datetime) -> None:
    """Set a condition the CRD must carry (its time moving only when its status does), or drop one it must not."""
    current = find_condition(crd, condition_type)
    if wanted is not None:
        if current is None or any(current.get(key) != wanted[key] for key in ("status", "reason", "message")):
            set_condition(crd, wanted, now)
    elif current is not None:
        crd["status"]["conditions"] = [c for c in crd["status"]["conditions"] if c is not current]


def _names_settled(crd: Object) -> bool:
    condition = find_condition(crd, "NamesAccepted")
    return condition is not None and condition.get("status") == "True"


__all__ = ["CRDController", "CRDS", "VALIDATION_RULES_ENFORCED", "rules_condition"]
