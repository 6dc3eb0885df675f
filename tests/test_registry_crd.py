# -*- test-case-name: tests.test_registry_crd -*-
"""Tests for L{grafana_aggregator.registry.customresourcedefinition} and L{grafana_aggregator.registry.crdstatus}.

Messages are kube's (k8s.io/apiextensions-apiserver 1.36): pkg/apis/apiextensions/validation/validation.go
and its validation_test.go, pkg/controller/status/naming_controller.go, pkg/controller/establish and
pkg/controller/finalizer.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.fielderrors import FieldError, invalid
from grafana_aggregator.apimachinery.strategy import CREATION_TIMESTAMP_DESCRIPTION, NAME_DESCRIPTION
from grafana_aggregator.registry.crdstatus import (
    CLEANUP_FINALIZER,
    calculate_names,
    cleanup_done_condition,
    establish_status,
    naming_status,
    set_condition,
)
from grafana_aggregator.registry.customresourcedefinition import CustomResourceDefinitionStrategy

UTC = datetime.timezone.utc
NOW = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
LATER = datetime.datetime(2024, 5, 6, 8, 0, 0, tzinfo=UTC)
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
    "color": {"type": "string"}, "size": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
}}, "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}


def _version(name: str = "v1", storage: bool = True, **fields: Any) -> dict[str, Any]:
    version: dict[str, Any] = {"name": name, "served": True, "storage": storage,
                               "schema": {"openAPIV3Schema": copy.deepcopy(SCHEMA)}}
    version.update(fields)
    return version


def _crd(plural: str = "widgets", group: str = "example.com", kind: str = "Widget", **spec: Any) -> dict[str, Any]:
    """A valid, defaulted CRD `<plural>.<group>`, with spec fields overridden."""
    base: dict[str, Any] = {
        "group": group, "scope": "Namespaced",
        "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": kind + "List"},
        "versions": [_version()], "conversion": {"strategy": "None"},
    }
    base.update(spec)
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"}, "spec": base}


def _created(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as it would be stored after create: defaulted and prepared."""
    strategy = CustomResourceDefinitionStrategy()
    strategy.default(crd)
    strategy.prepare_for_create(crd)
    return crd


def _errors(crd: dict[str, Any]) -> list[str]:
    return [str(e) for e in CustomResourceDefinitionStrategy().validate(_created(crd))]


LABEL_1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
              "character, and end with an alphanumeric character (e.g. 'my-name' or 'abc-123', regex used for "
              "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


class InfoTests(SynchronousTestCase):
    """Names, scope and printing of the kind."""

    def test_names(self) -> None:
        """Cluster-scoped customresourcedefinitions, short names crd and crds, category api-extensions (etcd.go)."""
        info = CustomResourceDefinitionStrategy().info
        self.assertEqual((info.api_version, info.kind, info.plural, info.singular, info.namespaced),
                         ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions",
                          "customresourcedefinition", False))
        self.assertEqual((info.short_names, info.categories, info.has_status),
                         (("crd", "crds"), ("api-extensions",), True))

    def test_table(self) -> None:
        """`kubectl get crd` shows NAME and CREATED AT (a date in UTC): kube's default table convertor."""
        strategy = CustomResourceDefinitionStrategy()
        self.assertEqual([c.to_json() for c in strategy.columns], [
            {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": CREATION_TIMESTAMP_DESCRIPTION,
             "priority": 0},
        ])
        crd = _crd()
        crd["metadata"]["creationTimestamp"] = "2024-05-06T09:08:09+02:00"
        self.assertEqual(strategy.table_cells(crd, LATER), ["widgets.example.com", "2024-05-06T07:08:09Z"])
        self.assertEqual(strategy.table_cells(_crd(), LATER), ["widgets.example.com", "0001-01-01T00:00:00Z"])


class DefaultsTests(SynchronousTestCase):
    """v1 defaults.go and the strategy's PrepareForCreate."""

    def test_defaults(self) -> None:
        """singular is the lower-case kind, listKind is kind+List, conversion is None."""
        crd = _crd()
        del crd["spec"]["conversion"]
        crd["spec"]["names"] = {"plural": "widgets", "kind": "BigWidget"}
        CustomResourceDefinitionStrategy().default(crd)
        self.assertEqual(crd["spec"]["names"], {"plural": "widgets", "kind": "BigWidget", "singular": "bigwidget",
                                                "listKind": "BigWidgetList"})
        self.assertEqual(crd["spec"]["conversion"], {"strategy": "None"})

    def test_webhook_port(self) -> None:
        """A conversion webhook service gets port 443 (SetDefaults_ServiceReference)."""
        crd = _crd(conversion={"strategy": "Webhook", "webhook": {"clientConfig": {"service": {"name": "a"}}}})
        CustomResourceDefinitionStrategy().default(crd)
        self.assertEqual(crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"], {"name": "a", "port": 443})

    def test_create_wipes_status_and_stores_storage_version(self) -> None:
        """PrepareForCreate: status is reset and the storage version becomes status.storedVersions."""
        crd = _crd(versions=[_version("v1", storage=False), _version("v2")])
        crd["status"] = {"acceptedNames": {"plural": "x"}, "storedVersions": ["v0"]}
        CustomResourceDefinitionStrategy().prepare_for_create(crd)
        self.assertEqual(crd["status"], {"storedVersions": ["v2"]})

    def test_update_keeps_status_and_appends_storage_version(self) -> None:
        """PrepareForUpdate: the stored status wins and a new storage version is appended."""
        old = _created(_crd(versions=[_version("v1"), _version("v2", storage=False)]))
        new = _crd(versions=[_version("v1", storage=False), _version("v2")])
        new["status"] = {"storedVersions": []}
        CustomResourceDefinitionStrategy().prepare_for_update(new, old)
        self.assertEqual(new["status"], {"storedVersions": ["v1", "v2"]})


class ValidationTests(SynchronousTestCase):
    """ValidateCustomResourceDefinition, with kube's paths and messages."""

    def test_valid(self) -> None:
        """A well-formed CRD has no errors."""
        self.assertEqual(_errors(_crd()), [])

    def test_name(self) -> None:
        """metadata.name must be plural.group (validation.go nameValidationFn)."""
        crd = _crd()
        crd["metadata"]["name"] = "gadgets.example.com"
        self.assertEqual(_errors(crd), [
            'metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group'])

    def test_group(self) -> None:
        """group is required, a DNS subdomain, with a dot (validation_test.go "bad names 01")."""
        crd = _crd(group="example")
        crd["metadata"]["name"] = "widgets.example"
        self.assertEqual(_errors(crd), ['spec.group: Invalid value: "example": should be a domain with at least one dot'])
        crd = _crd(group="")
        crd["metadata"]["name"] = "widgets."
        self.assertIn("spec.group: Required value", _errors(crd))

    def test_scope(self) -> None:
        """scope is Cluster or Namespaced."""
        self.assertEqual(_errors(_crd(scope="Global")), [
            'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"'])
        self.assertEqual(_errors(_crd(scope="")), ["spec.scope: Required value"])

    def test_names(self) -> None:
        """Names are DNS-1035 labels (kinds in any case) and kind differs from listKind (ValidateCustomResourceDefinitionNames)."""
        crd = _crd(plural="widgets")
        crd["spec"]["names"].update(singular="Widget", kind="Wid_get", listKind="Wid_get", shortNames=["w", "W1"],
                                    categories=["all", "-x"])
        self.assertEqual(_errors(crd), [
            f'spec.names.singular: Invalid value: "Widget": {LABEL_1035}',
            f'spec.names.kind: Invalid value: "Wid_get": may have mixed case, but should otherwise match: {LABEL_1035}',
            f'spec.names.listKind: Invalid value: "Wid_get": may have mixed case, but should otherwise match: '
            f"{LABEL_1035}",
            f'spec.names.shortNames[1]: Invalid value: "W1": {LABEL_1035}',
            'spec.names.listKind: Invalid value: "Wid_get": kind and listKind may not be the same',
            f'spec.names.categories[1]: Invalid value: "-x": {LABEL_1035}',
        ])

    def test_names_required(self) -> None:
        """plural, kind (and so singular and listKind) are required."""
        crd = _crd()
        crd["spec"]["names"] = {}
        crd["metadata"]["name"] = ".example.com"
        errors = _errors(crd)
        for key in ("plural", "singular", "kind", "listKind"):
            self.assertIn(f"spec.names.{key}: Required value", errors)

    def test_storage_count(self) -> None:
        """Exactly one version is the storage version; storedVersions then cannot be empty either."""
        errors = _errors(_crd(versions=[_version("v1", storage=False)]))
        self.assertEqual(len(errors), 2)
        self.assertTrue(errors[0].startswith('spec.versions: Invalid value: [{"name":"v1"'))
        self.assertTrue(errors[0].endswith(": must have exactly one version marked as storage version"))
        self.assertEqual(errors[1], "status.storedVersions: Invalid value: []string(nil): must have at least one "
                                    "stored version")
        errors = _errors(_crd(versions=[_version("v1"), _version("v2")]))
        self.assertEqual([e.rsplit(": ", 1)[1] for e in errors],  # only the first joins storedVersions
                         ["must have exactly one version marked as storage version", "must have the storage version v2"])

    def test_version_names(self) -> None:
        """Version names are unique DNS-1035 labels; the first one is also checked as spec.version."""
        errors = _errors(_crd(versions=[_version("V1"), _version("V1", storage=False)]))
        self.assertEqual(errors[:2], [f'spec.versions[0].name: Invalid value: "V1": {LABEL_1035}',
                                      f'spec.versions[1].name: Invalid value: "V1": {LABEL_1035}'])
        self.assertTrue(errors[2].endswith(": must contain unique version names"))
        self.assertEqual(errors[3], f'spec.version: Invalid value: "V1": {LABEL_1035}')

    def test_deprecation_warning(self) -> None:
        """deprecationWarning only on deprecated versions, non-empty, at most 256 bytes, printable."""
        cases = [
            ({"deprecated": False, "deprecationWarning": "x"}, ['"x": can only be set for deprecated versions']),
            ({"deprecated": True, "deprecationWarning": ""}, ['"": must not be an empty string']),
            ({"deprecated": True, "deprecationWarning": "a" * 257}, [f'"{"a" * 257}": must be <= 256 characters long']),
            ({"deprecated": True, "deprecationWarning": "ab\ncd"},
             ['"ab\\ncd": must only contain printable UTF-8 characters; control character found at index 2']),
            ({"deprecated": True, "deprecationWarning": "fine, use v2"}, []),
        ]
        for fields, expected in cases:
            self.assertEqual(_errors(_crd(versions=[_version(**fields)])),
                             [f"spec.versions[0].deprecationWarning: Invalid value: {e}" for e in expected])

    def test_schema_required(self) -> None:
        """Every version needs an openAPIV3Schema on create."""
        self.assertEqual(_errors(_crd(versions=[_version(schema=None)])),
                         ["spec.versions[0].schema.openAPIV3Schema: Required value"])

    def test_schema_errors_injected(self) -> None:
        """The structural-schema check is called with the lifted path when all versions share a schema, else
        per version (the v1 conversion moves identical schemas to spec.validation)."""
        calls: list[str] = []

        def check(schema: dict[str, Any], path: str) -> list[FieldError]:
            calls.append(path)
            return [invalid(path + ".type", schema.get("type"), "boom")]

        strategy = CustomResourceDefinitionStrategy(schema_errors=check)
        crd = _created(_crd(versions=[_version("v1"), _version("v2", storage=False)]))
        self.assertEqual([str(e) for e in strategy.validate(crd)],
                         ['spec.validation.openAPIV3Schema.type: Invalid value: "object": boom'])
        other = _version("v2", storage=False)
        other["schema"]["openAPIV3Schema"]["description"] = "different"
        calls.clear()
        strategy.validate(_created(_crd(versions=[_version("v1"), other])))
        self.assertEqual(calls, ["spec.versions[0].schema.openAPIV3Schema", "spec.versions[1].schema.openAPIV3Schema"])

    def test_status_root(self) -> None:
        """With the status subresource the root must be an object; the root is never nullable."""
        schema = {"type": "string", "nullable": True}
        errors = _errors(_crd(versions=[_version(schema={"openAPIV3Schema": schema}, subresources={"status": {}})]))
        self.assertEqual(errors, [
            'spec.validation.openAPIV3Schema.type: Invalid value: "string": only "object" is allowed as the type at '
            "the root of the schema if the status subresource is enabled",
            "spec.validation.openAPIV3Schema.nullable: Forbidden: nullable cannot be true at the root",
        ])

    def test_webhook_refused(self) -> None:
        """Webhook conversion is refused with a clear message on spec.conversion.strategy (ours, issue 15)."""
        crd = _crd(conversion={"strategy": "Webhook", "webhook": {"clientConfig": {"url": "https://x.example/c"},
                                                                 "conversionReviewVersions": ["v1"]}})
        self.assertEqual(_errors(crd), [
            'spec.conversion.strategy: Invalid value: "Webhook": conversion webhooks are not supported by this '
            "server yet; use strategy None (all versions share one schema and only apiVersion is rewritten)"])

    def test_conversion_rules(self) -> None:
        """kube's conversion rules: the strategy's values, webhook settings only with Webhook."""
        self.assertEqual(_errors(_crd(conversion={"strategy": "Magic"})), [
            'spec.conversion.strategy: Unsupported value: "Magic": supported values: "None", "Webhook"'])
        crd = _crd(conversion={"strategy": "None", "webhook": {"clientConfig": {"url": "https://x"},
                                                              "conversionReviewVersions": ["v1"]}})
        self.assertEqual(_errors(crd), [
            "spec.conversion.webhookClientConfig: Forbidden: should not be set when strategy is not set to Webhook",
            "spec.conversion.conversionReviewVersions: Forbidden: should not be set when strategy is not set to "
            "Webhook"])

    def test_scale(self) -> None:
        """Scale paths: spec replicas under .spec, status replicas under .status, selector under either."""
        scale = {"specReplicasPath": ".status.replicas", "statusReplicasPath": "status.replicas",
                 "labelSelectorPath": ".metadata.labels"}
        self.assertEqual(_errors(_crd(versions=[_version(subresources={"scale": scale})])), [
            'spec.subresources.scale.specReplicasPath: Invalid value: ".status.replicas": should be a json path under '
            ".spec",
            'spec.subresources.scale.statusReplicasPath: Invalid value: "status.replicas": must be a simple json path '
            "starting with .",
            'spec.subresources.scale.labelSelectorPath: Invalid value: ".metadata.labels": should be a json path '
            "under either .spec or .status",
        ])
        self.assertEqual(_errors(_crd(versions=[_version(subresources={"scale": {}})])), [
            "spec.subresources.scale.specReplicasPath: Required value",
            "spec.subresources.scale.statusReplicasPath: Required value"])

    def test_printer_columns(self) -> None:
        """Printer columns: name, a known type and format, a jsonPath starting with a dot."""
        columns = [{"name": "", "type": "map", "format": "uuid", "jsonPath": "spec.color"},
                   {"name": "Size", "type": "", "jsonPath": ""}]
        self.assertEqual(_errors(_crd(versions=[_version(additionalPrinterColumns=columns)])), [
            "spec.additionalPrinterColumns[0].name: Required value",
            'spec.additionalPrinterColumns[0].type: Invalid value: "map": must be one of '
            "boolean,date,integer,number,string",
            'spec.additionalPrinterColumns[0].format: Invalid value: "uuid": must be one of '
            "byte,date,date-time,double,float,int32,int64,password",
            'spec.additionalPrinterColumns[0].JSONPath: Invalid value: "spec.color": must be a simple json path '
            "starting with .",
            "spec.additionalPrinterColumns[1].type: Required value: must be one of boolean,date,integer,number,string",
            "spec.additionalPrinterColumns[1].JSONPath: Required value",
        ])

    def test_selectable_fields(self) -> None:
        """Selectable fields: a path to a scalar field outside metadata, no duplicates."""
        fields = [{"jsonPath": ".spec.color"}, {"jsonPath": ".spec.missing"}, {"jsonPath": ".spec.tags"},
                  {"jsonPath": ".spec.color"}, {"jsonPath": ""}, {"jsonPath": ".spec.tags[0]"}]
        self.assertEqual(_errors(_crd(versions=[_version(selectableFields=fields)])), [
            'spec.selectableFields[1].jsonPath: Invalid value: ".spec.missing": is an invalid path: does not refer to '
            "a valid field",
            'spec.selectableFields[2].jsonPath: Invalid value: ".spec.tags": must point to a field of type string, '
            "boolean or integer. Enum string fields and strings with formats are allowed.",
            'spec.selectableFields[3].jsonPath: Duplicate value: ".spec.color"',
            "spec.selectableFields[4].jsonPath: Required value",
            'spec.selectableFields[5].jsonPath: Invalid value: ".spec.tags[0]": is an invalid path: array notation '
            "is not allowed",
        ])

    def test_too_many_selectable_fields(self) -> None:
        """At most 8 selectable fields."""
        props = {f"f{i}": {"type": "string"} for i in range(9)}
        schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": props}}}
        fields = [{"jsonPath": f".spec.f{i}"} for i in range(9)]
        self.assertEqual(_errors(_crd(versions=[_version(schema={"openAPIV3Schema": schema},
                                                         selectableFields=fields)])),
                         ["spec.selectableFields: Too many: 9: must have at most 8 items"])

    def test_preserve_unknown_fields(self) -> None:
        """preserveUnknownFields: true is refused in v1."""
        self.assertEqual(_errors(_crd(preserveUnknownFields=True)), [
            "spec.preserveUnknownFields: Invalid value: true: cannot set to true, set "
            "x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead"])

    def test_defaults_need_pruning(self) -> None:
        """A schema with defaults needs preserveUnknownFields false (validation.go specHasDefaults)."""
        schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "size": {"type": "integer", "default": 1}}}}}
        self.assertEqual(_errors(_crd(preserveUnknownFields=True, versions=[_version(schema={"openAPIV3Schema": schema})]))[0],
                         "spec.preserveUnknownFields: Invalid value: true: must be false in order to use defaults in "
                         "the schema")

    def test_api_approval(self) -> None:
        """A *.k8s.io group needs the api-approved.kubernetes.io annotation (validateAPIApproval)."""
        self.assertEqual(_errors(_crd(group="things.k8s.io")), [
            'metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval '
            'annotation "api-approved.kubernetes.io", see https://github.com/kubernetes/enhancements/pull/1111'])
        crd = _crd(group="things.k8s.io")
        crd["metadata"]["annotations"] = {"api-approved.kubernetes.io": "unapproved, experimental"}
        self.assertEqual(_errors(crd), [])

    def test_type_errors(self) -> None:
        """Values of the wrong JSON type are reported on their path, not a 500."""
        crd = _crd(scope=3)
        crd["spec"]["versions"][0]["served"] = "yes"
        self.assertEqual(_errors(crd), ["spec.scope: Invalid value: 3: must be of type string",
                                        'spec.versions[0].served: Invalid value: "yes": must be of type boolean'])


class UpdateTests(SynchronousTestCase):
    """ValidateCustomResourceDefinitionUpdate."""

    def _update_errors(self, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        strategy = CustomResourceDefinitionStrategy()
        strategy.default(new)
        strategy.prepare_for_update(new, old)
        return [str(e) for e in strategy.validate_update(new, old)]

    def test_group_and_plural_immutable(self) -> None:
        """group and plural never change (they make the name)."""
        old = _created(_crd())
        new = _crd()
        new["spec"]["group"] = "other.com"
        new["spec"]["names"]["plural"] = "gadgets"
        errors = self._update_errors(old, new)
        self.assertIn('spec.group: Invalid value: "other.com": field is immutable', errors)
        self.assertIn('spec.names.plural: Invalid value: "gadgets": field is immutable', errors)

    def test_scope_and_kind_immutable_once_established(self) -> None:
        """scope and kind may change until the CRD is Established."""
        old = _created(_crd())
        new = _crd(scope="Cluster")
        new["spec"]["names"].update(kind="Gadget", listKind="GadgetList")
        self.assertEqual(self._update_errors(old, copy.deepcopy(new)), [])
        set_condition(old, {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                            "message": "the initial names have been accepted"}, NOW)
        self.assertEqual(self._update_errors(old, new), [
            'spec.scope: Invalid value: "Cluster": field is immutable',
            'spec.names.kind: Invalid value: "Gadget": field is immutable'])

    def test_stored_version_removed(self) -> None:
        """A version still in status.storedVersions cannot leave spec.versions."""
        old = _created(_crd(versions=[_version("v1", storage=False), _version("v2")]))
        old["status"]["storedVersions"] = ["v1", "v2"]
        new = _crd(versions=[_version("v2")])
        self.assertEqual(self._update_errors(old, new), [
            'status.storedVersions[0]: Invalid value: "v1": missing from spec.versions; v1 was previously a storage '
            "version, and must remain in spec.versions until a storage migration ensures no data remains persisted "
            "in v1 and removes v1 from status.storedVersions"])

    def test_status_ignored_on_main_resource(self) -> None:
        """A write to the main resource keeps the stored status."""
        old = _created(_crd())
        new = _crd()
        new["status"] = {"storedVersions": ["v9"], "acceptedNames": {"plural": "x"}}
        self.assertEqual(self._update_errors(old, new), [])
        self.assertEqual(new["status"], {"storedVersions": ["v1"]})

    def test_status_update_checks_accepted_names(self) -> None:
        """The status subresource checks the accepted names."""
        old = _created(_crd())
        new = copy.deepcopy(old)
        new["status"]["acceptedNames"] = {"plural": "Widgets"}
        self.assertEqual([str(e) for e in CustomResourceDefinitionStrategy().validate_status_update(new, old)],
                         [f'status.acceptedNames.plural: Invalid value: "Widgets": {LABEL_1035}'])


def _accepted(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD after the naming and establishing controllers ran with no competitor."""
    status = naming_status(crd, [crd], NOW)
    assert status is not None
    crd["status"] = status
    status = establish_status(crd, NOW)
    assert status is not None
    crd["status"] = status
    return crd


class ConditionTests(SynchronousTestCase):
    """The naming, establishing and finalizer controllers' conditions."""

    def test_fresh_names_accepted_then_established(self) -> None:
        """A CRD without competitors: NamesAccepted NoConflicts, Established Installing, then InitialNamesAccepted."""
        crd = _created(_crd())
        crd["spec"]["names"]["shortNames"] = ["wd"]
        status = naming_status(crd, [crd], NOW)
        assert status is not None
        self.assertEqual(status["acceptedNames"], crd["spec"]["names"])
        self.assertEqual(status["conditions"], [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
             "lastTransitionTime": "2024-05-06T07:08:09Z"},
            {"type": "Established", "status": "False", "reason": "Installing",
             "message": "the initial names have been accepted", "lastTransitionTime": "2024-05-06T07:08:09Z"},
        ])
        crd["status"] = status
        self.assertIsNone(naming_status(crd, [crd], LATER))
        established = establish_status(crd, LATER)
        assert established is not None
        self.assertEqual(established["conditions"][1], {
            "type": "Established", "status": "True", "reason": "InitialNamesAccepted",
            "message": "the initial names have been accepted", "lastTransitionTime": "2024-05-06T08:00:00Z"})
        crd["status"] = established
        self.assertIsNone(establish_status(crd, LATER))

    def test_plural_conflict(self) -> None:
        """Two CRDs of a group wanting the same plural: the second gets PluralConflict and is not established."""
        first = _accepted(_created(_crd()))
        second = _created(_crd(kind="Gadget"))
        second["metadata"]["name"] = "widgets.example.com-2"
        accepted, names, established = calculate_names(second, [first, second])
        self.assertEqual((names["status"], names["reason"], names["message"]),
                         ("False", "PluralConflict", '"widgets" is already in use'))
        self.assertEqual((established["status"], established["reason"], established["message"]),
                         ("False", "NotAccepted", "not all names are accepted"))
        self.assertNotIn("plural", accepted)
        self.assertEqual(accepted["kind"], "Gadget")

    def test_other_group_no_conflict(self) -> None:
        """The same names in another group do not conflict."""
        first = _accepted(_created(_crd()))
        other = _created(_crd(group="other.com"))
        self.assertEqual(calculate_names(other, [first, other])[1]["reason"], "NoConflicts")

    def test_short_name_conflicts(self) -> None:
        """Short names taken by another CRD's plural or short names: ShortNamesConflict, aggregated."""
        first = _created(_crd())
        first["spec"]["names"]["shortNames"] = ["wd"]
        first = _accepted(first)
        second = _created(_crd(plural="gadgets", kind="Gadget"))
        second["spec"]["names"]["shortNames"] = ["widgets"]
        names = calculate_names(second, [first, second])[1]
        self.assertEqual((names["reason"], names["message"]), ("ShortNamesConflict", '"widgets" is already in use'))
        second["spec"]["names"]["shortNames"] = ["wd", "g", "widget"]
        accepted, names, _ = calculate_names(second, [first, second])
        self.assertEqual(names["message"], '["wd" is already in use, "widget" is already in use]')
        self.assertNotIn("shortNames", accepted)

    def test_kind_and_list_kind_conflicts(self) -> None:
        """The last conflict found names the condition: kind, then listKind (naming_controller.go order)."""
        first = _accepted(_created(_crd()))
        second = _created(_crd(plural="gadgets"))
        names = calculate_names(second, [first, second])[1]
        self.assertEqual((names["reason"], names["message"]), ("ListKindConflict", '"WidgetList" is already in use'))
        second["spec"]["names"]["listKind"] = "GadgetList"
        names = calculate_names(second, [first, second])[1]
        self.assertEqual((names["reason"], names["message"]), ("KindConflict", '"Widget" is already in use'))
        second["spec"]["names"].update(kind="Gadget", singular="widget")
        names = calculate_names(second, [first, second])[1]
        self.assertEqual((names["reason"], names["message"]), ("SingularConflict", '"widget" is already in use'))

    def test_established_kept_when_names_later_conflict(self) -> None:
        """An Established CRD stays Established while a new name is refused; the transition time is kept."""
        first = _accepted(_created(_crd()))
        other = _accepted(_created(_crd(plural="gadgets", kind="Gadget")))
        first["spec"]["names"]["shortNames"] = ["gadgets"]
        status = naming_status(first, [first, other], LATER)
        assert status is not None
        by_type = {c["type"]: c for c in status["conditions"]}
        self.assertEqual(by_type["NamesAccepted"]["reason"], "ShortNamesConflict")
        self.assertEqual(by_type["NamesAccepted"]["lastTransitionTime"], "2024-05-06T08:00:00Z")
        self.assertEqual((by_type["Established"]["status"], by_type["Established"]["lastTransitionTime"]),
                         ("True", "2024-05-06T07:08:09Z"))

    def test_terminating(self) -> None:
        """The finalizer's last condition: InstanceDeletionCompleted when established, else NeverEstablished."""
        self.assertEqual(CLEANUP_FINALIZER, "customresourcecleanup.apiextensions.k8s.io")
        self.assertEqual(cleanup_done_condition(_accepted(_created(_crd()))), {
            "type": "Terminating", "status": "False", "reason": "InstanceDeletionCompleted",
            "message": "removed all instances"})
        self.assertEqual(cleanup_done_condition(_created(_crd()))["reason"], "NeverEstablished")
