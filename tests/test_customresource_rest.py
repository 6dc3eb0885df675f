"""Custom resources through the REST handler, as kube's CRD handler serves them: schema validation with kube's
messages, pruning with fieldValidation, defaulting on write and on read, server-side apply merging list-maps by
their keys, strategic merge patch refused, a deprecated version's warning, creates refused while the CRD
terminates, the CRD's listKind, selectable fields and printer columns."""

from __future__ import annotations

import copy
import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.apimachinery.strategy import LocalGroupVersion
from grafana_aggregator.registry.customresource import CustomResourceStrategy
from grafana_aggregator.storage import Collection
from grafana_aggregator.storage.memory import MemoryStore

from .support import serve_apis
from .test_rest_reads import Reply

EPOCH = 1_750_000_000.0
HOST = "https://agg.test/apis/example.com"
COLLECTION = Collection("example.com", "servers")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "minLength": 1},
                "tier": {"type": "string", "enum": ["web", "db"], "default": "web"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10},
                "port": {"x-kubernetes-int-or-string": True},
                "ports": {
                    "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["containerPort"],
                    "items": {"type": "object", "required": ["containerPort"], "properties": {
                        "containerPort": {"type": "integer"}, "name": {"type": "string"}}}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


def crd(**changes: Any) -> dict[str, Any]:
    """A CRD of `servers.example.com` serving v1 and the deprecated v1beta1."""
    version = {"served": True, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": SCHEMA},
               "selectableFields": [{"jsonPath": ".spec.tier"}],
               "additionalPrinterColumns": [{"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
                                            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]}
    body: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "servers.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "servers", "singular": "server", "kind": "Server", "listKind": "ServerCatalog"},
                 "versions": [{**version, "name": "v1", "storage": True},
                              {**version, "name": "v1beta1", "storage": False, "deprecated": True}]},
    }
    body["metadata"].update(changes.pop("metadata", {}))
    body.update(changes)
    return body


class Served:
    """The CRD's two versions served over a memory store, with a StubTreq client."""

    def __init__(self, case: SynchronousTestCase, definition: dict[str, Any] | None = None,
                 store: MemoryStore | None = None):
        self.case = case
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.store = store or MemoryStore()
        definition = definition or crd()
        groups = [LocalGroupVersion("example.com", version, (CustomResourceStrategy(definition, version),))
                  for version in ("v1", "v1beta1")]
        root = Resource()
        root.putChild(b"apis", serve_apis(self.store, self.clock, groups).apis)
        self.client = StubTreq(root)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                accept: str = "application/json") -> Reply:
        headers = {"Accept": accept}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        deferred = self.client.request(method, HOST + path, data=data, headers=headers)
        self.client.flush()
        response = self.case.successResultOf(deferred)
        content = self.client.content(response)
        self.client.flush()
        return Reply(response.code, response.headers, self.case.successResultOf(content))


def server(name: str = "s1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Server", "metadata": {"name": name},
            "spec": {"image": "nginx", **spec}}


SERVERS = "/v1/namespaces/default/servers"


def warnings(reply: Reply) -> list[str]:
    return [value.decode() for value in reply.headers.getRawHeaders(b"Warning") or []]


class ValidationTests(SynchronousTestCase):
    """Instances are checked against the version's schema with kube's paths and messages."""

    def test_invalid_is_422_with_every_cause(self) -> None:
        """Type, enum, bounds, required and int-or-string errors, all reported at once, as kube reports them."""
        served = Served(self)
        body = server(tier="cache", replicas=11, port=True)
        del body["spec"]["image"]
        reply = served.request("POST", SERVERS, body)
        self.assertEqual(reply.code, 422, reply.body)
        status = reply.json()
        self.assertEqual((status["reason"], status["details"]["kind"], status["details"]["group"]),
                         ("Invalid", "Server", "example.com"))
        self.assertEqual(sorted(c["message"] for c in status["details"]["causes"]), sorted([
            'Unsupported value: "cache": supported values: "web", "db"',
            "Invalid value: 11: spec.replicas in body should be less than or equal to 10",
            'Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"',
            "Required value",
        ]))
        self.assertTrue(status["message"].startswith('Server.example.com "s1" is invalid: ['), status["message"])

    def test_name_must_be_a_dns_subdomain(self) -> None:
        """A custom resource's name is a DNS subdomain, as kube's CRD handler requires."""
        reply = Served(self).request("POST", SERVERS, server("Not_Valid"))
        self.assertEqual(reply.code, 422, reply.body)
        self.assertIn("metadata.name: Invalid value: \"Not_Valid\": a lowercase RFC 1123 subdomain",
                      reply.json()["message"])

    def test_status_update_is_validated(self) -> None:
        """The status subresource validates the object against the schema too."""
        served = Served(self)
        created = served.request("POST", SERVERS, server()).json()
        created["status"] = {"phase": 3}
        reply = served.request("PUT", f"{SERVERS}/s1/status", created)
        self.assertEqual(reply.code, 422, reply.body)
        self.assertIn("status.phase: Invalid value: \"integer\": status.phase in body must be of type string",
                      reply.json()["message"])


class PruningTests(SynchronousTestCase):
    """Unknown fields are pruned; fieldValidation decides whether that is silent, a warning or a 400."""

    def test_strict_refuses_with_kube_message(self) -> None:
        reply = Served(self).request("POST", SERVERS + "?fieldValidation=Strict", server(junk=1))
        self.assertEqual((reply.code, reply.json()["reason"]), (400, "BadRequest"))
        self.assertEqual(reply.json()["message"], 'Server in version "v1" cannot be handled as a Server: strict '
                                                  'decoding error: unknown field "spec.junk"')

    def test_warn_prunes_and_warns(self) -> None:
        served = Served(self)
        reply = served.request("POST", SERVERS + "?fieldValidation=Warn", server(junk=1, extra={"kept": {"a": 1}}))
        self.assertEqual(reply.code, 201, reply.body)
        self.assertEqual(warnings(reply), ['299 - "unknown field \\"spec.junk\\""'])
        self.assertEqual(reply.json()["spec"], {"image": "nginx", "tier": "web", "extra": {"kept": {"a": 1}}})

    def test_ignore_prunes_silently(self) -> None:
        reply = Served(self).request("POST", SERVERS + "?fieldValidation=Ignore", server(junk=1))
        self.assertEqual((reply.code, warnings(reply)), (201, []))
        self.assertNotIn("junk", reply.json()["spec"])

    def test_unknown_metadata_is_pruned(self) -> None:
        body = server()
        body["metadata"]["colour"] = "red"
        reply = Served(self).request("POST", SERVERS + "?fieldValidation=Warn", body)
        self.assertEqual(reply.code, 201, reply.body)
        self.assertEqual(warnings(reply), ['299 - "unknown field \\"metadata.colour\\""'])


class DefaultingTests(SynchronousTestCase):
    """Defaults are applied on write and to objects read from storage."""

    def test_default_on_create(self) -> None:
        reply = Served(self).request("POST", SERVERS, server())
        self.assertEqual(reply.json()["spec"]["tier"], "web")

    def test_default_on_read(self) -> None:
        """An object stored before its default existed gets it in get, list and watch answers (not in storage)."""
        store = MemoryStore()
        served = Served(self, store=store)
        stored = server()
        stored["metadata"].update(namespace="default", uid="u1", creationTimestamp="2025-06-15T15:06:40Z")
        self.successResultOf(store.create(COLLECTION, "default", "s1", stored))  # type: ignore[arg-type]
        self.assertEqual(served.request("GET", f"{SERVERS}/s1").json()["spec"]["tier"], "web")
        self.assertEqual([i["spec"]["tier"] for i in served.request("GET", SERVERS).json()["items"]], ["web"])
        kept = self.successResultOf(store.get(COLLECTION, "default", "s1"))  # type: ignore[arg-type]
        self.assertNotIn("tier", kept["spec"])


class ApplyTests(SynchronousTestCase):
    """Server-side apply merges `x-kubernetes-list-type: map` lists by their keys."""

    def test_two_managers_share_a_list_map(self) -> None:
        served = Served(self)
        mine = server(ports=[{"containerPort": 80, "name": "http"}])
        reply = served.request("PATCH", f"{SERVERS}/s1?fieldManager=a", mine, "application/apply-patch+yaml")
        self.assertEqual(reply.code, 201, reply.body)
        theirs = {"apiVersion": "example.com/v1", "kind": "Server", "metadata": {"name": "s1"},
                  "spec": {"ports": [{"containerPort": 9090, "name": "metrics"}]}}
        reply = served.request("PATCH", f"{SERVERS}/s1?fieldManager=b", theirs, "application/apply-patch+yaml")
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["spec"]["ports"], [{"containerPort": 80, "name": "http"},
                                                         {"containerPort": 9090, "name": "metrics"}])
        entries = {e["manager"]: e["fieldsV1"] for e in reply.json()["metadata"]["managedFields"]}
        self.assertIn('k:{"containerPort":9090}', entries["b"]["f:spec"]["f:ports"])


class PatchTests(SynchronousTestCase):
    """JSON and merge patch are validated like any write; strategic merge patch is kube's 415 for CRs."""

    def test_strategic_merge_patch_is_415(self) -> None:
        served = Served(self)
        served.request("POST", SERVERS, server())
        reply = served.request("PATCH", f"{SERVERS}/s1", {"spec": {"replicas": 2}},
                               "application/strategic-merge-patch+json")
        self.assertEqual((reply.code, reply.json()["reason"]), (415, "UnsupportedMediaType"))
        self.assertEqual(reply.json()["message"], "the body of the request was in an unknown format - accepted media "
                                                  "types include: application/json-patch+json, "
                                                  "application/merge-patch+json, application/apply-patch+yaml")

    def test_merge_patch_validated(self) -> None:
        served = Served(self)
        served.request("POST", SERVERS, server())
        reply = served.request("PATCH", f"{SERVERS}/s1", {"spec": {"replicas": -1}}, "application/merge-patch+json")
        self.assertEqual(reply.code, 422, reply.body)
        self.assertIn("spec.replicas in body should be greater than or equal to 0", reply.json()["message"])


class VersionTests(SynchronousTestCase):
    """A deprecated version warns on every answer; the list kind is the CRD's listKind."""

    def test_deprecated_version_warns(self) -> None:
        served = Served(self)
        for method, path in (("GET", "/v1beta1/namespaces/default/servers"),
                             ("GET", "/v1beta1/namespaces/default/servers/missing")):
            reply = served.request(method, path)
            self.assertEqual(warnings(reply), ['299 - "example.com/v1beta1 Server is deprecated"'], path)
        self.assertEqual(warnings(served.request("GET", SERVERS)), [])

    def test_deprecation_warning_text(self) -> None:
        definition = crd()
        definition["spec"]["versions"][1]["deprecationWarning"] = "use example.com/v1"
        reply = Served(self, definition).request("GET", "/v1beta1/namespaces/default/servers")
        self.assertEqual(warnings(reply), ['299 - "use example.com/v1"'])

    def test_none_conversion(self) -> None:
        """Objects are stored in the storage version (v1) and served in the version asked for, apiVersion
        rewritten, as kube's `None` conversion does; a write through another version is not a spec change."""
        served = Served(self)
        beta = "/v1beta1/namespaces/default/servers"
        created = served.request("POST", beta, {**server(), "apiVersion": "example.com/v1beta1"})
        self.assertEqual((created.code, created.json()["apiVersion"]), (201, "example.com/v1beta1"))
        stored = self.successResultOf(served.store.get(COLLECTION, "default", "s1"))  # type: ignore[arg-type]
        self.assertEqual(stored["apiVersion"], "example.com/v1")
        self.assertEqual(served.request("GET", f"{SERVERS}/s1").json()["apiVersion"], "example.com/v1")
        self.assertEqual([i["apiVersion"] for i in served.request("GET", beta).json()["items"]],
                         ["example.com/v1beta1"])
        again = served.request("GET", f"{beta}/s1").json()
        again["metadata"]["labels"] = {"a": "b"}
        updated = served.request("PUT", f"{beta}/s1", again)
        self.assertEqual((updated.code, updated.json()["apiVersion"], updated.json()["metadata"]["generation"]),
                         (200, "example.com/v1beta1", 1))
        patched = served.request("PATCH", f"{SERVERS}/s1", {"metadata": {"labels": {"a": "c"}}},
                                 "application/merge-patch+json")
        self.assertEqual((patched.json()["apiVersion"], patched.json()["metadata"]["generation"]),
                         ("example.com/v1", 1))

    def test_list_kind(self) -> None:
        self.assertEqual(Served(self).request("GET", SERVERS).json()["kind"], "ServerCatalog")


class TerminatingTests(SynchronousTestCase):
    """While its CRD is being deleted, a kind's instances can be read and deleted but not created."""

    def test_create_refused(self) -> None:
        definition = crd(metadata={"deletionTimestamp": "2025-06-15T15:06:40Z",
                                   "finalizers": ["customresourcecleanup.apiextensions.k8s.io"]})
        served = Served(self, copy.deepcopy(definition))
        reply = served.request("POST", SERVERS, server())
        self.assertEqual((reply.code, reply.json()["reason"], reply.json()["message"]),
                         (405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating"))
        self.assertEqual(served.request("GET", SERVERS).code, 200)


class SelectorAndTableTests(SynchronousTestCase):
    """selectableFields work in field selectors, and Tables have the CRD's printer columns."""

    def test_field_selector_on_selectable_field(self) -> None:
        served = Served(self)
        served.request("POST", SERVERS, server("a", tier="db"))
        served.request("POST", SERVERS, server("b"))
        reply = served.request("GET", SERVERS + "?fieldSelector=spec.tier%3Ddb")
        self.assertEqual([i["metadata"]["name"] for i in reply.json()["items"]], ["a"])
        reply = served.request("GET", SERVERS + "?fieldSelector=spec.image%3Dnginx")
        self.assertEqual(reply.code, 400, reply.body)

    def test_table_columns(self) -> None:
        served = Served(self)
        served.request("POST", SERVERS, server("a", replicas=3))
        table = served.request("GET", SERVERS, accept=TABLE).json()
        self.assertEqual([c["name"] for c in table["columnDefinitions"]], ["Name", "Tier", "Replicas"])
        self.assertEqual(table["rows"][0]["cells"], ["a", "web", 3])


class GenerationTests(SynchronousTestCase):
    """metadata.generation moves as kube's CR strategy moves it."""

    def test_status_change_bumps_generation_without_status_subresource(self) -> None:
        definition = crd()
        for version in definition["spec"]["versions"]:
            version["subresources"] = {}
        served = Served(self, definition)
        created = served.request("POST", SERVERS, server()).json()
        created["status"] = {"phase": "Running"}
        updated = served.request("PUT", f"{SERVERS}/s1", created).json()
        self.assertEqual((updated["status"], updated["metadata"]["generation"]), ({"phase": "Running"}, 2))
        updated["metadata"]["labels"] = {"a": "b"}
        relabelled = served.request("PUT", f"{SERVERS}/s1", updated).json()
        self.assertEqual(relabelled["metadata"]["generation"], 2)

    def test_status_ignored_with_status_subresource(self) -> None:
        served = Served(self)
        created = served.request("POST", SERVERS, server()).json()
        created["status"] = {"phase": "Running"}
        updated = served.request("PUT", f"{SERVERS}/s1", created).json()
        self.assertEqual(("status" in updated, updated["metadata"]["generation"]), (False, 1))
