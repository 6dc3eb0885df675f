"""Tests for L{grafana_aggregator.controllers.customresources}: established CRDs' served versions become served
group-versions, rebuilt when a CRD changes, shared by the CRDs of one group, removed with the last one."""

from __future__ import annotations

import copy
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.internet.testing import EventLoggingObserver
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.strategy import LocalGroupVersion
from grafana_aggregator.controllers.customresources import CRDS, CustomResourceServing, is_established
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore

from .test_customresource import CERTIFICATES


def established(crd: dict[str, Any], status: str = "True") -> dict[str, Any]:
    crd = copy.deepcopy(crd)
    crd["status"] = {"conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                                    {"type": "Established", "status": status, "reason": "InitialNamesAccepted"}]}
    return crd


def issuers() -> dict[str, Any]:
    crd = copy.deepcopy(CERTIFICATES)
    crd["metadata"]["name"] = "issuers.cert-manager.io"
    crd["spec"]["names"] = {"kind": "Issuer", "listKind": "IssuerList", "plural": "issuers", "singular": "issuer"}
    return crd


class ServingCase(SynchronousTestCase):
    """CRDs in a memory store, their informer, and the served group-versions recorded."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.informer = Informer(self.store, (CRDS, APISERVICES), Clock())
        self.installed: dict[tuple[str, str], LocalGroupVersion] = {}
        self.removed: list[tuple[str, str]] = []
        self.serving = CustomResourceServing(self.informer, self.install, self.uninstall)

    def install(self, gv: LocalGroupVersion) -> None:
        self.installed[(gv.group, gv.version)] = gv

    def uninstall(self, group: str, version: str) -> None:
        self.removed.append((group, version))
        self.installed.pop((group, version), None)

    def start(self) -> None:
        self.informer.startService()
        self.serving.startService()
        self.addCleanup(self.serving.stopService)
        self.addCleanup(self.informer.stopService)

    def put(self, crd: dict[str, Any]) -> None:
        name = crd["metadata"]["name"]
        try:
            current = self.successResultOf(Deferred.fromCoroutine(self.store.get(CRDS, "", name)))
        except Exception:
            current = None
        if current is None:
            self.successResultOf(Deferred.fromCoroutine(self.store.create(CRDS, "", name, copy.deepcopy(crd))))
        else:
            self.successResultOf(Deferred.fromCoroutine(self.store.update(CRDS, "", name, copy.deepcopy(crd))))

    def kinds(self, key: tuple[str, str] = ("cert-manager.io", "v1")) -> list[str]:
        return [k.info.kind for k in self.installed[key].kinds]



class ServingTests(ServingCase):
    """Established CRDs' versions are served, shared by a group, rebuilt and removed."""

    def test_established_at_start_is_served(self) -> None:
        self.put(established(CERTIFICATES))
        self.start()
        self.assertEqual(self.kinds(), ["Certificate"])
        self.assertEqual(list(self.installed), [("cert-manager.io", "v1")])  # v1alpha2 is not served

    def test_not_established_is_not_served(self) -> None:
        self.put(established(CERTIFICATES, status="False"))
        self.put(CERTIFICATES | {"metadata": {"name": "other.cert-manager.io"}})
        self.start()
        self.assertEqual(self.installed, {})

    def test_served_when_established_and_shared_by_a_group(self) -> None:
        self.start()
        self.put(CERTIFICATES)
        self.assertEqual(self.installed, {})
        self.put(established(CERTIFICATES))
        self.assertEqual(self.kinds(), ["Certificate"])
        self.put(established(issuers()))
        self.assertEqual(self.kinds(), ["Certificate", "Issuer"])

    def test_removed_with_the_last_crd(self) -> None:
        self.put(established(CERTIFICATES))
        self.put(established(issuers()))
        self.start()
        self.successResultOf(Deferred.fromCoroutine(self.store.delete(CRDS, "", "issuers.cert-manager.io")))
        self.assertEqual(self.kinds(), ["Certificate"])
        self.assertEqual(self.removed, [])
        self.successResultOf(Deferred.fromCoroutine(self.store.delete(CRDS, "", "certificates.cert-manager.io")))
        self.assertEqual((self.installed, self.removed), ({}, [("cert-manager.io", "v1")]))

    def test_version_no_longer_served(self) -> None:
        crd = established(CERTIFICATES)
        self.put(crd)
        self.start()
        crd["spec"]["versions"][0]["served"] = True
        self.put(crd)
        self.assertEqual(sorted(self.installed), [("cert-manager.io", "v1"), ("cert-manager.io", "v1alpha2")])
        crd["spec"]["versions"][0]["served"] = False
        self.put(crd)
        self.assertEqual(sorted(self.installed), [("cert-manager.io", "v1")])
        self.assertEqual(self.removed, [("cert-manager.io", "v1alpha2")])

    def test_is_established(self) -> None:
        self.assertTrue(is_established(established(CERTIFICATES)))
        self.assertFalse(is_established(established(CERTIFICATES, "False")))
        self.assertFalse(is_established(CERTIFICATES))


class NotServedTests(ServingCase):
    """A CRD never takes over a group-version served here, and a remote APIService of its group-version wins."""

    def setUp(self) -> None:
        super().setUp()
        self.serving = CustomResourceServing(self.informer, self.install, self.uninstall,
                                             lambda: {("service.grafana.app", "v0alpha1")})
        self.log = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_built_in_group_version_is_not_taken(self) -> None:
        crd = established(CERTIFICATES)
        crd["metadata"]["name"] = "certificates.service.grafana.app"
        crd["spec"]["group"] = "service.grafana.app"
        crd["spec"]["versions"] = [{**version, "name": "v0alpha1"} for version in crd["spec"]["versions"]
                                   if version["name"] == "v1"]
        self.put(crd)
        self.start()
        self.assertEqual(self.installed, {})
        self.assertIn("service.grafana.app/v0alpha1 is served by this server itself",
                      self.serving.not_served[("service.grafana.app", "v0alpha1")])
        self.assertEqual(len([e for e in self.log if e.get("reason")]), 1)

    def test_remote_apiservice_wins_until_deleted(self) -> None:
        remote = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                  "metadata": {"name": "v1.cert-manager.io"},
                  "spec": {"group": "cert-manager.io", "version": "v1", "groupPriorityMinimum": 100,
                           "versionPriority": 10, "service": {"namespace": "ns", "name": "cm", "port": 443}}}
        self.successResultOf(Deferred.fromCoroutine(self.store.create(APISERVICES, "", "v1.cert-manager.io",
                                                                      copy.deepcopy(remote))))
        self.put(established(CERTIFICATES))
        self.start()
        self.assertEqual(self.installed, {})
        self.assertIn("the APIService v1.cert-manager.io sends cert-manager.io/v1 to a remote backend",
                      self.serving.not_served[("cert-manager.io", "v1")])
        self.successResultOf(Deferred.fromCoroutine(self.store.delete(APISERVICES, "", "v1.cert-manager.io")))
        self.assertEqual(self.kinds(), ["Certificate"])
        self.assertEqual(self.serving.not_served, {})
        # Registered remote again: the CRD's kinds stop being served here.
        self.successResultOf(Deferred.fromCoroutine(self.store.create(APISERVICES, "", "v1.cert-manager.io",
                                                                      copy.deepcopy(remote))))
        self.assertEqual((self.installed, self.removed), ({}, [("cert-manager.io", "v1")]))
