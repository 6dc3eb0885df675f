# -*- test-case-name: tests.test_bad_input -*-
"""Bad input never reaches a 5xx: each class of malformed input, on every verb it can reach, is kube's 400, 409,
413 or 422 with a message naming what is wrong, and nothing is logged as an error.

The classes: nesting past MAX_DEPTH, numbers Python or Go cannot hold, YAML that is not JSON, text that is not
Unicode, malformed DeleteOptions, namespaces and names that cannot be keys, and query parameters that do not
parse (refused before a watch's 200).  The served `/apis` tree is driven over HTTP as kubectl drives it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import quote

from treq import collect
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.apimachinery import negotiation
from grafana_aggregator.apimachinery.patch import apply_json_patch, apply_merge_patch
from grafana_aggregator.apimachinery.status import StatusError
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import local_groups
from .support import serve_apis

EPOCH = 1_700_000_000
HOST = "https://agg.test"
APIREG = "apiregistration.k8s.io/v1"
APISERVICES = f"{HOST}/apis/apiregistration.k8s.io/v1/apiservices"
EXTERNALNAMES = f"{HOST}/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames"
NAME = "v1.foo.example.com"
URL = f"{APISERVICES}/{NAME}"
JSON = "application/json"
YAML = "application/yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
#: How deeply a body may nest here (kube: 10,000).
MAX_DEPTH = 100


class Reply(NamedTuple):
    """A response: its code and what arrived of its body, and whether it ended (a watch's may not)."""

    code: int
    body: bytes
    ended: bool

    def json(self) -> Any:
        return json.loads(self.body)


class ReactorClock(Clock):
    """A Clock that refuses a negative delay as the real reactor does (ReactorBase.callLater asserts it)."""

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> Any:  # noqa: A002
        assert delay >= 0, f"{delay} is not greater than or equal to 0 seconds"
        return super().callLater(delay, callable, *args, **kw)


def nested(depth: int, opener: str = '{"a":', closer: str = "}") -> bytes:
    """JSON text nesting `depth` levels deep."""
    return (opener * depth + "1" + closer * depth).encode()


def apiservice(name: str = NAME) -> dict[str, Any]:
    version, _, group = name.partition(".")
    return {"apiVersion": APIREG, "kind": "APIService", "metadata": {"name": name},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 10}}


#: How each body-carrying verb carries a JSON fragment: (verb, method, url, body template, content type).  `@@` is
#: where the fragment goes (in an unknown field, which kube would drop, so the fragment alone is at fault), `RV`
#: the stored object's resourceVersion.
JSON_CARRIERS = [
    ("create", "POST", APISERVICES, '{"apiVersion":"%s","kind":"APIService","metadata":{"name":"v1.new.example.com"},'
     '"spec":{"group":"new.example.com","version":"v1","groupPriorityMinimum":100,"versionPriority":10,"x":@@}}'
     % APIREG, JSON),
    ("update", "PUT", URL, '{"apiVersion":"%s","kind":"APIService","metadata":{"name":"%s","resourceVersion":"RV"},'
     '"spec":{"group":"foo.example.com","version":"v1","groupPriorityMinimum":100,"versionPriority":10,"x":@@}}'
     % (APIREG, NAME), JSON),
    ("merge patch", "PATCH", URL, '{"spec":{"x":@@}}', MERGE_PATCH),
    ("json patch", "PATCH", URL, '[{"op":"add","path":"/spec/x","value":@@}]', JSON_PATCH),
    ("apply", "PATCH", URL + "?fieldManager=tester&force=true",
     '{"apiVersion":"%s","kind":"APIService","metadata":{"name":"%s"},"spec":{"x":@@}}' % (APIREG, NAME), APPLY_PATCH),
    ("delete", "DELETE", URL, '{"kind":"DeleteOptions","apiVersion":"v1","x":@@}', JSON),
    ("deletecollection", "DELETE", APISERVICES, '{"kind":"DeleteOptions","apiVersion":"v1","x":@@}', JSON),
]

#: The same for YAML bodies; the fragment is the value of a mapping key at the end of the document.
YAML_CARRIERS = [
    ("create", "POST", APISERVICES, "apiVersion: %s\nkind: APIService\nmetadata:\n  name: v1.new.example.com\n"
     "spec:\n  group: new.example.com\n  version: v1\n  groupPriorityMinimum: 100\n  versionPriority: 10\n  x: @@\n"
     % APIREG, YAML),
    ("update", "PUT", URL, "apiVersion: %s\nkind: APIService\nmetadata:\n  name: %s\n  resourceVersion: 'RV'\n"
     "spec:\n  group: foo.example.com\n  version: v1\n  groupPriorityMinimum: 100\n  versionPriority: 10\n  x: @@\n"
     % (APIREG, NAME), YAML),
    ("apply", "PATCH", URL + "?fieldManager=tester&force=true",
     "apiVersion: %s\nkind: APIService\nmetadata:\n  name: %s\nspec:\n  x: @@\n" % (APIREG, NAME), APPLY_PATCH),
    ("delete", "DELETE", URL, "kind: DeleteOptions\napiVersion: v1\nx: @@\n", YAML),
    ("deletecollection", "DELETE", APISERVICES, "kind: DeleteOptions\napiVersion: v1\nx: @@\n", YAML),
]


class _ServedTestCase(SynchronousTestCase):
    """The daemon's groups over a MemoryStore behind StubTreq, on a clock that refuses negative delays; one stored
    APIService (NAME) and one ExternalName (grafana/ext1)."""

    def setUp(self) -> None:
        self.clock = ReactorClock()
        self.clock.advance(EPOCH)
        _, groups = local_groups(lambda: datetime.fromtimestamp(self.clock.seconds(), timezone.utc))
        self.store = MemoryStore()
        root = Resource()
        root.putChild(b"apis", serve_apis(self.store, self.clock, groups).apis)
        self.client: Any = StubTreq(root)
        self.assertEqual(self.send("POST", APISERVICES, json.dumps(apiservice())).code, 201)
        external = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                    "metadata": {"name": "ext1"}, "spec": {"host": "backend.example.com"}}
        self.assertEqual(self.send("POST", EXTERNALNAMES, json.dumps(external)).code, 201)
        self.stored = self.send("GET", URL).json()

    def pump(self) -> None:
        """Let everything pending run, timers due now included (a costly request lets the reactor run)."""
        for _ in range(5):
            self.client.flush()
            self.clock.advance(0)
        self.client.flush()

    def send(self, method: str, url: str, body: bytes | str | None = None, content_type: str | None = JSON,
             headers: dict[str, str] | None = None) -> Reply:
        """Send a request and return what came back so far (a watch stays open)."""
        sent = dict(headers or {})
        if body is not None and content_type is not None:
            sent["Content-Type"] = content_type
        data = body.encode() if isinstance(body, str) else body
        pending = self.client.request(method, url, data=data, headers=sent, unbuffered=True)
        self.pump()
        response = self.successResultOf(pending)
        chunks: list[bytes] = []
        done = collect(response, chunks.append)
        self.pump()
        ended = bool(done.called)
        if ended:
            self.successResultOf(done)
        return Reply(response.code, b"".join(chunks), ended)

    def carry(self, carrier: tuple[str, str, str, str, str], fragment: bytes | str) -> Reply:
        """Send a carrier's request with the fragment in its body."""
        _, method, url, template, content_type = carrier
        if isinstance(fragment, str):
            fragment = fragment.encode()
        body = template.replace("RV", self.stored["metadata"]["resourceVersion"]).encode().replace(b"@@", fragment)
        return self.send(method, url, body, content_type)

    def assertRefused(self, reply: Reply, code: int, reason: str, *fragments: str, case: object = None) -> None:
        """The reply is a finished failure Status with this code and reason whose message holds the fragments,
        and no error was logged."""
        self.assertEqual(self.flushLoggedErrors(), [], case)
        self.assertTrue(reply.ended, (case, "the response did not end"))
        self.assertEqual(reply.code, code, (case, reply.body))
        status = reply.json()
        self.assertEqual((status["kind"], status["status"], status["code"], status["reason"]),
                         ("Status", "Failure", code, reason), case)
        for fragment in fragments:
            self.assertIn(fragment, status["message"], case)

    def assertUntouched(self, case: object = None) -> None:
        """The stored APIService is as it was, and no other was created."""
        self.assertEqual(self.send("GET", URL).json(), self.stored, case)
        self.assertEqual(self.send("GET", f"{APISERVICES}/v1.new.example.com").code, 404, case)


class NestingTests(_ServedTestCase):
    """Objects and arrays nested past MAX_DEPTH (kube allows 10,000 levels, Python's recursion far fewer)."""

    def test_json_bodies(self) -> None:
        """Every JSON body nested 150 levels deep is a 400 saying so; 5,000 levels is refused too (413 when the body
        is an object, which may not hold that many values), and nothing recurses."""
        for carrier in JSON_CARRIERS:
            for fragment in (nested(150), nested(150, "[", "]")):
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", f"exceeded max depth of {MAX_DEPTH}", case=carrier[0])
            reply = self.carry(carrier, nested(5000, "[", "]"))
            if carrier[0] == "json patch":
                self.assertRefused(reply, 400, "BadRequest", "exceeded max depth", case=carrier[0])
            else:
                self.assertRefused(reply, 413, "RequestEntityTooLarge", "JSON values", case=carrier[0])
            self.assertUntouched(carrier[0])

    def test_yaml_bodies(self) -> None:
        """YAML nested 150 levels deep, in flow or block style, is a 400 on every verb taking YAML."""
        block = "\n" + "".join("  " * (level + 2) + "- \n" for level in range(150))
        for carrier in YAML_CARRIERS:
            for fragment in ("[" * 150 + "]" * 150, "{a: " * 150 + "1" + "}" * 150, block, "[" * 5000 + "]" * 5000):
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", "depth", case=(carrier[0], fragment[:10]))
            self.assertUntouched(carrier[0])

    def test_patches_that_deepen(self) -> None:
        """A JSON patch that nests the object past MAX_DEPTH, by adding, moving or copying into itself, is kube's
        422 with a cause saying why."""
        chain = '{"a":' * 60 + "1" + "}" * 60
        deep_path = "/spec/c" + "/a" * 59
        patches = [
            [{"op": "add", "path": "/spec/c", "value": json.loads(chain)},
             {"op": "add", "path": "/spec/d", "value": json.loads(chain)},
             {"op": "move", "from": "/spec/d", "path": deep_path}],
            [{"op": "add", "path": "/spec/c", "value": json.loads(chain)},
             {"op": "copy", "from": "/spec/c", "path": deep_path}],
        ]
        for operations in patches:
            reply = self.send("PATCH", URL, json.dumps(operations), JSON_PATCH)
            self.assertRefused(reply, 422, "Invalid", "the server rejected our request", case=operations[-1])
            self.assertIn(f"exceeded max depth of {MAX_DEPTH}", reply.json()["details"]["causes"][0]["message"])
        self.assertUntouched()

    def test_limit_is_exact(self) -> None:
        """MAX_DEPTH levels decode, one more does not, in JSON and YAML alike."""
        self.assertEqual(negotiation.MAX_DEPTH, MAX_DEPTH)
        load_json, load_yaml, BodyError = negotiation.load_json, negotiation.load_yaml, negotiation.BodyError
        self.assertEqual(load_json(nested(MAX_DEPTH - 1)).value["a"]["a"]["a"]["a"]["a"]["a"]["a"]["a"]["a"]["a"]
                         is not None, True)
        for text in (nested(MAX_DEPTH, "[", "]"), ("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode()):
            self.assertIsInstance(load_json(text).value, list)
            self.assertIsInstance(load_yaml(text).value, list)
        self.assertIsInstance(load_yaml(b"a: " + nested(MAX_DEPTH - 1, "[", "]")).value, dict)
        for text in (nested(MAX_DEPTH + 1, "[", "]"), b"a: " + nested(MAX_DEPTH, "[", "]")):
            self.assertEqual(self.assertRaises(BodyError, load_yaml, text).kind, BodyError.DEPTH)
        self.assertEqual(self.assertRaises(BodyError, load_json, nested(MAX_DEPTH + 1)).kind, BodyError.DEPTH)
        self.assertRaises(StatusError, apply_merge_patch, {}, b'{"a":' + nested(MAX_DEPTH) + b"}")
        self.assertRaises(StatusError, apply_json_patch, {}, b'[{"op":"add","path":"/a","value":'
                          + nested(MAX_DEPTH) + b"}]")


class NumberTests(_ServedTestCase):
    """Numbers Python's int() refuses (past 4,300 digits) and numbers Go's decoder refuses (past float64, NaN)."""

    def test_json_bodies(self) -> None:
        """A 5,000-digit integer, 1e400 and -1e400 are Go's `cannot unmarshal number` 400 on every verb; NaN and
        Infinity are not JSON."""
        for carrier in JSON_CARRIERS:
            for fragment in (b"1" * 5000, b"-" + b"9" * 5000, b"1e400", b"-1e400", b"[1.5e999]"):
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", "cannot unmarshal number", case=(carrier[0], fragment[:9]))
            for fragment in (b"NaN", b"-Infinity"):
                if carrier[0] == "apply":
                    continue  # a YAML body: go-yaml reads NaN as a string, as kube does
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", case=(carrier[0], fragment))
                self.assertRegex(reply.json()["message"], "invalid character|invalid JSON patch")
            self.assertUntouched(carrier[0])

    def test_yaml_bodies(self) -> None:
        """In YAML too: a number past float64 and .nan/.inf (which JSON cannot hold) are 400s."""
        for carrier in YAML_CARRIERS:
            for fragment, words in (("1" * 5000, "cannot unmarshal number"), (".nan", "unsupported value: NaN"),
                                    ("-.inf", "unsupported value: -Inf"), ("[.Inf]", "unsupported value: +Inf"),
                                    ("0x" + "f" * 5000, "cannot unmarshal number")):
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", words, case=(carrier[0], fragment[:9]))
            self.assertUntouched(carrier[0])

    def test_integer_fields_out_of_range(self) -> None:
        """An integer field given a number past int64 (or a huge one) is refused, never a 500."""
        for value in (2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 300):
            body = apiservice("v1.new.example.com")
            body["spec"]["groupPriorityMinimum"] = value
            reply = self.send("POST", APISERVICES, json.dumps(body))
            self.assertIn(reply.code, (400, 422), reply.body)
            self.assertRefused(reply, reply.code, reply.json()["reason"], "groupPriorityMinimum", case=value)
            reply = self.send("PATCH", URL, json.dumps({"spec": {"versionPriority": value}}), MERGE_PATCH)
            self.assertIn(reply.code, (400, 422), reply.body)
            self.assertRefused(reply, reply.code, reply.json()["reason"], "versionPriority", case=value)
        self.assertUntouched()

    def test_json_patch_indices(self) -> None:
        """An array index of thousands of digits in a JSON patch path is an index that does not exist (kube's 422)."""
        for operation in ({"op": "add", "path": "/metadata/finalizers/" + "9" * 5000, "value": "x"},
                          {"op": "remove", "path": "/metadata/finalizers/-" + "1" * 5000},
                          {"op": "test", "path": "/metadata/finalizers/" + "0" * 5000 + "1", "value": "x"}):
            patch = [{"op": "add", "path": "/metadata/finalizers", "value": ["a", "b"]}, operation]
            reply = self.send("PATCH", URL, json.dumps(patch), JSON_PATCH)
            self.assertRefused(reply, 422, "Invalid", "the server rejected our request", case=operation["op"])
        self.assertUntouched()

    def test_query_parameters(self) -> None:
        """Integer parameters of thousands of digits are 400s naming the parameter, watches included."""
        digits = "9" * 5000
        for url in (f"{APISERVICES}?limit={digits}", f"{APISERVICES}?resourceVersion={digits}",
                    f"{APISERVICES}?watch=true&timeoutSeconds={digits}",
                    f"{APISERVICES}?watch=true&resourceVersion={digits}"):
            name = url.split("?")[1].split("=")[-2].split("&")[-1]
            self.assertRefused(self.send("GET", url), 400, "BadRequest", f"{name}: Invalid value", case=url[-60:])
        reply = self.send("DELETE", f"{URL}?gracePeriodSeconds={digits}")
        self.assertRefused(reply, 400, "BadRequest", "gracePeriodSeconds: Invalid value")
        for selector in (f"a>{digits}", f"a<-{digits}"):
            reply = self.send("GET", f"{APISERVICES}?labelSelector={quote(selector)}")
            self.assertRefused(reply, 400, "BadRequest", "for 'Gt', 'Lt' operators, the value must be an integer")
        self.assertUntouched()


class YamlTests(_ServedTestCase):
    """YAML that is not JSON becomes JSON as kube's sigs.k8s.io/yaml makes it, or is refused; no tag runs code."""

    def create(self, metadata: str) -> Reply:
        """POST a YAML APIService named v1.new.example.com with these extra metadata lines."""
        body = (f"apiVersion: {APIREG}\nkind: APIService\nmetadata:\n  name: v1.new.example.com\n{metadata}\n"
                "spec:\n  group: new.example.com\n  version: v1\n  groupPriorityMinimum: 100\n  versionPriority: 10\n")
        return self.send("POST", APISERVICES, body, YAML)

    def test_json_compatible_values(self) -> None:
        """!!binary is decoded, timestamps stay the strings they are, merge keys merge, and non-string keys become
        strings, as in kube."""
        reply = self.create("  annotations:\n    binary: !!binary aGVsbG8=\n"
                            "    plain: 2001-12-14t21:59:43.10-05:00\n    tagged: !!timestamp 2001-12-14\n"
                            "  labels:\n    <<: {tier: web, app: old}\n    app: new\n    1: one\n")
        self.assertEqual(reply.code, 201, reply.body)
        metadata = reply.json()["metadata"]
        self.assertEqual(metadata["annotations"], {"binary": "hello", "plain": "2001-12-14t21:59:43.10-05:00",
                                                   "tagged": "2001-12-14"})
        self.assertEqual(metadata["labels"], {"tier": "web", "app": "new", "1": "one"})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_python_tags_run_nothing(self) -> None:
        """!!python/ tags are ignored as go-yaml ignores unknown tags: the value is plain data and nothing runs."""
        marker = os.path.abspath(self.mktemp())
        for fragment in (f"!!python/object/apply:os.system ['touch {marker}']",
                         f"!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
                         "!!python/name:os.system ''", "!!python/module:os ''"):
            for carrier in YAML_CARRIERS:
                reply = self.carry(carrier, fragment)
                self.assertEqual(self.flushLoggedErrors(), [], (carrier[0], fragment))
                self.assertLess(reply.code, 500, reply.body)
            reply = self.send("POST", APISERVICES, f"apiVersion: {fragment}\nkind: APIService\n", YAML)
            self.assertEqual(self.flushLoggedErrors(), [], fragment)
            self.assertIn(reply.code, (400, 422), reply.body)
        self.assertFalse(os.path.exists(marker))

    def test_refused(self) -> None:
        """Aliasing bombs, recursive or unknown aliases, null or collection keys, bad merges, bad tagged values,
        several documents and NaN are 400s on every verb taking YAML."""
        levels = ["l0: &l0 [x,x,x,x,x,x,x,x,x]"] + [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]"
                                                    for i in range(1, 9)]
        cases = [
            ("{" + ", ".join(levels) + "}", "excessive aliasing"),
            ("&r [*r]", "value contains itself"),
            ("*nowhere", "unknown anchor"),
            ("{~: a}", "unsupported map key"),
            ("{? [a] : b}", "invalid map key"),
            ("{<<: 5}", "map merge requires map or sequence of maps"),
            ("!!int abc", "cannot decode !!str `abc` as a !!int"),
            ("!!binary '%%%'", "invalid base64"),
            (".nan", "unsupported value: NaN"),
            ("a\n---\nkind: Other\n", "more than one YAML document"),
        ]
        for carrier in YAML_CARRIERS:
            for fragment, words in cases:
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", words, case=(carrier[0], fragment[:20]))
            self.assertUntouched(carrier[0])

    def test_sets_are_maps_of_nulls(self) -> None:
        """A !!set is a mapping of nulls (as in kube), so as labels it fails validation (422), not the server."""
        reply = self.create("  labels: !!set {a, b}")
        self.assertRefused(reply, 422, "Invalid", "metadata.labels")


class UnicodeTests(_ServedTestCase):
    """Text that is not Unicode: invalid UTF-8 bytes and lone UTF-16 surrogates."""

    def test_json_bodies(self) -> None:
        """Invalid UTF-8 and a lone surrogate escape are 400s on every verb (kube would put U+FFFD in their place;
        this server refuses rather than change what was sent)."""
        for carrier in JSON_CARRIERS:
            for fragment in (b'"caf\xe9"', b'"\xff\xfe"', b'"\xed\xa0\x80"', b'"\\ud800"', b'"x\\udc00y"',
                             b'{"\\ud83d":1}'):
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", case=(carrier[0], fragment))
                self.assertRegex(reply.json()["message"], "UTF-8|Unicode|surrogate|invalid JSON patch")
            self.assertUntouched(carrier[0])

    def test_yaml_bodies(self) -> None:
        """In YAML: invalid UTF-8, a surrogate escape and control characters are 400s."""
        for carrier in YAML_CARRIERS:
            for fragment in (b"caf\xe9", b'"\\ud800"', b'"a\x00b"', b"\x85"):
                reply = self.carry(carrier, fragment)
                self.assertRefused(reply, 400, "BadRequest", case=(carrier[0], fragment))
            self.assertUntouched(carrier[0])

    def test_surrogate_pairs_are_characters(self) -> None:
        """A surrogate pair escape is one character and is stored as such."""
        reply = self.send("PATCH", URL, b'{"metadata":{"annotations":{"smile":"\\ud83d\\ude00"}}}', MERGE_PATCH)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["metadata"]["annotations"], {"smile": "\U0001F600"})


class DeleteOptionsTests(_ServedTestCase):
    """Malformed DeleteOptions, in the body and the query, on delete and deletecollection."""

    def test_bodies(self) -> None:
        """Wrong JSON types are json.Unmarshal's 400 naming the field, invalid values ValidateDeleteOptions' 422;
        nothing is deleted."""
        cases: list[tuple[str, int, str]] = [
            ('{"dryRun":"All"}', 400, "DeleteOptions.dryRun of type []string"),
            ('{"dryRun":[1]}', 400, "DeleteOptions.dryRun of type string"),
            ('{"dryRun":["Bogus"]}', 422, 'dryRun: Unsupported value: ["Bogus"]: supported values: "All"'),
            ('{"preconditions":"x"}', 400, "DeleteOptions.preconditions of type v1.Preconditions"),
            ('{"preconditions":{"uid":5}}', 400, "Preconditions.preconditions.uid of type types.UID"),
            ('{"preconditions":{"resourceVersion":5}}', 400, "preconditions.resourceVersion of type string"),
            ('{"propagationPolicy":5}', 400, "DeleteOptions.propagationPolicy of type v1.DeletionPropagation"),
            ('{"propagationPolicy":["x"]}', 400, "cannot unmarshal array"),
            ('{"propagationPolicy":"Sideways"}', 422, 'propagationPolicy: Unsupported value: "Sideways"'),
            ('{"gracePeriodSeconds":"x"}', 400, "DeleteOptions.gracePeriodSeconds of type int64"),
            ('{"gracePeriodSeconds":1.5}', 400, "cannot unmarshal number 1.5"),
            ('{"gracePeriodSeconds":99999999999999999999}', 400, "cannot unmarshal number 99999999999999999999"),
            ('{"orphanDependents":"yes"}', 400, "DeleteOptions.orphanDependents of type bool"),
            ('{"orphanDependents":true,"propagationPolicy":"Orphan"}', 422, "cannot be both set"),
            ("[1]", 400, "cannot unmarshal array into Go value of type v1.DeleteOptions"),
            ('"x"', 400, "cannot unmarshal string into Go value of type v1.DeleteOptions"),
            ("7", 400, "cannot unmarshal number into Go value of type v1.DeleteOptions"),
            ("{", 400, "json parse error"),
        ]
        for url in (URL, APISERVICES):
            for body, code, words in cases:
                reply = self.send("DELETE", url, body)
                self.assertRefused(reply, code, "BadRequest" if code == 400 else "Invalid", words, case=(url, body))
            self.assertUntouched(url)

    def test_precondition_that_is_no_version(self) -> None:
        """A resourceVersion precondition that is no version of this store (or has thousands of digits) never holds:
        kube's 409, not a 500."""
        for version in ("abc", "-1", "9" * 5000, "٣"):
            reply = self.send("DELETE", URL, json.dumps({"preconditions": {"resourceVersion": version}}))
            self.assertRefused(reply, 409, "Conflict", "Precondition failed: ResourceVersion in precondition",
                               case=version[:10])
        self.assertUntouched()

    def test_null_body_is_empty(self) -> None:
        """A `null` body is no options at all, as json.Unmarshal leaves the struct alone."""
        self.assertEqual(self.send("DELETE", URL, "null").code, 200)

    def test_query(self) -> None:
        """Bad DeleteOptions in the query are the same 400 and 422."""
        for query, code, words in (("propagationPolicy=Sideways", 422, "Unsupported value"),
                                   ("dryRun=Bogus", 422, 'dryRun: Unsupported value: ["Bogus"]'),
                                   ("gracePeriodSeconds=abc", 400, "gracePeriodSeconds: Invalid value"),
                                   ("gracePeriodSeconds=1.5", 400, "gracePeriodSeconds: Invalid value")):
            for url in (URL, APISERVICES):
                reply = self.send("DELETE", f"{url}?{query}")
                self.assertRefused(reply, code, "BadRequest" if code == 400 else "Invalid", words, case=(url, query))
        self.assertUntouched()


#: Names and namespaces no object can have, as they arrive in a URL, and what the 400 says of them.
BAD_SEGMENTS = [
    ("a%00b", "may not contain NUL"),
    ("a%2Fb", "may not contain '/'"),
    ("a%2fb", "may not contain '/'"),
    ("..", "may not be '..'"),
    ("%2e%2e", "may not be '..'"),
    (".", "may not be '.'"),
    ("%zz", "may not contain '%'"),
    ("a%25b", "may not contain '%'"),
    ("a%5Cb", "may not contain '\\'"),
    ("x" * 300, "may not be longer than 253 bytes"),
    (".hidden", "may not start with '.'"),
]


class UrlKeyTests(_ServedTestCase):
    """A namespace or name in the URL that cannot be a storage key, on every verb."""

    def test_names(self) -> None:
        """Such a name is a 400 naming the rule on get, update, patch, apply, delete and watch."""
        for segment, words in BAD_SEGMENTS:
            url = f"{APISERVICES}/{segment}"
            requests = [("GET", url, None, None), ("PUT", url, json.dumps(apiservice()), JSON),
                        ("PATCH", url, "{}", MERGE_PATCH), ("PATCH", url, "[]", JSON_PATCH),
                        ("PATCH", url + "?fieldManager=t", json.dumps(apiservice()), APPLY_PATCH),
                        ("DELETE", url, None, None),
                        ("GET", f"{HOST}/apis/apiregistration.k8s.io/v1/watch/apiservices/{segment}", None, None),
                        ("GET", f"{EXTERNALNAMES}/{segment}", None, None)]
            for method, target, body, content_type in requests:
                reply = self.send(method, target, body, content_type)
                self.assertRefused(reply, 400, "BadRequest", "Name parameter invalid", words,
                                   case=(method, target[-40:]))
        self.assertUntouched()

    def test_namespaces(self) -> None:
        """Such a namespace is a 400 on list, watch, create, get and deletecollection."""
        base = f"{HOST}/apis/service.grafana.app/v0alpha1"
        external = json.dumps({"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                               "metadata": {"name": "ext2"}, "spec": {"host": "b.example.com"}})
        for segment, words in BAD_SEGMENTS:
            requests = [("GET", f"{base}/namespaces/{segment}/externalnames", None),
                        ("GET", f"{base}/namespaces/{segment}/externalnames?watch=true", None),
                        ("GET", f"{base}/watch/namespaces/{segment}/externalnames", None),
                        ("POST", f"{base}/namespaces/{segment}/externalnames", external),
                        ("GET", f"{base}/namespaces/{segment}/externalnames/ext1", None),
                        ("DELETE", f"{base}/namespaces/{segment}/externalnames", None)]
            for method, target, body in requests:
                reply = self.send(method, target, body)
                self.assertRefused(reply, 400, "BadRequest", "Namespace parameter invalid", words,
                                   case=(method, target[-60:]))
        self.assertEqual(self.send("GET", f"{EXTERNALNAMES}/ext1").code, 200)

    def test_undecodable_name_is_not_found(self) -> None:
        """A name that is not UTF-8 cannot be stored either way: a 404, as for any missing object."""
        self.assertRefused(self.send("GET", f"{APISERVICES}/%ff%fe"), 404, "NotFound", "not found")


class QueryParameterTests(_ServedTestCase):
    """Query parameters that do not parse or do not go together: kube's 400 or 422, before any 200."""

    def test_list(self) -> None:
        """limit, resourceVersion, resourceVersionMatch, continue and selectors of a list."""
        token = quote(__import__("base64").urlsafe_b64encode(b"[" * 4000 + b"]" * 4000).decode())
        float_token = __import__("base64").urlsafe_b64encode(b'{"rv":1e400,"start":"x"}').decode()
        cases = [
            ("limit=abc", 400, "BadRequest", "limit: Invalid value"),
            ("limit=1.5", 400, "BadRequest", "limit: Invalid value"),
            ("limit=%201", 400, "BadRequest", "limit: Invalid value"),
            ("limit=1_0", 400, "BadRequest", "limit: Invalid value"),
            ("limit=%D9%A3", 400, "BadRequest", "limit: Invalid value"),
            ("limit=99999999999999999999", 400, "BadRequest", "limit: Invalid value"),
            ("resourceVersion=abc", 400, "BadRequest", "resourceVersion: Invalid value"),
            ("resourceVersion=1e3", 400, "BadRequest", "resourceVersion: Invalid value"),
            ("resourceVersionMatch=Exact", 422, "Invalid", "resourceVersionMatch is forbidden unless"),
            ("resourceVersion=1&resourceVersionMatch=Sometimes", 422, "Invalid",
             'Unsupported value: "Sometimes": supported values: "Exact", "NotOlderThan", ""'),
            ("resourceVersion=0&resourceVersionMatch=Exact", 422, "Invalid", 'forbidden for resourceVersion "0"'),
            ("resourceVersion=1&resourceVersionMatch=Exact&continue=x", 422, "Invalid",
             "forbidden when continue is provided"),
            ("continue=garbage", 400, "BadRequest", "continue key is not valid"),
            (f"continue={token}", 400, "BadRequest", "continue key is not valid"),
            (f"continue={float_token}", 400, "BadRequest", "continue key is not valid"),
            ("continue=%FF%FE", 400, "BadRequest", "continue key is not valid"),
            ("labelSelector=a%20in%20(", 400, "BadRequest", "unable to parse requirement"),
            ("labelSelector=a%3Db%3Dc", 400, "BadRequest", ""),
            ("labelSelector=" + "x" * 100, 400, "BadRequest", "must be no more than 63 bytes"),
            ("fieldSelector=foo", 400, "BadRequest", "can't understand"),
            ("fieldSelector=spec.group%3Dx", 400, "BadRequest", "field label not supported: spec.group"),
            ("fieldSelector=metadata.name%3D%5Cq", 400, "BadRequest", "invalid escape sequence"),
        ]
        for query, code, reason, words in cases:
            self.assertRefused(self.send("GET", f"{APISERVICES}?{query}"), code, reason, words, case=query[:60])
        # Continuing a list pins its version: naming another one is kube's 400.
        page = self.send("GET", f"{APISERVICES}?limit=1").json()
        self.assertEqual(page["items"], [self.stored])
        self.assertEqual(self.send("GET", f"{APISERVICES}?limit=-1").code, 200)
        self.assertEqual(self.send("GET", f"{APISERVICES}?limit=%2B1").code, 200)

    def test_watch(self) -> None:
        """The same parameters, and timeoutSeconds, are refused before a watch's 200: the answer is a Status."""
        for query, code, reason, words in [
            ("timeoutSeconds=abc", 400, "BadRequest", "timeoutSeconds: Invalid value"),
            ("timeoutSeconds=1.5", 400, "BadRequest", "timeoutSeconds: Invalid value"),
            ("timeoutSeconds=1e400", 400, "BadRequest", "timeoutSeconds: Invalid value"),
            ("timeoutSeconds=nan", 400, "BadRequest", "timeoutSeconds: Invalid value"),
            ("timeoutSeconds=inf", 400, "BadRequest", "timeoutSeconds: Invalid value"),
            ("timeoutSeconds=99999999999999999999", 400, "BadRequest", "timeoutSeconds: Invalid value"),
            ("resourceVersion=abc", 400, "BadRequest", "resourceVersion: Invalid value"),
            ("resourceVersion=1&resourceVersionMatch=NotOlderThan", 422, "Invalid",
             "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"),
            ("labelSelector=a%20in%20(", 400, "BadRequest", "unable to parse requirement"),
            ("fieldSelector=spec.group%3Dx", 400, "BadRequest", "field label not supported"),
            ("limit=abc", 400, "BadRequest", "limit: Invalid value"),
        ]:
            for url in (f"{APISERVICES}?watch=true&{query}",
                        f"{HOST}/apis/apiregistration.k8s.io/v1/watch/apiservices/{NAME}?{query}"):
                self.assertRefused(self.send("GET", url), code, reason, words, case=url[-70:])

    def test_negative_timeout_ends_the_watch(self) -> None:
        """A negative timeoutSeconds ends the watch at once and cleanly, as kube's timer fires at once (the reactor
        refuses a negative delay, which used to break the stream after its 200)."""
        reply = self.send("GET", f"{APISERVICES}?watch=true&timeoutSeconds=-5")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual((reply.code, reply.ended), (200, True))
        self.assertEqual([json.loads(line)["type"] for line in reply.body.splitlines()], ["ADDED"])

    def test_write_options(self) -> None:
        """fieldManager, dryRun and fieldValidation of create, update and patch: kube's 422 for the options kind,
        every problem listed, nothing written."""
        long_manager = "m" * 129
        writes = [("POST", APISERVICES, json.dumps(apiservice("v1.new.example.com")), JSON, "CreateOptions"),
                  ("PUT", URL, json.dumps(self.stored), JSON, "UpdateOptions"),
                  ("PATCH", URL, "{}", MERGE_PATCH, "PatchOptions"),
                  ("PATCH", URL, json.dumps(apiservice()), APPLY_PATCH, "PatchOptions")]
        for method, url, body, content_type, kind in writes:
            manager = "fieldManager=t&" if content_type == APPLY_PATCH else ""
            for query, words in ((f"fieldManager={long_manager}", "fieldManager: Too long: may not be more than 128 "
                                                                   "bytes"),
                                 ("fieldManager=a%00b", 'fieldManager: Invalid value: "a\\x00b": invalid character '
                                                        "U+0000 (at position 1)"),
                                 ("fieldManager=%E2%80%A8", "invalid character U+2028 (at position 0)"),
                                 (f"{manager}dryRun=Bogus", 'dryRun: Unsupported value: ["Bogus"]: supported values: '
                                                            '"All"'),
                                 (f"{manager}fieldValidation=Sloppy", 'fieldValidation: Unsupported value: "Sloppy": '
                                                                      'supported values: "", "Ignore", "Strict", '
                                                                      '"Warn"')):
                reply = self.send(method, f"{url}?{query}", body, content_type)
                self.assertRefused(reply, 422, "Invalid", f'{kind}.meta.k8s.io "" is invalid: ', words,
                                   case=(method, content_type, query[:30]))
        reply = self.send("POST", f"{APISERVICES}?dryRun=Bogus&fieldManager={long_manager}",
                          json.dumps(apiservice("v1.new.example.com")))
        self.assertRefused(reply, 422, "Invalid", "[fieldManager: Too long", ", dryRun: Unsupported value")
        self.assertEqual(len(reply.json()["details"]["causes"]), 2)
        self.assertUntouched()
