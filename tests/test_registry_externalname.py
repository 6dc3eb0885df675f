# -*- test-case-name: tests.test_registry_externalname -*-
"""Tests for L{grafana_aggregator.registry.externalname}: Grafana's ExternalName kind."""

from __future__ import annotations

import datetime
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.strategy import CREATION_TIMESTAMP_DESCRIPTION, NAME_DESCRIPTION
from grafana_aggregator.apimachinery.fielderrors import FieldError
from grafana_aggregator.registry.externalname import ExternalNameStrategy

NOW = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)


def _external_name(host: Any = "example.grafana.svc", **extra: Any) -> dict[str, Any]:
    """An ExternalName `example` in namespace `default` with the given spec.host."""
    obj: dict[str, Any] = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                           "metadata": {"name": "example", "namespace": "default",
                                        "creationTimestamp": "2024-05-06T04:08:09Z"},
                           "spec": {"host": host}}
    obj.update(extra)
    return obj


def _strings(errors: list[FieldError]) -> list[str]:
    """Each error as kube prints it: `<path>: <message>`."""
    return [str(error) for error in errors]


class ExternalNameInfoTests(SynchronousTestCase):
    """The KindInfo, columns and schema of ExternalName."""

    def test_names(self) -> None:
        """Group, version, names and scope are Grafana's; there is no status subresource."""
        info = ExternalNameStrategy().info
        self.assertEqual((info.group, info.version, info.kind, info.plural, info.singular, info.namespaced),
                         ("service.grafana.app", "v0alpha1", "ExternalName", "externalnames", "externalname", True))
        self.assertEqual((info.has_status, info.short_names, info.categories), (False, (), ()))
        self.assertEqual((info.api_version, info.list_kind), ("service.grafana.app/v0alpha1", "ExternalNameList"))
        self.assertEqual(info.verbs, ("create", "delete", "deletecollection", "get", "list", "patch", "update",
                                      "watch"))

    def test_columns(self) -> None:
        """The Table columns are Name, Host and Age."""
        self.assertEqual([c.to_json() for c in ExternalNameStrategy().columns], [
            {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
            {"name": "Host", "type": "string", "format": "",
             "description": "The DNS name or IP address of the backend that serves the APIService.", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": CREATION_TIMESTAMP_DESCRIPTION,
             "priority": 0},
        ])

    def test_schema(self) -> None:
        """The schema declares metadata by reference, spec.host as a string, and no status."""
        schema = ExternalNameStrategy().info.schema
        self.assertEqual(sorted(schema["properties"]), ["apiVersion", "kind", "metadata", "spec"])
        self.assertEqual(schema["properties"]["metadata"]["allOf"],
                         [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}])
        host = schema["properties"]["spec"]["properties"]["host"]
        self.assertEqual(host["type"], "string")
        self.assertTrue(host["description"].startswith(
            "The DNS name or IP address of the backend that serves the APIService."))
        self.assertEqual(schema["x-kubernetes-group-version-kind"],
                         [{"group": "service.grafana.app", "kind": "ExternalName", "version": "v0alpha1"}])
        self.assertTrue(schema["description"])
        self.assertTrue(schema["properties"]["spec"]["description"])


class ExternalNameValidateTests(SynchronousTestCase):
    """validate() requires spec.host to be a DNS subdomain or an IP address."""

    def validate(self, obj: dict[str, Any]) -> list[str]:
        """The printed errors of validating obj."""
        return _strings(ExternalNameStrategy().validate(obj))

    def test_valid_hosts(self) -> None:
        """DNS subdomains and canonical IPv4 and IPv6 addresses are accepted."""
        for host in ("localhost", "example.grafana.svc", "grafana-0.grafana.ns.svc.cluster.local", "127.0.0.1",
                     "10.0.0.1", "::1", "2001:db8::1", "a" * 253):
            self.assertEqual(self.validate(_external_name(host)), [], host)

    def test_host_required(self) -> None:
        """An empty, null or missing host, or a missing spec, is required."""
        for obj in (_external_name(""), _external_name(None), _external_name(spec={}), _external_name(spec=None)):
            self.assertEqual(self.validate(obj), ["spec.host: Required value"])
        obj = _external_name()
        del obj["spec"]
        self.assertEqual(self.validate(obj), ["spec.host: Required value"])

    def test_invalid_hosts(self) -> None:
        """Anything else is invalid, with the value Go-quoted."""
        for host in ("x_y", "Example.com", "host:8443", "https://example.com", "example.com.", "::ffff:1.2.3.4",
                     "2001:DB8::1", "a" * 254, "fe80::1%eth0"):
            self.assertEqual(self.validate(_external_name(host)),
                             [f'spec.host: Invalid value: "{host}": must be a valid DNS subdomain or IP address'],
                             host)

    def test_error_reason(self) -> None:
        """An invalid host is a FieldValueInvalid error."""
        self.assertEqual([e.reason for e in ExternalNameStrategy().validate(_external_name("x_y"))],
                         ["FieldValueInvalid"])

    def test_wrong_types(self) -> None:
        """A host or spec of the wrong JSON type is a type error."""
        self.assertEqual(self.validate(_external_name(5)), ["spec.host: Invalid value: 5: must be of type string"])
        self.assertEqual(self.validate(_external_name(spec="h")),
                         ['spec: Invalid value: "h": must be of type object'])

    def test_update_validates_host(self) -> None:
        """Updates are validated like creates."""
        self.assertEqual(_strings(ExternalNameStrategy().validate_update(_external_name("x_y"), _external_name())),
                         ['spec.host: Invalid value: "x_y": must be a valid DNS subdomain or IP address'])


class ExternalNameStrategyTests(SynchronousTestCase):
    """Status handling, field selectors and printing of ExternalName."""

    def test_create_keeps_object(self) -> None:
        """Without a status subresource, create preparation changes nothing."""
        obj = _external_name()
        ExternalNameStrategy().default(obj)
        ExternalNameStrategy().prepare_for_create(obj)
        self.assertEqual(obj, _external_name())

    def test_update_takes_new_object(self) -> None:
        """An update takes the new object as sent."""
        new = _external_name("other.example")
        ExternalNameStrategy().prepare_for_update(new, _external_name())
        self.assertEqual(new, _external_name("other.example"))

    def test_spec_changed(self) -> None:
        """A new host is a spec change; a new label is not."""
        strategy = ExternalNameStrategy()
        self.assertTrue(strategy.spec_changed(_external_name("other.example"), _external_name()))
        labelled = _external_name()
        labelled["metadata"]["labels"] = {"a": "b"}
        self.assertFalse(strategy.spec_changed(labelled, _external_name()))

    def test_selectable_fields(self) -> None:
        """metadata.name and metadata.namespace are selectable."""
        self.assertEqual(ExternalNameStrategy().selectable_fields(_external_name()),
                         {"metadata.name": "example", "metadata.namespace": "default"})

    def test_table_cells(self) -> None:
        """The row shows name, host and age."""
        self.assertEqual(ExternalNameStrategy().table_cells(_external_name(), NOW),
                         ["example", "example.grafana.svc", "3h"])

    def test_table_cells_without_host(self) -> None:
        """A missing host prints as an empty cell."""
        obj = _external_name()
        del obj["spec"]
        self.assertEqual(ExternalNameStrategy().table_cells(obj, NOW), ["example", "", "3h"])
