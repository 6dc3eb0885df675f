# -*- test-case-name: tests.test_example_listing -*-
"""The example server's `dummy` lists: selectors, limit/continue paging and resourceVersion, as kube answers them."""

from __future__ import annotations

import base64
import datetime
import json
import os
from typing import Any
from urllib.parse import quote

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.selectors import parse_label_selector
from grafana_aggregator.apimachinery.status import StatusError
from grafana_aggregator.config.settings import RequestHeaderSettings
from grafana_aggregator.example.listing import decode_continue, encode_continue
from grafana_aggregator.example.server import build_example_root, build_example_tree
from grafana_aggregator.example.tap import ExampleSettings, build_authenticator
from grafana_aggregator.web.health import HealthChecks
from grafana_aggregator.web.site import build_site

from .support import CertificateAuthority
from .test_example_server import BASE, GV, STARTED, TABLE, USER, material

NS = GV + "/namespaces/team-a/dummy"
ALL = GV + "/dummy"


def token(text: str) -> str:
    """A continue token whose decoded JSON is exactly `text`."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def kube_token(start: str, rv: int = 1) -> str:
    """The token kube-apiserver writes for a page ending just before `start` (Go's JSON: `\\u0000` escaped)."""
    return token('{"v":"meta.k8s.io/v1","rv":%d,"start":"%s"}' % (rv, start.replace("\x00", "\\u0000")))


class ListingTestCase(SynchronousTestCase):
    """The example tree behind request-header authentication, called as the aggregator's proxy calls it."""

    def setUp(self) -> None:
        ca = CertificateAuthority("front-proxy-ca")
        chain = [ca.issue("front-proxy-client").certificate]
        clock = MemoryReactorClock()
        clock.advance(STARTED)
        health = HealthChecks()
        started = datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)
        tree = build_example_tree(health=health, clock=clock, started=started)
        authenticator = build_authenticator(ExampleSettings(requestheader=RequestHeaderSettings()),
                                            material(os.path.abspath(self.mktemp()), [ca.certificate]))
        root = build_example_root(tree, authenticator, peer_certificates=lambda request: chain)
        self.client = StubTreq(build_site(root).resource)

    def get(self, path: str, accept: str = "application/json", **params: str) -> tuple[int, Any]:
        """GET path with the query parameters (URL-encoded as client-go encodes them)."""
        query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())
        url = BASE + path + ("?" + query if query else "")
        response = self.successResultOf(self.client.get(url, headers={**USER, "Accept": accept}))
        return response.code, self.successResultOf(self.client.json_content(response))

    def names(self, path: str, **params: str) -> list[str]:
        """The names a successful list answers."""
        code, body = self.get(path, **params)
        self.assertEqual(code, 200, body)
        return [item["metadata"]["name"] for item in body["items"]]

    def status(self, path: str, **params: str) -> tuple[int, str, str]:
        """Code, reason and message of a failed list."""
        code, body = self.get(path, **params)
        self.assertEqual((body["kind"], body["code"]), ("Status", code), body)
        return code, body["reason"], body["message"]


class SelectorTests(ListingTestCase):
    """labelSelector and fieldSelector on namespaced and all-namespaces lists."""

    def test_label_selector(self) -> None:
        """Equality, inequality, set and existence requirements select by the `app` and `name` labels."""
        self.assertEqual(self.names(NS, labelSelector="app=dummy"), ["test1", "test2", "test3"])
        self.assertEqual(self.names(NS, labelSelector="name=test2"), ["test2"])
        self.assertEqual(self.names(NS, labelSelector="app==dummy,name!=test2"), ["test1", "test3"])
        self.assertEqual(self.names(NS, labelSelector="name in (test1,test3)"), ["test1", "test3"])
        self.assertEqual(self.names(NS, labelSelector="name notin (test1)"), ["test2", "test3"])
        self.assertEqual(self.names(NS, labelSelector="name"), ["test1", "test2", "test3"])
        self.assertEqual(self.names(NS, labelSelector="!name"), [])
        self.assertEqual(self.names(NS, labelSelector="app=other"), [])
        self.assertEqual(self.names(ALL, labelSelector="name=test3"), ["test3"])

    def test_invalid_label_selector(self) -> None:
        """A label selector that does not parse is the 400 BadRequest Status with the parser's (kube's) message."""
        for selector in ("x y", "name in (test1", "a=b=c"):
            expected = self.assertRaises(StatusError, parse_label_selector, selector)
            self.assertEqual(self.status(NS, labelSelector=selector), (400, "BadRequest", expected.message), selector)
        self.assertEqual(self.status(ALL, labelSelector="x y"),
                         (400, "BadRequest", "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, "
                                             "gt, lt"))

    def test_field_selector(self) -> None:
        """`metadata.name` and `metadata.namespace` select with = , == and !=."""
        self.assertEqual(self.names(NS, fieldSelector="metadata.name=test2"), ["test2"])
        self.assertEqual(self.names(NS, fieldSelector="metadata.name!=test2"), ["test1", "test3"])
        self.assertEqual(self.names(NS, fieldSelector="metadata.name==test4"), [])
        self.assertEqual(self.names(NS, fieldSelector="metadata.namespace=team-a"), ["test1", "test2", "test3"])
        self.assertEqual(self.names(NS, fieldSelector="metadata.namespace=other"), [])
        self.assertEqual(self.names(NS, fieldSelector="metadata.namespace=team-a,metadata.name=test1",
                                    labelSelector="app=dummy"), ["test1"])
        self.assertEqual(self.names(NS, fieldSelector="metadata.name=test1", labelSelector="name=test2"), [])

    def test_invalid_field_selector(self) -> None:
        """Another field, or a term without an operator, is kube's 400."""
        self.assertEqual(self.status(NS, fieldSelector="spec=dummy: test1"),
                         (400, "BadRequest", "field label not supported: spec"))
        self.assertEqual(self.status(ALL, fieldSelector="metadata.labels=x"),
                         (400, "BadRequest", "field label not supported: metadata.labels"))
        self.assertEqual(self.status(NS, fieldSelector="metadata.name"),
                         (400, "BadRequest", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"))

    def test_all_namespaces_narrowed_by_namespace(self) -> None:
        """An all-namespaces list pinned to a namespace by `metadata.namespace=` lists that namespace's objects."""
        code, body = self.get(ALL, fieldSelector="metadata.namespace=team-a")
        self.assertEqual((code, [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]]),
                         (200, [("team-a", "test1"), ("team-a", "test2"), ("team-a", "test3")]))
        self.assertEqual(self.names(ALL, fieldSelector="metadata.namespace=default"), ["test1", "test2", "test3"])
        self.assertEqual(self.names(ALL, fieldSelector="metadata.namespace!=default"), [])
        self.assertEqual(self.names(ALL, fieldSelector="metadata.namespace=Not_A_Namespace"), [])

    def test_selected_table(self) -> None:
        """`kubectl get dummy -l name=test2` gets a Table with only that row."""
        code, body = self.get(NS, accept=TABLE, labelSelector="name=test2", limit="500")
        self.assertEqual((code, body["kind"], [row["cells"][0] for row in body["rows"]], body["metadata"]),
                         (200, "Table", ["test2"], {"resourceVersion": "1"}))


class PagingTests(ListingTestCase):
    """limit and continue, with kube's tokens and remainingItemCount."""

    def test_pages_of_one(self) -> None:
        """`limit=1` pages through test1..test3 with kube's tokens, counting the items that remain."""
        code, body = self.get(NS, limit="1")
        self.assertEqual((code, body["metadata"], self.item_names(body)), (200, {
            "resourceVersion": "1", "continue": kube_token("test1\x00"), "remainingItemCount": 2}, ["test1"]))
        code, body = self.get(NS, limit="1", **{"continue": body["metadata"]["continue"]})
        self.assertEqual((code, body["metadata"], self.item_names(body)), (200, {
            "resourceVersion": "1", "continue": kube_token("test2\x00"), "remainingItemCount": 1}, ["test2"]))
        code, body = self.get(NS, limit="1", **{"continue": body["metadata"]["continue"]})
        self.assertEqual((code, body["metadata"], self.item_names(body)), (200, {"resourceVersion": "1"}, ["test3"]))

    def test_limit_covering_the_list(self) -> None:
        """A limit of at least the item count answers everything without a token; 0 or a negative limit is no limit."""
        for limit in ("3", "500", "0", "-1"):
            code, body = self.get(NS, limit=limit)
            self.assertEqual((code, body["metadata"], len(body["items"])), (200, {"resourceVersion": "1"}, 3), limit)
        code, body = self.get(NS, limit="2")
        self.assertEqual((body["metadata"]["remainingItemCount"], self.item_names(body)), (1, ["test1", "test2"]))

    def test_all_namespaces_keys(self) -> None:
        """Across namespaces the token's key is `<namespace>/<name>`, resumed after."""
        code, body = self.get(ALL, limit="2")
        self.assertEqual((code, body["metadata"]["continue"], body["metadata"]["remainingItemCount"]),
                         (200, kube_token("default/test2\x00"), 1))
        code, body = self.get(ALL, limit="2", **{"continue": body["metadata"]["continue"]})
        self.assertEqual((code, self.item_names(body), body["metadata"]), (200, ["test3"], {"resourceVersion": "1"}))
        code, body = self.get(ALL, limit="1", fieldSelector="metadata.namespace=team-a")
        token = body["metadata"]["continue"]
        self.assertEqual(self.names(ALL, limit="5", fieldSelector="metadata.namespace=team-a", **{"continue": token}),
                         ["test2", "test3"])

    def test_selective_pages(self) -> None:
        """With a selector a page has no remainingItemCount, and a token whenever stored items follow its last."""
        code, body = self.get(NS, limit="1", labelSelector="app=dummy")
        self.assertEqual((code, body["metadata"]), (200, {"resourceVersion": "1", "continue": kube_token("test1\x00")}))
        code, body = self.get(NS, limit="1", labelSelector="name=test1")
        self.assertEqual((self.item_names(body), body["metadata"]["continue"]), (["test1"], kube_token("test1\x00")))
        code, body = self.get(NS, limit="1", labelSelector="name=test1", **{"continue": body["metadata"]["continue"]})
        self.assertEqual((code, body["items"], body["metadata"]), (200, [], {"resourceVersion": "1"}))
        code, body = self.get(NS, limit="1", labelSelector="name=test3")
        self.assertEqual((self.item_names(body), body["metadata"]), (["test3"], {"resourceVersion": "1"}))

    def test_name_in_a_namespace_is_one_read(self) -> None:
        """An exact `metadata.name` in a namespace reads one key: no token whatever the limit; across namespaces it pages."""
        code, body = self.get(NS, limit="1", fieldSelector="metadata.name=test1")
        self.assertEqual((code, self.item_names(body), body["metadata"]), (200, ["test1"], {"resourceVersion": "1"}))
        code, body = self.get(ALL, limit="1", fieldSelector="metadata.namespace=team-a,metadata.name=test1")
        self.assertEqual((code, body["metadata"]), (200, {"resourceVersion": "1"}))
        code, body = self.get(ALL, limit="1", fieldSelector="metadata.name=test1")
        self.assertEqual((self.item_names(body), body["metadata"]["continue"]), (["test1"], kube_token("default/test1\x00")))

    def test_chunked_table(self) -> None:
        """`kubectl get dummy --chunk-size=1` gets Tables carrying the token and count, one row at a time."""
        pages: list[list[str]] = []
        params = {"limit": "1"}
        while len(pages) < 5:
            code, body = self.get(NS, accept=TABLE + ",application/json", **params)
            self.assertEqual((code, body["kind"]), (200, "Table"))
            pages.append([row["cells"][0] for row in body["rows"]])
            if "continue" not in body["metadata"]:
                break
            self.assertEqual(body["metadata"]["remainingItemCount"], 3 - len(pages))
            params["continue"] = body["metadata"]["continue"]
        self.assertEqual(pages, [["test1"], ["test2"], ["test3"]])

    def test_negative_token_version_continues_now(self) -> None:
        """A token with resourceVersion -1 (kube's "continue at the current version") resumes after its key."""
        self.assertEqual(self.names(NS, **{"continue": kube_token("test1\x00", rv=-1)}), ["test2", "test3"])

    @staticmethod
    def item_names(body: dict[str, Any]) -> list[str]:
        return [item["metadata"]["name"] for item in body["items"]]


class InvalidContinueTests(ListingTestCase):
    """Continue tokens that do not decode, or do not fit the request, get kube's Status."""

    def assert_invalid(self, token: str, reason: str) -> None:
        self.assertEqual(self.status(NS, limit="1", **{"continue": token}),
                         (400, "BadRequest", f"invalid continue token: continue key is not valid{reason}"), token)

    def test_not_base64(self) -> None:
        """Bytes outside unpadded URL-safe base64 are refused at their offset."""
        self.assert_invalid("abc!", ": illegal base64 data at input byte 3")
        self.assert_invalid("abcd=", ": illegal base64 data at input byte 4")
        self.assert_invalid("ab/c", ": illegal base64 data at input byte 2")
        self.assert_invalid("abcde", ": illegal base64 data at input byte 4")

    def test_not_json(self) -> None:
        """A token that is not JSON is refused with Go's JSON syntax error."""
        self.assert_invalid(token("garbage"), ": invalid character 'g' looking for beginning of value")
        self.assert_invalid(token("nope"), ": invalid character 'o' in literal null (expecting 'u')")
        self.assert_invalid(token('{"v":'), ": unexpected end of JSON input")
        self.assert_invalid(token('{"v" 1}'), ": invalid character '1' after object key")
        self.assert_invalid(token('{"v":"a" "rv":1}'), ": invalid character '\"' after object key:value pair")
        self.assert_invalid(token('{} x'), ": invalid character 'x' after top-level value")
        self.assert_invalid(token('{"rv":NaN}'), ": invalid character 'N' looking for beginning of value")
        self.assert_invalid(token("\x01"), ": invalid character '\\x01' looking for beginning of value")
        self.assert_invalid(token("[" * 1500), ": exceeded max depth")
        self.assert_invalid(base64.urlsafe_b64encode(b"\xc3\x28").decode().rstrip("="),
                            ": invalid character 'Ã' looking for beginning of value")

    def test_wrong_types(self) -> None:
        """JSON of the wrong shape is refused with Go's unmarshalling error."""
        self.assert_invalid(token("[]"), ": json: cannot unmarshal array into Go value of type storage.continueToken")
        self.assert_invalid(token('{"v":"meta.k8s.io/v1","rv":"1","start":"test1"}'),
                            ": json: cannot unmarshal string into Go struct field continueToken.rv of type int64")
        self.assert_invalid(token('{"v":"meta.k8s.io/v1","rv":1.5,"start":"test1"}'),
                            ": json: cannot unmarshal number 1.5 into Go struct field continueToken.rv of type int64")
        self.assert_invalid(token('{"v":1,"rv":1,"start":"test1"}'),
                            ": json: cannot unmarshal number into Go struct field continueToken.v of type string")

    def test_wrong_content(self) -> None:
        """Another encoding version, a zero resourceVersion, an empty or climbing start key are kube's 400s."""
        self.assert_invalid(token('{"v":"meta.k8s.io/v2","rv":1,"start":"test1"}'),
                            ": server does not recognize this encoded version meta.k8s.io/v2")
        self.assert_invalid(token("null"), ": server does not recognize this encoded version ")
        self.assert_invalid(kube_token("test1", rv=0),
                            ": incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        self.assert_invalid(token('{"v":"meta.k8s.io/v1","rv":1}'),
                            ": encoded start key empty (version meta.k8s.io/v1)")
        self.assert_invalid(kube_token("../secrets/x"), ": ../secrets/x")
        self.assert_invalid(kube_token("a//b"), ": a//b")

    def test_go_field_matching(self) -> None:
        """As Go's decoder, field names match case-insensitively and unknown fields are ignored."""
        self.assertEqual(self.names(NS, **{"continue": token('{"V":"meta.k8s.io/v1","RV":1,"Start":"test2","x":[]}')}),
                         ["test2", "test3"])

    def test_resource_version_with_continue(self) -> None:
        """resourceVersion beside a token is kube's 400, except 0; resourceVersionMatch beside one is the 422."""
        self.assertEqual(self.status(NS, resourceVersion="1", **{"continue": kube_token("test1\x00")}),
                         (400, "BadRequest", "specifying resource version is not allowed when using continue"))
        self.assertEqual(self.names(NS, resourceVersion="0", **{"continue": kube_token("test1\x00")}), ["test2", "test3"])
        code, body = self.get(NS, resourceVersion="1", resourceVersionMatch="NotOlderThan",
                              **{"continue": kube_token("test1\x00")})
        self.assertEqual((code, body["reason"], body["message"], body["details"]["causes"]), (
            422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                            "resourceVersionMatch is forbidden when continue is provided",
            [{"reason": "FieldValueForbidden", "field": "resourceVersionMatch",
              "message": "Forbidden: resourceVersionMatch is forbidden when continue is provided"}]))

    def test_token_from_the_future(self) -> None:
        """A token of a resourceVersion this collection never reached is kube's 504 Too large resource version."""
        code, body = self.get(NS, **{"continue": kube_token("test1\x00", rv=7)})
        self.assertEqual((code, body["reason"], body["message"], body["details"]), (
            504, "Timeout", "Too large resource version: 7, current: 1",
            {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
             "retryAfterSeconds": 1}))


class ResourceVersionTests(ListingTestCase):
    """resourceVersion and resourceVersionMatch against the collection's one version, 1."""

    def test_versions(self) -> None:
        """Version 1 (or any) answers; a later one is 504; Exact for an earlier one is 410; a non-number is 400."""
        self.assertEqual(self.names(NS, resourceVersion="1", resourceVersionMatch="Exact"), ["test1", "test2", "test3"])
        self.assertEqual(self.names(NS, resourceVersion="0"), ["test1", "test2", "test3"])
        self.assertEqual(self.names(NS, resourceVersion="1", resourceVersionMatch="NotOlderThan", limit="1"), ["test1"])
        self.assertEqual(self.status(NS, resourceVersion="2")[:2], (504, "Timeout"))
        self.assertEqual(self.status(NS, resourceVersion="-3", resourceVersionMatch="Exact"),
                         (410, "Expired", "The resourceVersion for the provided list is too old."))
        self.assertEqual(self.status(ALL, resourceVersion="abc")[:2], (400, "BadRequest"))
        self.assertEqual(self.status(NS, resourceVersionMatch="Exact")[:2], (422, "Invalid"))


class TokenCodecTests(SynchronousTestCase):
    """The token codec on its own."""

    def test_round_trip(self) -> None:
        """A token this server writes decodes to its version and key, written byte for byte as kube writes it."""
        self.assertEqual(encode_continue(1, "default/test1\x00"), kube_token("default/test1\x00"))
        self.assertEqual(decode_continue(encode_continue(1, "default/test1\x00")), (1, "default/test1\x00"))
        self.assertEqual(json.loads(base64.urlsafe_b64decode(encode_continue(1, "t") + "==")),
                         {"v": "meta.k8s.io/v1", "rv": 1, "start": "t"})

    def test_rooted_start_key(self) -> None:
        """A start key with a leading slash is the same key; newlines in the token are ignored as Go ignores them."""
        self.assertEqual(decode_continue(kube_token("/test1")), (1, "test1"))
        raw = kube_token("test1")
        self.assertEqual(decode_continue(raw[:4] + "\n" + raw[4:]), (1, "test1"))
