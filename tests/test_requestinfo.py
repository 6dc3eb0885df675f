# -*- test-case-name: tests.test_requestinfo -*-
"""Tests for L{grafana_aggregator.apimachinery.requestinfo}, table-driven after k8s.io/apiserver's RequestInfoFactory tests.

Each case compares the whole L{RequestInfo}, so a wrong field anywhere fails the case.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.requestinfo import RequestInfo, request_info


def _resource(path: str, verb: str, prefix: str, group: str, version: str, *, namespace: str = "",
              resource: str = "", name: str = "", subresource: str = "", parts: tuple[str, ...] = ()) -> RequestInfo:
    """The RequestInfo of a resource request."""
    return RequestInfo(
        is_resource_request=True, path=path, verb=verb, api_prefix=prefix, api_group=group, api_version=version,
        namespace=namespace, resource=resource, subresource=subresource, name=name, parts=parts,
    )


class RequestInfoTests(SynchronousTestCase):
    """request_info classifies requests as kube-apiserver does."""

    def assertCases(self, cases: list[tuple[str, str, str, RequestInfo]]) -> None:
        """Every (method, path, query) gives exactly its expected RequestInfo."""
        for method, path, query, expected in cases:
            self.assertEqual(request_info(method, path, query), expected, f"{method} {path}?{query}")

    def test_non_resource_paths(self) -> None:
        """Paths that are not resource requests keep the lower-case method as verb and nothing else."""
        cases = []
        for path in ("/", "/version", "/healthz", "/readyz/ping", "/api", "/api/v1", "/apis", "/apis/g",
                     "/apis/g/v", "/openapi/v2", "/openapi/v3/apis/g/v", "/metrics", "/other/v1/foos"):
            for method in ("GET", "POST", "DELETE"):
                cases.append((method, path, "", RequestInfo(is_resource_request=False, path=path,
                                                             verb=method.lower())))
        self.assertCases(cases)

    def test_non_resource_verb_is_lower_case_method(self) -> None:
        """A non-resource request's verb is the method in lower case, whatever the method."""
        self.assertEqual(request_info("HEAD", "/version").verb, "head")
        self.assertEqual(request_info("OPTIONS", "/apis").verb, "options")

    def test_cluster_scoped_resource(self) -> None:
        """Cluster-scoped resources: list, get, subresource, create, update, patch, delete, deletecollection."""
        g, v = "apiregistration.k8s.io", "v1"
        base = f"/apis/{g}/{v}/apiservices"
        one = f"{base}/v1.foo"
        status = f"{one}/status"
        self.assertCases([
            ("GET", base, "", _resource(base, "list", "apis", g, v, resource="apiservices", parts=("apiservices",))),
            ("GET", one, "", _resource(one, "get", "apis", g, v, resource="apiservices", name="v1.foo",
                                       parts=("apiservices", "v1.foo"))),
            ("HEAD", one, "", _resource(one, "get", "apis", g, v, resource="apiservices", name="v1.foo",
                                        parts=("apiservices", "v1.foo"))),
            ("GET", status, "", _resource(status, "get", "apis", g, v, resource="apiservices", name="v1.foo",
                                          subresource="status", parts=("apiservices", "v1.foo", "status"))),
            ("POST", base, "", _resource(base, "create", "apis", g, v, resource="apiservices",
                                         parts=("apiservices",))),
            ("PUT", one, "", _resource(one, "update", "apis", g, v, resource="apiservices", name="v1.foo",
                                       parts=("apiservices", "v1.foo"))),
            ("PUT", status, "", _resource(status, "update", "apis", g, v, resource="apiservices", name="v1.foo",
                                          subresource="status", parts=("apiservices", "v1.foo", "status"))),
            ("PATCH", one, "", _resource(one, "patch", "apis", g, v, resource="apiservices", name="v1.foo",
                                         parts=("apiservices", "v1.foo"))),
            ("DELETE", one, "", _resource(one, "delete", "apis", g, v, resource="apiservices", name="v1.foo",
                                          parts=("apiservices", "v1.foo"))),
            ("DELETE", base, "", _resource(base, "deletecollection", "apis", g, v, resource="apiservices",
                                           parts=("apiservices",))),
        ])

    def test_namespaced_resource(self) -> None:
        """Namespaced resources carry their namespace, with the parts starting at the resource."""
        g, v = "service.grafana.app", "v0alpha1"
        base = f"/apis/{g}/{v}/namespaces/ns/externalnames"
        one = f"{base}/en"
        sub = f"{one}/status"
        self.assertCases([
            ("GET", base, "", _resource(base, "list", "apis", g, v, namespace="ns", resource="externalnames",
                                        parts=("externalnames",))),
            ("GET", one, "", _resource(one, "get", "apis", g, v, namespace="ns", resource="externalnames",
                                       name="en", parts=("externalnames", "en"))),
            ("PATCH", sub, "", _resource(sub, "patch", "apis", g, v, namespace="ns", resource="externalnames",
                                         name="en", subresource="status",
                                         parts=("externalnames", "en", "status"))),
            ("POST", base, "", _resource(base, "create", "apis", g, v, namespace="ns", resource="externalnames",
                                         parts=("externalnames",))),
            ("PUT", one, "", _resource(one, "update", "apis", g, v, namespace="ns", resource="externalnames",
                                       name="en", parts=("externalnames", "en"))),
            ("DELETE", one, "", _resource(one, "delete", "apis", g, v, namespace="ns", resource="externalnames",
                                          name="en", parts=("externalnames", "en"))),
            ("DELETE", base, "", _resource(base, "deletecollection", "apis", g, v, namespace="ns",
                                           resource="externalnames", parts=("externalnames",))),
        ])

    def test_core_group(self) -> None:
        """Under /api the group is empty and the version comes right after the prefix."""
        log = "/api/v1/namespaces/ns/pods/p/log"
        pods = "/api/v1/pods"
        self.assertCases([
            ("GET", log, "", _resource(log, "get", "api", "", "v1", namespace="ns", resource="pods", name="p",
                                       subresource="log", parts=("pods", "p", "log"))),
            ("GET", pods, "", _resource(pods, "list", "api", "", "v1", resource="pods", parts=("pods",))),
        ])

    def test_extra_path_segments_kept_in_parts(self) -> None:
        """Segments after the subresource are kept in parts but not interpreted."""
        path = "/api/v1/namespaces/ns/pods/p/proxy/a/b"
        self.assertEqual(
            request_info("GET", path),
            _resource(path, "get", "api", "", "v1", namespace="ns", resource="pods", name="p", subresource="proxy",
                      parts=("pods", "p", "proxy", "a", "b")),
        )

    def test_namespaces_resource(self) -> None:
        """/namespaces, /namespaces/ns and its status and finalize subresources are the namespaces resource."""
        g, v = "g", "v"
        coll = "/apis/g/v/namespaces"
        ns = "/apis/g/v/namespaces/ns"
        status = "/apis/g/v/namespaces/ns/status"
        finalize = "/apis/g/v/namespaces/ns/finalize"
        self.assertCases([
            ("GET", coll, "", _resource(coll, "list", "apis", g, v, resource="namespaces", parts=("namespaces",))),
            ("GET", ns, "", _resource(ns, "get", "apis", g, v, namespace="ns", resource="namespaces", name="ns",
                                      parts=("namespaces", "ns"))),
            ("DELETE", ns, "", _resource(ns, "delete", "apis", g, v, namespace="ns", resource="namespaces",
                                         name="ns", parts=("namespaces", "ns"))),
            ("PUT", status, "", _resource(status, "update", "apis", g, v, namespace="ns", resource="namespaces",
                                          name="ns", subresource="status",
                                          parts=("namespaces", "ns", "status"))),
            ("PUT", finalize, "", _resource(finalize, "update", "apis", g, v, namespace="ns",
                                            resource="namespaces", name="ns", subresource="finalize",
                                            parts=("namespaces", "ns", "finalize"))),
        ])

    def test_watch_query(self) -> None:
        """?watch=true and ?watch=1 turn a collection GET into watch; false and 0 keep it a list."""
        path = "/apis/g/v/namespaces/ns/foos"

        def expected(verb: str) -> RequestInfo:
            return _resource(path, verb, "apis", "g", "v", namespace="ns", resource="foos", parts=("foos",))

        self.assertCases([
            ("GET", path, "watch=true", expected("watch")),
            ("GET", path, "watch=1", expected("watch")),
            ("GET", path, "watch=TRUE", expected("watch")),
            ("GET", path, "resourceVersion=5&watch=true&allowWatchBookmarks=true", expected("watch")),
            ("GET", path, "watch=false", expected("list")),
            ("GET", path, "watch=0", expected("list")),
            ("GET", path, "limit=500", expected("list")),
            ("GET", path, "watch", expected("watch")),
            ("GET", path, "watch=yes", expected("watch")),
        ])

    def test_unknown_method_has_empty_verb(self) -> None:
        """A resource request with a method kube does not map (OPTIONS) has an empty verb."""
        self.assertEqual(request_info("OPTIONS", "/apis/g/v/foos").verb, "")

    def test_proxy_verb(self) -> None:
        """The deprecated /proxy/ path prefix is the verb proxy, like /watch/."""
        path = "/api/v1/proxy/namespaces/ns/pods/p"
        self.assertEqual(request_info("GET", path),
                         _resource(path, "proxy", "api", "", "v1", namespace="ns", resource="pods", name="p",
                                   parts=("pods", "p")))

    def test_watch_query_ignored_on_named_get(self) -> None:
        """?watch=true on a single object keeps the verb get."""
        path = "/apis/g/v/foos/a"
        self.assertEqual(request_info("GET", path, "watch=true"),
                         _resource(path, "get", "apis", "g", "v", resource="foos", name="a", parts=("foos", "a")))

    def test_watch_path_prefix(self) -> None:
        """The deprecated /watch/ path prefix gives verb watch and is not part of the resource path."""
        coll = "/apis/g/v/watch/foos"
        named = "/apis/g/v/watch/namespaces/ns/foos/a"
        self.assertCases([
            ("GET", coll, "", _resource(coll, "watch", "apis", "g", "v", resource="foos", parts=("foos",))),
            ("GET", named, "", _resource(named, "watch", "apis", "g", "v", namespace="ns", resource="foos",
                                         name="a", parts=("foos", "a"))),
        ])

    def test_field_selector_pins_name(self) -> None:
        """fieldSelector=metadata.name=foo (or ==foo) on a list or watch sets the name, as for a single object."""
        path = "/apis/g/v/namespaces/ns/foos"

        def expected(verb: str, name: str) -> RequestInfo:
            return _resource(path, verb, "apis", "g", "v", namespace="ns", resource="foos", name=name,
                             parts=("foos",))

        self.assertCases([
            ("GET", path, "fieldSelector=metadata.name%3Dfoo", expected("list", "foo")),
            ("GET", path, "fieldSelector=metadata.name=foo", expected("list", "foo")),
            ("GET", path, "fieldSelector=metadata.name%3D%3Dfoo", expected("list", "foo")),
            ("GET", path, "fieldSelector=metadata.name==foo", expected("list", "foo")),
            ("GET", path, "fieldSelector=spec.x%3Dy,metadata.name%3Dfoo", expected("list", "foo")),
            ("GET", path, "watch=true&fieldSelector=metadata.name%3Dfoo", expected("watch", "foo")),
        ])

    def test_field_selector_without_exact_name(self) -> None:
        """Inequality, other fields and invalid names do not set the name."""
        path = "/apis/g/v/foos"
        expected = _resource(path, "list", "apis", "g", "v", resource="foos", parts=("foos",))
        self.assertCases([
            ("GET", path, "fieldSelector=metadata.name!%3Dfoo", expected),
            ("GET", path, "fieldSelector=metadata.name!=foo", expected),
            ("GET", path, "fieldSelector=metadata.namespace%3Dfoo", expected),
            ("GET", path, "fieldSelector=spec.name%3Dfoo", expected),
            ("GET", path, "fieldSelector=metadata.name%3D", expected),
            ("GET", path, "fieldSelector=metadata.name%3D..", expected),
            ("GET", path, "fieldSelector=metadata.name%3Da/b", expected),
            ("GET", path, "fieldSelector=metadata.name%3Da%25b", expected),
        ])

    def test_field_selector_ignored_on_delete_collection(self) -> None:
        """A field selector on DELETE of a collection leaves it deletecollection with no name."""
        path = "/apis/g/v/foos"
        self.assertEqual(request_info("DELETE", path, "fieldSelector=metadata.name%3Dfoo"),
                         _resource(path, "deletecollection", "apis", "g", "v", resource="foos", parts=("foos",)))

    def test_method_is_case_insensitive(self) -> None:
        """A lower-case method is classified like its upper-case form."""
        path = "/apis/g/v/foos/a"
        self.assertEqual(request_info("put", path),
                         _resource(path, "update", "apis", "g", "v", resource="foos", name="a", parts=("foos", "a")))

    def test_percent_encoded_segment_is_decoded(self) -> None:
        """A percent-encoded name is decoded before it is stored."""
        path = "/apis/g/v/foos/a%3Ab"
        self.assertEqual(request_info("GET", path).name, "a:b")

    def test_trailing_slash(self) -> None:
        """A trailing slash does not add an empty name."""
        path = "/apis/g/v/foos/"
        self.assertEqual(request_info("GET", path),
                         _resource(path, "list", "apis", "g", "v", resource="foos", parts=("foos",)))
