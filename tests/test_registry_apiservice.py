# -*- test-case-name: tests.test_registry_apiservice -*-
"""Tests for L{grafana_aggregator.registry.apiservice} and the AGE helpers of L{grafana_aggregator.apimachinery.strategy}."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.registry.apiservice import (
    APIServiceStrategy,
    available_cell,
    available_condition,
    is_available,
    is_local,
    local_available_condition,
    new_condition,
    service_cell,
    set_condition,
)
from grafana_aggregator.apimachinery.strategy import (
    CREATION_TIMESTAMP_DESCRIPTION,
    NAME_DESCRIPTION,
    human_age,
    human_duration,
)
from grafana_aggregator.apimachinery.fielderrors import FieldError

UTC = datetime.timezone.utc
NOW = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
LOCAL_CONDITION = {"type": "Available", "status": "True", "lastTransitionTime": "2024-05-06T07:08:09Z",
                   "reason": "Local", "message": "Local APIServices are always available"}


def _remote(**spec: Any) -> dict[str, Any]:
    """A valid remote APIService `v1beta1.metrics.k8s.io`, with spec fields overridden."""
    base: dict[str, Any] = {
        "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443},
        "group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
    }
    base.update(spec)
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"}, "spec": base}


def _local(**spec: Any) -> dict[str, Any]:
    """A valid local APIService `v0alpha1.example.grafana.app`, with spec fields overridden."""
    base: dict[str, Any] = {"group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 15000,
                            "versionPriority": 1}
    base.update(spec)
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v0alpha1.example.grafana.app"}, "spec": base}


def _strings(errors: list[FieldError]) -> list[str]:
    """Each error as kube prints it: `<path>: <message>`."""
    return [str(error) for error in errors]


class APIServiceInfoTests(SynchronousTestCase):
    """The KindInfo and columns of APIService."""

    def test_names(self) -> None:
        """Group, version, names, scope and category are kube's."""
        info = APIServiceStrategy().info
        self.assertEqual((info.group, info.version, info.kind, info.plural, info.singular, info.namespaced),
                         ("apiregistration.k8s.io", "v1", "APIService", "apiservices", "apiservice", False))
        self.assertEqual((info.categories, info.short_names, info.has_status), (("api-extensions",), (), True))
        self.assertEqual((info.api_version, info.list_kind), ("apiregistration.k8s.io/v1", "APIServiceList"))
        self.assertEqual(info.description,
                         'APIService represents a server for a particular GroupVersion. Name must be "version.group".')

    def test_columns(self) -> None:
        """The Table columns are Name, Service, Available and Age with kube's descriptions."""
        self.assertEqual([c.to_json() for c in APIServiceStrategy().columns], [
            {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
            {"name": "Service", "type": "string", "format": "",
             "description": "The reference to the service that hosts this API endpoint.", "priority": 0},
            {"name": "Available", "type": "string", "format": "", "description": "Whether this service is available.",
             "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": CREATION_TIMESTAMP_DESCRIPTION,
             "priority": 0},
        ])

    def test_schema_shape(self) -> None:
        """The schema wraps metadata in allOf, inlines spec and status, and marks conditions a list-map."""
        schema = APIServiceStrategy().info.schema
        properties = schema["properties"]
        self.assertEqual(sorted(properties), ["apiVersion", "kind", "metadata", "spec", "status"])
        self.assertEqual(properties["metadata"]["allOf"],
                         [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}])
        self.assertEqual(schema["x-kubernetes-group-version-kind"],
                         [{"group": "apiregistration.k8s.io", "kind": "APIService", "version": "v1"}])
        spec = properties["spec"]
        self.assertEqual(spec["required"], ["groupPriorityMinimum", "versionPriority"])
        self.assertEqual(sorted(spec["properties"]), ["caBundle", "group", "groupPriorityMinimum",
                                                      "insecureSkipTLSVerify", "service", "version",
                                                      "versionPriority"])
        self.assertEqual((spec["properties"]["caBundle"]["type"], spec["properties"]["caBundle"]["format"]),
                         ("string", "byte"))
        service = spec["properties"]["service"]["properties"]
        self.assertEqual(sorted(service), ["name", "namespace", "port"])
        self.assertEqual((service["port"]["type"], service["port"]["format"]), ("integer", "int32"))
        for key in ("groupPriorityMinimum", "versionPriority"):
            self.assertEqual((spec["properties"][key]["type"], spec["properties"][key]["format"]),
                             ("integer", "int32"))
        conditions = properties["status"]["properties"]["conditions"]
        self.assertEqual((conditions["x-kubernetes-list-type"], conditions["x-kubernetes-list-map-keys"]),
                         ("map", ["type"]))
        self.assertEqual(sorted(conditions["items"]["properties"]),
                         ["lastTransitionTime", "message", "reason", "status", "type"])
        self.assertEqual(conditions["items"]["required"], ["type", "status"])

    def test_schema_descriptions(self) -> None:
        """Field descriptions are kube's doc comments, which `kubectl explain` prints."""
        spec = APIServiceStrategy().info.schema["properties"]["spec"]["properties"]
        self.assertEqual(spec["service"]["properties"]["port"]["description"],
                         "If specified, the port on the service that hosting webhook. Default to 443 for backward "
                         "compatibility. `port` should be a valid port number (1-65535, inclusive).")
        self.assertEqual(spec["version"]["description"], 'Version is the API version this server hosts.  For example, '
                                                         '"v1"')
        self.assertTrue(spec["versionPriority"]["description"].endswith(
            "v10, v2, v1, v11beta2, v10beta3, v3beta1, v12alpha1, v11alpha2, foo1, foo10."))


class APIServiceDefaultTests(SynchronousTestCase):
    """default() applies SetDefaults_ServiceReference."""

    def test_port_defaults_to_443(self) -> None:
        """A service without a port, or with a null port, gets 443."""
        for service in ({"namespace": "ns", "name": "n"}, {"namespace": "ns", "name": "n", "port": None}):
            obj = _remote(service=dict(service))
            APIServiceStrategy().default(obj)
            self.assertEqual(obj["spec"]["service"], {"namespace": "ns", "name": "n", "port": 443})

    def test_explicit_port_kept(self) -> None:
        """A given port, even an invalid 0, is left alone."""
        for port in (8443, 0):
            obj = _remote(service={"namespace": "ns", "name": "n", "port": port})
            APIServiceStrategy().default(obj)
            self.assertEqual(obj["spec"]["service"]["port"], port)

    def test_local_untouched(self) -> None:
        """A local APIService gets no service."""
        obj = _local()
        APIServiceStrategy().default(obj)
        self.assertEqual(obj, _local())


class APIServicePrepareTests(SynchronousTestCase):
    """prepare_for_create, prepare_for_update and prepare_for_status_update."""

    def test_create_wipes_remote_status(self) -> None:
        """A remote APIService starts with an empty status and no condition."""
        obj = _remote()
        obj["status"] = {"conditions": [{"type": "Available", "status": "True", "reason": "Passed"}]}
        APIServiceStrategy(lambda: NOW).prepare_for_create(obj)
        self.assertEqual(obj["status"], {})
        self.assertEqual(available_cell(obj), "Unknown")

    def test_create_marks_local_available(self) -> None:
        """A local APIService is Available=True (Local) at once, with lastTransitionTime from the clock."""
        obj = _local()
        obj["status"] = {"conditions": [{"type": "Available", "status": "False", "reason": "Bogus"}]}
        APIServiceStrategy(lambda: NOW).prepare_for_create(obj)
        self.assertEqual(obj["status"], {"conditions": [LOCAL_CONDITION]})

    def test_create_with_null_service_is_local(self) -> None:
        """`service: null` is local too."""
        obj = _local(service=None)
        APIServiceStrategy(lambda: NOW).prepare_for_create(obj)
        self.assertEqual(obj["status"], {"conditions": [LOCAL_CONDITION]})

    def test_update_keeps_status(self) -> None:
        """A write to the main resource cannot change the status."""
        old = _remote()
        old["status"] = {"conditions": [{"type": "Available", "status": "False", "reason": "ServiceNotFound"}]}
        new = _remote(versionPriority=5)
        new["status"] = {"conditions": [{"type": "Available", "status": "True"}]}
        APIServiceStrategy().prepare_for_update(new, old)
        self.assertEqual(new["status"], old["status"])
        self.assertEqual(new["spec"]["versionPriority"], 5)
        new["status"]["conditions"][0]["status"] = "Unknown"
        self.assertEqual(old["status"]["conditions"][0]["status"], "False")

    def test_update_without_old_status(self) -> None:
        """An old object without status gives an empty status."""
        new = _remote()
        new["status"] = {"conditions": [{"type": "Available", "status": "True"}]}
        APIServiceStrategy().prepare_for_update(new, _remote())
        self.assertEqual(new["status"], {})

    def test_status_update_keeps_spec_and_metadata(self) -> None:
        """Through the status subresource only status changes: spec, labels, annotations, finalizers and owners
        come from the old object."""
        old = _remote()
        old["metadata"].update(labels={"a": "1"}, annotations={"b": "2"}, finalizers=["x/y"],
                               ownerReferences=[{"apiVersion": "v1", "kind": "K", "name": "n", "uid": "u"}])
        new = _remote(versionPriority=7, service=None)
        new["metadata"].update(labels={"a": "changed"}, annotations={})
        new["status"] = {"conditions": [{"type": "Available", "status": "True", "reason": "Passed"}]}
        APIServiceStrategy().prepare_for_status_update(new, old)
        self.assertEqual(new["spec"], old["spec"])
        self.assertEqual(new["metadata"], old["metadata"])
        self.assertEqual(new["status"], {"conditions": [{"type": "Available", "status": "True",
                                                         "reason": "Passed"}]})

    def test_status_update_drops_added_labels(self) -> None:
        """Labels the old object did not have cannot be added through status."""
        new = _remote()
        new["metadata"]["labels"] = {"a": "1"}
        APIServiceStrategy().prepare_for_status_update(new, _remote())
        self.assertNotIn("labels", new["metadata"])

    def test_spec_changed(self) -> None:
        """Only spec changes bump the generation; status and metadata changes do not."""
        strategy = APIServiceStrategy()
        with_status = _remote()
        with_status["status"] = {"conditions": []}
        with_status["metadata"]["labels"] = {"a": "b"}
        self.assertFalse(strategy.spec_changed(with_status, _remote()))
        self.assertTrue(strategy.spec_changed(_remote(versionPriority=1), _remote()))

    def test_selectable_fields(self) -> None:
        """Only metadata.name is selectable for this cluster-scoped kind."""
        self.assertEqual(APIServiceStrategy().selectable_fields(_remote()),
                         {"metadata.name": "v1beta1.metrics.k8s.io", "metadata.namespace": ""})


class APIServiceValidateTests(SynchronousTestCase):
    """validate() applies every rule of ValidateAPIService with kube's messages."""

    def validate(self, obj: dict[str, Any]) -> list[str]:
        """The printed errors of validating obj."""
        return _strings(APIServiceStrategy().validate(obj))

    def test_valid_objects(self) -> None:
        """Valid remote and local APIServices, and the legacy `v1.`, have no errors."""
        self.assertEqual(self.validate(_remote()), [])
        self.assertEqual(self.validate(_remote(caBundle="aGVsbG8=")), [])
        self.assertEqual(self.validate(_remote(insecureSkipTLSVerify=True)), [])
        self.assertEqual(self.validate(_local()), [])
        legacy = _local(group="", version="v1")
        legacy["metadata"]["name"] = "v1."
        self.assertEqual(self.validate(legacy), [])

    def test_name_must_be_version_dot_group(self) -> None:
        """The name must equal spec.version + "." + spec.group."""
        obj = _remote()
        obj["metadata"]["name"] = "metrics"
        self.assertEqual(self.validate(obj), [
            'metadata.name: Invalid value: "metrics": must be `spec.version+"."+spec.group`: '
            '"v1beta1.metrics.k8s.io"'])

    def test_name_must_be_a_path_segment(self) -> None:
        """A name that is not a path segment gets only the path-segment errors."""
        obj = _remote()
        obj["metadata"]["name"] = "a/b%c"
        self.assertEqual(self.validate(obj), ["metadata.name: Invalid value: \"a/b%c\": may not contain '/'",
                                              "metadata.name: Invalid value: \"a/b%c\": may not contain '%'"])
        obj["metadata"]["name"] = ".."
        self.assertEqual(self.validate(obj), ["metadata.name: Invalid value: \"..\": may not be '..'"])

    def test_generate_name_checked_like_name(self) -> None:
        """A generateName is checked with the same rule, so APIServices cannot use one."""
        obj = _remote()
        obj["metadata"] = {"generateName": "v1beta1.", "name": "v1beta1.abcde"}
        self.assertEqual(self.validate(obj), [
            'metadata.generateName: Invalid value: "v1beta1.": must be `spec.version+"."+spec.group`: '
            '"v1beta1.metrics.k8s.io"',
            'metadata.name: Invalid value: "v1beta1.abcde": must be `spec.version+"."+spec.group`: '
            '"v1beta1.metrics.k8s.io"'])

    def test_empty_name_left_to_metadata_validation(self) -> None:
        """A missing name is reported by the generic metadata validation, not here."""
        obj = _remote()
        obj["metadata"] = {}
        self.assertEqual(self.validate(obj), [])

    def test_empty_group_only_for_v1(self) -> None:
        """Only version v1 may have an empty group."""
        obj = _local(group="", version="v2")
        obj["metadata"]["name"] = "v2."
        self.assertEqual(self.validate(obj), [
            "spec.group: Required value: only v1 may have an empty group and it better be legacy kube"])

    def test_group_must_be_a_subdomain(self) -> None:
        """A non-empty group must be a DNS-1123 subdomain."""
        obj = _local(group="Example_App")
        obj["metadata"]["name"] = "v0alpha1.Example_App"
        self.assertEqual(self.validate(obj), [
            'spec.group: Invalid value: "Example_App": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
            r"'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*"
            r"[a-z0-9])?)*')"])

    def test_version_must_be_a_dns1035_label(self) -> None:
        """The version must start with a letter."""
        obj = _local(version="1")
        obj["metadata"]["name"] = "1.example.grafana.app"
        self.assertEqual(self.validate(obj), [
            "spec.version: Invalid value: \"1\": a DNS-1035 label must consist of lower case alphanumeric characters "
            "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name' or "
            "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"])

    def test_group_priority_bounds(self) -> None:
        """groupPriorityMinimum must be in 1..20000."""
        for value in (1, 20000):
            self.assertEqual(self.validate(_remote(groupPriorityMinimum=value)), [], value)
        for value in (0, -1, 20001):
            self.assertEqual(self.validate(_remote(groupPriorityMinimum=value)),
                             [f"spec.groupPriorityMinimum: Invalid value: {value}: must be positive and less than "
                              "20000"], value)

    def test_version_priority_bounds(self) -> None:
        """versionPriority must be in 1..1000."""
        for value in (1, 1000):
            self.assertEqual(self.validate(_remote(versionPriority=value)), [], value)
        for value in (0, -5, 1001):
            self.assertEqual(self.validate(_remote(versionPriority=value)),
                             [f"spec.versionPriority: Invalid value: {value}: must be positive and less than 1000"],
                             value)

    def test_missing_priorities(self) -> None:
        """Absent priorities are 0, hence invalid."""
        obj = _remote()
        del obj["spec"]["groupPriorityMinimum"], obj["spec"]["versionPriority"]
        self.assertEqual(self.validate(obj), [
            "spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000",
            "spec.versionPriority: Invalid value: 0: must be positive and less than 1000"])

    def test_local_may_not_have_tls_settings(self) -> None:
        """A local APIService may have neither a caBundle (counted in bytes) nor insecureSkipTLSVerify."""
        self.assertEqual(self.validate(_local(caBundle="aGVsbG8=", insecureSkipTLSVerify=True)), [
            'spec.caBundle: Invalid value: "5 bytes": local APIServices may not have a caBundle',
            "spec.insecureSkipTLSVerify: Invalid value: true: local APIServices may not have insecureSkipTLSVerify"])

    def test_local_stops_before_service_rules(self) -> None:
        """The service rules (and the insecure-with-caBundle rule) do not apply to local APIServices."""
        self.assertNotIn("spec.insecureSkipTLSVerify: Invalid value: true: may not be true if caBundle is present",
                         self.validate(_local(caBundle="aGVsbG8=", insecureSkipTLSVerify=True)))
        self.assertEqual(self.validate(_local(caBundle="", insecureSkipTLSVerify=False)), [])

    def test_service_namespace_and_name_required(self) -> None:
        """A service reference needs a namespace and a name."""
        self.assertEqual(self.validate(_remote(service={"port": 443})), [
            "spec.service.namespace: Required value", "spec.service.name: Required value"])

    def test_service_port_range(self) -> None:
        """The port must be in 1..65535."""
        for port in (1, 65535):
            self.assertEqual(self.validate(_remote(service={"namespace": "ns", "name": "n", "port": port})), [])
        for port in (0, -1, 65536):
            self.assertEqual(self.validate(_remote(service={"namespace": "ns", "name": "n", "port": port})),
                             [f"spec.service.port: Invalid value: {port}: port is not valid: must be between 1 and "
                              "65535, inclusive"], port)

    def test_missing_port_before_defaulting(self) -> None:
        """Validated without defaulting, an absent port is 0."""
        self.assertEqual(self.validate(_remote(service={"namespace": "ns", "name": "n"})), [
            "spec.service.port: Invalid value: 0: port is not valid: must be between 1 and 65535, inclusive"])

    def test_insecure_with_ca_bundle(self) -> None:
        """insecureSkipTLSVerify may not be combined with a caBundle."""
        self.assertEqual(self.validate(_remote(insecureSkipTLSVerify=True, caBundle="aGVsbG8=")), [
            "spec.insecureSkipTLSVerify: Invalid value: true: may not be true if caBundle is present"])

    def test_errors_in_code_order(self) -> None:
        """All failing rules are reported, in ValidateAPIService's order."""
        obj = _remote(group="", version="V", groupPriorityMinimum=0, versionPriority=0, insecureSkipTLSVerify=True,
                      caBundle="eA==", service={"port": 70000})
        obj["metadata"]["name"] = "wrong"
        self.assertEqual(self.validate(obj), [
            'metadata.name: Invalid value: "wrong": must be `spec.version+"."+spec.group`: "V."',
            "spec.group: Required value: only v1 may have an empty group and it better be legacy kube",
            "spec.version: Invalid value: \"V\": a DNS-1035 label must consist of lower case alphanumeric characters "
            "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name' or "
            "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            "spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000",
            "spec.versionPriority: Invalid value: 0: must be positive and less than 1000",
            "spec.service.namespace: Required value",
            "spec.service.name: Required value",
            "spec.service.port: Invalid value: 70000: port is not valid: must be between 1 and 65535, inclusive",
            "spec.insecureSkipTLSVerify: Invalid value: true: may not be true if caBundle is present"])

    def test_error_reasons(self) -> None:
        """Required and Invalid errors carry their cause types."""
        errors = APIServiceStrategy().validate(_remote(service={"port": 0}))
        self.assertEqual([e.reason for e in errors], ["FieldValueRequired", "FieldValueRequired", "FieldValueInvalid"])

    def test_wrong_types(self) -> None:
        """Values kube could not decode are reported as type errors, and nothing else is checked."""
        obj = _remote(groupPriorityMinimum="100", insecureSkipTLSVerify="yes", caBundle="not base64!",
                      service={"namespace": 1, "name": "n", "port": 44.5})
        self.assertEqual(self.validate(obj), [
            'spec.insecureSkipTLSVerify: Invalid value: "yes": must be of type boolean',
            'spec.caBundle: Invalid value: "not base64!": must be of type base64-encoded bytes',
            "spec.service.namespace: Invalid value: 1: must be of type string",
            "spec.service.port: Invalid value: 44.5: must be of type int32",
            'spec.groupPriorityMinimum: Invalid value: "100": must be of type int32'])
        self.assertEqual(self.validate(_remote(versionPriority=2 ** 31)),
                         ["spec.versionPriority: Invalid value: 2147483648: must be of type int32"])
        obj = _remote()
        obj["spec"] = []
        self.assertEqual(self.validate(obj), ["spec: Invalid value: []: must be of type object"])

    def test_missing_spec(self) -> None:
        """An object without spec is local with empty fields."""
        obj = _remote()
        del obj["spec"]
        obj["metadata"]["name"] = "."
        self.assertEqual(self.validate(obj), [
            "metadata.name: Invalid value: \".\": may not be '.'",
            "spec.group: Required value: only v1 may have an empty group and it better be legacy kube",
            "spec.version: Invalid value: \"\": a DNS-1035 label must consist of lower case alphanumeric characters "
            "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name' or "
            "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            "spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000",
            "spec.versionPriority: Invalid value: 0: must be positive and less than 1000"])


class APIServiceValidateUpdateTests(SynchronousTestCase):
    """validate_update and validate_status_update."""

    def test_update_runs_full_validation(self) -> None:
        """An update is validated like a create."""
        self.assertEqual(_strings(APIServiceStrategy().validate_update(_remote(versionPriority=0), _remote())),
                         ["spec.versionPriority: Invalid value: 0: must be positive and less than 1000"])

    def test_update_checks_immutable_metadata_first(self) -> None:
        """Metadata update rules come before the APIService rules."""
        old = _remote()
        old["metadata"]["uid"] = "u-1"
        new = _remote(versionPriority=0)
        new["metadata"]["uid"] = "u-2"
        self.assertEqual(_strings(APIServiceStrategy().validate_update(new, old)), [
            'metadata.uid: Invalid value: "u-2": field is immutable',
            "spec.versionPriority: Invalid value: 0: must be positive and less than 1000"])

    def test_status_condition_values(self) -> None:
        """Condition statuses must be True, False or Unknown."""
        new = _remote()
        new["status"] = {"conditions": [{"type": "Available", "status": "True"}, {"type": "Other", "status": "Maybe"},
                                        {"type": "Third"}]}
        errors = APIServiceStrategy().validate_status_update(new, _remote())
        self.assertEqual(_strings(errors), [
            'status.conditions[1].status: Unsupported value: "Maybe": supported values: "True", "False", "Unknown"',
            'status.conditions[2].status: Unsupported value: "": supported values: "True", "False", "Unknown"'])
        self.assertEqual([e.reason for e in errors], ["FieldValueNotSupported"] * 2)

    def test_status_update_accepts_every_status(self) -> None:
        """True, False and Unknown, and an empty status, are all fine."""
        new = _remote()
        new["status"] = {"conditions": [{"type": "Available", "status": s} for s in ("True", "False", "Unknown")]}
        self.assertEqual(APIServiceStrategy().validate_status_update(new, _remote()), [])
        self.assertEqual(APIServiceStrategy().validate_status_update(_remote(), _remote()), [])

    def test_status_update_does_not_validate_spec(self) -> None:
        """The status subresource does not re-run the spec rules."""
        self.assertEqual(APIServiceStrategy().validate_status_update(_remote(versionPriority=0),
                                                                     _remote(versionPriority=0)), [])

    def test_status_update_checks_immutable_metadata(self) -> None:
        """The status subresource applies the metadata update rules too."""
        old = _remote()
        old["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
        self.assertEqual(_strings(APIServiceStrategy().validate_status_update(_remote(), old)),
                         ["metadata.creationTimestamp: Invalid value: null: field is immutable"])

    def test_status_wrong_types(self) -> None:
        """Malformed statuses are type errors."""
        new = _remote()
        new["status"] = {"conditions": ["x", {"status": 1}]}
        self.assertEqual(_strings(APIServiceStrategy().validate_status_update(new, _remote())), [
            'status.conditions[0]: Invalid value: "x": must be of type object',
            "status.conditions[1].status: Invalid value: 1: must be of type string"])


class SetConditionTests(SynchronousTestCase):
    """set_condition follows SetAPIServiceCondition."""

    def test_appends_new_condition(self) -> None:
        """A condition of a new type is appended, creating status and conditions as needed."""
        obj = _remote()
        set_condition(obj, new_condition("False", "ServiceNotFound", 'service/s in "ns" is not present', NOW))
        self.assertEqual(obj["status"], {"conditions": [{
            "type": "Available", "status": "False", "lastTransitionTime": "2024-05-06T07:08:09Z",
            "reason": "ServiceNotFound", "message": 'service/s in "ns" is not present'}]})

    def test_same_status_keeps_transition_time(self) -> None:
        """With an unchanged status, only reason and message change."""
        obj = _remote()
        set_condition(obj, new_condition("False", "ServiceNotFound", "gone", NOW))
        later = NOW + datetime.timedelta(minutes=5)
        set_condition(obj, new_condition("False", "FailedDiscoveryCheck", "failing", later))
        self.assertEqual(obj["status"]["conditions"], [{
            "type": "Available", "status": "False", "lastTransitionTime": "2024-05-06T07:08:09Z",
            "reason": "FailedDiscoveryCheck", "message": "failing"}])

    def test_status_change_moves_transition_time(self) -> None:
        """A changed status takes the new lastTransitionTime as well."""
        obj = _remote()
        set_condition(obj, new_condition("False", "ServiceNotFound", "gone", NOW))
        later = NOW + datetime.timedelta(minutes=5)
        set_condition(obj, new_condition("True", "Passed", "all checks passed", later))
        self.assertEqual(obj["status"]["conditions"], [{
            "type": "Available", "status": "True", "lastTransitionTime": "2024-05-06T07:13:09Z",
            "reason": "Passed", "message": "all checks passed"}])

    def test_repeated_sync_is_idempotent(self) -> None:
        """Setting the same condition again at a later time changes nothing."""
        obj = _remote()
        set_condition(obj, new_condition("True", "Passed", "all checks passed", NOW))
        before = copy.deepcopy(obj)
        set_condition(obj, new_condition("True", "Passed", "all checks passed", NOW + datetime.timedelta(hours=1)))
        self.assertEqual(obj, before)

    def test_empty_reason_and_message_are_dropped(self) -> None:
        """An empty reason or message clears it, as omitempty would."""
        obj = _remote()
        set_condition(obj, new_condition("False", "Reason", "message", NOW))
        set_condition(obj, {"type": "Available", "status": "False", "reason": "", "message": ""})
        self.assertEqual(obj["status"]["conditions"], [
            {"type": "Available", "status": "False", "lastTransitionTime": "2024-05-06T07:08:09Z"}])

    def test_other_types_untouched(self) -> None:
        """Only the condition of the same type is updated."""
        obj = _remote()
        obj["status"] = {"conditions": [{"type": "Other", "status": "True"}]}
        set_condition(obj, local_available_condition(NOW))
        self.assertEqual(obj["status"]["conditions"], [{"type": "Other", "status": "True"}, LOCAL_CONDITION])

    def test_local_available_condition(self) -> None:
        """The Local condition is Available=True with kube's reason and message."""
        self.assertEqual(local_available_condition(NOW), LOCAL_CONDITION)

    def test_new_condition_converts_to_utc(self) -> None:
        """lastTransitionTime is written in UTC with second precision."""
        moment = datetime.datetime(2024, 5, 6, 9, 8, 9, 999999, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
        self.assertEqual(new_condition("True", "", "", moment),
                         {"type": "Available", "status": "True", "lastTransitionTime": "2024-05-06T07:08:09Z"})


class APIServiceHelperTests(SynchronousTestCase):
    """is_local, available_condition and is_available."""

    def test_is_local(self) -> None:
        """Only an APIService without a service is local."""
        self.assertTrue(is_local(_local()))
        self.assertTrue(is_local(_local(service=None)))
        self.assertTrue(is_local({"metadata": {}}))
        self.assertFalse(is_local(_remote()))

    def test_available_condition(self) -> None:
        """The Available condition is found among others, or None."""
        obj = _remote()
        self.assertIsNone(available_condition(obj))
        obj["status"] = {"conditions": [{"type": "Other", "status": "True"},
                                        {"type": "Available", "status": "False"}]}
        self.assertEqual(available_condition(obj), {"type": "Available", "status": "False"})
        self.assertFalse(is_available(obj))
        obj["status"]["conditions"][1]["status"] = "True"
        self.assertTrue(is_available(obj))


class APIServiceTableTests(SynchronousTestCase):
    """table_cells prints NAME, SERVICE, AVAILABLE and AGE as kube does."""

    def with_condition(self, **condition: str) -> dict[str, Any]:
        """A remote APIService created an hour before NOW, with one Available condition."""
        obj = _remote()
        obj["metadata"]["creationTimestamp"] = "2024-05-06T06:08:09Z"
        obj["status"] = {"conditions": [dict(type="Available", **condition)]}
        return obj

    def test_local_row(self) -> None:
        """A local APIService shows `Local` and `True`."""
        obj = _local()
        obj["metadata"]["creationTimestamp"] = "2024-05-06T07:07:09Z"
        APIServiceStrategy(lambda: NOW).prepare_for_create(obj)
        self.assertEqual(APIServiceStrategy().table_cells(obj, NOW), ["v0alpha1.example.grafana.app", "Local", "True",
                                                                      "60s"])

    def test_service_cell(self) -> None:
        """A remote APIService shows `namespace/name`, without the port."""
        self.assertEqual(service_cell(_remote()), "kube-system/metrics-server")
        self.assertEqual(service_cell(_remote(service={"port": 1})), "/")
        self.assertEqual(service_cell(_local()), "Local")

    def test_no_condition_is_unknown(self) -> None:
        """Without an Available condition the cell is `Unknown`."""
        obj = _remote()
        obj["metadata"]["creationTimestamp"] = "2024-05-06T06:08:09Z"
        self.assertEqual(APIServiceStrategy().table_cells(obj, NOW),
                         ["v1beta1.metrics.k8s.io", "kube-system/metrics-server", "Unknown", "60m"])

    def test_true_hides_reason(self) -> None:
        """A True condition shows `True` whatever its reason."""
        self.assertEqual(available_cell(self.with_condition(status="True", reason="Passed")), "True")

    def test_false_with_reason(self) -> None:
        """Other statuses show the reason in parentheses."""
        self.assertEqual(available_cell(self.with_condition(status="False", reason="FailedDiscoveryCheck")),
                         "False (FailedDiscoveryCheck)")
        self.assertEqual(available_cell(self.with_condition(status="False", reason="ServiceNotFound")),
                         "False (ServiceNotFound)")
        self.assertEqual(available_cell(self.with_condition(status="Unknown", reason="ServiceAccessError")),
                         "Unknown (ServiceAccessError)")

    def test_bare_status_without_reason(self) -> None:
        """Without a reason only the status is shown."""
        self.assertEqual(available_cell(self.with_condition(status="False")), "False")
        self.assertEqual(available_cell(self.with_condition(status="Unknown", reason="")), "Unknown")

    def test_full_row(self) -> None:
        """A failing remote APIService row."""
        obj = self.with_condition(status="False", reason="MissingEndpoints")
        self.assertEqual(APIServiceStrategy().table_cells(obj, NOW),
                         ["v1beta1.metrics.k8s.io", "kube-system/metrics-server", "False (MissingEndpoints)", "60m"])


class HumanDurationTests(SynchronousTestCase):
    """base.human_duration follows duration.HumanDuration at every boundary."""

    def assertDurations(self, cases: list[tuple[datetime.timedelta, str]]) -> None:
        """Every duration prints as expected."""
        for delta, expected in cases:
            self.assertEqual(human_duration(delta), expected, str(delta))

    def test_seconds(self) -> None:
        """Below two minutes the age is in seconds."""
        s = datetime.timedelta(seconds=1)
        self.assertDurations([(0 * s, "0s"), (s, "1s"), (datetime.timedelta(seconds=1.9), "1s"), (119 * s, "119s"),
                              (datetime.timedelta(seconds=119.99), "119s")])

    def test_minutes_and_seconds(self) -> None:
        """From 2m to 10m, minutes and seconds, seconds omitted when zero."""
        s, m = datetime.timedelta(seconds=1), datetime.timedelta(minutes=1)
        self.assertDurations([(2 * m, "2m"), (2 * m + s, "2m1s"), (9 * m + 59 * s, "9m59s")])

    def test_minutes(self) -> None:
        """From 10m to 3h, whole minutes."""
        m, h = datetime.timedelta(minutes=1), datetime.timedelta(hours=1)
        self.assertDurations([(10 * m, "10m"), (10 * m + datetime.timedelta(seconds=59), "10m"),
                              (2 * h + 59 * m, "179m")])

    def test_hours_and_minutes(self) -> None:
        """From 3h to 8h, hours and minutes, minutes omitted when zero."""
        m, h = datetime.timedelta(minutes=1), datetime.timedelta(hours=1)
        self.assertDurations([(3 * h, "3h"), (3 * h + m, "3h1m"), (7 * h + 59 * m, "7h59m")])

    def test_hours(self) -> None:
        """From 8h to 48h, whole hours."""
        m, h = datetime.timedelta(minutes=1), datetime.timedelta(hours=1)
        self.assertDurations([(8 * h, "8h"), (8 * h + 59 * m, "8h"), (47 * h, "47h"), (47 * h + 59 * m, "47h")])

    def test_days_and_hours(self) -> None:
        """From 2d to 8d, days and hours, hours omitted when zero."""
        h, d = datetime.timedelta(hours=1), datetime.timedelta(days=1)
        self.assertDurations([(2 * d, "2d"), (2 * d + h, "2d1h"), (7 * d + 23 * h, "7d23h")])

    def test_days(self) -> None:
        """From 8d to two 365-day years, whole days."""
        h, d = datetime.timedelta(hours=1), datetime.timedelta(days=1)
        self.assertDurations([(8 * d, "8d"), (8 * d + 23 * h, "8d"), (729 * d, "729d"), (729 * d + 23 * h, "729d")])

    def test_years_and_days(self) -> None:
        """From 2y to 8y, years and days, days omitted when zero."""
        d = datetime.timedelta(days=1)
        self.assertDurations([(730 * d, "2y"), (731 * d, "2y1d"), (7 * 365 * d + 364 * d, "7y364d")])

    def test_years(self) -> None:
        """From 8y on, whole years."""
        d = datetime.timedelta(days=1)
        self.assertDurations([(8 * 365 * d, "8y"), (8 * 365 * d + 364 * d, "8y"), (100 * 365 * d, "100y")])

    def test_future(self) -> None:
        """Up to two seconds (excluded) in the future is `0s`; further is `<invalid>`."""
        self.assertDurations([(datetime.timedelta(seconds=-0.5), "0s"), (datetime.timedelta(seconds=-1), "0s"),
                              (datetime.timedelta(seconds=-1.9), "0s"), (datetime.timedelta(seconds=-2), "<invalid>"),
                              (datetime.timedelta(days=-1), "<invalid>")])


class HumanAgeTests(SynchronousTestCase):
    """base.human_age reads metadata.creationTimestamp."""

    def test_age_from_creation_timestamp(self) -> None:
        """The age is now minus creationTimestamp."""
        obj = {"metadata": {"creationTimestamp": "2024-05-04T07:08:09Z"}}
        self.assertEqual(human_age(obj, NOW), "2d")

    def test_missing_timestamp(self) -> None:
        """Without a (parseable) creationTimestamp the age is `<unknown>`."""
        self.assertEqual(human_age({"metadata": {}}, NOW), "<unknown>")
        self.assertEqual(human_age({}, NOW), "<unknown>")
        self.assertEqual(human_age({"metadata": {"creationTimestamp": "yesterday"}}, NOW), "<unknown>")

    def test_future_timestamp(self) -> None:
        """A creationTimestamp well in the future is `<invalid>`."""
        self.assertEqual(human_age({"metadata": {"creationTimestamp": "2024-05-06T07:09:09Z"}}, NOW), "<invalid>")
