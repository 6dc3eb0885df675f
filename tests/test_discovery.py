# -*- test-case-name: tests.test_discovery -*-
"""Tests for L{grafana_aggregator.apimachinery.discovery}: Accept parsing, discovery negotiation, and the /api and /apis resources.

The Accept strings are the ones real kubectl versions send (kubectl-wire.md section 2.1).
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.web.discovery import CoreResource
from grafana_aggregator.storage.memory import MemoryStore
from .support import serve_apis
from grafana_aggregator.apimachinery.discovery import MediaRange, Negotiated, negotiate_discovery, parse_accept

V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

#: kubectl 1.27, 1.28 and 1.29 on GET /api and /apis.
KUBECTL_1_27 = f"{V2BETA1},application/json"
#: kubectl 1.30 to 1.33 on GET /api and /apis.
KUBECTL_1_30 = f"{V2},{V2BETA1},application/json"
#: kubectl get --raw, and the per-group-version fallback.
KUBECTL_RAW = "application/json, */*"

LEGACY = Negotiated("legacy")
AGGREGATED_V2 = Negotiated("aggregated", "v2")
AGGREGATED_V2BETA1 = Negotiated("aggregated", "v2beta1")

V2_CONTENT_TYPE = [b"application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"]
V2BETA1_CONTENT_TYPE = [b"application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"]

NOT_FOUND = (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
             b'"message":"the server could not find the requested resource","reason":"NotFound","details":{},'
             b'"code":404}\n')

NOT_ACCEPTABLE = (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                  b'"message":"only the following media types are accepted: application/json, '
                  b'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",'
                  b'"reason":"NotAcceptable","code":406}\n')


class ParseAcceptTests(SynchronousTestCase):
    """parse_accept splits an Accept header into media ranges."""

    def test_kubectl_1_30_header(self) -> None:
        """The three clauses kubectl 1.30+ sends are kept in order with their parameters."""
        self.assertEqual(parse_accept(KUBECTL_1_30), [
            MediaRange("application", "json", {"g": "apidiscovery.k8s.io", "v": "v2", "as": "APIGroupDiscoveryList"}),
            MediaRange("application", "json",
                       {"g": "apidiscovery.k8s.io", "v": "v2beta1", "as": "APIGroupDiscoveryList"}),
            MediaRange("application", "json", {}),
        ])

    def test_raw_header(self) -> None:
        """'application/json, */*' gives two ranges, the wildcard last."""
        self.assertEqual(parse_accept(KUBECTL_RAW),
                         [MediaRange("application", "json", {}), MediaRange("*", "*", {})])

    def test_normalisation(self) -> None:
        """Types and parameter names are lower-cased, spaces and quotes removed, and values keep their case."""
        self.assertEqual(parse_accept(' Application/JSON ; G="apidiscovery.k8s.io" ; AS = APIGroupDiscoveryList ;q=0.9'),
                         [MediaRange("application", "json",
                                     {"g": "apidiscovery.k8s.io", "as": "APIGroupDiscoveryList", "q": "0.9"})])

    def test_order_is_not_changed_by_q_values(self) -> None:
        """A lower q-value earlier in the header stays first."""
        self.assertEqual(parse_accept("text/plain;q=0.1, application/json"),
                         [MediaRange("text", "plain", {"q": "0.1"}), MediaRange("application", "json", {})])

    def test_empty_clauses_skipped(self) -> None:
        """Empty clauses between commas are dropped."""
        self.assertEqual(parse_accept(",application/json,, "), [MediaRange("application", "json", {})])

    def test_missing_subtype_is_wildcard(self) -> None:
        """A type without a subtype is read as type/*."""
        self.assertEqual(parse_accept("application"), [MediaRange("application", "*", {})])

    def test_empty_header(self) -> None:
        """An empty header has no ranges."""
        self.assertEqual(parse_accept(""), [])


class NegotiateDiscoveryTests(SynchronousTestCase):
    """negotiate_discovery picks legacy, aggregated v2 or v2beta1, or nothing (406)."""

    def test_emulating_1_33(self) -> None:
        """At 1.33 kubectl 1.30+ gets v2, and 1.27-1.29, which do not ask for v2, still get v2beta1
        (docs/compatibility.md: kube 1.33 would give them legacy discovery)."""
        self.assertEqual(negotiate_discovery(KUBECTL_1_30, 33), AGGREGATED_V2)
        self.assertEqual(negotiate_discovery(KUBECTL_1_27, 33), AGGREGATED_V2BETA1)
        self.assertEqual(negotiate_discovery(KUBECTL_RAW, 33), LEGACY)

    def test_emulating_1_30(self) -> None:
        """At 1.30 kubectl 1.30+ gets v2 and 1.27-1.29 get v2beta1."""
        self.assertEqual(negotiate_discovery(KUBECTL_1_30, 30), AGGREGATED_V2)
        self.assertEqual(negotiate_discovery(KUBECTL_1_27, 30), AGGREGATED_V2BETA1)
        self.assertEqual(negotiate_discovery(KUBECTL_RAW, 30), LEGACY)

    def test_v2beta1_recognised_up_to_1_32(self) -> None:
        """v2beta1 is recognised whatever the emulated version when v2 is not asked for; beside v2, only up to 1.32."""
        self.assertEqual({minor: negotiate_discovery(KUBECTL_1_27, minor) for minor in range(27, 34)},
                         {27: AGGREGATED_V2BETA1, 28: AGGREGATED_V2BETA1, 29: AGGREGATED_V2BETA1,
                          30: AGGREGATED_V2BETA1, 31: AGGREGATED_V2BETA1, 32: AGGREGATED_V2BETA1,
                          33: AGGREGATED_V2BETA1})
        self.assertEqual({minor: negotiate_discovery(f"{V2BETA1},{V2}", minor) for minor in (32, 33)},
                         {32: AGGREGATED_V2BETA1, 33: AGGREGATED_V2})

    def test_missing_or_empty_accept_is_legacy(self) -> None:
        """No Accept header, or a blank one, gets the legacy document."""
        self.assertEqual([negotiate_discovery(None, 33), negotiate_discovery("", 33), negotiate_discovery("  ", 30)],
                         [LEGACY, LEGACY, LEGACY])

    def test_yaml_only_is_not_acceptable(self) -> None:
        """An Accept of only application/yaml cannot be served."""
        self.assertIsNone(negotiate_discovery("application/yaml", 33))

    def test_v2beta1_only_at_1_33_is_v2beta1(self) -> None:
        """Only a v2beta1 clause gets v2beta1 at 1.33 too (kube 1.33 would answer 406)."""
        self.assertEqual(negotiate_discovery(V2BETA1, 33), AGGREGATED_V2BETA1)

    def test_v2beta1_only_at_1_32_is_v2beta1(self) -> None:
        """Only a v2beta1 clause, when v2beta1 is recognised, gets v2beta1."""
        self.assertEqual(negotiate_discovery(V2BETA1, 32), AGGREGATED_V2BETA1)

    def test_first_acceptable_clause_wins(self) -> None:
        """Plain JSON listed before the v2 clause wins: the client's order decides."""
        self.assertEqual(negotiate_discovery(f"application/json,{V2}", 33), LEGACY)

    def test_wildcards_are_legacy(self) -> None:
        """*/* and application/* get the legacy document."""
        self.assertEqual([negotiate_discovery("*/*", 33), negotiate_discovery("application/*", 33)],
                         [LEGACY, LEGACY])

    def test_parameter_order_does_not_matter(self) -> None:
        """The g, v and as parameters of an aggregated clause may come in any order."""
        self.assertEqual(
            negotiate_discovery("application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io", 33),
            AGGREGATED_V2,
        )

    def test_incomplete_aggregated_clause_is_skipped(self) -> None:
        """A discovery clause missing 'as', or with an unknown version, is not taken as plain JSON either."""
        self.assertIsNone(negotiate_discovery("application/json;g=apidiscovery.k8s.io;v=v2", 33))
        self.assertIsNone(
            negotiate_discovery("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList", 33))
        self.assertEqual(
            negotiate_discovery("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,*/*", 33),
            LEGACY,
        )

    def test_protobuf_aggregated_clause_is_skipped(self) -> None:
        """Aggregated discovery in protobuf is not offered; the next clause (JSON) is used."""
        self.assertEqual(negotiate_discovery(
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
            "application/json", 33), LEGACY)

    def test_other_type_not_acceptable(self) -> None:
        """text/html alone cannot be served."""
        self.assertIsNone(negotiate_discovery("text/html", 33))

    def test_content_types(self) -> None:
        """Legacy is plain application/json; aggregated carries the group, version and kind parameters."""
        self.assertEqual(
            [LEGACY.content_type, AGGREGATED_V2.content_type, AGGREGATED_V2BETA1.content_type],
            [b"application/json", V2_CONTENT_TYPE[0], V2BETA1_CONTENT_TYPE[0]],
        )


class DiscoveryResourceTests(SynchronousTestCase):
    """CoreResource and ApisResource serve /api and /apis over HTTP (no APIServices stored)."""

    def client(self, minor: int = 33) -> StubTreq:
        """A client for a tree with /api and /apis served at the given emulated minor version."""
        root = Resource()
        root.putChild(b"api", CoreResource(emulated_minor=minor))
        root.putChild(b"apis", serve_apis(MemoryStore(), Clock(), emulated_minor=minor).apis)
        return StubTreq(root)

    def get(self, path: str, accept: str | None = None, minor: int = 33,
            method: str = "GET") -> tuple[int, dict[bytes, list[bytes]], bytes]:
        """Request path and return the status code, the headers and the body."""
        client = self.client(minor)
        headers = {"Accept": [accept]} if accept is not None else {}
        response = self.successResultOf(client.request(method, f"https://a.test{path}", headers=headers))
        body = self.successResultOf(client.content(response))
        return response.code, dict(response.headers.getAllRawHeaders()), body

    def assertJSON(self, body: bytes, expected: dict[str, Any]) -> None:
        """The body is compact JSON of expected, keys in order, with one trailing newline."""
        self.assertEqual(body, json.dumps(expected, separators=(",", ":")).encode() + b"\n")

    def test_apis_legacy(self) -> None:
        """/apis without Accept is an empty APIGroupList in application/json, varying on Accept."""
        code, headers, body = self.get("/apis")
        self.assertEqual((code, headers[b"Content-Type"], headers[b"Vary"]), (200, [b"application/json"], [b"Accept"]))
        self.assertEqual(body, b'{"kind":"APIGroupList","apiVersion":"v1","groups":[]}\n')

    def test_api_legacy(self) -> None:
        """/api in legacy form (kubectl get --raw) is APIVersions listing the core v1 (kubectl maps `kind: List`)."""
        code, headers, body = self.get("/api", KUBECTL_RAW)
        self.assertEqual((code, headers[b"Content-Type"], headers[b"Vary"]), (200, [b"application/json"], [b"Accept"]))
        self.assertEqual(body, b'{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":'
                               b'[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:443"}]}\n')

    def test_apis_aggregated_v2(self) -> None:
        """/apis for kubectl 1.30+ is an empty aggregated v2 list with the v2 content type."""
        code, headers, body = self.get("/apis", KUBECTL_1_30)
        self.assertEqual((code, headers[b"Content-Type"], headers[b"Vary"]), (200, V2_CONTENT_TYPE, [b"Accept"]))
        self.assertEqual(
            body, b'{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[]}\n')

    def test_api_aggregated_v2(self) -> None:
        """/api for kubectl 1.30+ is an aggregated v2 list (so client-go keeps /apis resources) of the core v1."""
        code, headers, body = self.get("/api", KUBECTL_1_30)
        self.assertEqual((code, headers[b"Content-Type"], headers[b"Vary"]), (200, V2_CONTENT_TYPE, [b"Accept"]))
        self.assertEqual(
            body, b'{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":'
                  b'[{"metadata":{},"versions":[{"version":"v1","freshness":"Current"}]}]}\n')

    def test_apis_aggregated_v2beta1_when_emulating_1_30(self) -> None:
        """At 1.30 kubectl 1.27 gets aggregated v2beta1, with apiVersion and content type to match."""
        code, headers, body = self.get("/apis", KUBECTL_1_27, minor=30)
        self.assertEqual((code, headers[b"Content-Type"], headers[b"Vary"]), (200, V2BETA1_CONTENT_TYPE, [b"Accept"]))
        self.assertEqual(
            body,
            b'{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2beta1","metadata":{},"items":[]}\n')

    def test_apis_raw(self) -> None:
        """kubectl get --raw /apis gets the legacy APIGroupList."""
        code, headers, body = self.get("/apis", KUBECTL_RAW)
        self.assertEqual((code, headers[b"Content-Type"]), (200, [b"application/json"]))
        self.assertEqual(body, b'{"kind":"APIGroupList","apiVersion":"v1","groups":[]}\n')

    def test_trailing_slash_is_the_same_document(self) -> None:
        """/apis/ is answered like /apis."""
        code, headers, body = self.get("/apis/", KUBECTL_1_30)
        self.assertEqual((code, headers[b"Content-Type"]), (200, V2_CONTENT_TYPE))
        self.assertEqual(
            body, b'{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[]}\n')

    def test_not_acceptable(self) -> None:
        """An Accept of only application/yaml is answered 406 with a NotAcceptable Status."""
        code, headers, body = self.get("/apis", "application/yaml")
        self.assertEqual((code, headers[b"Content-Type"], body), (406, [b"application/json"], NOT_ACCEPTABLE))

    def test_v2beta1_only_at_1_33(self) -> None:
        """Only a v2beta1 clause at 1.33 is answered with v2beta1 (kube 1.33 would answer 406)."""
        code, headers, _ = self.get("/api", V2BETA1)
        self.assertEqual((code, headers[b"Content-Type"]), (200, V2BETA1_CONTENT_TYPE))

    def test_api_not_acceptable(self) -> None:
        """An Accept on /api naming no form this server produces is answered 406."""
        code, _, body = self.get("/api", "text/html")
        self.assertEqual((code, body), (406, NOT_ACCEPTABLE))

    def test_post_not_allowed(self) -> None:
        """POST /apis is answered 405 with a MethodNotAllowed Status."""
        code, headers, body = self.get("/apis", method="POST")
        self.assertEqual((code, headers[b"Content-Type"]), (405, [b"application/json"]))
        self.assertJSON(body, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server does not allow this method on the requested resource",
            "reason": "MethodNotAllowed", "details": {}, "code": 405,
        })

    def test_delete_not_allowed(self) -> None:
        """DELETE /api is answered 405 naming the method and path."""
        code, _, body = self.get("/api", method="DELETE")
        self.assertEqual((code, json.loads(body)["message"]),
                         (405, "the server does not allow this method on the requested resource"))

    def test_head(self) -> None:
        """HEAD /apis answers 200 with the negotiated content type and no body."""
        code, headers, body = self.get("/apis", KUBECTL_1_30, method="HEAD")
        self.assertEqual((code, headers[b"Content-Type"], body), (200, V2_CONTENT_TYPE, b""))

    def test_child_path_not_found(self) -> None:
        """A path below /apis that nothing serves is a 404 NotFound Status."""
        code, headers, body = self.get("/apis/x")
        self.assertEqual((code, headers[b"Content-Type"], body), (404, [b"application/json"], NOT_FOUND))

    def test_deeper_child_path_not_found(self) -> None:
        """A deeper path such as /api/v1/pods is a 404 NotFound Status too."""
        code, _, body = self.get("/api/v1/pods", KUBECTL_1_30)
        self.assertEqual((code, body), (404, NOT_FOUND))


def _apiservice(group: str) -> dict[str, Any]:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": f"v1.{group}"},
            "spec": {"group": group, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"namespace": "ns", "name": "svc", "port": 443}}}


class CachedDiscoveryTests(SynchronousTestCase):
    """With a synced index, /apis is built once per change of the APIServices and served from memory between."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.served = serve_apis(self.store, Clock(), start=False)
        self.builds = 0
        routing = self.served.routing
        listed = routing.apiservices

        def apiservices() -> list[dict[str, Any]]:
            self.builds += 1
            return listed()

        routing.apiservices = apiservices  # type: ignore[method-assign]
        root = Resource()
        root.putChild(b"apis", self.served.apis)
        self.client = StubTreq(root)
        self.served.informer.startService()
        self.addCleanup(self.served.informer.stopService)

    def create(self, group: str) -> None:
        self.successResultOf(Deferred.fromCoroutine(self.store.create(APISERVICES, "", f"v1.{group}",
                                                                      _apiservice(group))))

    def get(self, accept: str = "application/json", etag: bytes | None = None) -> tuple[int, bytes, bytes]:
        headers = {"Accept": [accept]}
        if etag is not None:
            headers["If-None-Match"] = [etag.decode()]
        response = self.successResultOf(self.client.get("https://a.test/apis", headers=headers))
        body = self.successResultOf(self.client.content(response))
        return response.code, body, (response.headers.getRawHeaders(b"etag") or [b""])[0]

    def groups(self, body: bytes) -> list[str]:
        document = json.loads(body)
        return [g.get("name") or g["metadata"]["name"] for g in document.get("groups", document.get("items", []))]

    def test_built_once_per_change(self) -> None:
        """Repeated reads reuse the document; a new APIService shows at once, with a new ETag."""
        aggregated = V2_CONTENT_TYPE[0].decode()
        self.create("a.example.com")
        code, body, first_etag = self.get(aggregated)
        self.assertEqual((code, self.groups(body)), (200, ["a.example.com"]))
        self.assertEqual(self.get(aggregated)[2], first_etag)
        self.assertEqual(self.get(aggregated, etag=first_etag)[0], 304)
        self.assertEqual(self.builds, 1)
        self.assertEqual(self.groups(self.get()[1]), ["a.example.com"])
        self.assertEqual(self.builds, 2)

        self.create("b.example.com")
        code, body, second_etag = self.get(aggregated)
        self.assertEqual(sorted(self.groups(body)), ["a.example.com", "b.example.com"])
        self.assertNotEqual(second_etag, first_etag)
        self.assertEqual(self.get(aggregated, etag=first_etag)[0], 200)
        self.assertEqual(sorted(self.groups(self.get()[1])), ["a.example.com", "b.example.com"])
        self.assertEqual(self.builds, 4)

    def test_unsynced_informer_is_not_installed_yet(self) -> None:
        """Until the informer has listed the APIServices, /apis is kube's 503 "not installed yet", never a partial list."""
        self.served.informer.stopService()
        served = serve_apis(self.store, Clock(), start=False)
        response = self.successResultOf(StubTreq(served.apis).get("https://a.test/"))
        self.assertEqual(response.code, 503)
        served.informer.startService()
        self.create("a.example.com")
        response = self.successResultOf(StubTreq(served.apis).get("https://a.test/"))
        self.assertEqual(response.code, 200)
