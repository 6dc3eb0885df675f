# -*- test-case-name: tests.test_schemavalidation -*-
"""Tests for L{grafana_aggregator.apimachinery.schemavalidation}: a custom resource checked against its CRD's schema.

Expected strings come from kube's own sources and tests (kubernetes/apiextensions-apiserver at 1aa2717a,
kubernetes/kube-openapi at d427ff9e, kubernetes/apimachinery at eed236ce), cited at each test:
- VT: apiextensions-apiserver pkg/apiserver/validation/validation_test.go (TestValidateCustomResource table);
- VG: apiextensions-apiserver pkg/apiserver/validation/validation.go (kubeOpenAPIResultToFieldErrors);
- ES: kube-openapi pkg/validation/errors/schema.go (the message templates);
- FE: apimachinery pkg/util/validation/field/errors.go (TooLong, TooMany, Duplicate, NotSupported);
- LT: apiextensions-apiserver pkg/apiserver/schema/listtype/validation.go;
- OM: apiextensions-apiserver pkg/apiserver/schema/objectmeta/validation.go.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.fielderrors import FieldError
from grafana_aggregator.apimachinery.schemavalidation import (
    cel_rules,
    go_float,
    validate,
    validate_metadata_name,
)


def messages(errors: list[FieldError]) -> list[str]:
    """The errors as kube prints them, `<path>: <message>`."""
    return [str(error) for error in errors]


def obj(**properties: Any) -> dict[str, Any]:
    """A `type: object` schema with the given properties."""
    return {"type": "object", "properties": properties}


#: A trimmed cert-manager Certificate (cert-manager.io/v1, Apache-2.0), shaped as its CRD ships it.
CERTIFICATE = obj(
    apiVersion={"type": "string"},
    kind={"type": "string"},
    metadata={"type": "object"},
    spec={
        "type": "object",
        "required": ["issuerRef", "secretName"],
        "properties": {
            "commonName": {"type": "string", "maxLength": 64},
            "dnsNames": {"type": "array", "items": {"type": "string"}},
            "duration": {"type": "string"},
            "isCA": {"type": "boolean"},
            "issuerRef": {
                "type": "object",
                "required": ["name"],
                "properties": {"group": {"type": "string"}, "kind": {"type": "string"},
                               "name": {"type": "string"}},
            },
            "privateKey": {
                "type": "object",
                "properties": {
                    "algorithm": {"type": "string", "enum": ["RSA", "ECDSA", "Ed25519"]},
                    "size": {"type": "integer"},
                    "rotationPolicy": {"type": "string", "enum": ["Never", "Always"]},
                },
            },
            "revisionHistoryLimit": {"type": "integer", "format": "int32"},
            "secretName": {"type": "string"},
            "usages": {"type": "array", "items": {"type": "string", "enum": ["signing", "server auth"]}},
            "emailAddresses": {"type": "array", "items": {"type": "string"}},
        },
    },
)

#: A trimmed prometheus-operator ServiceMonitor (monitoring.coreos.com/v1, Apache-2.0).
SERVICE_MONITOR = obj(
    spec={
        "type": "object",
        "required": ["selector"],
        "properties": {
            "endpoints": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["port"],
                "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                                                  "(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
                                                                  "(([0-9]+)ms)?)$"},
                        "scheme": {"type": "string", "enum": ["http", "https"]},
                        "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                       "x-kubernetes-int-or-string": True},
                        "relabelings": {
                            "type": "array",
                            "items": {"type": "object", "properties": {
                                "action": {"type": "string", "default": "replace", "enum": ["replace", "keep", "drop"]},
                                "modulus": {"type": "integer", "format": "int64"},
                            }},
                        },
                    },
                },
            },
            "selector": {
                "type": "object",
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                "x-kubernetes-map-type": "atomic",
            },
            "targetLabels": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        },
    },
)

#: A pod-like list of containers: list-map keyed by name, ports keyed by containerPort and protocol.
PODLIKE = obj(spec=obj(containers={
    "type": "array",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
    "items": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "ports": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                "items": obj(containerPort={"type": "integer", "format": "int32"},
                             protocol={"type": "string", "default": "TCP"}),
            },
        },
    },
}))


class TypeTests(SynchronousTestCase):
    """`type`, `nullable` and `x-kubernetes-int-or-string`."""

    def test_wrong_type_kube_message(self) -> None:
        """A string where an integer belongs: TypeInvalid, the JSON type as the value, `<path> in body` (VG, ES)."""
        schema = obj(spec=obj(replicas={"type": "integer"}))
        errors = validate({"spec": {"replicas": "3"}}, schema)
        self.assertEqual(errors, [FieldError(
            "FieldValueTypeInvalid", "spec.replicas",
            'Invalid value: "string": spec.replicas in body must be of type integer: "string"')])

    def test_every_json_type_against_object(self) -> None:
        """Each JSON type named as kube names it (VT, "!nullable against non-null")."""
        schema = obj(field={"type": "object"})
        for value, name in (("foo", "string"), (42, "integer"), (True, "boolean"), (1.2, "number"),
                            ([], "array"), (None, "null")):
            self.assertEqual(messages(validate({"field": value}, schema)),
                             [f'field: Invalid value: "{name}": field in body must be of type object: "{name}"'])

    def test_nullable(self) -> None:
        """`nullable: true` accepts null; the value's other checks still run for non-null values (VT)."""
        schema = obj(field={"type": "object", "nullable": True})
        self.assertEqual(validate({"field": None}, schema), [])
        self.assertEqual(messages(validate({"field": 42}, schema)),
                         ['field: Invalid value: "integer": field in body must be of type object: "integer"'])

    def test_integral_float_is_an_integer(self) -> None:
        """1.0 decodes as a float but passes `type: integer`, as JSON integers do in kube."""
        self.assertEqual(validate({"n": 1.0}, obj(n={"type": "integer"})), [])
        self.assertEqual(validate({"n": 3}, obj(n={"type": "number"})), [])

    def test_int_or_string(self) -> None:
        """`x-kubernetes-int-or-string` is type `integer,string` (VT, "x-kubernetes-int-or-string")."""
        schema = obj(field={"x-kubernetes-int-or-string": True})
        self.assertEqual(validate({"field": 42}, schema), [])
        self.assertEqual(validate({"field": "foo"}, schema), [])
        self.assertEqual(messages(validate({"field": True}, schema)),
                         ['field: Invalid value: "boolean": field in body must be of type integer,string: "boolean"'])

    def test_int_or_string_with_any_of(self) -> None:
        """The anyOf failure has no field path (`<nil>`), and the best failing branch is reported (VT)."""
        schema = obj(field={"nullable": True, "x-kubernetes-int-or-string": True,
                            "anyOf": [{"type": "integer"}, {"type": "string"}]})
        self.assertEqual(validate({"field": None}, schema), [])
        self.assertEqual(messages(validate({"field": 1.2}, schema)), [
            'field: Invalid value: "number": field in body must be of type integer,string: "number"',
            '<nil>: Invalid value: "": "field" must validate at least one schema (anyOf)',
            'field: Invalid value: "number": field in body must be of type integer: "number"',
            '<nil>: Invalid value: "": Checked value must be of type integer (default format) in field',
        ])


    def test_any_of_reports_the_branch_that_got_furthest(self) -> None:
        """Of the failing anyOf branches, the one with the most passing checks is reported (schema_props.go)."""
        schema = obj(v={"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 10}]})
        self.assertEqual(messages(validate({"v": 5}, schema)), [
            '<nil>: Invalid value: "": "v" must validate at least one schema (anyOf)',
            "v: Invalid value: 5: v in body should be greater than or equal to 10",
        ])


class KeywordTests(SynchronousTestCase):
    """The value keywords, each with kube's exact text."""

    def test_required(self) -> None:
        """A missing required field is `Required value` on the field's own path (VT, "required")."""
        errors = validate({"spec": {"secretName": "x", "issuerRef": {}}}, CERTIFICATE)
        self.assertEqual(errors, [FieldError("FieldValueRequired", "spec.issuerRef.name", "Required value")])
        self.assertEqual(messages(validate({"spec": {}}, CERTIFICATE)),
                         ["spec.issuerRef: Required value", "spec.secretName: Required value"])

    def test_enum(self) -> None:
        """NotSupported lists strings as they are and other values as JSON, each quoted (VT, VG)."""
        schema = obj(field=obj(nestedint={"type": "integer", "enum": [1, 2]},
                               nestedstring={"type": "string", "enum": ["a", "b"]}))
        self.assertEqual(messages(validate({"field": {"nestedint": "x", "nestedstring": True}}, schema)), [
            'field.nestedint: Invalid value: "string": field.nestedint in body must be of type integer: "string"',
            'field.nestedint: Unsupported value: "x": supported values: "1", "2"',
            'field.nestedstring: Invalid value: "boolean": field.nestedstring in body must be of type string: '
            '"boolean"',
            'field.nestedstring: Unsupported value: true: supported values: "a", "b"',
        ])
        error = validate({"spec": {"issuerRef": {"name": "ca"}, "secretName": "s",
                                   "privateKey": {"algorithm": "DSA"}}}, CERTIFICATE)[0]
        self.assertEqual(error.reason, "FieldValueNotSupported")
        self.assertEqual(str(error), 'spec.privateKey.algorithm: Unsupported value: "DSA": supported values: '
                                     '"RSA", "ECDSA", "Ed25519"')

    def test_pattern(self) -> None:
        """A string not matching `pattern` (ES patternFail; integration validation_test.go "should match")."""
        errors = validate({"alpha": "a-b"}, obj(alpha={"type": "string", "pattern": "^[a-zA-Z0-9_]*$"}))
        self.assertEqual(messages(errors), ["alpha: Invalid value: \"a-b\": alpha in body should match "
                                            "'^[a-zA-Z0-9_]*$'"])

    def test_pattern_is_a_search(self) -> None:
        """Like Go's MatchString, an unanchored pattern matches anywhere in the value."""
        self.assertEqual(validate({"a": "xx123yy"}, obj(a={"type": "string", "pattern": "[0-9]+"})), [])

    def test_maximum_under_a_prefix(self) -> None:
        """The status validator's path prefixes the field, the message keeps the schema-relative name
        (test/integration/subresources_test.go: `status.num: Invalid value: 15: num in body should be less
        than or equal to 10`)."""
        errors = validate({"num": 15}, obj(num={"type": "integer", "maximum": 10}), path="status")
        self.assertEqual(messages(errors), ["status.num: Invalid value: 15: num in body should be less than or "
                                            "equal to 10"])

    def test_minimum_and_exclusive_bounds(self) -> None:
        """Inclusive and exclusive bounds, ints and floats printed as Go's %v prints them (ES)."""
        schema = obj(a={"type": "integer", "minimum": 10}, b={"type": "number", "minimum": 0,
                                                             "exclusiveMinimum": True},
                     c={"type": "number", "maximum": 1000000, "exclusiveMaximum": True})
        self.assertEqual(messages(validate({"a": 9, "b": 0.0, "c": 1e6}, schema)), [
            "a: Invalid value: 9: a in body should be greater than or equal to 10",
            "b: Invalid value: 0: b in body should be greater than 0",
            "c: Invalid value: 1e+06: c in body should be less than 1e+06",
        ])

    def test_multiple_of(self) -> None:
        """`multipleOf` (ES multipleOfFail)."""
        schema = obj(a={"type": "integer", "multipleOf": 5}, b={"type": "number", "multipleOf": 0.5})
        self.assertEqual(validate({"a": 10, "b": 1.5}, schema), [])
        self.assertEqual(messages(validate({"a": 7, "b": 1.2}, schema)), [
            "a: Invalid value: 7: a in body should be a multiple of 5",
            "b: Invalid value: 1.2: b in body should be a multiple of 0.5",
        ])

    def test_lengths(self) -> None:
        """maxLength becomes field.TooLong ("bytes", though runes are counted); minLength stays Invalid (VG, FE)."""
        schema = obj(a={"type": "string", "maxLength": 3}, b={"type": "string", "minLength": 2},
                     c={"type": "string", "maxLength": 1})
        self.assertEqual(validate({"a": "äöü"}, schema), [])
        errors = validate({"a": "abcd", "b": "x", "c": "xy"}, schema)
        self.assertEqual(errors[0], FieldError("FieldValueTooLong", "a", "Too long: may not be more than 3 bytes"))
        self.assertEqual(messages(errors[1:]), [
            'b: Invalid value: "x": b in body should be at least 2 chars long',
            "c: Too long: may not be more than 1 byte",
        ])

    def test_items_count_and_uniqueness(self) -> None:
        """maxItems is field.TooMany; minItems and uniqueItems stay Invalid (VG, FE, ES)."""
        schema = obj(a={"type": "array", "maxItems": 2, "items": {"type": "integer"}},
                     b={"type": "array", "minItems": 1},
                     c={"type": "array", "uniqueItems": True})
        errors = validate({"a": [1, 2, 3], "b": [], "c": [1, "1", 1]}, schema)
        self.assertEqual(errors[0], FieldError("FieldValueTooMany", "a", "Too many: 3: must have at most 2 items"))
        self.assertEqual(messages(errors[1:]), [
            "b: Invalid value: 0: b in body should have at least 1 items",
            "c: Invalid value: \"\": c in body shouldn't contain duplicates",
        ])
        self.assertEqual(validate({"c": [1, 1.5, True, "1"]}, schema), [])

    def test_property_counts(self) -> None:
        """maxProperties is reported as TooMany "items", as kube does (VG); minProperties as Invalid."""
        schema = obj(a={"type": "object", "maxProperties": 1}, b={"type": "object", "minProperties": 1})
        self.assertEqual(messages(validate({"a": {"x": 1, "y": 2}, "b": {}}, schema)), [
            "a: Too many: 2: must have at most 1 item",
            "b: Invalid value: 0: b in body should have at least 1 properties",
        ])

    def test_additional_properties_false(self) -> None:
        """An unknown field under `additionalProperties: false` is reported on the parent (ES unallowedProperty)."""
        schema = obj(spec={"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False})
        self.assertEqual(messages(validate({"spec": {"a": "x", "extra": 1}}, schema)),
                         ['spec: Invalid value: "extra": spec.extra in body is a forbidden property'])

    def test_additional_properties_schema(self) -> None:
        """Map values are validated under `<path>.<key>` (kube-openapi's object validator)."""
        errors = validate({"spec": {"selector": {"matchLabels": {"app": "x", "tier": 3}}}}, SERVICE_MONITOR)
        self.assertEqual(messages(errors), [
            'spec.selector.matchLabels.tier: Invalid value: "integer": spec.selector.matchLabels.tier in body must '
            'be of type string: "integer"'])

    def test_nested_array_paths(self) -> None:
        """Array items are `[i]` in the path, objects `.name` (kube-openapi's slice validator)."""
        body = {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": "http"}]}]}}
        self.assertEqual(messages(validate(body, PODLIKE)), [
            'spec.containers[0].ports[1].containerPort: Invalid value: "string": '
            'spec.containers[0].ports[1].containerPort in body must be of type integer: "string"'])

    def test_unknown_fields_are_not_validation_errors(self) -> None:
        """Without `additionalProperties: false`, unknown fields pass: pruning, not validation, removes them."""
        self.assertEqual(validate({"spec": {"issuerRef": {"name": "ca"}, "secretName": "s", "bogus": 1}},
                                  CERTIFICATE), [])


class FormatTests(SynchronousTestCase):
    """`format`: kube's supported formats are checked, others ignored."""

    def test_string_formats(self) -> None:
        """A bad value for a known format is TypeInvalid naming the format (kube-openapi FormatOf)."""
        cases = {
            "date-time": ("2024-01-02T03:04:05Z", "yesterday"),
            "date": ("2024-02-29", "2023-02-29"),
            "duration": ("1h30m", "soon"),
            "uri": ("https://example.com/x", "example.com"),
            "email": ("a@example.com", "not-an-email"),
            "hostname": ("example.com", "-bad-"),
            "ipv4": ("10.0.0.1", "10.0.0.256"),
            "ipv6": ("2001:db8::1", "10.0.0.1"),
            "cidr": ("10.0.0.0/8", "10.0.0.0"),
            "mac": ("01:23:45:67:89:ab", "01:23:45"),
            "uuid": ("123e4567-e89b-12d3-a456-426614174000", "123"),
            "uuid4": ("123e4567-e89b-42d3-a456-426614174000", "123e4567-e89b-12d3-a456-426614174000"),
            "byte": ("aGVsbG8=", "hello!"),
            "isbn": ("0321751043", "0321751044"),
            "hexcolor": ("#fff", "#ggg"),
            "k8s-short-name": ("my-name", "My-Name"),
        }
        for fmt, (good, bad) in cases.items():
            schema = obj(v={"type": "string", "format": fmt})
            self.assertEqual(validate({"v": good}, schema), [], fmt)
            self.assertEqual(validate({"v": bad}, schema), [FieldError(
                "FieldValueTypeInvalid", "v", f'Invalid value: "{bad}": v in body must be of type {fmt}: "{bad}"')],
                fmt)

    def test_password_and_unknown_formats_accept_anything(self) -> None:
        """`password` accepts every string, and a format kube does not know is stripped (formats.go)."""
        for fmt in ("password", "my-own-format", "int-or-string"):
            self.assertEqual(validate({"v": "anything at all"}, obj(v={"type": "string", "format": fmt})), [])

    def test_int32_range(self) -> None:
        """A value out of int32's range fails the range check, reported without a field path (values.go)."""
        errors = validate({"spec": {"issuerRef": {"name": "ca"}, "secretName": "s",
                                    "revisionHistoryLimit": 3000000000}}, CERTIFICATE)
        self.assertEqual(messages(errors), ['<nil>: Invalid value: "": Checked value must be of type integer with '
                                            'format int32 in spec.revisionHistoryLimit'])
        self.assertEqual(validate({"v": 2147483647}, obj(v={"type": "integer", "format": "int32"})), [])


class CombinatorTests(SynchronousTestCase):
    """allOf, anyOf, oneOf and not, and de-duplication."""

    def test_not(self) -> None:
        """`not` matching is reported against the quoted path (schema_messages.go)."""
        schema = obj(v={"type": "string", "not": {"enum": ["forbidden"]}})
        self.assertEqual(messages(validate({"v": "forbidden"}, schema)),
                         ['<nil>: Invalid value: "": "v" must not validate the schema (not)'])

    def test_one_of(self) -> None:
        """oneOf with no branch or two branches valid."""
        schema = obj(v={"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}]})
        self.assertEqual(validate({"v": {"a": 1}}, schema), [])
        self.assertEqual(messages(validate({"v": {"a": 1, "b": 2}}, schema)),
                         ['<nil>: Invalid value: "": "v" must validate one and only one schema (oneOf). Found 2 '
                          'valid alternatives'])
        self.assertEqual(messages(validate({"v": {}}, schema)), [
            '<nil>: Invalid value: "": "v" must validate one and only one schema (oneOf). Found none valid',
            "v.a: Required value"])

    def test_all_of_and_deduplication(self) -> None:
        """allOf reports each branch's failures once: kube's Result drops repeated messages."""
        schema = obj(v={"type": "integer", "allOf": [{"minimum": 5}, {"minimum": 5}, {"maximum": 10}]})
        self.assertEqual(messages(validate({"v": 1}, schema)), [
            "v: Invalid value: 1: v in body should be greater than or equal to 5",
            '<nil>: Invalid value: "": "v" must validate all the schemas (allOf)',
        ])


class ListTypeTests(SynchronousTestCase):
    """`x-kubernetes-list-type` set and map (LT)."""

    def test_set_duplicates(self) -> None:
        """Each repeated value is reported once, at its second index, with field.Path's `[i]`."""
        body = {"spec": {"selector": {}, "targetLabels": ["a", "b", "a", "a", "b"]}}
        self.assertEqual(messages(validate(body, SERVICE_MONITOR)),
                         ['spec.targetLabels[2]: Duplicate value: "a"', 'spec.targetLabels[4]: Duplicate value: "b"'])

    def test_map_single_key(self) -> None:
        """A repeated list-map key is reported with the key as a JSON object (ServiceMonitor endpoints)."""
        body = {"spec": {"selector": {}, "endpoints": [{"port": "web"}, {"port": "metrics"}, {"port": "web"}]}}
        errors = validate(body, SERVICE_MONITOR)
        self.assertEqual(errors, [FieldError("FieldValueDuplicate", "spec.endpoints[2]",
                                             'Duplicate value: {"port":"web"}')])

    def test_map_compound_keys_nested(self) -> None:
        """Compound keys are compared as a whole, inside items of an outer list-map."""
        body = {"spec": {"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 80, "protocol": "UDP"},
                                    {"containerPort": 80, "protocol": "TCP"}]},
            {"name": "a"},
        ]}}
        self.assertEqual(messages(validate(body, PODLIKE)), [
            'spec.containers[1]: Duplicate value: {"name":"a"}',
            'spec.containers[0].ports[2]: Duplicate value: {"containerPort":80,"protocol":"TCP"}',
        ])

    def test_map_items_must_be_objects(self) -> None:
        """A non-object item in a list-map is Invalid before any key is compared (LT validateListMap)."""
        schema = obj(l={"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
                        "items": {"type": "object", "properties": {"k": {"type": "string"}}}})
        errors = validate({"l": [{"k": "a"}, "b"]}, schema)
        self.assertEqual(errors[-1], FieldError("FieldValueInvalid", "l[1]",
                                                'Invalid value: "b": must be an object for an array of list-type map'))


class EmbeddedResourceTests(SynchronousTestCase):
    """`x-kubernetes-embedded-resource` (OM)."""

    schema = obj(spec=obj(template={"type": "object", "x-kubernetes-embedded-resource": True,
                                    "x-kubernetes-preserve-unknown-fields": True}))

    def test_type_meta_required(self) -> None:
        """apiVersion and kind are required."""
        self.assertEqual(messages(validate({"spec": {"template": {}}}, self.schema)),
                         ["spec.template.apiVersion: Required value", "spec.template.kind: Required value"])

    def test_type_meta_checked(self) -> None:
        """apiVersion must parse; kind may have mixed case but must otherwise be a DNS-1035 label."""
        body = {"spec": {"template": {"apiVersion": "a/b/c", "kind": "Bad_Kind"}}}
        self.assertEqual(messages(validate(body, self.schema)), [
            'spec.template.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c',
            'spec.template.kind: Invalid value: "Bad_Kind": may have mixed case, but should otherwise match: a '
            "DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
            "character, and end with an alphanumeric character (e.g. 'my-name' or 'abc-123', regex used for "
            "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ])

    def test_metadata_uses_path_segment_names(self) -> None:
        """Embedded metadata names need only be path segments, and may be empty."""
        body = {"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a/b"}}}}
        self.assertEqual(messages(validate(body, self.schema)),
                         ["spec.template.metadata.name: Invalid value: \"a/b\": may not contain '/'"])
        body["spec"]["template"]["metadata"] = {"labels": {"app": "x"}}
        self.assertEqual(validate(body, self.schema), [])


class MetadataNameTests(SynchronousTestCase):
    """validate_metadata_name: custom resources' names are DNS subdomains."""

    def test_names(self) -> None:
        """A valid name passes; an invalid one gets the subdomain message; none at all is required."""
        self.assertEqual(validate_metadata_name({"name": "my-cert.example"}), [])
        self.assertEqual(validate_metadata_name({"generateName": "cert-"}), [])
        [error] = validate_metadata_name({"name": "Bad_Name"})
        self.assertEqual(error.path, "metadata.name")
        self.assertTrue(error.message.startswith('Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'))
        self.assertEqual(messages(validate_metadata_name({})),
                         ["metadata.name: Required value: name or generateName is required"])


class CelRulesTests(SynchronousTestCase):
    """cel_rules: every x-kubernetes-validations rule with where it applies."""

    def test_collects_rules_with_paths(self) -> None:
        """Rules at the root, in properties, under items and map values, with kube's default message."""
        schema = {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.spec.a <= 5", "message": "too big"}],
            "properties": {"spec": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer"},
                    "list": {"type": "array", "items": {"type": "string",
                                                        "x-kubernetes-validations": [{"rule": "self != ''"}]}},
                    "map": {"type": "object", "additionalProperties": {
                        "type": "string", "x-kubernetes-validations": [{"rule": "size(self) < 3",
                                                                        "messageExpression": "'x'"}]}},
                },
                "x-kubernetes-validations": [{"rule": "self.a == oldSelf.a", "message": "immutable"}],
            }},
        }
        self.assertEqual(cel_rules(schema), [
            ("", "self.spec.a <= 5", "too big"),
            ("spec", "self.a == oldSelf.a", "immutable"),
            ("spec.list[*]", "self != ''", "failed rule: self != ''"),
            ("spec.map[*]", "size(self) < 3", "failed rule: size(self) < 3"),
        ])


class OrderTests(SynchronousTestCase):
    """Errors come out depth-first, properties in name order (Go's maps have none; this is stable)."""

    def test_depth_first(self) -> None:
        """Type errors of one subtree come before the next property's, then required, then list-type checks."""
        body = {"spec": {"targetLabels": ["x", "x"], "endpoints": [{"port": 1, "scheme": "ftp"}]}}
        self.assertEqual(messages(validate(body, SERVICE_MONITOR)), [
            'spec.endpoints[0].port: Invalid value: "integer": spec.endpoints[0].port in body must be of type '
            'string: "integer"',
            'spec.endpoints[0].scheme: Unsupported value: "ftp": supported values: "http", "https"',
            "spec.selector: Required value",
            'spec.targetLabels[1]: Duplicate value: "x"',
        ])


class GoFloatTests(SynchronousTestCase):
    """go_float prints floats as Go's %v does."""

    def test_forms(self) -> None:
        """Shortest digits; exponent form from 1e+06 up and below 1e-04."""
        for value, text in ((1.0, "1"), (0.5, "0.5"), (123456.0, "123456"), (1234567.0, "1.234567e+06"),
                            (1e21, "1e+21"), (0.0001, "0.0001"), (0.00001, "1e-05"), (-2.5, "-2.5"), (0.0, "0")):
            self.assertEqual(go_float(value), text)
