# -*- test-case-name: tests.test_bundled -*-
"""The bundled example group (`grafanaAPIServerWithExperimentalAPIs`): installed in process, unless a remote
APIService of the same name already exists, which then wins and is never overwritten.

Grafana, with this toggle on, registers `example.grafana.app/v0alpha1` as a Local APIService at start and silently
replaces the configuration of a remote APIService of that name (the seed's third gotcha).  Here, once the store
has been listed, the decision is made once per start:

- no APIService of that name, or a Local one: the group-version is installed (served here, in discovery and in
  OpenAPI) and its Local APIService registered, as the built-in groups are;
- a remote APIService of that name is stored, or `remote_services_file` lists one: it wins.  The bundled group is
  not installed, one warning names both, the toggle and how to resolve it, the APIService gets the condition
  `BundledAPINotInstalled` (status True, reason `RemoteAPIServiceExists`) and
  `grafana_aggregator_bundled_api_conflicts_total` counts it.  Nothing else of the stored object changes.

With the toggle off nothing of the group is served here; a Local APIService of it left by an earlier start (still
labelled automanaged) is deleted, and a `BundledAPINotInstalled` condition left on a remote one is removed.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Collection as Names

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..registry.apiservice import APISERVICES, AUTOMANAGED_LABEL, conditions, is_local, new_condition, set_condition
from ..storage import ConflictError, IStore, NotFoundError, StorageError, WatchEvent
from ..storage.informer import Informer

_log = Logger()

TOGGLE = "grafanaAPIServerWithExperimentalAPIs"
CONFLICT_CONDITION = "BundledAPINotInstalled"
CONFLICT_REASON = "RemoteAPIServiceExists"
#: Fresh reads and writes tried when the APIService keeps changing under the condition's write.
WRITE_ATTEMPTS = 5


def conflict_message(name: str, group_version: str) -> str:
    """What the condition and the warning say: which one won, why, and how to change it."""
    return (f"the feature toggle {TOGGLE} bundles {group_version} in this process, but the remote APIService "
            f"{name} already exists: the remote APIService is kept unchanged and the bundled group is not "
            f"installed. To use the bundled group, delete APIService {name} (and its entry in "
            f"remote_services_file, if any) and restart; to keep the remote one, turn {TOGGLE} off")


@define(eq=False)
class BundledGroup(Service):
    """Installs one bundled group-version at start unless a remote APIService of its name exists (see module).

    :param store: where the condition is written and a stale Local APIService deleted.
    :param informer: the shared view of the APIServices.
    :param name: the APIService's name (`v0alpha1.example.grafana.app`).
    :param enabled: whether the toggle is on.
    :param install: serves the group-version here and registers its Local APIService.
    :param remote_in_file: the APIService names `remote_services_file` registers.
    :param count_conflict: called with the name when the remote APIService wins (the metric).
    :param now: the wall-clock time of the condition.
    """

    _store: IStore
    _informer: Informer
    _name: str
    _group_version: str
    _enabled: bool
    _install: Callable[[], None]
    _remote_in_file: Names[str]
    _count_conflict: Callable[[str], None]
    _now: Callable[[], datetime.datetime]
    #: "installed", "conflict" or "off" once decided in this start; None before.
    decision: str | None = field(init=False, default=None)
    _writing: Deferred[None] | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._informer.add_listener(self._changed)

    def startService(self) -> None:
        super().startService()
        self._informer.ready.addCallback(lambda _: self._decide())

    def stopService(self) -> None:
        super().stopService()
        if self._writing is not None and not self._writing.called:
            self._writing.cancel()

    def _decide(self) -> None:
        if not self.running or self.decision is not None:
            return
        stored = self._informer.get(APISERVICES, "", self._name)
        if not self._enabled:
            self.decision = "off"
        elif (stored is not None and not is_local(stored)) or self._name in self._remote_in_file:
            self.decision = "conflict"
            self._count_conflict(self._name)
            _log.warn("{detail}", detail=conflict_message(self._name, self._group_version), apiservice=self._name,
                      toggle=TOGGLE)
        else:
            self.decision = "installed"
            self._install()
            _log.info("serving the bundled {group_version} in process ({toggle} is on)",
                      group_version=self._group_version, toggle=TOGGLE)
        self._reconcile()

    def _changed(self, event: WatchEvent) -> None:
        if event.collection == APISERVICES and event.name == self._name and self.decision is not None:
            self._reconcile()

    def _reconcile(self) -> None:
        """Bring the stored APIService in line with the decision (in the background, one write at a time)."""
        if not self.running or (self._writing is not None and not self._writing.called):
            return
        self._writing = Deferred.fromCoroutine(self._write())
        self._writing.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(StorageError):
            _log.warn("could not update APIService {name}: {error}", name=self._name, error=str(failure.value))
        else:
            _log.failure("updating APIService {name} failed", failure, name=self._name)

    async def _write(self) -> None:
        for _ in range(WRITE_ATTEMPTS):
            try:
                current = await self._store.get(APISERVICES, "", self._name)
            except NotFoundError:
                return
            version = int(current["metadata"]["resourceVersion"])
            try:
                if self.decision == "off" and is_local(current):
                    if (current["metadata"].get("labels") or {}).get(AUTOMANAGED_LABEL) in ("onstart", "true"):
                        await self._store.delete(APISERVICES, "", self._name, expected_resource_version=version)
                        _log.info("deleted Local APIService {name}: {toggle} is off", name=self._name, toggle=TOGGLE)
                    return
                marked = any(c.get("type") == CONFLICT_CONDITION for c in conditions(current))
                wanted = self.decision == "conflict" and not is_local(current)
                if wanted == marked:
                    return
                updated = copy.deepcopy(current)
                if wanted:
                    set_condition(updated, new_condition("True", CONFLICT_REASON,
                                                         conflict_message(self._name, self._group_version),
                                                         self._now(), condition_type=CONFLICT_CONDITION))
                else:
                    updated["status"]["conditions"] = [c for c in conditions(updated)
                                                       if c.get("type") != CONFLICT_CONDITION]
                await self._store.update(APISERVICES, "", self._name, updated, expected_resource_version=version)
                return
            except ConflictError:
                continue
            except NotFoundError:
                return


__all__ = ["BundledGroup", "CONFLICT_CONDITION", "CONFLICT_REASON", "TOGGLE", "conflict_message"]
