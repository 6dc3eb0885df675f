"""Remote backends' discovery documents: converting them to aggregated resources, and the cache `/apis` lists them from."""

from __future__ import annotations

import copy
import json

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.aggregation.remote_discovery import (
    MAX_DOCUMENT_BYTES,
    DiscoveryCache,
    DiscoveryDocumentError,
    aggregated_from_resource_list,
    resources_from_discovery,
)

GROUP, VERSION = "example.grafana.app", "v0alpha1"
RESOURCE_LIST = {
    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "example.grafana.app/v0alpha1",
    "resources": [
        {"name": "dummy", "singularName": "dummy", "namespaced": True, "kind": "DummyResource", "verbs": ["get", "list"]},
        {"name": "dummy/sub", "singularName": "", "namespaced": True, "kind": "DummySubresource", "verbs": ["get"]},
        {"name": "runtime", "singularName": "runtime", "namespaced": False, "kind": "RuntimeInfo", "verbs": ["list"]},
    ],
}
CONVERTED = [
    {"resource": "dummy",
     "responseKind": {"group": "example.grafana.app", "version": "v0alpha1", "kind": "DummyResource"},
     "scope": "Namespaced", "singularResource": "dummy", "verbs": ["get", "list"],
     "subresources": [{"subresource": "sub", "responseKind": {"group": "example.grafana.app", "version": "v0alpha1",
                                                              "kind": "DummySubresource"},
                       "verbs": ["get"]}]},
    {"resource": "runtime",
     "responseKind": {"group": "example.grafana.app", "version": "v0alpha1", "kind": "RuntimeInfo"},
     "scope": "Cluster", "singularResource": "runtime", "verbs": ["list"]},
]


class ConversionTests(SynchronousTestCase):
    """A legacy APIResourceList as aggregated-discovery resources."""

    def test_conversion(self) -> None:
        """Resources keep their kind, scope, singular name and verbs; subresources go under their parent."""
        self.assertEqual(aggregated_from_resource_list(GROUP, VERSION, RESOURCE_LIST), CONVERTED)

    def test_short_names_categories_and_response_group(self) -> None:
        """Short names and categories are kept, and a resource's own group and version name its response kind."""
        document = {"resources": [{"name": "scales", "kind": "Scale", "group": "autoscaling", "version": "v1",
                                   "shortNames": ["sc"], "categories": ["all"], "verbs": []}]}
        self.assertEqual(aggregated_from_resource_list(GROUP, VERSION, document), [
            {"resource": "scales", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
             "scope": "Cluster", "singularResource": "", "verbs": [], "shortNames": ["sc"], "categories": ["all"]}])

    def test_malformed_entries_skipped(self) -> None:
        """Entries without a name or kind, non-objects and subresources of unlisted resources are left out."""
        document = {"resources": [{"name": "nokind"}, {"kind": "NoName"}, "text", None,
                                  {"name": "ghost/status", "kind": "Ghost", "verbs": ["get"]},
                                  {"name": "runtime", "kind": "RuntimeInfo", "singularName": "runtime",
                                   "verbs": ["list"]}]}
        self.assertEqual(aggregated_from_resource_list(GROUP, VERSION, document), [CONVERTED[1]])

    def test_from_a_backends_answer(self) -> None:
        """A backend's JSON answer of its own group-version converts as its document does; core is `v1` alone."""
        self.assertEqual(resources_from_discovery(GROUP, VERSION, json.dumps(RESOURCE_LIST).encode()), CONVERTED)
        core = {"kind": "APIResourceList", "groupVersion": "v1", "resources": []}
        self.assertEqual(resources_from_discovery("", "v1", json.dumps(core).encode()), [])
        self.assertEqual(resources_from_discovery(GROUP, VERSION, b'{"resources": []}'), [])

    def test_invalid_documents_refused(self) -> None:
        """Not JSON, not an object, resources not a list, another group-version or over 8 MiB: DiscoveryDocumentError."""
        other = {**RESOURCE_LIST, "groupVersion": "example.grafana.app/v1"}
        for body, message in [
            (b"<html>not json</html>", "not JSON"),
            (b"[]", "not an APIResourceList"),
            (b'"text"', "not an APIResourceList"),
            (b'{"resources": {}}', "not an APIResourceList"),
            (json.dumps(other).encode(), "'example.grafana.app/v1', not of 'example.grafana.app/v0alpha1'"),
            (b"[" * 100_000, "not JSON"),
        ]:
            error = self.assertRaises(DiscoveryDocumentError, resources_from_discovery, GROUP, VERSION, body)
            self.assertIn(message, str(error))

    def test_size_limit(self) -> None:
        """A document of exactly 8 MiB is read; one byte more is refused before parsing."""
        body = json.dumps(RESOURCE_LIST).encode()
        padded = body[:-1] + b" " * (MAX_DOCUMENT_BYTES - len(body)) + b"}"
        self.assertEqual(len(padded), MAX_DOCUMENT_BYTES)
        self.assertEqual(resources_from_discovery(GROUP, VERSION, padded), CONVERTED)
        error = self.assertRaises(DiscoveryDocumentError, resources_from_discovery, GROUP, VERSION, padded + b" ")
        self.assertIn("larger than", str(error))


class DiscoveryCacheTests(SynchronousTestCase):
    """The cache of what each backend answered, and its generation."""

    def test_store_and_forget(self) -> None:
        """Stored resources are returned by name until forgotten; unknown names give None."""
        cache = DiscoveryCache()
        self.assertIsNone(cache.resources("v1.a"))
        cache.store("v1.a", CONVERTED)
        self.assertEqual((cache.resources("v1.a"), cache.resources("v1.b")), (CONVERTED, None))
        cache.forget("v1.a")
        self.assertIsNone(cache.resources("v1.a"))

    def test_generation_grows_only_on_a_real_change(self) -> None:
        """Storing equal resources again or forgetting an unknown name keeps the generation; other changes grow it."""
        cache = DiscoveryCache()
        seen = [cache.generation]
        cache.store("v1.a", CONVERTED)
        seen.append(cache.generation)
        cache.store("v1.a", copy.deepcopy(CONVERTED))
        cache.forget("v1.never")
        self.assertEqual(cache.generation, seen[-1])
        cache.store("v1.a", CONVERTED[:1])
        seen.append(cache.generation)
        cache.store("v1.b", [])
        seen.append(cache.generation)
        cache.forget("v1.a")
        seen.append(cache.generation)
        cache.forget("v1.a")
        self.assertEqual(cache.generation, seen[-1])
        self.assertEqual(seen, sorted(set(seen)))
        self.assertEqual(len(seen), 5)

    def test_empty_resources_are_known(self) -> None:
        """A backend that answered with no resources is known (an empty list), unlike one that never answered."""
        cache = DiscoveryCache()
        cache.store("v1.a", [])
        self.assertEqual(cache.resources("v1.a"), [])
        generation = cache.generation
        cache.forget("v1.a")
        self.assertIsNone(cache.resources("v1.a"))
        self.assertGreater(cache.generation, generation)
