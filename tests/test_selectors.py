# -*- test-case-name: tests.test_selectors -*-
"""Tests for L{grafana_aggregator.apimachinery.selectors}, table-driven after k8s.io/apimachinery's labels and fields tests.

Errors are compared by their whole message, which kube-apiserver returns to clients as-is.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.selectors import (
    DOES_NOT_EXIST,
    EQUALS,
    EXISTS,
    GREATER_THAN,
    IN,
    LESS_THAN,
    NOT_EQUALS,
    NOT_IN,
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Requirement,
    label_selector_from_json,
    parse_field_selector,
    parse_label_selector,
)
from grafana_aggregator.apimachinery.gotypes import go_quote
from grafana_aggregator.apimachinery.status import StatusError

VALUE_RULE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
              "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
              "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
NAME_RULE = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
             "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
             "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
PREFIX_RULE = ("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
               "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
               "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
BINARY = "in, notin, =, ==, !=, gt, lt"


def _req(key: str, operator: str, *values: str) -> Requirement:
    """A requirement, values as given."""
    return Requirement(key, operator, values)


class ParseLabelSelectorTests(SynchronousTestCase):
    """parse_label_selector accepts and rejects exactly what labels.Parse does."""

    def assertParses(self, cases: list[tuple[str, tuple[Requirement, ...]]]) -> None:
        """Every selector parses to exactly its requirements, sorted by key."""
        for text, requirements in cases:
            self.assertEqual(parse_label_selector(text), LabelSelector(requirements), text)

    def assertRejects(self, cases: list[tuple[str, str]]) -> None:
        """Every selector is a 400 BadRequest with exactly its message."""
        for text, message in cases:
            error = self.assertRaises(StatusError, parse_label_selector, text)
            self.assertEqual((error.code, error.reason, error.message, error.details),
                             (400, "BadRequest", message, None), text)

    def test_equality_requirements(self) -> None:
        """`=`, `==` and `!=` keep their operator; a missing value is the empty string."""
        self.assertParses([
            ("x=a,y=b,z=c", (_req("x", EQUALS, "a"), _req("y", EQUALS, "b"), _req("z", EQUALS, "c"))),
            ("a==b", (_req("a", "==", "b"),)),
            ("x!=a,y=b", (_req("x", NOT_EQUALS, "a"), _req("y", EQUALS, "b"))),
            ("x=", (_req("x", EQUALS, ""),)),
            ("x= ,z= ", (_req("x", EQUALS, ""), _req("z", EQUALS, ""))),
            ("a=in", (_req("a", EQUALS, "in"),)),
        ])

    def test_set_requirements(self) -> None:
        """`in` and `notin` take a sorted, de-duplicated value set in which empty values are allowed."""
        self.assertParses([
            ("x in (foo,,baz),y,z notin ()", (_req("x", IN, "", "baz", "foo"), _req("y", EXISTS),
                                              _req("z", NOT_IN, ""))),
            ("x notin ( )", (_req("x", NOT_IN, ""),)),
            ("x notin (, a)", (_req("x", NOT_IN, "", "a"),)),
            ("x in (a,,)", (_req("x", IN, "", "a"),)),
            ("a in (b,b,a)", (_req("a", IN, "a", "b"),)),
            ("a in (x,y,notin, z,in)", (_req("a", IN, "in", "notin", "x", "y", "z"),)),
            ("in in (in)", (_req("in", IN, "in"),)),
        ])

    def test_existence_and_comparison_requirements(self) -> None:
        """A bare key is `exists`, `!key` is `does not exist`, and `>`/`<` take one integer."""
        self.assertParses([
            ("a ", (_req("a", EXISTS),)),
            ("!x", (_req("x", DOES_NOT_EXIST),)),
            (" a , !b ", (_req("a", EXISTS), _req("b", DOES_NOT_EXIST))),
            ("x>1,z<5", (_req("x", GREATER_THAN, "1"), _req("z", LESS_THAN, "5"))),
            ("example.com/app=web", (_req("example.com/app", EQUALS, "web"),)),
            ("", ()),
            ("  \t\n", ()),
        ])

    def test_requirements_sorted_by_key(self) -> None:
        """The requirements come out sorted by key, so equivalent selectors are equal."""
        self.assertEqual(parse_label_selector("x=a,a=x"), parse_label_selector("a=x,x=a"))
        self.assertEqual(str(parse_label_selector("x=a,a=x")), "a=x,x=a")

    def test_string_form(self) -> None:
        """str() writes the canonical selector, spaces dropped and set values sorted."""
        for text, expected in [("x=a,y=b,z=c", "x=a,y=b,z=c"), ("x= ,z= ", "x=,z="), ("!x", "!x"),
                               ("x>1,z<5", "x>1,z<5"), ("b notin (z,y), a in (c)", "a in (c),b notin (y,z)"),
                               ("a==b,c!=d", "a==b,c!=d"), ("k", "k")]:
            self.assertEqual(str(parse_label_selector(text)), expected, text)

    def test_syntax_errors(self) -> None:
        """Syntax errors have labels.Parse's exact messages."""
        self.assertRejects([
            ("x==a==b", "found '==', expected: ',' or 'end of string'"),
            ("!x=a", "found '=', expected: ',' or 'end of string'"),
            ("x,,y", "found ',', expected: identifier after ','"),
            (",x,y", "found ',', expected: !, identifier, or 'end of string'"),
            ("=a", "found '=', expected: !, identifier, or 'end of string'"),
            ("a,", "found '', expected: identifier after ','"),
            ("a in (xyz),", "found '', expected: identifier after ','"),
            ("a in (xyz)b notin ()", "found 'b', expected: ',' or 'end of string'"),
            ("(", "found '(', expected: !, identifier, or 'end of string'"),
            ("x nott in (y)", f"unable to parse requirement: found 'nott', expected: {BINARY}"),
            ("a (", f"unable to parse requirement: found '(', expected: {BINARY}"),
            ("a in (xyz abc)", "unable to parse requirement: found 'abc', expected: ',' or ')'"),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a notin(", "unable to parse requirement: found '', expected: ',', ')' or identifier"),
            ("a in b", "unable to parse requirement: found 'b' expected: '('"),
            ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
            ("a!==b", "unable to parse requirement: found '=', expected: identifier"),
            ("!,", "unable to parse requirement: found ',', expected: identifier"),
        ])

    def test_value_errors(self) -> None:
        """Invalid values are reported as values[i][key] field errors, several in brackets."""
        self.assertRejects([
            ("a=-x", f'unable to parse requirement: values[0][a]: Invalid value: "-x": {VALUE_RULE}'),
            ("x=a||y=b", f'unable to parse requirement: values[0][x]: Invalid value: "a||y": {VALUE_RULE}'),
            ("a=" + "v" * 64, f'unable to parse requirement: values[0][a]: Invalid value: "{"v" * 64}": '
                              "must be no more than 63 bytes"),
            ("a=" + "v" * 63 + "-", f'unable to parse requirement: values[0][a]: Invalid value: "{"v" * 63}-": '
                                    f"must be no more than 63 bytes; {VALUE_RULE}"),
            ("a in (ok,-b,c-)", f'unable to parse requirement: [values[0][a]: Invalid value: "-b": {VALUE_RULE}, '
                                f'values[1][a]: Invalid value: "c-": {VALUE_RULE}]'),
            ("x<a", "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, "
                    "the value must be an integer"),
        ])

    def test_key_errors(self) -> None:
        """Invalid keys are reported against the `<nil>` path, as labels.Parse does."""
        self.assertRejects([
            ("-a", f'unable to parse requirement: <nil>: Invalid value: "-a": {NAME_RULE}'),
            ("pre/", f'unable to parse requirement: <nil>: Invalid value: "pre/": name part must be non-empty; '
                     f"{NAME_RULE}"),
            ("/a", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty'),
            ("A.B/x", f'unable to parse requirement: <nil>: Invalid value: "A.B/x": {PREFIX_RULE}'),
            ("k" * 64, f'unable to parse requirement: <nil>: Invalid value: "{"k" * 64}": '
                       "name part must be no more than 63 bytes"),
            ("a/b/c", "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a valid label key must "
                      "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                      "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                      "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain "
                      "prefix and '/' (e.g. 'example.com/MyName')"),
            ("é=1", f'unable to parse requirement: <nil>: Invalid value: "é": {NAME_RULE}'),
            ("a\x01=1", f'unable to parse requirement: <nil>: Invalid value: "a\\x01": {NAME_RULE}'),
        ])


class LabelSelectorMatchesTests(SynchronousTestCase):
    """LabelSelector.matches follows labels.Requirement.Matches."""

    def test_matches(self) -> None:
        """Each selector matches exactly the label sets marked True."""
        labels: list[dict[str, str]] = [{}, {"x": "a"}, {"x": "b"}, {"x": "a", "y": "1"}, {"y": "10"}, {"y": "z"}]
        cases: list[tuple[str, list[bool]]] = [
            ("", [True, True, True, True, True, True]),
            ("x=a", [False, True, False, True, False, False]),
            ("x==a", [False, True, False, True, False, False]),
            ("x!=a", [True, False, True, False, True, True]),
            ("x", [False, True, True, True, False, False]),
            ("!x", [True, False, False, False, True, True]),
            ("x in (a,b)", [False, True, True, True, False, False]),
            ("x notin (a)", [True, False, True, False, True, True]),
            ("x=a,y", [False, False, False, True, False, False]),
            ("y>5", [False, False, False, False, True, False]),
            ("y<5", [False, False, False, True, False, False]),
            ("x=", [False, False, False, False, False, False]),
            ("x in ()", [False, False, False, False, False, False]),
        ]
        for text, expected in cases:
            selector = parse_label_selector(text)
            self.assertEqual([selector.matches(ls) for ls in labels], expected, text)

    def test_empty_and_nothing(self) -> None:
        """The empty selector is empty and selects everything; the nothing selector selects nothing."""
        self.assertEqual((LabelSelector().is_empty(), LabelSelector().matches({"a": "b"})), (True, True))
        nothing = LabelSelector(nothing=True)
        self.assertEqual((nothing.is_empty(), nothing.matches({}), nothing.matches({"a": "b"})), (False, False, False))

    def test_comparison_needs_integer_label(self) -> None:
        """`gt`/`lt` never match a label that is not a 64-bit integer."""
        self.assertEqual([parse_label_selector("y>1").matches({"y": v}) for v in ("2", "+2", "2.5", "x", str(2 ** 63))],
                         [True, True, False, False, False])


class LabelSelectorFromJsonTests(SynchronousTestCase):
    """label_selector_from_json converts a metav1.LabelSelector as LabelSelectorAsSelector does."""

    def test_conversions(self) -> None:
        """matchLabels become `=` requirements and matchExpressions their operators, all sorted by key."""
        cases: list[tuple[dict[str, Any] | None, LabelSelector]] = [
            (None, LabelSelector(nothing=True)),
            ({}, LabelSelector()),
            ({"matchLabels": {}, "matchExpressions": []}, LabelSelector()),
            ({"matchLabels": {"b": "2", "a": "1"}}, LabelSelector((_req("a", EQUALS, "1"), _req("b", EQUALS, "2")))),
            ({"matchExpressions": [
                {"key": "t", "operator": "In", "values": ["y", "x"]},
                {"key": "s", "operator": "NotIn", "values": ["z"]},
                {"key": "r", "operator": "Exists"},
                {"key": "q", "operator": "DoesNotExist", "values": []},
            ]}, LabelSelector((_req("q", DOES_NOT_EXIST), _req("r", EXISTS), _req("s", NOT_IN, "z"),
                               _req("t", IN, "y", "x")))),
        ]
        for selector, expected in cases:
            self.assertEqual(label_selector_from_json(selector), expected, selector)

    def test_matching(self) -> None:
        """A converted selector matches like the parsed equivalent."""
        selector = label_selector_from_json({"matchLabels": {"app": "web"},
                                             "matchExpressions": [{"key": "tier", "operator": "NotIn",
                                                                   "values": ["db"]}]})
        self.assertEqual([selector.matches(ls) for ls in ({"app": "web"}, {"app": "web", "tier": "db"},
                                                          {"app": "api"})], [True, False, False])

    def test_errors(self) -> None:
        """Invalid selectors are 400s with NewRequirement's and LabelSelectorAsSelector's messages."""
        cases: list[tuple[dict[str, Any], str]] = [
            ({"matchExpressions": [{"key": "a", "operator": "Foo"}]}, '"Foo" is not a valid label selector operator'),
            ({"matchExpressions": [{"key": "a", "operator": "In"}]},
             "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"),
            ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
             'values: Invalid value: ["x"]: values set must be empty for exists and does not exist'),
            ({"matchLabels": {"-a": "-b"}},
             f'[key: Invalid value: "-a": {NAME_RULE}, values[0][-a]: Invalid value: "-b": {VALUE_RULE}]'),
            ({"matchLabels": {"a": 1}}, "matchLabels must be a map of strings"),
            ({"matchExpressions": "a"}, "matchExpressions must be a list of objects"),
        ]
        for selector, message in cases:
            error = self.assertRaises(StatusError, label_selector_from_json, selector)
            self.assertEqual((error.code, error.reason, error.message), (400, "BadRequest", message), selector)


class ParseFieldSelectorTests(SynchronousTestCase):
    """parse_field_selector follows fields.ParseSelector and the list handler's field-label check."""

    ALLOWED = ("metadata.name", "metadata.namespace", "spec.group", "a")

    def test_parses(self) -> None:
        """Terms are sorted, `==` is `=`, empty terms are skipped and escaped values unescaped."""
        cases: list[tuple[str, tuple[FieldRequirement, ...]]] = [
            ("", ()),
            ("metadata.name=foo", (FieldRequirement("metadata.name", EQUALS, "foo"),)),
            ("spec.group==g,metadata.name!=x", (FieldRequirement("metadata.name", NOT_EQUALS, "x"),
                                                FieldRequirement("spec.group", EQUALS, "g"))),
            ("a=,,a!=", (FieldRequirement("a", NOT_EQUALS, ""), FieldRequirement("a", EQUALS, ""))),
            (r"a=x\,y\=z\\", (FieldRequirement("a", EQUALS, "x,y=z\\"),)),
            ("a=b!c", (FieldRequirement("a", EQUALS, "b!c"),)),
            ("a==", (FieldRequirement("a", EQUALS, ""),)),
        ]
        for text, requirements in cases:
            self.assertEqual(parse_field_selector(text, self.ALLOWED), FieldSelector(requirements), text)

    def test_errors(self) -> None:
        """Syntax errors and unsupported fields are 400s with kube's exact messages."""
        cases = [
            ("a", "invalid selector: 'a'; can't understand 'a'"),
            ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
            ("a!b", "invalid selector: 'a!b'; can't understand 'a!b'"),
            ("a=b=c", "invalid field selector: unescaped character in value: 61"),
            ("a!==b", "invalid field selector: unescaped character in value: 61"),
            (r"a=b\!", "invalid field selector: invalid escape sequence: \\!"),
            ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
            ("spec.foo=1", "field label not supported: spec.foo"),
            ("z=1,spec.foo=1,a=1", "field label not supported: spec.foo"),
            ("=x", "field label not supported: "),
        ]
        for text, message in cases:
            error = self.assertRaises(StatusError, parse_field_selector, text, self.ALLOWED)
            self.assertEqual((error.code, error.reason, error.message), (400, "BadRequest", message), text)

    def test_matches(self) -> None:
        """Terms compare with the object's fields, a missing field being the empty string."""
        fields = {"metadata.name": "foo", "spec.group": ""}
        cases = [("", True), ("metadata.name=foo", True), ("metadata.name!=foo", False), ("spec.group=", True),
                 ("a=", True), ("a!=", False), ("metadata.name=foo,spec.group!=g", True),
                 ("metadata.name=bar,spec.group=", False)]
        for text, expected in cases:
            self.assertEqual(parse_field_selector(text, self.ALLOWED).matches(fields), expected, text)

    def test_helpers(self) -> None:
        """is_empty, requires_exact_match and str() describe the selector."""
        selector = parse_field_selector(r"metadata.name=a\,b,spec.group!=g", self.ALLOWED)
        self.assertEqual((selector.is_empty(), selector.requires_exact_match("metadata.name"),
                          selector.requires_exact_match("spec.group"), str(selector)),
                         (False, "a,b", None, r"metadata.name=a\,b,spec.group!=g"))
        self.assertTrue(parse_field_selector("", self.ALLOWED).is_empty())


class GoQuoteTests(SynchronousTestCase):
    """go_quote quotes as Go's %q does."""

    def test_quotes(self) -> None:
        """Quotes and backslashes are escaped, printable text kept, control characters hex-escaped."""
        cases = [("", '""'), ("a b", '"a b"'), ('"\\', '"\\"\\\\"'), ("\n\t\x00\x7f", '"\\n\\t\\x00\\x7f"'),
                 ("é☃", '"é☃"'), ("\u200b", '"\\u200b"'), ("\U000e0001", '"\\U000e0001"')]
        self.assertEqual([go_quote(text) for text, _ in cases], [quoted for _, quoted in cases])
