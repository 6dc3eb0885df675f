"""Registers a Local APIService for every group-version this process serves, at each start.

Like kube-apiserver's autoregistration of its built-in groups: the objects are created when missing
and brought back to the expected spec when someone changed it, so `kubectl get apiservice` and
discovery always show the local groups.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..apimachinery.strategy import Strategy
from ..apimachinery.strategy import rfc3339
from ..registry.apiservice import APISERVICES, AUTOMANAGED_LABEL
from ..storage import AlreadyExistsError, ConflictError, IStore
from ..storage.informer import Informer

_log = Logger()


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


class LocalAPIServiceRegistration(Service):
    """Creates or repairs the Local APIServices at start; `registered` fires when that is done."""

    def __init__(self, store: IStore, informer: Informer, strategy: Strategy, locals_: Sequence[LocalAPIService],
                 now: Callable[[], datetime.datetime]):
        self._store = store
        self._informer = informer
        self._strategy = strategy
        self._locals = list(locals_)
        self._now = now
        self.registered: Deferred[None] | None = None
        self.done = False

    def check(self) -> str | None:
        """The `poststarthook/local-apiservice-registration` health check."""
        return None if self.done else "the Local APIServices are not registered yet"

    def startService(self) -> None:
        super().startService()
        self.registered = Deferred.fromCoroutine(self._register_all())

    async def _register_all(self) -> None:
        for local in self._locals:
            for attempt in range(5):
                try:
                    await self._register(local)
                    break
                except (ConflictError, AlreadyExistsError):
                    continue
                except Exception:
                    _log.failure("could not register Local APIService {name}", name=local.name)
                    break
        self.done = True

    async def _register(self, local: LocalAPIService) -> None:
        spec = expected_spec(local)
        await self._informer.ready
        current = self._informer.get(APISERVICES, "", local.name)
        if current is None:
            obj: dict[str, Any] = {
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": local.name, "labels": {AUTOMANAGED_LABEL: "onstart"},
                             "uid": str(uuid.uuid4()), "generation": 1,
                             "creationTimestamp": rfc3339(self._now())},
                "spec": spec,
            }
            self._strategy.default(obj)
            self._strategy.prepare_for_create(obj)
            await self._store.create(APISERVICES, "", local.name, obj)
            _log.info("registered Local APIService {name}", name=local.name)
            return
        if (current.get("metadata", {}).get("labels") or {}).get(AUTOMANAGED_LABEL) is None:
            _log.info("leaving APIService {name} alone: it is not labelled {label}", name=local.name,
                      label=AUTOMANAGED_LABEL)
            return
        wanted = dict(current)
        wanted["spec"] = spec
        self._strategy.default(wanted)
        status = current.get("status", {})
        conditions = [c for c in status.get("conditions", []) if c.get("type") == "Available"]
        local_ok = bool(conditions) and conditions[0].get("reason") == "Local" and conditions[0].get("status") == "True"
        if wanted["spec"] == current.get("spec") and local_ok:
            return
        meta = wanted["metadata"] = dict(current["metadata"])
        if wanted["spec"] != current.get("spec"):
            meta["generation"] = int(meta.get("generation", 1)) + 1
        fresh: dict[str, Any] = {"spec": wanted["spec"], "metadata": {}}
        self._strategy.prepare_for_create(fresh)
        if "status" in fresh:
            wanted["status"] = fresh["status"]
        await self._store.update(APISERVICES, "", local.name, wanted,
                                 expected_resource_version=int(current["metadata"]["resourceVersion"]))
        _log.info("repaired Local APIService {name}", name=local.name)
