# -*- test-case-name: tests.test_validation -*-
"""Tests for L{grafana_aggregator.apimachinery.validation}: kube's name and metadata rules with exact messages."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.validation import (
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_ip,
    is_path_segment_name,
    is_path_segment_prefix,
    is_qualified_name,
    is_valid_label_value,
    mask_trailing_dash,
    name_is_dns1035_label,
    name_is_dns_label,
    name_is_dns_subdomain,
    validate_object_meta,
    validate_object_meta_update,
    validate_path_segment_name,
)
from grafana_aggregator.apimachinery.fielderrors import FieldError

SUBDOMAIN_ERROR = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_ERROR = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character (e.g. 'my-name' or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_ERROR = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name' or 'abc-123', regex used for validation is "
    "'[a-z]([-a-z0-9]*[a-z0-9])?')"
)
KEY_NAME_ERROR = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName' or 'my.name' or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
KEY_TOO_MANY_SLASHES = (
    "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName' or 'my.name' or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' "
    "(e.g. 'example.com/MyName')"
)
VALUE_ERROR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyValue' or 'my_value' or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _strings(errors: list[FieldError]) -> list[str]:
    """Each error as kube prints it: `<path>: <message>`."""
    return [str(error) for error in errors]


class DNSNameTests(SynchronousTestCase):
    """is_dns1123_subdomain, is_dns1123_label and is_dns1035_label."""

    def test_subdomain_accepts_valid_names(self) -> None:
        """Lower-case dotted names of at most 253 characters pass."""
        for value in ("a", "example.com", "v1.example.grafana.app", "a-b.c-d", "0.1", "a" * 253):
            self.assertEqual(is_dns1123_subdomain(value), [], value)

    def test_subdomain_rejects_bad_characters(self) -> None:
        """Upper case, underscores, leading or trailing '-' and '.', and empty strings give the regex message."""
        for value in ("", "A", "a_b", "-a", "a-", ".a", "a.", "a..b", "a.-b"):
            self.assertEqual(is_dns1123_subdomain(value), [SUBDOMAIN_ERROR], value)

    def test_subdomain_too_long(self) -> None:
        """A name of 254 characters is too long, counted in characters."""
        self.assertEqual(is_dns1123_subdomain("a" * 254), ["must be no more than 253 characters"])

    def test_subdomain_too_long_and_malformed(self) -> None:
        """Length and format errors are both reported, length first."""
        self.assertEqual(is_dns1123_subdomain("A" * 254), ["must be no more than 253 characters", SUBDOMAIN_ERROR])

    def test_label_accepts_valid_names(self) -> None:
        """Labels may start with a digit and are at most 63 characters."""
        for value in ("a", "123-abc", "my-name", "a" * 63):
            self.assertEqual(is_dns1123_label(value), [], value)

    def test_label_rejects_dots(self) -> None:
        """A valid subdomain that is not a label must contain dots, and kube says so."""
        self.assertEqual(is_dns1123_label("a.b"), ["must not contain dots"])

    def test_label_rejects_bad_characters(self) -> None:
        """Anything else gets the label regex message."""
        for value in ("", "A", "a_b", "-a", "a-"):
            self.assertEqual(is_dns1123_label(value), [LABEL_ERROR], value)

    def test_label_too_long(self) -> None:
        """A label of 64 characters is too long."""
        self.assertEqual(is_dns1123_label("a" * 64), ["must be no more than 63 characters"])

    def test_dns1035_label(self) -> None:
        """DNS-1035 labels start with a letter and are at most 63 characters."""
        self.assertEqual(is_dns1035_label("v1beta1"), [])
        self.assertEqual(is_dns1035_label("1v"), [DNS1035_ERROR])
        self.assertEqual(is_dns1035_label(""), [DNS1035_ERROR])
        self.assertEqual(is_dns1035_label("v1.2"), [DNS1035_ERROR])
        self.assertEqual(is_dns1035_label("v" * 64), ["must be no more than 63 characters"])

    def test_regex_is_anchored_at_the_very_end(self) -> None:
        """A trailing newline is not accepted, as Go's `$` does not allow it."""
        self.assertEqual(is_dns1123_subdomain("a\n"), [SUBDOMAIN_ERROR])
        self.assertEqual(is_dns1123_label("a\n"), [LABEL_ERROR])


class QualifiedNameTests(SynchronousTestCase):
    """is_qualified_name (label and annotation keys) and is_valid_label_value."""

    def test_valid_keys(self) -> None:
        """Names with and without a DNS subdomain prefix pass."""
        for value in ("a", "MyName", "my.name", "123-abc", "a_b", "example.com/MyName", "kube-aggregator.kubernetes"
                      ".io/automanaged", "x" * 63, "p/" + "x" * 63):
            self.assertEqual(is_qualified_name(value), [], value)

    def test_too_many_slashes(self) -> None:
        """A key with two slashes gets the single whole-key message."""
        self.assertEqual(is_qualified_name("a/b/c"), [KEY_TOO_MANY_SLASHES])

    def test_empty_prefix(self) -> None:
        """An empty prefix is reported."""
        self.assertEqual(is_qualified_name("/a"), ["prefix part must be non-empty"])

    def test_bad_prefix(self) -> None:
        """The prefix must be a lower-case DNS subdomain, counted in bytes."""
        self.assertEqual(is_qualified_name("Example.com/a"), ["prefix part " + SUBDOMAIN_ERROR])
        self.assertEqual(is_qualified_name("a" * 254 + "/a"), ["prefix part must be no more than 253 bytes"])

    def test_empty_name(self) -> None:
        """An empty name is both empty and does not match the regex."""
        self.assertEqual(is_qualified_name(""), ["name part must be non-empty", KEY_NAME_ERROR])
        self.assertEqual(is_qualified_name("a/"), ["name part must be non-empty", KEY_NAME_ERROR])

    def test_name_too_long(self) -> None:
        """A name part over 63 bytes is too long."""
        self.assertEqual(is_qualified_name("x" * 64), ["name part must be no more than 63 bytes"])

    def test_bad_name(self) -> None:
        """A name starting or ending with a non-alphanumeric fails the regex."""
        for value in ("-a", "a-", "a b", "_a", "p/.a"):
            self.assertEqual(is_qualified_name(value), [KEY_NAME_ERROR], value)

    def test_label_values(self) -> None:
        """Label values may be empty, and otherwise follow the key-name rules, counted in bytes."""
        for value in ("", "a", "MyValue", "my_value", "12345", "a.b-c_d", "x" * 63):
            self.assertEqual(is_valid_label_value(value), [], value)
        self.assertEqual(is_valid_label_value("x" * 64), ["must be no more than 63 bytes"])
        self.assertEqual(is_valid_label_value("-x"), [VALUE_ERROR])
        self.assertEqual(is_valid_label_value("a/b"), [VALUE_ERROR])


class PathSegmentTests(SynchronousTestCase):
    """is_path_segment_name and is_path_segment_prefix."""

    def test_dot_names(self) -> None:
        """`.` and `..` cannot be names but can be prefixes."""
        self.assertEqual(is_path_segment_name("."), ["may not be '.'"])
        self.assertEqual(is_path_segment_name(".."), ["may not be '..'"])
        self.assertEqual(is_path_segment_prefix("."), [])
        self.assertEqual(validate_path_segment_name("..", True), [])
        self.assertEqual(validate_path_segment_name("..", False), ["may not be '..'"])

    def test_slash_and_percent(self) -> None:
        """`/` and `%` are each reported, slash first."""
        self.assertEqual(is_path_segment_name("a%b/c"), ["may not contain '/'", "may not contain '%'"])
        self.assertEqual(is_path_segment_prefix("a/"), ["may not contain '/'"])

    def test_anything_else_is_allowed(self) -> None:
        """Upper case, spaces, the empty string and `v1.` are valid path segments."""
        for value in ("", "v1.", "Foo Bar", "...", "a.b"):
            self.assertEqual(is_path_segment_name(value), [], value)


class IPTests(SynchronousTestCase):
    """is_ip follows IsValidIP (strict)."""

    def test_valid_addresses(self) -> None:
        """Canonical IPv4 and IPv6 addresses pass."""
        for value in ("10.9.8.7", "0.0.0.0", "255.255.255.255", "2001:db8::ffff", "::1", "::", "fe80::1"):
            self.assertEqual(is_ip(value), [], value)

    def test_not_an_address(self) -> None:
        """Names, empty strings, ranges, ports and zones are not IP addresses."""
        for value in ("", "example.com", "1.2.3", "1.2.3.256", "1.2.3.4:80", "10.0.0.0/8", "fe80::1%eth0", " ::1"):
            self.assertEqual(is_ip(value), ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"],
                             value)

    def test_leading_zeros(self) -> None:
        """IPv4 octets with leading zeros are rejected with their own message."""
        self.assertEqual(is_ip("010.1.1.1"), ["must not have leading 0s"])

    def test_ipv4_mapped(self) -> None:
        """IPv4-mapped IPv6 addresses are rejected."""
        self.assertEqual(is_ip("::ffff:1.2.3.4"), ["must not be an IPv4-mapped IPv6 address"])

    def test_canonical_form(self) -> None:
        """IPv6 must be lower case and compressed as Go prints it."""
        self.assertEqual(is_ip("2001:DB8::1"), ['must be in canonical form ("2001:db8::1")'])
        self.assertEqual(is_ip("2001:db8:0:0:1:0:0:1"), ['must be in canonical form ("2001:db8::1:0:0:1")'])
        self.assertEqual(is_ip("2001:db8:0:1:1:1:1:1"), [])


class NameValidatorTests(SynchronousTestCase):
    """The ValidateNameFuncs and the generateName trailing-dash mask."""

    def test_mask_trailing_dash(self) -> None:
        """A trailing dash is masked as kube does (the last two characters become `a`)."""
        self.assertEqual(mask_trailing_dash("abc-"), "aba")
        self.assertEqual(mask_trailing_dash("-"), "-")
        self.assertEqual(mask_trailing_dash("abc"), "abc")

    def test_prefix_may_end_in_dash(self) -> None:
        """A generateName ending in '-' passes while the same name fails."""
        self.assertEqual(name_is_dns_subdomain("web-", True), [])
        self.assertEqual(name_is_dns_subdomain("web-", False), [SUBDOMAIN_ERROR])
        self.assertEqual(name_is_dns_label("web-", True), [])
        self.assertEqual(name_is_dns_label("web-", False), [LABEL_ERROR])
        self.assertEqual(name_is_dns1035_label("web-", True), [])
        self.assertEqual(name_is_dns1035_label("web-", False), [DNS1035_ERROR])


class ValidateObjectMetaTests(SynchronousTestCase):
    """validate_object_meta, the create-time metadata checks."""

    def test_valid_metadata(self) -> None:
        """Well-formed metadata has no errors."""
        meta = {"name": "v1.example.grafana.app", "labels": {"app": "grafana", "example.com/tier": ""},
                "annotations": {"Example.com/Note": "any text at all"}, "finalizers": ["example.com/cleanup"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": "u"}], "generation": 1}
        self.assertEqual(validate_object_meta(meta, False), [])

    def test_name_required(self) -> None:
        """Without name and generateName the name is required."""
        self.assertEqual(_strings(validate_object_meta({}, False)),
                         ["metadata.name: Required value: name or generateName is required"])

    def test_generate_name_stands_in_for_name(self) -> None:
        """A generateName alone satisfies the requirement (the REST layer fills the name)."""
        self.assertEqual(validate_object_meta({"generateName": "web-"}, False, name_is_dns_subdomain), [])

    def test_name_format_uses_the_validator(self) -> None:
        """The kind's name validator decides the name's format, and the value is Go-quoted."""
        self.assertEqual(_strings(validate_object_meta({"name": "Web_1"}, False, name_is_dns_subdomain)),
                         [f'metadata.name: Invalid value: "Web_1": {SUBDOMAIN_ERROR}'])

    def test_default_validator_is_path_segment(self) -> None:
        """Without a validator, names only need to be path segments."""
        self.assertEqual(validate_object_meta({"name": "Upper Case"}, False), [])
        self.assertEqual(_strings(validate_object_meta({"name": "a/b"}, False)),
                         ["metadata.name: Invalid value: \"a/b\": may not contain '/'"])

    def test_generate_name_format(self) -> None:
        """generateName is checked as a prefix, before the name."""
        errors = validate_object_meta({"generateName": "Web-", "name": "Web-abcde"}, False, name_is_dns_subdomain)
        self.assertEqual(_strings(errors), [f'metadata.generateName: Invalid value: "Web-": {SUBDOMAIN_ERROR}',
                                            f'metadata.name: Invalid value: "Web-abcde": {SUBDOMAIN_ERROR}'])

    def test_namespace_required_for_namespaced_kinds(self) -> None:
        """A namespaced kind needs a namespace."""
        self.assertEqual(_strings(validate_object_meta({"name": "a"}, True)), ["metadata.namespace: Required value"])

    def test_namespace_must_be_a_label(self) -> None:
        """The namespace must be a DNS-1123 label."""
        self.assertEqual(_strings(validate_object_meta({"name": "a", "namespace": "a.b"}, True)),
                         ['metadata.namespace: Invalid value: "a.b": must not contain dots'])
        self.assertEqual(_strings(validate_object_meta({"name": "a", "namespace": "Ns"}, True)),
                         [f'metadata.namespace: Invalid value: "Ns": {LABEL_ERROR}'])

    def test_namespace_forbidden_for_cluster_scoped_kinds(self) -> None:
        """A cluster-scoped kind may not carry a namespace."""
        self.assertEqual(_strings(validate_object_meta({"name": "a", "namespace": "default"}, False)),
                         ["metadata.namespace: Forbidden: not allowed on this type"])

    def test_negative_generation(self) -> None:
        """A negative generation is invalid."""
        self.assertEqual(_strings(validate_object_meta({"name": "a", "generation": -1}, False)),
                         ["metadata.generation: Invalid value: -1: must be greater than or equal to 0"])

    def test_labels(self) -> None:
        """Bad label keys and values are reported on metadata.labels with the bad key or value."""
        errors = validate_object_meta({"name": "a", "labels": {"-bad": "ok", "good": "bad value"}}, False)
        self.assertEqual(_strings(errors), [f'metadata.labels: Invalid value: "-bad": {KEY_NAME_ERROR}',
                                            f'metadata.labels: Invalid value: "bad value": {VALUE_ERROR}'])

    def test_label_keys_are_case_sensitive(self) -> None:
        """Label key prefixes must be lower case."""
        self.assertEqual(_strings(validate_object_meta({"name": "a", "labels": {"Example.com/a": "b"}}, False)),
                         [f'metadata.labels: Invalid value: "Example.com/a": prefix part {SUBDOMAIN_ERROR}'])

    def test_annotation_keys(self) -> None:
        """Annotation keys are checked in lower case but reported as written; values are free text."""
        errors = validate_object_meta({"name": "a", "annotations": {"Example.COM/Key": "x y z", "a/b/c": ""}}, False)
        self.assertEqual(_strings(errors), [f'metadata.annotations: Invalid value: "a/b/c": {KEY_TOO_MANY_SLASHES}'])

    def test_annotations_size_limit(self) -> None:
        """Keys and values together may use 262144 bytes, not one more."""
        at_limit = {"k": "v" * (262144 - 1)}
        self.assertEqual(validate_object_meta({"name": "a", "annotations": at_limit}, False), [])
        over = {"k": "v" * 262144}
        self.assertEqual(_strings(validate_object_meta({"name": "a", "annotations": over}, False)),
                         ["metadata.annotations: Too long: may not be more than 262144 bytes"])

    def test_annotation_size_counts_bytes(self) -> None:
        """Multi-byte characters count as their UTF-8 length."""
        value = "é" * (262144 // 2)
        self.assertEqual(_strings(validate_object_meta({"name": "a", "annotations": {"k": value}}, False)),
                         ["metadata.annotations: Too long: may not be more than 262144 bytes"])

    def test_finalizers(self) -> None:
        """Finalizers are qualified names, and orphan with foregroundDeletion conflict."""
        errors = validate_object_meta({"name": "a", "finalizers": ["a/b/c", "orphan", "foregroundDeletion"]}, False)
        self.assertEqual(_strings(errors), [
            f'metadata.finalizers: Invalid value: "a/b/c": {KEY_TOO_MANY_SLASHES}',
            'metadata.finalizers: Invalid value: ["a/b/c","orphan","foregroundDeletion"]: finalizer orphan and '
            'foregroundDeletion cannot be both set',
        ])

    def test_owner_references(self) -> None:
        """Owner references need apiVersion, kind, name and uid, and a parseable apiVersion."""
        errors = validate_object_meta({"name": "a", "ownerReferences": [{}, {"apiVersion": "a/b/c", "kind": "K",
                                                                               "name": "n", "uid": "u"}]}, False)
        self.assertEqual(_strings(errors), [
            "metadata.ownerReferences[0].apiVersion: Required value: must not be empty",
            "metadata.ownerReferences[0].kind: Required value: must not be empty",
            "metadata.ownerReferences[0].name: Required value: must not be empty",
            "metadata.ownerReferences[0].uid: Required value: must not be empty",
            'metadata.ownerReferences[1].apiVersion: Invalid value: "a/b/c": must be <group>/<version> or <version>',
        ])

    def test_wrong_types(self) -> None:
        """Values of the wrong JSON type are reported instead of crashing."""
        errors = validate_object_meta({"name": 5, "labels": {"a": 1}, "annotations": "x"}, False)
        self.assertEqual(_strings(errors), [
            "metadata.name: Invalid value: 5: must be of type string",
            "metadata.labels[a]: Invalid value: 1: must be of type string",
            'metadata.annotations: Invalid value: "x": must be of type object',
        ])

    def test_error_reasons(self) -> None:
        """Each error carries kube's cause type."""
        errors = validate_object_meta({"namespace": "x", "labels": {"-": ""}}, False)
        self.assertEqual([e.reason for e in errors],
                         ["FieldValueRequired", "FieldValueForbidden", "FieldValueInvalid"])


class ValidateObjectMetaUpdateTests(SynchronousTestCase):
    """validate_object_meta_update, the immutability rules of updates."""

    OLD = {"name": "a", "namespace": "ns", "uid": "u-1", "creationTimestamp": "2024-01-02T03:04:05Z",
           "resourceVersion": "7", "labels": {"x": "y"}}

    def test_unchanged_metadata(self) -> None:
        """Changing labels, annotations and resourceVersion is allowed."""
        new = dict(self.OLD, labels={"x": "z"}, annotations={"a": "b"}, resourceVersion="8")
        self.assertEqual(validate_object_meta_update(new, self.OLD), [])

    def test_immutable_fields(self) -> None:
        """name, namespace, uid and creationTimestamp cannot change, and the new value is shown."""
        new = {"name": "b", "namespace": "other", "uid": "u-2", "creationTimestamp": "2025-01-02T03:04:05Z"}
        self.assertEqual(_strings(validate_object_meta_update(new, self.OLD)), [
            'metadata.name: Invalid value: "b": field is immutable',
            'metadata.namespace: Invalid value: "other": field is immutable',
            'metadata.uid: Invalid value: "u-2": field is immutable',
            'metadata.creationTimestamp: Invalid value: "2025-01-02T03:04:05Z": field is immutable',
        ])

    def test_removed_fields(self) -> None:
        """Dropping a uid or creationTimestamp is a change too."""
        new = {"name": "a", "namespace": "ns"}
        self.assertEqual(_strings(validate_object_meta_update(new, self.OLD)), [
            'metadata.uid: Invalid value: "": field is immutable',
            "metadata.creationTimestamp: Invalid value: null: field is immutable",
        ])

    def test_timestamps_compare_as_times(self) -> None:
        """The same instant written differently is not a change."""
        new = dict(self.OLD, creationTimestamp="2024-01-02T03:04:05+00:00")
        self.assertEqual(validate_object_meta_update(new, self.OLD), [])

    def test_deletion_fields(self) -> None:
        """deletionTimestamp and deletionGracePeriodSeconds cannot change either."""
        old = dict(self.OLD, deletionTimestamp="2024-01-03T00:00:00Z", deletionGracePeriodSeconds=0)
        new = dict(self.OLD, deletionTimestamp="2024-01-04T00:00:00Z", deletionGracePeriodSeconds=30)
        self.assertEqual(_strings(validate_object_meta_update(new, old)), [
            'metadata.deletionTimestamp: Invalid value: "2024-01-04T00:00:00Z": field is immutable',
            "metadata.deletionGracePeriodSeconds: Invalid value: 30: field is immutable",
        ])

    def test_no_new_finalizers_while_deleting(self) -> None:
        """An object being deleted may lose finalizers but not gain them."""
        old = dict(self.OLD, deletionTimestamp="2024-01-03T00:00:00Z", finalizers=["a"])
        self.assertEqual(validate_object_meta_update(dict(old, finalizers=[]), old), [])
        self.assertEqual(_strings(validate_object_meta_update(dict(old, finalizers=["a", "c", "b"]), old)), [
            'metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found '
            'new finalizers []string{"b", "c"}',
        ])

    def test_new_finalizers_allowed_before_deletion(self) -> None:
        """Finalizers may be added while the object is not being deleted."""
        self.assertEqual(validate_object_meta_update(dict(self.OLD, finalizers=["a"]), self.OLD), [])
