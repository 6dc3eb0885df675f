# -*- test-case-name: tests.test_customresource_serving -*-
"""Serves the kinds of established CustomResourceDefinitions, as kube's apiextensions-apiserver and its CRD
registration controller do: every served version of every established CRD is a group-version served in this
process (REST handler, discovery, OpenAPI, and a Local APIService with kube's priorities for CRDs, 1000 and 100),
rebuilt when one of its CRDs changes and removed when the last one goes.

The CRDs come from their own informer; whether a CRD is established is its `Established` condition, which the
CRD status controller sets.  Several CRDs of one group share its group-versions, as in kube.

Two things win over a CRD's group-version, which is then not served here (one warning says why):
- a group-version this process serves itself (APIServices, CRDs, ExternalNames, the reviews, the bundled
  example): a CRD must never replace those kinds;
- a remote APIService of that group-version (one with `spec.service`), as in kube, where the aggregator proxies
  a group-version whose APIService names a service, whatever CRDs say.  The CRD is served once that
  APIService is deleted or made Local.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from attrs import define, field
from twisted.application.service import Service
from twisted.logger import Logger

from ..apimachinery.strategy import LocalGroupVersion, Object
from ..registry.apiservice import APISERVICES
from ..registry.customresource import CustomResourceStrategy, served_versions
from ..registry.customresourcedefinition import CUSTOMRESOURCEDEFINITIONS
from ..storage import WatchEvent
from ..storage.informer import Informer

_log = Logger()

CRDS = CUSTOMRESOURCEDEFINITIONS
#: The Local APIService priorities kube's CRD registration controller gives every CRD group-version.
CRD_GROUP_PRIORITY_MINIMUM = 1000
CRD_VERSION_PRIORITY = 100

GroupVersion = tuple[str, str]


def is_established(crd: Object) -> bool:
    """Whether the CRD's `Established` condition is True."""
    for condition in ((crd.get("status") or {}).get("conditions") or []):
        if isinstance(condition, dict) and condition.get("type") == "Established":
            return condition.get("status") == "True"
    return False


def _group_version(apiservice: Object | None) -> GroupVersion | None:
    spec = (apiservice or {}).get("spec") or {}
    return (str(spec.get("group", "")), str(spec.get("version", ""))) if apiservice else None


def group_versions(crd: Object | None) -> set[GroupVersion]:
    """The group-versions a CRD serves (whether established or not)."""
    if crd is None:
        return set()
    group = str((crd.get("spec") or {}).get("group", ""))
    return {(group, version) for version in served_versions(crd)}


@define(eq=False)
class CustomResourceServing(Service):
    """Keeps the served group-versions equal to what the established CRDs define.

    :param informer: the informer of CRDs.
    :param install: serves a group-version (its kinds) from now on, in place of what it served before.
    :param uninstall: stops serving a group-version.
    """

    _informer: Informer
    _install: Callable[[LocalGroupVersion], None]
    _uninstall: Callable[[str, str], None]
    #: The group-versions this process serves itself, which no CRD may take over.
    _built_in: Callable[[], Collection[GroupVersion]] = lambda: ()
    #: The CRD names behind each group-version served now.
    served: dict[GroupVersion, tuple[str, ...]] = field(init=False, factory=dict)
    #: Group-versions of established CRDs not served, and why (said once in the log).
    not_served: dict[GroupVersion, str] = field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._informer.add_listener(self._changed)

    def startService(self) -> None:
        super().startService()
        self._informer.ready.addCallback(lambda _: self._sync_all())

    def _sync_all(self) -> None:
        if not self.running:
            return
        keys = set(self.served)
        for crd in self._informer.list(CRDS):
            keys |= group_versions(crd)
        for key in sorted(keys):
            self._sync(key)

    def _changed(self, event: WatchEvent) -> None:
        if not self.running or not self._informer.synced():
            return
        if event.collection == APISERVICES:
            keys = {key for key in (_group_version(event.object), _group_version(event.previous))
                    if key is not None and (key in self.served or key in self.not_served)}
        elif event.collection == CRDS:
            keys = group_versions(event.object) | group_versions(event.previous)
        else:
            return
        for key in sorted(keys):
            self._sync(key)

    def _why_not_served(self, key: GroupVersion) -> str | None:
        group, version = key
        if key in self._built_in():
            return f"{group}/{version} is served by this server itself; a CRD cannot add kinds to it"
        apiservice = self._informer.get(APISERVICES, "", f"{version}.{group}")
        if apiservice is not None and (apiservice.get("spec") or {}).get("service"):
            return (f"the APIService {version}.{group} sends {group}/{version} to a remote backend; delete it (or "
                    f"make it Local) to serve the CRDs' kinds here")
        return None

    def _sync(self, key: GroupVersion) -> None:
        group, version = key
        crds = sorted((crd for crd in self._informer.list(CRDS)
                       if is_established(crd) and key in group_versions(crd)),
                      key=lambda crd: str(crd["metadata"]["name"]))
        if not crds:
            self.not_served.pop(key, None)
            if self.served.pop(key, None) is not None:
                self._uninstall(group, version)
                _log.info("no longer serving {group}/{version}: no established CRD serves it", group=group,
                          version=version)
            return
        names = tuple(str(crd["metadata"]["name"]) for crd in crds)
        reason = self._why_not_served(key)
        if reason is not None:
            if self.served.pop(key, None) is not None:
                self._uninstall(group, version)
            if self.not_served.get(key) != reason:
                _log.warn("not serving {group}/{version} for {crds}: {reason}", group=group, version=version,
                          crds=list(names), reason=reason)
            self.not_served[key] = reason
            return
        self.not_served.pop(key, None)
        kinds = tuple(CustomResourceStrategy(crd, version) for crd in crds)
        first = key not in self.served
        self.served[key] = names
        self._install(LocalGroupVersion(group, version, kinds))
        if first:
            _log.info("serving {group}/{version} for {crds}", group=group, version=version, crds=list(names))


__all__ = ["CRDS", "CRD_GROUP_PRIORITY_MINIMUM", "CRD_VERSION_PRIORITY", "CustomResourceServing", "is_established"]
