"""Tests for L{grafana_aggregator.registry.customresource}: a CRD version's kind as kube derives it, with
`kubectl get` columns from additionalPrinterColumns (kube's cell types) and selectableFields."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.registry.customresource import CustomResourceStrategy, served_versions

NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.timezone.utc)

#: The names, scope and printer columns of cert-manager's Certificate (v1.x), with a small schema.
CERTIFICATES: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {
        "group": "cert-manager.io", "scope": "Namespaced",
        "names": {"kind": "Certificate", "listKind": "CertificateList", "plural": "certificates",
                  "singular": "certificate", "shortNames": ["cert", "certs"], "categories": ["cert-manager"]},
        "versions": [
            {"name": "v1alpha2", "served": False, "storage": False},
            {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
             "schema": {"openAPIV3Schema": {"type": "object"}},
             "selectableFields": [{"jsonPath": ".spec.secretName"}, {"jsonPath": ".spec.isCA"}],
             "additionalPrinterColumns": [
                 {"jsonPath": '.status.conditions[?(@.type=="Ready")].status', "name": "Ready", "type": "string"},
                 {"jsonPath": ".spec.secretName", "name": "Secret", "type": "string"},
                 {"jsonPath": ".spec.issuerRef.name", "name": "Issuer", "priority": 1, "type": "string"},
                 {"jsonPath": '.status.conditions[?(@.type=="Ready")].message', "name": "Status", "priority": 1,
                  "type": "string"},
                 {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date",
                  "description": "CreationTimestamp is a timestamp"},
             ]},
        ],
    },
}


def certificate(**status: Any) -> dict[str, Any]:
    return {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-12-03T11:55:00Z"},
            "spec": {"secretName": "web-tls", "issuerRef": {"name": "letsencrypt"}, "isCA": False},
            "status": status}


class StrategyTests(SynchronousTestCase):
    def test_kind_info(self) -> None:
        strategy = CustomResourceStrategy(CERTIFICATES, "v1")
        info = strategy.info
        self.assertEqual((info.group, info.version, info.kind, info.plural, info.singular, info.namespaced),
                         ("cert-manager.io", "v1", "Certificate", "certificates", "certificate", True))
        self.assertEqual((info.short_names, info.categories, info.has_status, info.go_type),
                         (("cert", "certs"), ("cert-manager",), True, None))
        self.assertEqual(strategy.list_kind, "CertificateList")
        self.assertEqual(served_versions(CERTIFICATES), ["v1"])

    def test_columns_and_cells(self) -> None:
        strategy = CustomResourceStrategy(CERTIFICATES, "v1")
        self.assertEqual([(c.name, c.type, c.priority) for c in strategy.columns],
                         [("Name", "string", 0), ("Ready", "string", 0), ("Secret", "string", 0),
                          ("Issuer", "string", 1), ("Status", "string", 1), ("Age", "date", 0)])
        ready = certificate(conditions=[{"type": "Ready", "status": "True", "message": "up to date"}])
        self.assertEqual(strategy.table_cells(ready, NOW), ["web", "True", "web-tls", "letsencrypt", "up to date", "5m"])
        self.assertEqual(strategy.table_cells(certificate(), NOW), ["web", None, "web-tls", "letsencrypt", None, "5m"])

    def test_default_age_column(self) -> None:
        crd = copy.deepcopy(CERTIFICATES)
        del crd["spec"]["versions"][1]["additionalPrinterColumns"]
        strategy = CustomResourceStrategy(crd, "v1")
        self.assertEqual([c.name for c in strategy.columns], ["Name", "Age"])
        self.assertEqual(strategy.table_cells(certificate(), NOW), ["web", "5m"])

    def test_cell_types(self) -> None:
        """integer, number and boolean cells take only values of their JSON type; string prints any value."""
        crd = copy.deepcopy(CERTIFICATES)
        crd["spec"]["versions"][1]["additionalPrinterColumns"] = [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"},
            {"name": "CA", "type": "boolean", "jsonPath": ".spec.isCA"},
            {"name": "Text", "type": "string", "jsonPath": ".spec.replicas"},
            {"name": "Map", "type": "string", "jsonPath": ".spec.issuerRef"},
            {"name": "When", "type": "date", "jsonPath": ".spec.secretName"},
        ]
        strategy = CustomResourceStrategy(crd, "v1")
        obj = certificate()
        obj["spec"].update({"replicas": 3, "ratio": 2})
        self.assertEqual(strategy.table_cells(obj, NOW)[1:], [3, 2.0, False, "3", "map[name:letsencrypt]", "<invalid>"])
        obj["spec"].update({"replicas": "three", "ratio": "x", "isCA": "yes"})
        self.assertEqual(strategy.table_cells(obj, NOW)[1:4], [None, None, None])

    def test_selectable_fields(self) -> None:
        strategy = CustomResourceStrategy(CERTIFICATES, "v1")
        self.assertEqual(strategy.selectable_fields(certificate()),
                         {"metadata.name": "web", "metadata.namespace": "default", "spec.secretName": "web-tls",
                          "spec.isCA": "false"})

    def test_status_subresource_drives_status_handling(self) -> None:
        """With the status subresource, a create drops status; without it, status is part of the object."""
        with_status = CustomResourceStrategy(CERTIFICATES, "v1")
        obj = certificate(conditions=[])
        with_status.prepare_for_create(obj)
        self.assertNotIn("status", obj)
        crd = copy.deepcopy(CERTIFICATES)
        del crd["spec"]["versions"][1]["subresources"]
        without = CustomResourceStrategy(crd, "v1")
        obj = certificate(conditions=[])
        without.prepare_for_create(obj)
        self.assertIn("status", obj)


class AcceptedNamesTests(SynchronousTestCase):
    """A CRD is served under status.acceptedNames, as kube serves it, once the naming controller has set them."""

    def test_accepted_names_win_over_spec(self) -> None:
        crd = copy.deepcopy(CERTIFICATES)
        crd["status"] = {"acceptedNames": copy.deepcopy(crd["spec"]["names"])}
        crd["spec"]["names"]["shortNames"] = ["taken"]
        info = CustomResourceStrategy(crd, "v1").info
        self.assertEqual(info.short_names, tuple(CERTIFICATES["spec"]["names"].get("shortNames") or ()))
        del crd["status"]
        self.assertEqual(CustomResourceStrategy(crd, "v1").info.short_names, ("taken",))
