"""Tests for L{grafana_aggregator.apimachinery.jsonpath}: the JSONPath expressions CRD printer columns use, with
client-go's results (fields, quoted keys, indexes and slices, wildcards, recursion, filters; missing is empty)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.jsonpath import JSONPathError, find

CERTIFICATE = {
    "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web"}},
    "spec": {"secretName": "web-tls", "issuerRef": {"name": "letsencrypt"}, "dnsNames": ["a.test", "b.test", "c.test"],
             "replicas": 3},
    "status": {"conditions": [{"type": "Issuing", "status": "False"},
                              {"type": "Ready", "status": "True", "message": "up to date", "observedGeneration": 2}]},
}


class FindTests(SynchronousTestCase):
    def test_fields(self) -> None:
        self.assertEqual(find(CERTIFICATE, ".spec.secretName"), ["web-tls"])
        self.assertEqual(find(CERTIFICATE, "{.spec.issuerRef.name}"), ["letsencrypt"])
        self.assertEqual(find(CERTIFICATE, ".spec.replicas"), [3])

    def test_missing_is_empty(self) -> None:
        self.assertEqual(find(CERTIFICATE, ".spec.nothing.here"), [])
        self.assertEqual(find(CERTIFICATE, ".spec.dnsNames[7]"), [])

    def test_quoted_keys(self) -> None:
        self.assertEqual(find(CERTIFICATE, ".metadata.labels['app.kubernetes.io/name']"), ["web"])

    def test_indexes_slices_wildcards(self) -> None:
        self.assertEqual(find(CERTIFICATE, ".spec.dnsNames[0]"), ["a.test"])
        self.assertEqual(find(CERTIFICATE, ".spec.dnsNames[-1]"), ["c.test"])
        self.assertEqual(find(CERTIFICATE, ".spec.dnsNames[0:2]"), ["a.test", "b.test"])
        self.assertEqual(find(CERTIFICATE, ".spec.dnsNames[*]"), ["a.test", "b.test", "c.test"])
        self.assertEqual(find(CERTIFICATE, ".status.conditions[*].type"), ["Issuing", "Ready"])

    def test_filters(self) -> None:
        """cert-manager's Ready column: the status of the condition whose type is Ready."""
        self.assertEqual(find(CERTIFICATE, '.status.conditions[?(@.type=="Ready")].status'), ["True"])
        self.assertEqual(find(CERTIFICATE, ".status.conditions[?(@.type=='Ready')].message"), ["up to date"])
        self.assertEqual(find(CERTIFICATE, '.status.conditions[?(@.type!="Ready")].type'), ["Issuing"])
        self.assertEqual(find(CERTIFICATE, ".status.conditions[?(@.observedGeneration>1)].type"), ["Ready"])
        self.assertEqual(find(CERTIFICATE, ".status.conditions[?(@.message)].type"), ["Ready"])
        self.assertEqual(find(CERTIFICATE, '.status.conditions[?(@.type=="Gone")].status'), [])

    def test_recursive_descent(self) -> None:
        self.assertEqual(find(CERTIFICATE, "..message"), ["up to date"])

    def test_bad_expressions(self) -> None:
        for bad in (".spec[", ".spec.dnsNames[x]", ".spec.a b", '.status.conditions[?(@.type==)]'):
            self.assertRaises(JSONPathError, find, CERTIFICATE, bad)
