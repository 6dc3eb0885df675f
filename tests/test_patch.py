# -*- test-case-name: tests.test_patch -*-
"""Tests for L{grafana_aggregator.apimachinery.patch}: RFC 6902 and RFC 7386 as kube-apiserver applies them.

The cases are the RFCs' own examples plus the quirks of the json-patch library behind kube-apiserver.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.patch import apply_json_patch, apply_merge_patch, json_equal
from grafana_aggregator.apimachinery.status import StatusError

UNPROCESSABLE: tuple[int, str, str, dict[str, Any]] = (422, "Invalid", "the server rejected our request due to an error in our request", {})


def _body(value: Any) -> bytes:
    """A patch body."""
    return json.dumps(value).encode()


class ApplyJsonPatchTests(SynchronousTestCase):
    """apply_json_patch applies RFC 6902 operations as kube-apiserver does."""

    def assertPatches(self, cases: list[tuple[dict[str, Any], list[Any], dict[str, Any]]]) -> None:
        """Every (document, operations) gives exactly the expected document, leaving the input untouched."""
        for document, operations, expected in cases:
            before = json.dumps(document)
            self.assertEqual(apply_json_patch(document, _body(operations)), expected, operations)
            self.assertEqual(json.dumps(document), before)

    def assertUnprocessable(self, cases: list[tuple[dict[str, Any], list[Any]]]) -> None:
        """Every (document, operations) fails with kube's generic 422."""
        for document, operations in cases:
            error = self.assertRaises(StatusError, apply_json_patch, document, _body(operations))
            self.assertEqual((error.code, error.reason, error.message, error.details), UNPROCESSABLE, operations)

    def test_rfc6902_examples(self) -> None:
        """The successful examples of RFC 6902 appendix A."""
        self.assertPatches([
            ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"foo": "bar", "baz": "qux"}),
            ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}],
             {"foo": ["bar", "qux", "baz"]}),
            ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
            ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
            ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}],
             {"baz": "boo", "foo": "bar"}),
            ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
             [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
             {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
            ({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
             {"foo": ["all", "cows", "eat", "grass"]}),
            ({"baz": "qux", "foo": ["a", 2, "c"]}, [{"op": "test", "path": "/baz", "value": "qux"},
                                                    {"op": "test", "path": "/foo/1", "value": 2}],
             {"baz": "qux", "foo": ["a", 2, "c"]}),
            ({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
             {"foo": "bar", "child": {"grandchild": {}}}),
            ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
             {"foo": "bar", "baz": "qux"}),
            ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
            ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
             {"foo": ["bar", ["abc", "def"]]}),
            ({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}], {"a": {"b": 1}, "c": {"b": 1}}),
            ({"a/b": 1, "m~n": 2}, [{"op": "remove", "path": "/a~1b"}, {"op": "remove", "path": "/m~0n"}], {}),
        ])

    def test_sequences_and_copies(self) -> None:
        """Operations apply in order on the result of the previous ones, and copies are independent."""
        self.assertPatches([
            ({"spec": {}}, [{"op": "add", "path": "/spec/list", "value": []},
                            {"op": "add", "path": "/spec/list/0", "value": {"x": 1}},
                            {"op": "copy", "from": "/spec/list/0", "path": "/spec/list/-"},
                            {"op": "replace", "path": "/spec/list/1/x", "value": 2}],
             {"spec": {"list": [{"x": 1}, {"x": 2}]}}),
            ({"metadata": {"labels": {"a": "1"}}}, [{"op": "move", "from": "/metadata/labels",
                                                      "path": "/metadata/annotations"}],
             {"metadata": {"annotations": {"a": "1"}}}),
        ])

    def test_library_quirks(self) -> None:
        """Behaviour of kube's json-patch v4 beyond the RFC: negative indices, lenient replace/copy/test, null."""
        self.assertPatches([
            ({"l": [1, 2, 3]}, [{"op": "add", "path": "/l/-1", "value": 9}], {"l": [1, 2, 3, 9]}),
            ({"l": [1, 2, 3]}, [{"op": "add", "path": "/l/-2", "value": 9}], {"l": [1, 2, 9, 3]}),
            ({"l": [1, 2, 3]}, [{"op": "remove", "path": "/l/-1"}], {"l": [1, 2]}),
            ({"l": [1, 2, 3]}, [{"op": "replace", "path": "/l/-3", "value": 0}], {"l": [0, 2, 3]}),
            ({"l": [1, 2, 3]}, [{"op": "add", "path": "/l/3", "value": 4}], {"l": [1, 2, 3, 4]}),
            ({"a": 1}, [{"op": "replace", "path": "/b", "value": 2}], {"a": 1, "b": 2}),
            ({"a": 1}, [{"op": "copy", "from": "/missing", "path": "/b"}], {"a": 1, "b": None}),
            ({"a": 1}, [{"op": "add", "path": "/b"}], {"a": 1, "b": None}),
            ({"a": None}, [{"op": "test", "path": "/a", "value": None}, {"op": "test", "path": "/b"},
                           {"op": "test", "path": "/c", "value": None}], {"a": None}),
            ({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
            ({"a": {"b": 1}}, [{"op": "test", "path": "", "value": {"a": {"b": 1}}}], {"a": {"b": 1}}),
            ({"a": 1}, [{"op": "add", "path": "x/b", "value": 2}], {"a": 1, "b": 2}),
            ({"a": 1}, [], {"a": 1}),
        ])
        self.assertEqual(apply_json_patch({"a": 1}, b"null"), {"a": 1})

    def test_failures_are_unprocessable(self) -> None:
        """A failed test or an operation on a missing path or bad index is kube's generic 422."""
        self.assertUnprocessable([
            ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),
            ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}]),
            ({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}]),
            ({"a": True}, [{"op": "test", "path": "/a", "value": 1}]),
            ({"a": 1}, [{"op": "test", "path": "/a"}]),
            ({"a": 1}, [{"op": "test", "path": "/a", "value": None}]),
            ({"a": 1}, [{"op": "test", "path": "/b", "value": 1}]),
            ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),
            ({"a": None}, [{"op": "add", "path": "/a/b", "value": 1}]),
            ({"a": "s"}, [{"op": "add", "path": "/a/b", "value": 1}]),
            ({"a": 1}, [{"op": "remove", "path": "/b"}]),
            ({"a": 1}, [{"op": "remove", "path": ""}]),
            ({"a": 1}, [{"op": "add", "path": "", "value": {}}]),
            ({"a": 1}, [{"op": "replace", "path": "", "value": 5}]),
            ({"l": [1]}, [{"op": "add", "path": "/l/2", "value": 0}]),
            ({"l": [1]}, [{"op": "add", "path": "/l/x", "value": 0}]),
            ({"l": [1]}, [{"op": "add", "path": "/l/-3", "value": 0}]),
            ({"l": [1]}, [{"op": "replace", "path": "/l/1", "value": 0}]),
            ({"l": [1]}, [{"op": "remove", "path": "/l/1"}]),
            ({"l": [1]}, [{"op": "test", "path": "/l/5", "value": 1}]),
            ({"l": [[1]]}, [{"op": "add", "path": "/l/1/0", "value": 1}]),
            ({"a": 1}, [{"op": "move", "from": "/b", "path": "/c"}]),
            ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/c"}]),
            ({"a": 1}, [{"op": "copy", "from": "/x/y", "path": "/c"}]),
            ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/x/y"}]),
            ({"a": 1}, [{"op": "frobnicate", "path": "/a"}]),
            ({"a": 1}, [{"path": "/a"}]),
            ({"a": 1}, [None]),
            ({"a": 1}, [{"op": "add", "value": 1}]),
            ({"a": 1}, [{"op": "move", "path": "/b"}]),
            ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]),
            ({"a": 1}, [{"op": "add", "path": "/b", "value": 1}, {"op": "test", "path": "/b", "value": 2}]),
        ])

    def test_bad_documents_are_bad_requests(self) -> None:
        """Bodies that are not JSON, or not a list of operation objects, are 400s with kube's messages."""
        cases: list[tuple[bytes, str]] = [
            (b"", "invalid JSON patch"),
            (b"[{", "invalid JSON patch"),
            (b"[NaN]", "invalid JSON patch"),
            (b"\xff", "invalid JSON patch"),
            (b"{}", "error decoding patch: json: cannot unmarshal object into Go value of type "
                    "[]handlers.jsonPatchOp"),
            (b'"x"', "error decoding patch: json: cannot unmarshal string into Go value of type "
                     "[]handlers.jsonPatchOp"),
            (b"true", "error decoding patch: json: cannot unmarshal bool into Go value of type "
                      "[]handlers.jsonPatchOp"),
            (b"[1]", "error decoding patch: json: cannot unmarshal number into Go value of type handlers.jsonPatchOp"),
            (b"[[]]", "error decoding patch: json: cannot unmarshal array into Go value of type handlers.jsonPatchOp"),
            (b'[{"op":1}]', "error decoding patch: json: cannot unmarshal number into Go struct field "
                            "jsonPatchOp.op of type string"),
            (b'[{"op":"add","path":{}}]', "error decoding patch: json: cannot unmarshal object into Go struct "
                                          "field jsonPatchOp.path of type string"),
            (b'[{"op":"move","from":["a"]}]', "error decoding patch: json: cannot unmarshal array into Go struct "
                                              "field jsonPatchOp.from of type string"),
        ]
        for body, message in cases:
            error = self.assertRaises(StatusError, apply_json_patch, {"a": 1}, body)
            self.assertEqual((error.code, error.reason, error.message, error.details),
                             (400, "BadRequest", message, None), body)

    def test_too_many_operations(self) -> None:
        """More than 10000 operations is a 413, exactly 10000 is fine."""
        test = {"op": "test", "path": "/a", "value": 1}
        self.assertEqual(apply_json_patch({"a": 1}, _body([test] * 10000)), {"a": 1})
        error = self.assertRaises(StatusError, apply_json_patch, {"a": 1}, _body([test] * 10001))
        self.assertEqual((error.code, error.reason, error.message),
                         (413, "RequestEntityTooLarge", "Request entity too large: The allowed maximum operations "
                                                        "in a JSON patch is 10000, got 10001"))


class ApplyMergePatchTests(SynchronousTestCase):
    """apply_merge_patch applies RFC 7386 merge patches as kube-apiserver does."""

    def test_rfc7386_examples(self) -> None:
        """The object examples of RFC 7386 appendix A and section 3."""
        cases: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
            ({"a": "b"}, {"a": "c"}, {"a": "c"}),
            ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
            ({"a": "b"}, {"a": None}, {}),
            ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
            ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
            ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
            ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
            ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
            ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
            ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
            ({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"],
              "content": "This will be unchanged"},
             {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None},
              "tags": ["example"]},
             {"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
              "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"}),
            ({"a": 1}, {}, {"a": 1}),
            ({"a": 1}, {"b": None}, {"a": 1}),
        ]
        for document, patch, expected in cases:
            before = json.dumps(document)
            self.assertEqual(apply_merge_patch(document, _body(patch)), expected, patch)
            self.assertEqual(json.dumps(document), before)

    def test_library_quirks(self) -> None:
        """Nulls are pruned from inserted values, inside arrays too, but not from arrays replacing an object."""
        cases: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
            ({}, {"a": [{"b": None, "c": 1}, None]}, {"a": [{"c": 1}, None]}),
            ({"a": "x"}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}}),
            ({"a": None}, {"a": {"b": None}}, {"a": {}}),
            ({"a": {"x": 1}}, {"a": [{"b": None}]}, {"a": [{"b": None}]}),
        ]
        for document, patch, expected in cases:
            self.assertEqual(apply_merge_patch(document, _body(patch)), expected, patch)

    def test_bad_documents_are_bad_requests(self) -> None:
        """Bodies that are not JSON, null or not an object are 400s with kube's messages."""
        cases: list[tuple[bytes, str]] = [
            (b"", "invalid JSON patch"),
            (b"{", "invalid JSON patch"),
            (b"null", "Invalid JSON Patch"),
            (b"[]", "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"),
            (b"1", "error decoding patch: json: cannot unmarshal number into Go value of type map[string]interface {}"),
            (b'"a"', "error decoding patch: json: cannot unmarshal string into Go value of type "
                     "map[string]interface {}"),
        ]
        for body, message in cases:
            error = self.assertRaises(StatusError, apply_merge_patch, {"a": 1}, body)
            self.assertEqual((error.code, error.reason, error.message, error.details),
                             (400, "BadRequest", message, None), body)


class JsonEqualTests(SynchronousTestCase):
    """json_equal compares decoded JSON by type and value."""

    def test_equality(self) -> None:
        """Booleans, integers and floats differ by type; containers compare deeply, maps without order."""
        cases = [(1, 1, True), (1, 1.0, False), (True, 1, False), (None, None, True), ("a", "a", True),
                 ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True), ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
                 ({"a": 1}, {"a": 1, "b": None}, False), ([1, 2], [2, 1], False), ([], {}, False)]
        self.assertEqual([json_equal(a, b) for a, b, _ in cases], [expected for _, _, expected in cases])
