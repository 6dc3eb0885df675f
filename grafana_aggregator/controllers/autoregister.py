# -*- test-case-name: tests.test_autoregister -*-
"""Registers the services of the `remote_services_file` at every start, as kube's autoregister controller does.

For entry number n (from 1, in file order) with name `<version>.<group>` it keeps, labelled
`kube-aggregator.kubernetes.io/automanaged: onstart` (grafana-aggregator.md §2.3, kube-aggregator.md §7):

* the APIService `<version>.<group>`: groupPriorityMinimum 16000, versionPriority n, service
  `default/<version>.<group>` on the entry's port, and, unlike Grafana, the `apiservice_ca_bundle_file`
  as caBundle, so the backend's certificate is verified;
* the ExternalName `default/<version>.<group>` with `spec.host` = the entry's host.

At start each one is created when missing, or brought back to the file's spec (keeping the status)
when it carries the label.  APIServices labelled `onstart` that point at a service and are no longer
in the file are deleted, with their labelled ExternalName in `default`: once, at start.  Objects
without the label, and APIServices labelled `onstart` that appeared after the start (a user's), are
never touched; Local APIServices (no `spec.service`) are left to their own registration.  Store
errors are logged and retried after a backoff on the injected clock, a few times, then given up.
"""

from __future__ import annotations

import base64
import copy
import datetime
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..apimachinery.strategy import Strategy
from ..config.remote_services import RemoteService
from ..apimachinery.strategy import rfc3339
from ..registry.apiservice import APISERVICES, AUTOMANAGED_LABEL, is_local
from ..registry.externalname import EXTERNALNAMES
from ..storage import AlreadyExistsError, ConflictError, IStore, NotFoundError
from ..storage.informer import Informer
from ..storage.interface import Object

_log = Logger()
#: SyncOnce: registered at start, removed once at a later start when no longer wanted.
ONSTART = "onstart"
#: The label values that mark an object as managed by an autoregister controller (kube's isAutomanaged).
MANAGED_VALUES = (ONSTART, "true")
#: groupPriorityMinimum of remote services: 1000 above the Local ones' 15000 (Grafana).
GROUP_PRIORITY_MINIMUM = 16000
#: Where the ExternalNames live: Grafana's namespace of org 1.
NAMESPACE = "default"
#: Seconds to wait before each retry of the work a pass could not do; then auto-registration gives up.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
#: Immediate attempts of one object when a concurrent writer wins (Conflict, AlreadyExists).
MAX_RACES = 5


def desired_spec(number: int, service: RemoteService, ca_bundle: bytes | None,
                 namespace: str = NAMESPACE) -> dict[str, Any]:
    """The APIService spec of entry `number` (from 1), in kube's field order."""
    spec: dict[str, Any] = {
        "service": {"namespace": namespace, "name": service.name, "port": service.port},
        "group": service.group,
        "version": service.version,
    }
    if ca_bundle:
        spec["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
    spec["groupPriorityMinimum"] = GROUP_PRIORITY_MINIMUM
    spec["versionPriority"] = number
    return spec


def _normalized(spec: Any) -> Any:
    """A spec with the fields kube omits when empty (insecureSkipTLSVerify false, caBundle "") dropped."""
    if not isinstance(spec, dict):
        return spec
    result = dict(spec)
    if result.get("insecureSkipTLSVerify") in (False, None):
        result.pop("insecureSkipTLSVerify", None)
    if result.get("caBundle") in ("", None):
        result.pop("caBundle", None)
    return result


def _label(obj: Object) -> Any:
    """The automanaged label's value, or None."""
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels.get(AUTOMANAGED_LABEL) if isinstance(labels, dict) else None


def _meta(obj: Object) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _generation(obj: Object) -> int:
    value = _meta(obj).get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _go_list(names: Sequence[str]) -> str:
    """A list of names as Go's %v prints a []string: `[a b]`."""
    return "[" + " ".join(names) + "]"


class RegistrationRaceError(Exception):
    """Another writer kept changing an object while it was being registered."""


@define(eq=False, slots=False)
class AutoRegistration(Service):
    """Creates, brings back and removes the APIServices and ExternalNames of the remote services file at start.

    :param store: where APIServices and ExternalNames are written.
    :param informer: the shared view of the stored APIServices and ExternalNames (what is read).
    :param strategy: the APIService strategy, for defaulting and preparing new objects.
    :param services: the file's entries, in file order.
    :param ca_bundle: the PEM bundle that becomes each APIService's caBundle; None leaves it unset
        (insecureSkipTLSVerify stays false, so the system roots verify the backend).
    :param now: the wall-clock time of creationTimestamp.
    :param clock: time for the retry backoff.
    :param namespace: the namespace of the ExternalNames.
    :param retry_delays: the seconds before each retry; when they run out, auto-registration gives up.
    """

    _store: IStore
    _informer: Informer
    _strategy: Strategy
    _services: Sequence[RemoteService]
    _ca_bundle: bytes | None
    _now: Callable[[], datetime.datetime]
    _clock: IReactorTime
    _namespace: str = NAMESPACE
    _retry_delays: Sequence[float] = RETRY_DELAYS

    #: True once every entry is registered and every APIService that left the file is removed.
    done: bool = field(init=False, default=False)
    #: Fires with None when `done` becomes true.
    completed: Deferred[None] = field(init=False, factory=lambda: Deferred())
    #: The entries not yet registered in this start, by name, with their number.
    _pending: dict[str, tuple[int, RemoteService]] = field(init=False, factory=dict)
    #: The labelled APIServices found at start that left the file and are not yet removed, by name.
    _stale: dict[str, Object] = field(init=False, factory=dict)
    #: The names of the APIServices present at start (and those this start created), once listed.
    _at_start: set[str] | None = field(init=False, default=None)
    _running: Deferred[None] | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._pending = self._all_entries()

    def _all_entries(self) -> dict[str, tuple[int, RemoteService]]:
        return {service.name: (number, service) for number, service in enumerate(self._services, start=1)}

    @property
    def missing(self) -> list[str]:
        """The names of the entries not yet registered, in file order."""
        return [service.name for service in self._services if service.name in self._pending]

    def check(self) -> str | None:
        """The `autoregister-completion` health check: None when done, else what is still missing."""
        if self.done:
            return None
        if self.missing:
            return f"missing APIService: {_go_list(self.missing)}"
        if self._stale:
            return f"APIService not yet removed: {_go_list(sorted(self._stale))}"
        return "auto-registration has not run yet"

    def present(self) -> str | None:
        """None once every entry's APIService is stored (registered by this replica or by the leading one)."""
        if not self._informer.synced():
            return "auto-registration has not run yet"
        missing = [service.name for service in self._services
                   if self._informer.get(APISERVICES, "", service.name) is None]
        return f"missing APIService: {_go_list(missing)}" if missing else None

    # Service life cycle.

    def startService(self) -> None:
        super().startService()
        if self.completed.called:
            self.completed = Deferred()
        self.done = False
        self._at_start = None
        self._stale = {}
        self._pending = self._all_entries()
        running = self._running = Deferred.fromCoroutine(self._run())
        running.addErrback(lambda failure: failure.trap(CancelledError))

    def stopService(self) -> None:
        super().stopService()
        if self._running is not None and not self._running.called:
            self._running.cancel()
        self._running = None

    # The passes.

    async def _run(self) -> None:
        delays = iter(self._retry_delays)
        while True:
            await self._pass()
            if self._at_start is not None and not self._pending and not self._stale:
                self.done = True
                _log.info("auto-registration done: {count} remote APIServices registered", count=len(self._services))
                self.completed.callback(None)
                return
            delay = next(delays, None)
            if delay is None:
                _log.error("auto-registration gave up: missing APIServices {missing}, not removed {stale}",
                           missing=self.missing, stale=sorted(self._stale))
                return
            _log.warn("auto-registration retries in {delay} s: missing APIServices {missing}, not removed {stale}",
                      delay=delay, missing=self.missing, stale=sorted(self._stale))
            await deferLater(self._clock, delay, lambda: None)

    async def _pass(self) -> None:
        """Try every piece of work left once; what fails stays for the next pass."""
        if self._at_start is None:
            await self._informer.ready
            listed = self._informer.list(APISERVICES)
            wanted = {service.name for service in self._services}
            self._at_start = {_meta(item).get("name", "") for item in listed}
            self._stale = {
                _meta(item).get("name", ""): item for item in listed
                if _label(item) == ONSTART and not is_local(item) and _meta(item).get("name") not in wanted
            }
        for name, (number, service) in list(self._pending.items()):
            try:
                await self._register(number, service)
            except CancelledError:
                raise
            except Exception:
                _log.failure("auto-registration could not register APIService {name}", name=name)
                continue
            del self._pending[name]
        for name, obj in list(self._stale.items()):
            try:
                await self._remove(name, obj)
            except CancelledError:
                raise
            except Exception:
                _log.failure("auto-registration could not remove APIService {name}", name=name)
                continue
            del self._stale[name]

    # One entry.

    async def _register(self, number: int, service: RemoteService) -> None:
        if await self._sync_apiservice(service.name, desired_spec(number, service, self._ca_bundle, self._namespace)):
            await self._sync_externalname(service.name, service.host)

    def _new_metadata(self, name: str, namespace: str = "") -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        meta.update({"labels": {AUTOMANAGED_LABEL: ONSTART}, "uid": str(uuid.uuid4()), "generation": 1,
                     "creationTimestamp": rfc3339(self._now())})
        return meta

    async def _sync_apiservice(self, name: str, spec: dict[str, Any]) -> bool:
        """Create the APIService or bring its spec back; False when it belongs to someone else."""
        assert self._at_start is not None
        for _ in range(MAX_RACES):
            current = self._informer.get(APISERVICES, "", name)
            if current is None:
                obj: Object = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                               "metadata": self._new_metadata(name), "spec": copy.deepcopy(spec)}
                self._strategy.default(obj)
                self._strategy.prepare_for_create(obj)
                errors = self._strategy.validate(obj)
                if errors:
                    raise ValueError(f"APIService {name} is invalid: {errors}")
                try:
                    await self._store.create(APISERVICES, "", name, obj)
                except AlreadyExistsError:
                    continue
                self._at_start.add(name)
                _log.info("registered remote APIService {name}", name=name)
                return True
            label = _label(current)
            if label not in MANAGED_VALUES:
                _log.warn("leaving APIService {name} alone: it is not labelled {label}, so a user made it",
                          name=name, label=AUTOMANAGED_LABEL)
                return False
            if label == ONSTART and name not in self._at_start:
                _log.warn("leaving APIService {name} alone: it was created after the start, so a user made it",
                          name=name)
                return False
            wanted = copy.deepcopy(current)
            wanted["spec"] = copy.deepcopy(spec)
            self._strategy.default(wanted)
            if _normalized(wanted["spec"]) == _normalized(current.get("spec")):
                return True
            self._strategy.prepare_for_update(wanted, current)
            wanted["metadata"]["generation"] = _generation(current) + 1
            try:
                await self._store.update(APISERVICES, "", name, wanted,
                                         expected_resource_version=int(current["metadata"]["resourceVersion"]))
            except (ConflictError, NotFoundError):
                continue
            _log.info("brought remote APIService {name} back to the remote services file", name=name)
            return True
        raise RegistrationRaceError(f"APIService {name} kept changing")

    async def _sync_externalname(self, name: str, host: str) -> None:
        """Create the ExternalName or bring its host back, unless it belongs to someone else."""
        spec = {"host": host}
        for _ in range(MAX_RACES):
            current = self._informer.get(EXTERNALNAMES, self._namespace, name)
            if current is None:
                obj: Object = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                               "metadata": self._new_metadata(name, self._namespace), "spec": spec}
                try:
                    await self._store.create(EXTERNALNAMES, self._namespace, name, obj)
                except AlreadyExistsError:
                    continue
                _log.info("registered ExternalName {namespace}/{name} for host {host}", namespace=self._namespace,
                          name=name, host=host)
                return
            if _label(current) not in MANAGED_VALUES:
                _log.warn("leaving ExternalName {namespace}/{name} alone: it is not labelled {label}, so a user "
                          "made it", namespace=self._namespace, name=name, label=AUTOMANAGED_LABEL)
                return
            if current.get("spec") == spec:
                return
            wanted = copy.deepcopy(current)
            wanted["spec"] = dict(spec)
            wanted["metadata"]["generation"] = _generation(current) + 1
            try:
                await self._store.update(EXTERNALNAMES, self._namespace, name, wanted,
                                         expected_resource_version=int(current["metadata"]["resourceVersion"]))
            except (ConflictError, NotFoundError):
                continue
            _log.info("brought ExternalName {namespace}/{name} back to host {host}", namespace=self._namespace,
                      name=name, host=host)
            return
        raise RegistrationRaceError(f"ExternalName {self._namespace}/{name} kept changing")

    async def _remove(self, name: str, obj: Object) -> None:
        """Delete an APIService that left the file (if it is still the one seen at start), then its ExternalName."""
        uid = _meta(obj).get("uid")
        try:
            await self._store.delete(APISERVICES, "", name, expected_uid=uid if isinstance(uid, str) else None)
        except ConflictError:
            _log.info("not removing APIService {name}: it was replaced after the start", name=name)
            return
        except NotFoundError:
            pass
        else:
            _log.info("removed APIService {name}: it is no longer in the remote services file", name=name)
        service = obj.get("spec", {}).get("service")
        if not isinstance(service, dict) or service.get("namespace") != self._namespace:
            return
        reference = service.get("name")
        if not isinstance(reference, str) or not reference or reference in {s.name for s in self._services}:
            return
        externalname = self._informer.get(EXTERNALNAMES, self._namespace, reference)
        if externalname is None or _label(externalname) != ONSTART:
            return
        uid = _meta(externalname).get("uid")
        try:
            await self._store.delete(EXTERNALNAMES, self._namespace, reference,
                                     expected_uid=uid if isinstance(uid, str) else None)
        except (ConflictError, NotFoundError):
            return
        _log.info("removed ExternalName {namespace}/{name} of APIService {apiservice}", namespace=self._namespace,
                  name=reference, apiservice=name)
