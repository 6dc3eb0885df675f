# -*- test-case-name: tests.test_strategic_patch -*-
"""Tests for L{grafana_aggregator.apimachinery.strategicpatch}: kube's strategic merge patch on the server.

Each expectation is what k8s.io/apimachinery's `StrategicMergeMapPatch` gives for the same original, patch
and Go struct tags: merge by `patchMergeKey`, sets of scalars, replaced lists, and the directives `$patch`,
`$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.
"""

from __future__ import annotations

import copy
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.gotypes import (
    INT32_TYPE,
    OBJECT_META_TYPE,
    STRING_TYPE,
    GoField,
    map_of,
    slice_of,
    struct,
    type_meta_fields,
)
from grafana_aggregator.apimachinery.status import StatusError
from grafana_aggregator.apimachinery.strategicpatch import decode_patch, json_syntax_error, strategic_merge
from grafana_aggregator.registry.apiservice import GO_TYPE as APISERVICE

#: A struct with one list of each kind: merged by key, merged as a set, replaced; and a replaced object.
ITEM = struct("v1.Item", GoField("name", STRING_TYPE), GoField("value", STRING_TYPE),
              GoField("tags", slice_of(STRING_TYPE), patch_strategy="merge"))
THING = struct(
    "v1.Thing", *type_meta_fields(), GoField("metadata", OBJECT_META_TYPE),
    GoField("items", slice_of(ITEM), patch_strategy="merge", patch_merge_key="name"),
    GoField("ports", slice_of(INT32_TYPE), patch_strategy="merge"),
    GoField("args", slice_of(STRING_TYPE)),
    GoField("plain", slice_of(ITEM)),
    GoField("settings", map_of(STRING_TYPE)),
    GoField("selector", struct("v1.Selector", GoField("a", STRING_TYPE), GoField("b", STRING_TYPE)),
            patch_strategy="replace"),
    GoField("spec", struct("v1.Spec", GoField("mode", STRING_TYPE), GoField("size", INT32_TYPE),
                           GoField("owner", STRING_TYPE))),
)
AVAILABLE = {"type": "Available", "status": "True", "lastTransitionTime": "2023-11-14T22:13:20Z", "reason": "Local",
             "message": "Local APIServices are always available"}


def apiservice(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1.x.example"},
            "spec": {"group": "x.example", "version": "v1", "groupPriorityMinimum": 100, "versionPriority": 10},
            "status": {"conditions": [dict(c) for c in conditions]}}


class StrategicMergeTests(SynchronousTestCase):
    """Merging follows each field's patch strategy."""

    def merge(self, original: dict[str, Any], patch: dict[str, Any] | None, schema: Any = THING) -> dict[str, Any]:
        return strategic_merge(copy.deepcopy(original), copy.deepcopy(patch), schema)

    def assertRefused(self, original: dict[str, Any], patch: dict[str, Any], code: int, message: str,
                      schema: Any = THING) -> None:
        """The patch cannot be applied: a StatusError with the code and message."""
        error = self.assertRaises(StatusError, self.merge, original, patch, schema)
        self.assertEqual((error.code, error.message), (code, message))

    def test_objects_merge_and_null_deletes(self) -> None:
        """Objects merge key by key, a null deletes a key, and nulls inside new values are dropped."""
        self.assertEqual(
            self.merge({"spec": {"mode": "a", "size": 1}, "settings": {"k": "v"}},
                       {"spec": {"size": 2, "mode": None}, "settings": {"n": "m"}, "metadata": {"labels": {"x": None,
                                                                                                         "y": "z"}}}),
            {"spec": {"size": 2}, "settings": {"k": "v", "n": "m"}, "metadata": {"labels": {"y": "z"}}})

    def test_null_patch_changes_nothing(self) -> None:
        """A `null` body is an empty patch."""
        self.assertEqual(self.merge({"spec": {"mode": "a"}}, None), {"spec": {"mode": "a"}})

    def test_conditions_merge_by_type(self) -> None:
        """APIService status.conditions merge by type: a new type is added before the others, a known one changes."""
        degraded = {"type": "Degraded", "status": "False"}
        merged = self.merge(apiservice(AVAILABLE), {"status": {"conditions": [degraded]}}, APISERVICE)
        self.assertEqual(merged["status"]["conditions"], [degraded, AVAILABLE])
        merged = self.merge(apiservice(AVAILABLE, degraded),
                            {"status": {"conditions": [{"type": "Available", "status": "False", "reason": None}]}},
                            APISERVICE)
        self.assertEqual(merged["status"]["conditions"], [
            {"type": "Available", "status": "False", "lastTransitionTime": "2023-11-14T22:13:20Z",
             "message": "Local APIServices are always available"}, degraded])

    def test_merge_order(self) -> None:
        """Patch items keep the patch's order; a server-only item goes first while the server had it before the
        next patch item (kube's mergeSortedSlice)."""
        original = {"items": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}
        merged = self.merge(original, {"items": [{"name": "d", "value": "4"}, {"name": "b", "value": "2"}]})
        self.assertEqual(merged["items"], [{"name": "a"}, {"name": "c"}, {"name": "d", "value": "4"},
                                           {"name": "b", "value": "2"}])

    def test_nested_lists_merge_inside_merged_items(self) -> None:
        """An item merged by key merges its own lists by their strategies."""
        original = {"items": [{"name": "a", "tags": ["x", "y"]}]}
        self.assertEqual(self.merge(original, {"items": [{"name": "a", "tags": ["z", "x"]}]})["items"],
                         [{"name": "a", "tags": ["z", "x", "y"]}])

    def test_scalar_set_merge(self) -> None:
        """A merged list of scalars keeps each value once; a new value goes before the server's values."""
        self.assertEqual(self.merge({"ports": [80, 443, 8080]}, {"ports": [8443, 443]})["ports"], [8443, 80, 443, 8080])

    def test_finalizers_merge_and_owner_references_by_uid(self) -> None:
        """ObjectMeta's tags apply: finalizers merge as a set, ownerReferences by uid, labels as an object."""
        original = {"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "one"}],
                                 "labels": {"k": "v"}}}
        merged = self.merge(original, {"metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "2",
                                                                                            "name": "two"}]}})
        self.assertEqual(merged["metadata"], {"finalizers": ["b", "a"], "ownerReferences": [
            {"uid": "2", "name": "two"}, {"uid": "1", "name": "one"}], "labels": {"k": "v"}})

    def test_lists_without_strategy_are_replaced(self) -> None:
        """A list without a merge strategy, of scalars or of objects, is replaced whole."""
        merged = self.merge({"args": ["a", "b"], "plain": [{"name": "a"}]},
                            {"args": ["c"], "plain": [{"name": "b"}]})
        self.assertEqual((merged["args"], merged["plain"]), (["c"], [{"name": "b"}]))

    def test_replace_strategy_object(self) -> None:
        """An object whose field is tagged patchStrategy=replace is replaced, not merged."""
        self.assertEqual(self.merge({"selector": {"a": "1", "b": "2"}}, {"selector": {"b": "3"}})["selector"],
                         {"b": "3"})

    def test_type_change_replaces(self) -> None:
        """A value of another JSON type replaces the original."""
        self.assertEqual(self.merge({"spec": {"mode": "a"}}, {"spec": "x"}), {"spec": "x"})

    def test_patch_replace_on_object(self) -> None:
        """`$patch: replace` inside an object replaces it with the rest of the patch object."""
        self.assertEqual(self.merge({"spec": {"mode": "a", "size": 1}}, {"spec": {"$patch": "replace", "size": 2}}),
                         {"spec": {"size": 2}})

    def test_patch_delete_on_object(self) -> None:
        """`$patch: delete` inside an object empties it."""
        self.assertEqual(self.merge({"spec": {"mode": "a"}, "settings": {"k": "v"}},
                                    {"spec": {"$patch": "delete"}}), {"spec": {}, "settings": {"k": "v"}})

    def test_patch_delete_in_list(self) -> None:
        """`{"$patch": "delete", <mergeKey>: v}` removes the items with that key; a condition by its type."""
        merged = self.merge(apiservice(AVAILABLE, {"type": "Degraded", "status": "True"}),
                            {"status": {"conditions": [{"$patch": "delete", "type": "Degraded"}]}}, APISERVICE)
        self.assertEqual(merged["status"]["conditions"], [AVAILABLE])

    def test_patch_replace_in_list(self) -> None:
        """`{"$patch": "replace"}` in a merged list replaces the list with the patch's other items."""
        merged = self.merge(apiservice(AVAILABLE), {"status": {"conditions": [
            {"type": "Degraded", "status": "True"}, {"$patch": "replace"}]}}, APISERVICE)
        self.assertEqual(merged["status"]["conditions"], [{"type": "Degraded", "status": "True"}])

    def test_patch_merge_is_refused(self) -> None:
        """`$patch: merge` is refused, in a list and on an object, as kube refuses it."""
        self.assertRefused({"items": [{"name": "a"}]}, {"items": [{"$patch": "merge", "name": "a"}]}, 400,
                           "merging lists cannot yet be specified in the patch")
        self.assertRefused({"spec": {"mode": "a"}}, {"spec": {"$patch": "merge"}}, 400,
                           "unknown patch type: merge in map: map[$patch:merge]")

    def test_unknown_patch_directive(self) -> None:
        """Another `$patch` value is refused naming it and the object."""
        self.assertRefused({"items": [{"name": "a"}]}, {"items": [{"$patch": 5, "name": "a"}]}, 400,
                           "unknown patch type: %!s(int64=5) in map: map[$patch:5 name:a]")

    def test_new_value_loses_directives(self) -> None:
        """A value the original does not have is taken without the objects marked `$patch`."""
        merged = self.merge({}, {"items": [{"name": "a"}, {"name": "b", "$patch": "delete"}],
                                 "spec": {"$patch": "delete"}})
        self.assertEqual(merged, {"items": [{"name": "a"}]})

    def test_retain_keys(self) -> None:
        """`$retainKeys` clears every key of the original it does not list, then the patch merges."""
        merged = self.merge({"spec": {"mode": "a", "size": 1, "owner": "me"}},
                            {"spec": {"$retainKeys": ["mode", "size"], "size": 2}})
        self.assertEqual(merged["spec"], {"mode": "a", "size": 2})

    def test_retain_keys_must_list_patched_keys(self) -> None:
        """A key the patch sets must be in `$retainKeys`; the list must be a list."""
        self.assertRefused({"spec": {}}, {"spec": {"$retainKeys": ["mode"], "size": 2}}, 400,
                           "invalid patch format of retainKeys")
        self.assertRefused({"spec": {}}, {"spec": {"$retainKeys": "mode"}}, 400, "invalid patch format of retainKeys")

    def test_delete_from_primitive_list(self) -> None:
        """`$deleteFromPrimitiveList/<field>` removes values from a merged list of scalars."""
        merged = self.merge({"metadata": {"finalizers": ["a", "b", "c"]}},
                            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "x"]}})
        self.assertEqual(merged["metadata"]["finalizers"], ["a", "c"])

    def test_delete_from_primitive_list_without_list(self) -> None:
        """Deleting from a list the original does not have changes nothing."""
        self.assertEqual(self.merge({"metadata": {}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
                         {"metadata": {}})

    def test_delete_from_primitive_list_malformed(self) -> None:
        """A malformed `$deleteFromPrimitiveList` key is refused."""
        self.assertRefused({"metadata": {}}, {"metadata": {"$deleteFromPrimitiveListfinalizers": ["b"]}}, 400,
                           "invalid patch format of primitive list")

    def test_set_element_order_of_merged_maps(self) -> None:
        """`$setElementOrder/<field>` orders the listed items; an unlisted server item keeps its place before them."""
        original = apiservice(AVAILABLE, {"type": "B", "status": "True"}, {"type": "C", "status": "True"})
        merged = self.merge(original, {"status": {
            "$setElementOrder/conditions": [{"type": "C"}, {"type": "Available"}],
            "conditions": [{"type": "C", "status": "False"}]}}, APISERVICE)
        self.assertEqual([(c["type"], c["status"]) for c in merged["status"]["conditions"]],
                         [("B", "True"), ("C", "False"), ("Available", "True")])

    def test_set_element_order_of_scalars(self) -> None:
        """`$setElementOrder` also orders a merged list of scalars."""
        merged = self.merge({"ports": [1, 2, 3]}, {"$setElementOrder/ports": [3, 1, 4], "ports": [4]})
        self.assertEqual(merged["ports"], [2, 3, 1, 4])

    def test_set_element_order_must_match_patch(self) -> None:
        """The patch's items must appear in the `$setElementOrder` list, in its order."""
        self.assertRefused({"ports": [1]}, {"$setElementOrder/ports": [2], "ports": [3]}, 400,
                           "The order in patch list:\n[3]\n doesn't match $setElementOrder list:\n[2]\n")

    def test_set_element_order_malformed(self) -> None:
        """A `$setElementOrder` key without a field, or of a non-list, is refused."""
        self.assertRefused({}, {"$setElementOrderports": [1]}, 400, "invalid patch format of setElementOrder list")
        self.assertRefused({}, {"$setElementOrder/ports": "x"}, 400,
                           "expected a []interface {}, but received a string")

    def test_missing_merge_key(self) -> None:
        """A patch item without the merge key is refused with strategicpatch's message."""
        self.assertRefused(apiservice(AVAILABLE), {"status": {"conditions": [{"status": "False"}]}}, 400,
                           "map: map[status:False] does not contain declared merge key: type", APISERVICE)

    def test_list_element_types_must_match(self) -> None:
        """A merged list holding different JSON types is refused; a list of lists is kube's generic 422."""
        self.assertRefused({"ports": [1]}, {"ports": ["a"]}, 400, "list element types are not identical: [[1] [a]]")
        self.assertRefused({"ports": [[1]]}, {"ports": [[2]]}, 422,
                           "the server rejected our request due to an error in our request")

    def test_unknown_field_merged_is_refused(self) -> None:
        """Merging into a field the Go type does not have is refused, as kube's struct lookup fails."""
        self.assertRefused({"spec": {"extra": {"a": "b"}}}, {"spec": {"extra": {"c": "d"}}}, 400,
                           'unable to find api field in struct Spec for the json field "extra"')


class DecodePatchTests(SynchronousTestCase):
    """The body is decoded as kube's json.Unmarshal into map[string]interface{} decodes it."""

    def test_object(self) -> None:
        """An object decodes; repeated fields are reported by path, the last value kept."""
        decoded = decode_patch(b'{"spec":{"a":1,"a":2},"l":[{"b":1,"b":2}]}')
        self.assertEqual((decoded.patch, decoded.duplicates), ({"spec": {"a": 2}, "l": [{"b": 2}]},
                                                               ("spec.a", "l[0].b")))

    def test_null(self) -> None:
        """`null` is no patch at all."""
        self.assertIsNone(decode_patch(b"null").patch)

    def test_not_an_object(self) -> None:
        """A body that is not an object is 400 with encoding/json's message."""
        for body, kind in ((b"[]", "array"), (b'"x"', "string"), (b"1", "number"), (b"true", "bool")):
            error = self.assertRaises(StatusError, decode_patch, body)
            self.assertEqual((error.code, error.message),
                             (400, f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"))

    def test_syntax_errors(self) -> None:
        """Malformed JSON gets encoding/json's SyntaxError text."""
        cases = {
            b"": "unexpected end of JSON input",
            b"{": "unexpected end of JSON input",
            b"x": "invalid character 'x' looking for beginning of value",
            b'{"a" 1}': "invalid character '1' after object key",
            b'{"a":1 "b":2}': "invalid character '\"' after object key:value pair",
            b"{a:1}": "invalid character 'a' looking for beginning of object key string",
            b"[1 2]": "invalid character '2' after array element",
            b"{} {}": "invalid character '{' after top-level value",
            b'{"a":tru}': "invalid character '}' in literal true (expecting 'e')",
            b'{"a":-x}': "invalid character 'x' in numeric literal",
            b'{"a":1.}': "invalid character '}' after decimal point in numeric literal",
            b'{"a":1e}': "invalid character '}' in exponent of numeric literal",
            b'{"a":"\\q"}': "invalid character 'q' in string escape code",
            b'{"a":"\\u12x4"}': "invalid character 'x' in \\u hexadecimal character escape",
            b'{"a":"\x01"}': "invalid character '\\x01' in string literal",
            b"{'a':1}": "invalid character '\\'' looking for beginning of object key string",
        }
        self.assertEqual({body: json_syntax_error(body) for body in cases}, cases)
        self.assertIsNone(json_syntax_error(b' {"a": [1, -2.5e+3, "x\\u00e9", true, false, null]} '))

    def test_too_deep(self) -> None:
        """Nesting past the server's depth limit is refused before decoding."""
        error = self.assertRaises(StatusError, decode_patch, b'{"a":' * 200 + b"1" + b"}" * 200)
        self.assertEqual(error.code, 400)
        self.assertIn("exceeded max depth", error.message)
