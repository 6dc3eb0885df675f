# -*- test-case-name: tests.test_rest_writes -*-
"""Tests for the write verbs of L{grafana_aggregator.apimachinery.writes} (create, update, patch, apply, delete and
deletecollection) on APIService and ExternalName, driven over HTTP as kubectl drives them (kubectl-wire.md §3, §7)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, NamedTuple

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from grafana_aggregator.storage.memory import MemoryStore
from .support import serve_apis
from grafana_aggregator.tap import local_groups

#: The clock starts here: 2023-11-14T22:13:20Z.
EPOCH = 1_700_000_000
T0 = "2023-11-14T22:13:20Z"
T1 = "2023-11-14T22:14:20Z"
T2 = "2023-11-14T22:15:20Z"

HOST = "https://agg.test"
APISERVICES = f"{HOST}/apis/apiregistration.k8s.io/v1/apiservices"
EXTERNALNAMES = f"{HOST}/apis/service.grafana.app/v0alpha1/namespaces/grafana/externalnames"
ALL_EXTERNALNAMES = f"{HOST}/apis/service.grafana.app/v0alpha1/externalnames"
NAME = "v1.foo.example.com"
URL = f"{APISERVICES}/{NAME}"

APIREG = "apiregistration.k8s.io/v1"
GRAFANA = "service.grafana.app/v0alpha1"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
#: The User-Agent sent unless a test says otherwise; its product name is the default field manager.
USER_AGENT = "grafana-aggregator-tests/1.0"
KUBECTL_AGENT = "kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
CONFLICT_MESSAGE = (f'Operation cannot be fulfilled on apiservices.apiregistration.k8s.io "{NAME}": the object has '
                    f"been modified; please apply your changes to the latest version and try again")
LOCAL_CONDITION = {"type": "Available", "status": "True", "lastTransitionTime": T0, "reason": "Local",
                   "message": "Local APIServices are always available"}
SPEC_FIELDS: dict[str, Any] = {"f:spec": {".": {}, "f:group": {}, "f:groupPriorityMinimum": {}, "f:version": {},
                          "f:versionPriority": {}}}
APPLIED_SPEC_FIELDS: dict[str, Any] = {"f:spec": {"f:group": {}, "f:groupPriorityMinimum": {}, "f:version": {},
                                  "f:versionPriority": {}}}
DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
           "character, and end with an alphanumeric character (e.g. 'my-name' or 'abc-123', regex used for "
           "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
             "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
DETAILS = {"name": NAME, "group": "apiregistration.k8s.io", "kind": "apiservices"}


class Reply(NamedTuple):
    """A finished response: status code, headers and body."""

    code: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def apiservice(name: str = NAME, **spec: Any) -> dict[str, Any]:
    """A Local APIService named `version.group`, with priorities 100 and 10 unless overridden."""
    version, _, group = name.partition(".")
    body: dict[str, Any] = {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 10}
    body.update(spec)
    return {"apiVersion": APIREG, "kind": "APIService", "metadata": {"name": name}, "spec": body}


def external_name(name: str = "ext1", host: str = "backend.example.com", **metadata: Any) -> dict[str, Any]:
    """An ExternalName without a namespace (the URL gives it)."""
    return {"apiVersion": GRAFANA, "kind": "ExternalName", "metadata": {"name": name, **metadata},
            "spec": {"host": host}}


def managed(manager: str, fields: dict[str, Any], time: str = T0, operation: str = "Update",
            api_version: str = APIREG, subresource: str = "") -> dict[str, Any]:
    """One managedFields entry as the server writes it."""
    entry: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": time,
                             "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        entry["subresource"] = subresource
    return entry


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure Status as kube-apiserver writes it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def invalid_apiservice(name: str, causes: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The 422 Status for an APIService with the given (reason, field, message) causes."""
    listed = [f"{field}: {message}" for _, field, message in causes]
    summary = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    return status(422, "Invalid", f'APIService.apiregistration.k8s.io "{name}" is invalid: {summary}', {
        "name": name, "group": "apiregistration.k8s.io", "kind": "APIService",
        "causes": [{"reason": reason, "message": message, "field": field} for reason, field, message in causes]})


class _WritesTestCase(SynchronousTestCase):
    """The daemon's groups on a MemoryStore behind StubTreq, with a Clock at EPOCH."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(EPOCH)
        _, groups = local_groups(lambda: datetime.fromtimestamp(self.clock.seconds(), timezone.utc))
        self.store = MemoryStore()
        root = Resource()
        root.putChild(b"apis", serve_apis(self.store, self.clock, groups).apis)
        self.client: Any = StubTreq(root)

    def request(self, method: str, url: str, body: Any = None, content_type: str | None = JSON,
                agent: str | None = USER_AGENT) -> Reply:
        """Send a request (a dict or list body is sent as JSON) and wait for the whole response."""
        headers: dict[str, list[str]] = {}
        if content_type is not None:
            headers["Content-Type"] = [content_type]
        if agent is not None:
            headers["User-Agent"] = [agent]
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        pending = self.client.request(method, url, data=data, headers=headers)
        self.client.flush()
        response = self.successResultOf(pending)
        content = self.client.content(response)
        self.client.flush()
        return Reply(response.code, response.headers, self.successResultOf(content))

    def create(self, url: str = APISERVICES, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        """POST an object (the default Local APIService) that must be created; return what the server stored."""
        reply = self.request("POST", url, apiservice() if body is None else body, **kwargs)
        self.assertEqual(reply.code, 201, reply.body)
        created: dict[str, Any] = reply.json()
        return created

    def get(self, url: str = URL) -> Reply:
        """GET an object."""
        return self.request("GET", url, content_type=None)

    def assertNotStored(self, url: str = URL) -> None:
        """The object at url does not exist."""
        self.assertEqual(self.get(url).code, 404)

    def assertUID(self, obj: dict[str, Any]) -> str:
        """The object has a server-generated (version 4) UUID; return it."""
        uid: str = obj["metadata"]["uid"]
        self.assertRegex(uid, UUID)
        return uid


def local_created(uid: str, resource_version: str = "1", manager: str = "grafana-aggregator-tests",
                  name: str = NAME) -> dict[str, Any]:
    """A Local APIService as `apiservice(name)` creates it at T0."""
    body = apiservice(name)
    body["metadata"] = {"name": name, "uid": uid, "creationTimestamp": T0, "generation": 1,
                        "managedFields": [managed(manager, SPEC_FIELDS)], "resourceVersion": resource_version}
    body["status"] = {"conditions": [LOCAL_CONDITION]}
    return body


class APIServiceCreateTests(_WritesTestCase):
    """POST /apis/apiregistration.k8s.io/v1/apiservices."""

    def test_create_fills_server_metadata(self) -> None:
        """A create answers 201 with uid, creationTimestamp from the clock, generation 1, resourceVersion, the
        Local condition and the creator's managedFields, and stores exactly that."""
        reply = self.request("POST", APISERVICES, apiservice())
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        created = reply.json()
        uid = self.assertUID(created)
        self.assertEqual(created, local_created(uid))
        self.assertEqual(self.get().json(), created)

    def test_create_ignores_client_system_metadata(self) -> None:
        """uid, resourceVersion, creationTimestamp and generation sent by the client are replaced by the server's."""
        body = apiservice()
        body["metadata"].update({"uid": "client-uid", "resourceVersion": "77", "creationTimestamp":
                                 "2000-01-01T00:00:00Z", "generation": 9})
        created = self.create(body=body)
        uid = self.assertUID(created)
        self.assertNotEqual(uid, "client-uid")
        self.assertEqual(created, local_created(uid))

    def test_remote_apiservice_has_no_condition(self) -> None:
        """An APIService with a service starts without conditions, and its port defaults to 443."""
        created = self.create(body=apiservice(service={"namespace": "grafana", "name": "backend"}))
        self.assertEqual(created["spec"], {"group": "foo.example.com", "version": "v1", "groupPriorityMinimum": 100,
                                           "versionPriority": 10,
                                           "service": {"namespace": "grafana", "name": "backend", "port": 443}})
        self.assertEqual(created["status"], {})

    def test_create_sent_status_is_wiped(self) -> None:
        """A status in the POST body is dropped: a Local APIService gets only the Local condition."""
        body = apiservice()
        body["status"] = {"conditions": [{"type": "Available", "status": "False", "reason": "Down"}]}
        self.assertEqual(self.create(body=body)["status"], {"conditions": [LOCAL_CONDITION]})

    def test_create_existing_is_already_exists(self) -> None:
        """A second create of the same name is 409 AlreadyExists with kube's message and details."""
        self.create()
        reply = self.request("POST", APISERVICES, apiservice())
        self.assertEqual((reply.code, reply.json()), (409, status(
            409, "AlreadyExists", f'apiservices.apiregistration.k8s.io "{NAME}" already exists', DETAILS)))

    def test_invalid_name_group_version_and_priorities(self) -> None:
        """An empty spec fails the name, group, version and both priority rules, in kube's order."""
        body = apiservice("bad")
        body["spec"] = {}
        reply = self.request("POST", APISERVICES, body)
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice("bad", [
            ("FieldValueInvalid", "metadata.name", 'Invalid value: "bad": must be `spec.version+"."+spec.group`: "."'),
            ("FieldValueRequired", "spec.group",
             "Required value: only v1 may have an empty group and it better be legacy kube"),
            ("FieldValueInvalid", "spec.version", f'Invalid value: "": {DNS1035}'),
            ("FieldValueInvalid", "spec.groupPriorityMinimum", "Invalid value: 0: must be positive and less than 20000"),
            ("FieldValueInvalid", "spec.versionPriority", "Invalid value: 0: must be positive and less than 1000"),
        ])))
        self.assertNotStored(f"{APISERVICES}/bad")

    def test_invalid_group_and_version_format(self) -> None:
        """A group that is not a DNS subdomain and a version that is not a DNS-1035 label are invalid."""
        body = apiservice(group="X_Y", version="V1")
        reply = self.request("POST", APISERVICES, body)
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueInvalid", "metadata.name", f'Invalid value: "{NAME}": must be `spec.version+"."+spec.group`: '
                                                   '"V1.X_Y"'),
            ("FieldValueInvalid", "spec.group", f'Invalid value: "X_Y": {SUBDOMAIN}'),
            ("FieldValueInvalid", "spec.version", f'Invalid value: "V1": {DNS1035}'),
        ])))

    def test_invalid_name_path_segment(self) -> None:
        """A name with '%' is reported once, as a path segment error, not also as a name/version mismatch."""
        reply = self.request("POST", APISERVICES, apiservice("v1.a%b"))
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice("v1.a%b", [
            ("FieldValueInvalid", "metadata.name", "Invalid value: \"v1.a%b\": may not contain '%'"),
            ("FieldValueInvalid", "spec.group", f'Invalid value: "a%b": {SUBDOMAIN}'),
        ])))

    def test_priorities_above_maximum(self) -> None:
        """groupPriorityMinimum above 20000 and versionPriority above 1000 are invalid."""
        reply = self.request("POST", APISERVICES, apiservice(groupPriorityMinimum=20001, versionPriority=1001))
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueInvalid", "spec.groupPriorityMinimum",
             "Invalid value: 20001: must be positive and less than 20000"),
            ("FieldValueInvalid", "spec.versionPriority", "Invalid value: 1001: must be positive and less than 1000"),
        ])))

    def test_priorities_at_maximum_are_valid(self) -> None:
        """groupPriorityMinimum 20000 and versionPriority 1000 are the largest valid values."""
        created = self.create(body=apiservice(groupPriorityMinimum=20000, versionPriority=1000))
        self.assertEqual((created["spec"]["groupPriorityMinimum"], created["spec"]["versionPriority"]), (20000, 1000))

    def test_local_with_ca_bundle_and_insecure(self) -> None:
        """A Local APIService may have neither a caBundle nor insecureSkipTLSVerify."""
        reply = self.request("POST", APISERVICES, apiservice(caBundle="AAAA", insecureSkipTLSVerify=True))
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueInvalid", "spec.caBundle", 'Invalid value: "3 bytes": local APIServices may not have a caBundle'),
            ("FieldValueInvalid", "spec.insecureSkipTLSVerify",
             "Invalid value: true: local APIServices may not have insecureSkipTLSVerify"),
        ])))

    def test_service_needs_namespace_name_and_port(self) -> None:
        """A service needs a namespace and a name, and its port must be in 1–65535."""
        reply = self.request("POST", APISERVICES, apiservice(service={"port": 70000}))
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueRequired", "spec.service.namespace", "Required value"),
            ("FieldValueRequired", "spec.service.name", "Required value"),
            ("FieldValueInvalid", "spec.service.port",
             "Invalid value: 70000: port is not valid: must be between 1 and 65535, inclusive"),
        ])))

    def test_service_insecure_with_ca_bundle(self) -> None:
        """insecureSkipTLSVerify may not be true when a caBundle is present."""
        reply = self.request("POST", APISERVICES, apiservice(service={"namespace": "grafana", "name": "backend"},
                                                             caBundle="AAAA", insecureSkipTLSVerify=True))
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueInvalid", "spec.insecureSkipTLSVerify",
             "Invalid value: true: may not be true if caBundle is present"),
        ])))

    def test_generate_name_is_validated_against_spec(self) -> None:
        """A generated APIService name cannot equal `version.group`, so it is invalid (kube's name rule)."""
        body = apiservice()
        body["metadata"] = {"generateName": NAME}
        reply = self.request("POST", APISERVICES, body)
        self.assertEqual(reply.code, 422)
        generated = reply.json()["details"]["name"]
        self.assertRegex(generated, r"^v1\.foo\.example\.com[bcdfghjklmnpqrstvwxz2456789]{5}$")
        self.assertEqual(reply.json()["details"]["causes"], [{
            "reason": "FieldValueInvalid", "field": "metadata.name",
            "message": f'Invalid value: "{generated}": must be `spec.version+"."+spec.group`: "{NAME}"'}])

    def test_create_from_yaml(self) -> None:
        """A YAML body (Content-Type application/yaml) is accepted and the answer is JSON."""
        body = ("apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1.foo.example.com\n"
                "spec:\n  group: foo.example.com\n  version: v1\n  groupPriorityMinimum: 100\n  versionPriority: 10\n")
        reply = self.request("POST", APISERVICES, body, content_type="application/yaml")
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        self.assertEqual(reply.json(), local_created(self.assertUID(reply.json())))

    def test_text_plain_is_unsupported(self) -> None:
        """A text/plain body is 415 UnsupportedMediaType listing JSON and YAML."""
        reply = self.request("POST", APISERVICES, json.dumps(apiservice()), content_type="text/plain")
        self.assertEqual((reply.code, reply.json()), (415, status(
            415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types "
                                         "include: application/json, application/yaml")))
        self.assertNotStored()

    def test_malformed_json(self) -> None:
        """A body that is not JSON is 400 BadRequest."""
        reply = self.request("POST", APISERVICES, "{bad")
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "couldn't get version/kind; json parse error: Expecting property name enclosed in "
                               "double quotes at line 1 column 2")))

    def test_malformed_yaml(self) -> None:
        """A YAML body that does not parse is 400 BadRequest, with go-yaml's message as kube words it."""
        reply = self.request("POST", APISERVICES, "a: [", content_type="application/yaml")
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "error converting YAML to JSON: yaml: line 1: did not find expected node content")))

    def test_missing_kind(self) -> None:
        """A body without kind gets it from the endpoint, as kube's decoder does for a built-in kind (a custom
        resource's 400 `Object 'Kind' is missing` is in tests.test_parity)."""
        body = apiservice()
        del body["kind"]
        reply = self.request("POST", APISERVICES, body)
        self.assertEqual((reply.code, reply.json()["kind"]), (201, "APIService"))

    def test_wrong_api_version(self) -> None:
        """A body of another group-version is 400 BadRequest naming both versions."""
        body = apiservice()
        body["apiVersion"] = "example.com/v1"
        reply = self.request("POST", APISERVICES, body)
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "the API version in the data (example.com/v1) does not match the expected API version "
                               "(apiregistration.k8s.io/v1)")))
        self.assertNotStored()

    def test_body_over_three_mebibytes(self) -> None:
        """A body of more than 3 MiB is 413 RequestEntityTooLarge."""
        reply = self.request("POST", APISERVICES, b" " * (3 * 1024 * 1024 + 1))
        self.assertEqual((reply.code, reply.json()), (413, status(
            413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")))

    def test_dry_run_stores_nothing(self) -> None:
        """dryRun=All answers 201 with the object as it would be created, without a resourceVersion, and stores
        nothing."""
        reply = self.request("POST", f"{APISERVICES}?dryRun=All", apiservice())
        self.assertEqual(reply.code, 201)
        expected = local_created(self.assertUID(reply.json()))
        del expected["metadata"]["resourceVersion"]
        self.assertEqual(reply.json(), expected)
        self.assertNotStored()
        self.assertEqual(self.store.current_resource_version(), 0)

    def test_strict_rejects_unknown_field(self) -> None:
        """With fieldValidation=Strict an unknown field is a 400 BadRequest and nothing is stored."""
        body = apiservice(bogus=1)
        reply = self.request("POST", f"{APISERVICES}?fieldValidation=Strict", body)
        self.assertEqual((reply.code, reply.json()["reason"]), (400, "BadRequest"))
        self.assertNotStored()

    def test_strict_unknown_field_message(self) -> None:
        """The Strict error of a create names the kind as kube's transformDecodeError does."""
        reply = self.request("POST", f"{APISERVICES}?fieldValidation=Strict", apiservice(bogus=1))
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", 'APIService in version "v1" cannot be handled as a APIService: strict decoding error: '
                               'unknown field "spec.bogus"')))


    def test_warn_drops_unknown_field_with_warning(self) -> None:
        """With fieldValidation=Warn an unknown field is dropped and reported in a Warning header."""
        reply = self.request("POST", f"{APISERVICES}?fieldValidation=Warn", apiservice(bogus=1))
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.headers.getRawHeaders(b"Warning"), [b'299 - "unknown field \\"spec.bogus\\""'])
        self.assertEqual(reply.json(), local_created(self.assertUID(reply.json())))
        self.assertEqual(self.get().json(), reply.json())

    def test_default_validation_is_warn(self) -> None:
        """Without fieldValidation an unknown field is dropped with a Warning, as with Warn."""
        reply = self.request("POST", APISERVICES, apiservice(bogus=1))
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.headers.getRawHeaders(b"Warning"), [b'299 - "unknown field \\"spec.bogus\\""'])
        self.assertNotIn("bogus", self.get().json()["spec"])

    def test_ignore_drops_unknown_field_silently(self) -> None:
        """With fieldValidation=Ignore an unknown field is dropped without a warning."""
        reply = self.request("POST", f"{APISERVICES}?fieldValidation=Ignore", apiservice(bogus=1))
        self.assertEqual(reply.code, 201)
        self.assertIsNone(reply.headers.getRawHeaders(b"Warning"))
        self.assertEqual(reply.json(), local_created(self.assertUID(reply.json())))

    def test_strict_rejects_duplicate_field(self) -> None:
        """With fieldValidation=Strict a duplicated JSON field is a 400 BadRequest and nothing is stored."""
        body = ('{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1.foo.example.com"},'
                '"spec":{"group":"foo.example.com","version":"v1","groupPriorityMinimum":100,"versionPriority":10,'
                '"versionPriority":11}}')
        reply = self.request("POST", f"{APISERVICES}?fieldValidation=Strict", body)
        self.assertEqual((reply.code, reply.json()["reason"]), (400, "BadRequest"))
        self.assertNotStored()

    def test_duplicate_field_is_named_by_path(self) -> None:
        """A duplicated field is reported with its full path (`spec.versionPriority`), as sigs.k8s.io/json does."""
        body = ('{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1.foo.example.com"},'
                '"spec":{"group":"foo.example.com","version":"v1","groupPriorityMinimum":100,"versionPriority":10,'
                '"versionPriority":11}}')
        reply = self.request("POST", APISERVICES, body)
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.headers.getRawHeaders(b"Warning"), [b'299 - "duplicate field \\"spec.versionPriority\\""'])

    def test_field_manager_recorded(self) -> None:
        """The fieldManager query parameter names the Update entry of managedFields."""
        created = self.create(f"{APISERVICES}?fieldManager=kubectl-create&fieldValidation=Strict")
        self.assertEqual(created["metadata"]["managedFields"], [managed("kubectl-create", SPEC_FIELDS)])

    def test_field_manager_defaults_to_user_agent_product(self) -> None:
        """Without fieldManager the manager is the User-Agent's product name."""
        created = self.create(agent=KUBECTL_AGENT)
        self.assertEqual(created["metadata"]["managedFields"], [managed("kubectl", SPEC_FIELDS)])


class ExternalNameCreateTests(_WritesTestCase):
    """POST /apis/service.grafana.app/v0alpha1/namespaces/<ns>/externalnames."""

    def test_create_in_url_namespace(self) -> None:
        """A body without a namespace is created in the URL's namespace, with the server's metadata."""
        created = self.create(EXTERNALNAMES, external_name())
        uid = self.assertUID(created)
        self.assertEqual(created, {
            "apiVersion": GRAFANA, "kind": "ExternalName",
            "metadata": {"name": "ext1", "namespace": "grafana", "uid": uid, "creationTimestamp": T0, "generation": 1,
                         "managedFields": [managed("grafana-aggregator-tests",
                                                   {"f:spec": {".": {}, "f:host": {}}}, api_version=GRAFANA)],
                         "resourceVersion": "1"},
            "spec": {"host": "backend.example.com"}})
        self.assertEqual(self.get(f"{EXTERNALNAMES}/ext1").json(), created)

    def test_namespace_mismatch(self) -> None:
        """A body namespace other than the URL's is 400 BadRequest."""
        reply = self.request("POST", EXTERNALNAMES, external_name(namespace="other"))
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")))
        self.assertNotStored(f"{EXTERNALNAMES}/ext1")

    def test_host_required(self) -> None:
        """An ExternalName without spec.host is 422 Invalid."""
        body = external_name()
        body["spec"] = {}
        reply = self.request("POST", EXTERNALNAMES, body)
        self.assertEqual((reply.code, reply.json()), (422, status(
            422, "Invalid", 'ExternalName.service.grafana.app "ext1" is invalid: spec.host: Required value',
            {"name": "ext1", "group": "service.grafana.app", "kind": "ExternalName",
             "causes": [{"reason": "FieldValueRequired", "message": "Required value", "field": "spec.host"}]})))

    def test_generate_name(self) -> None:
        """generateName gets five characters of kube's alphabet appended, and is kept in metadata."""
        body = external_name()
        body["metadata"] = {"generateName": "ext-"}
        created = self.create(EXTERNALNAMES, body)
        name = created["metadata"]["name"]
        self.assertRegex(name, r"^ext-[bcdfghjklmnpqrstvwxz2456789]{5}$")
        self.assertEqual(created["metadata"]["generateName"], "ext-")
        self.assertEqual(created["metadata"]["managedFields"], [managed(
            "grafana-aggregator-tests", {"f:metadata": {"f:generateName": {}}, "f:spec": {".": {}, "f:host": {}}},
            api_version=GRAFANA)])
        self.assertEqual(self.get(f"{EXTERNALNAMES}/{name}").json(), created)

    def test_post_to_all_namespaces_not_allowed(self) -> None:
        """POST to the all-namespaces path is 405 MethodNotAllowed and creates nothing."""
        reply = self.request("POST", ALL_EXTERNALNAMES, external_name())
        self.assertEqual((reply.code, reply.json()["reason"], reply.json()["details"]), (405, "MethodNotAllowed", {}))
        self.assertNotStored(f"{EXTERNALNAMES}/ext1")

    def test_method_not_allowed_message(self) -> None:
        """The 405 Status has kube's message, which does not name the method and path."""
        reply = self.request("POST", ALL_EXTERNALNAMES, external_name())
        self.assertEqual((reply.code, reply.json()), (405, status(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})))



class UpdateTests(_WritesTestCase):
    """PUT of the main resource and of the status subresource."""

    def test_resource_version_required(self) -> None:
        """A PUT without metadata.resourceVersion is 422 Invalid."""
        self.create()
        reply = self.request("PUT", URL, apiservice(versionPriority=20))
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueInvalid", "metadata.resourceVersion", "Invalid value: 0: must be specified for an update")])))

    def test_stale_resource_version_conflicts(self) -> None:
        """A PUT with an old resourceVersion is 409 Conflict with kube's message."""
        self.create()
        body = apiservice(versionPriority=20)
        body["metadata"]["resourceVersion"] = "99"
        reply = self.request("PUT", URL, body)
        self.assertEqual((reply.code, reply.json()), (409, status(409, "Conflict", CONFLICT_MESSAGE, DETAILS)))
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 10)

    def test_name_mismatch(self) -> None:
        """A body whose name differs from the URL's is 400 BadRequest."""
        self.create()
        body = apiservice()
        body["metadata"]["resourceVersion"] = "1"
        reply = self.request("PUT", f"{APISERVICES}/v1.other.example.com", body)
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", "the name of the object (v1.foo.example.com) does not match the name on the URL "
                               "(v1.other.example.com)")))

    def test_missing_object(self) -> None:
        """A PUT of an object that does not exist is 404 NotFound (no create on update)."""
        body = apiservice()
        body["metadata"]["resourceVersion"] = "1"
        reply = self.request("PUT", URL, body)
        self.assertEqual((reply.code, reply.json()), (404, status(
            404, "NotFound", f'apiservices.apiregistration.k8s.io "{NAME}" not found', DETAILS)))
        self.assertNotStored()

    def test_status_kept_and_label_change_keeps_generation(self) -> None:
        """A label change through the main resource keeps generation, uid, creationTimestamp and the stored status."""
        created = self.create()
        self.clock.advance(60)
        body = apiservice()
        body["metadata"].update({"resourceVersion": "1", "labels": {"team": "a"}})
        body["status"] = {"conditions": [{"type": "Available", "status": "False", "reason": "Down"}]}
        reply = self.request("PUT", URL, body)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), {
            **created,
            "metadata": {**created["metadata"], "resourceVersion": "2", "labels": {"team": "a"},
                         "managedFields": [managed("grafana-aggregator-tests", {
                             "f:metadata": {"f:labels": {".": {}, "f:team": {}}}, **SPEC_FIELDS}, time=T1)]}})
        self.assertEqual(self.get().json(), reply.json())

    def test_spec_change_bumps_generation(self) -> None:
        """A spec change through PUT increments metadata.generation."""
        created = self.create()
        body = apiservice(versionPriority=20)
        body["metadata"]["resourceVersion"] = "1"
        reply = self.request("PUT", f"{URL}?fieldManager=kubectl-replace", body)
        self.assertEqual(reply.code, 200)
        updated = reply.json()
        self.assertEqual(updated["spec"]["versionPriority"], 20)
        self.assertEqual((updated["metadata"]["generation"], updated["metadata"]["resourceVersion"]), (2, "2"))
        self.assertEqual((updated["metadata"]["uid"], updated["metadata"]["creationTimestamp"]),
                         (created["metadata"]["uid"], T0))

    def test_changed_uid_is_invalid(self) -> None:
        """A PUT carrying another uid is 422 `metadata.uid: field is immutable`, as kube's BeforeUpdate only fills an
        empty uid."""
        self.create()
        body = apiservice()
        body["metadata"].update({"resourceVersion": "1", "uid": "0b6a3c4e-0000-4000-8000-000000000000"})
        reply = self.request("PUT", URL, body)
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueInvalid", "metadata.uid",
             'Invalid value: "0b6a3c4e-0000-4000-8000-000000000000": field is immutable')])))


    def test_status_update_changes_only_status(self) -> None:
        """PUT /status stores the new status, ignores spec changes and keeps generation."""
        created = self.create()
        self.clock.advance(60)
        body = apiservice(versionPriority=30)
        body["metadata"]["resourceVersion"] = "1"
        body["status"] = {"conditions": [{"type": "Available", "status": "False", "reason": "Down", "message": "m"}]}
        reply = self.request("PUT", f"{URL}/status", body)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), {
            **created,
            "metadata": {**created["metadata"], "resourceVersion": "2", "managedFields": [
                *created["metadata"]["managedFields"],
                managed("grafana-aggregator-tests", {"f:status": {"f:conditions": {'k:{"type":"Available"}': {
                    "f:message": {}, "f:reason": {}, "f:status": {}}}}}, time=T1, subresource="status")]},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "Down", "message": "m"}]}})
        self.assertEqual(self.get().json(), reply.json())

    def test_status_update_rejects_unknown_condition_status(self) -> None:
        """A condition status other than True, False or Unknown is 422 NotSupported."""
        self.create()
        body = apiservice()
        body["metadata"]["resourceVersion"] = "1"
        body["status"] = {"conditions": [{"type": "Available", "status": "Maybe"}]}
        reply = self.request("PUT", f"{URL}/status", body)
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueNotSupported", "status.conditions[0].status",
             'Unsupported value: "Maybe": supported values: "True", "False", "Unknown"')])))
        self.assertEqual(self.get().json()["status"], {"conditions": [LOCAL_CONDITION]})

    def test_external_name_update(self) -> None:
        """A PUT of an ExternalName changes spec.host and bumps generation."""
        created = self.create(EXTERNALNAMES, external_name())
        body = external_name(host="other.example.com", resourceVersion="1")
        reply = self.request("PUT", f"{EXTERNALNAMES}/ext1", body)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json()["spec"], {"host": "other.example.com"})
        self.assertEqual(reply.json()["metadata"]["generation"], 2)
        self.assertEqual(reply.json()["metadata"]["uid"], created["metadata"]["uid"])

    def test_external_name_has_no_status(self) -> None:
        """ExternalName has no status subresource: PUT /status is 404."""
        self.create(EXTERNALNAMES, external_name())
        reply = self.request("PUT", f"{EXTERNALNAMES}/ext1/status", external_name(resourceVersion="1"))
        self.assertEqual((reply.code, reply.json()), (404, status(
            404, "NotFound", "the server could not find the requested resource", {})))


class PatchTests(_WritesTestCase):
    """PATCH with merge and JSON patches."""

    def test_merge_patch_label(self) -> None:
        """`kubectl label`'s merge patch adds the label and a kubectl-label managedFields entry."""
        created = self.create()
        self.clock.advance(60)
        reply = self.request("PATCH", f"{URL}?fieldManager=kubectl-label", {"metadata": {"labels": {"k": "v"}}},
                             MERGE_PATCH)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), {
            **created,
            "metadata": {**created["metadata"], "resourceVersion": "2", "labels": {"k": "v"}, "managedFields": [
                *created["metadata"]["managedFields"],
                managed("kubectl-label", {"f:metadata": {"f:labels": {".": {}, "f:k": {}}}}, time=T1)]}})
        self.assertEqual(self.get().json(), reply.json())

    def test_merge_patch_edit(self) -> None:
        """`kubectl edit`'s merge patch changes the field, bumps generation and moves its ownership."""
        self.create()
        self.clock.advance(60)
        reply = self.request("PATCH", f"{URL}?fieldManager=kubectl-edit&fieldValidation=Strict",
                             {"spec": {"versionPriority": 12}}, MERGE_PATCH)
        self.assertEqual(reply.code, 200)
        updated = reply.json()
        self.assertEqual((updated["spec"]["versionPriority"], updated["metadata"]["generation"],
                          updated["metadata"]["resourceVersion"]), (12, 2, "2"))
        self.assertEqual(updated["metadata"]["managedFields"], [
            managed("grafana-aggregator-tests", {"f:spec": {".": {}, "f:group": {}, "f:groupPriorityMinimum": {},
                                                            "f:version": {}}}),
            managed("kubectl-edit", {"f:spec": {"f:versionPriority": {}}}, time=T1)])

    def test_json_patch(self) -> None:
        """A JSON patch replaces the field."""
        self.create()
        reply = self.request("PATCH", f"{URL}?fieldManager=kubectl-patch",
                             [{"op": "replace", "path": "/spec/versionPriority", "value": 13}], JSON_PATCH)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json()["spec"]["versionPriority"], 13)
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 13)

    def test_json_patch_failed_test(self) -> None:
        """A JSON patch whose `test` fails is 422 with kube's generic message and changes nothing."""
        self.create()
        reply = self.request("PATCH", URL, [{"op": "test", "path": "/spec/versionPriority", "value": 99},
                                            {"op": "replace", "path": "/spec/versionPriority", "value": 14}],
                             JSON_PATCH)
        self.assertEqual((reply.code, reply.json()), (422, status(
            422, "Invalid", "the server rejected our request due to an error in our request", {})))
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 10)

    def test_strategic_merge_patch(self) -> None:
        """A strategic merge patch of a built-in kind is applied (a custom resource's 415 is in tests.test_parity)."""
        self.create()
        reply = self.request("PATCH", URL, {"spec": {"versionPriority": 12}},
                             "application/strategic-merge-patch+json")
        self.assertEqual((reply.code, reply.json()["spec"]["versionPriority"]), (200, 12))

    def test_patch_missing_object(self) -> None:
        """A merge patch of an object that does not exist is 404."""
        reply = self.request("PATCH", URL, {"spec": {"versionPriority": 12}}, MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()), (404, status(
            404, "NotFound", f'apiservices.apiregistration.k8s.io "{NAME}" not found', DETAILS)))

    def test_merge_patch_stale_resource_version(self) -> None:
        """A merge patch carrying an old metadata.resourceVersion is 409 Conflict."""
        self.create()
        self.request("PATCH", URL, {"metadata": {"labels": {"k": "v"}}}, MERGE_PATCH)
        reply = self.request("PATCH", URL, {"metadata": {"resourceVersion": "1"}, "spec": {"versionPriority": 15}},
                             MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()), (409, status(409, "Conflict", CONFLICT_MESSAGE, DETAILS)))
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 10)

    def test_merge_patch_invalid_result(self) -> None:
        """A merge patch whose result fails validation is 422 and changes nothing."""
        self.create()
        reply = self.request("PATCH", URL, {"spec": {"versionPriority": 0}}, MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()), (422, invalid_apiservice(NAME, [
            ("FieldValueInvalid", "spec.versionPriority", "Invalid value: 0: must be positive and less than 1000")])))

    def test_merge_patch_cannot_change_status(self) -> None:
        """A merge patch of status through the main resource changes nothing and writes nothing."""
        created = self.create()
        reply = self.request("PATCH", URL, {"status": {"conditions": [{"type": "Available", "status": "False"}]}},
                             MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()), (200, created))

    def test_strict_unknown_field_in_patch(self) -> None:
        """A merge patch adding an unknown field with fieldValidation=Strict is 400 `strict decoding error`."""
        self.create()
        reply = self.request("PATCH", f"{URL}?fieldValidation=Strict", {"spec": {"bogus": 1}}, MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()), (400, status(
            400, "BadRequest", 'strict decoding error: unknown field "spec.bogus"')))

    def test_force_on_non_apply_patch(self) -> None:
        """force=true on a merge patch is 422 Invalid and changes nothing."""
        self.create()
        reply = self.request("PATCH", f"{URL}?force=true", {"spec": {"versionPriority": 15}}, MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()["reason"]), (422, "Invalid"))
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 10)

    def test_force_on_non_apply_patch_status(self) -> None:
        """The force error is kube's PatchOptions Invalid Status, with details and causes."""
        self.create()
        reply = self.request("PATCH", f"{URL}?force=true", {"spec": {"versionPriority": 15}}, MERGE_PATCH)
        self.assertEqual((reply.code, reply.json()), (422, status(
            422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for '
                            'non-apply patch',
            {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{
                "reason": "FieldValueForbidden", "message": "Forbidden: may not be specified for non-apply patch",
                "field": "force"}]})))


    def test_dry_run_patch_stores_nothing(self) -> None:
        """A dryRun=All merge patch answers the patched object and stores nothing."""
        created = self.create()
        reply = self.request("PATCH", f"{URL}?dryRun=All", {"spec": {"versionPriority": 16}}, MERGE_PATCH)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json()["spec"]["versionPriority"], 16)
        self.assertEqual(self.get().json(), created)
        self.assertEqual(self.store.current_resource_version(), 1)


APPLY = f"{URL}?fieldManager=kubectl&fieldValidation=Strict&force=false"


class ServerSideApplyTests(_WritesTestCase):
    """PATCH with application/apply-patch+yaml (`kubectl apply --server-side`)."""

    def config(self, **spec: Any) -> dict[str, Any]:
        """The applied configuration: the default APIService with labels app and tier."""
        body = apiservice(**spec)
        body["metadata"]["labels"] = {"app": "x", "tier": "t"}
        return body

    def applied(self, uid: str, resource_version: str = "1", version_priority: int = 10,
                labels: dict[str, str] | None = None, entries: list[dict[str, Any]] | None = None,
                generation: int = 1) -> dict[str, Any]:
        """The stored object after applies of `config`."""
        labels = {"app": "x", "tier": "t"} if labels is None else labels
        body = apiservice(versionPriority=version_priority)
        body["metadata"] = {"name": NAME, "labels": labels, "uid": uid, "creationTimestamp": T0,
                            "generation": generation, "resourceVersion": resource_version,
                            "managedFields": entries if entries is not None else [managed(
                                "kubectl", {"f:metadata": {"f:labels": {f"f:{k}": {} for k in labels}},
                                            **APPLIED_SPEC_FIELDS}, operation="Apply")]}
        body["status"] = {"conditions": [LOCAL_CONDITION]}
        return body

    def test_apply_creates(self) -> None:
        """Applying a missing object creates it (201) with an Apply managedFields entry."""
        reply = self.request("PATCH", APPLY, self.config(), APPLY_PATCH, KUBECTL_AGENT)
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.json(), self.applied(self.assertUID(reply.json())))
        self.assertEqual(self.get().json(), reply.json())

    def test_reapply_is_noop(self) -> None:
        """Applying the same configuration again answers 200 with the same resourceVersion and writes nothing."""
        first = self.request("PATCH", APPLY, self.config(), APPLY_PATCH).json()
        self.clock.advance(60)
        reply = self.request("PATCH", APPLY, self.config(), APPLY_PATCH)
        self.assertEqual((reply.code, reply.json()), (200, first))
        self.assertEqual(self.store.current_resource_version(), 1)

    def test_conflict_with_other_manager(self) -> None:
        """Applying a value for a field another manager set is 409 Conflict with a FieldManagerConflict cause."""
        self.request("PATCH", APPLY, self.config(), APPLY_PATCH)
        self.request("PATCH", f"{URL}?fieldManager=kubectl-edit", {"spec": {"versionPriority": 12}}, MERGE_PATCH)
        reply = self.request("PATCH", APPLY, self.config(versionPriority=20), APPLY_PATCH)
        self.assertEqual(reply.code, 409)
        body = reply.json()
        self.assertEqual((body["reason"], body["message"]), (
            "Conflict", 'Apply failed with 1 conflict: conflict with "kubectl-edit" using apiregistration.k8s.io/v1: '
                        ".spec.versionPriority"))
        self.assertEqual(body["details"]["causes"], [{
            "reason": "FieldManagerConflict", "message": 'conflict with "kubectl-edit" using apiregistration.k8s.io/v1',
            "field": ".spec.versionPriority"}])
        self.assertEqual(self.get().json()["spec"]["versionPriority"], 12)

    def test_conflict_status_matches_kube(self) -> None:
        """The apply conflict Status is kube's NewApplyConflict: details hold only the causes."""
        self.request("PATCH", APPLY, self.config(), APPLY_PATCH)
        self.request("PATCH", f"{URL}?fieldManager=kubectl-edit", {"spec": {"versionPriority": 12}}, MERGE_PATCH)
        reply = self.request("PATCH", APPLY, self.config(versionPriority=20), APPLY_PATCH)
        self.assertEqual((reply.code, reply.json()), (409, status(
            409, "Conflict", 'Apply failed with 1 conflict: conflict with "kubectl-edit" using '
                             "apiregistration.k8s.io/v1: .spec.versionPriority",
            {"causes": [{"reason": "FieldManagerConflict",
                         "message": 'conflict with "kubectl-edit" using apiregistration.k8s.io/v1',
                         "field": ".spec.versionPriority"}]})))


    def test_force_takes_ownership(self) -> None:
        """force=true applies over the conflict and takes the field from the other manager."""
        uid = self.assertUID(self.request("PATCH", APPLY, self.config(), APPLY_PATCH).json())
        self.clock.advance(60)
        self.request("PATCH", f"{URL}?fieldManager=kubectl-edit", {"spec": {"versionPriority": 12}}, MERGE_PATCH)
        self.clock.advance(60)
        reply = self.request("PATCH", f"{URL}?fieldManager=kubectl&force=true", self.config(versionPriority=20),
                             APPLY_PATCH)
        self.assertEqual(reply.code, 200)
        expected = self.applied(uid, resource_version="3", version_priority=20, generation=3)
        expected["metadata"]["managedFields"][0]["time"] = T2
        self.assertEqual(reply.json(), expected)

    def test_field_manager_required(self) -> None:
        """An apply patch without fieldManager is 422 Invalid and creates nothing."""
        reply = self.request("PATCH", f"{URL}?force=false", self.config(), APPLY_PATCH)
        body = reply.json()
        self.assertEqual((reply.code, body["reason"], body["message"]), (
            422, "Invalid",
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'))
        self.assertNotStored()

    def test_field_manager_required_details(self) -> None:
        """The missing fieldManager Status carries kube's PatchOptions details and cause."""
        reply = self.request("PATCH", f"{URL}?force=false", self.config(), APPLY_PATCH)
        self.assertEqual((reply.code, reply.json()), (422, status(
            422, "Invalid",
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
            {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{
                "reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
                "field": "fieldManager"}]})))


    def test_removed_field_is_removed(self) -> None:
        """A field dropped from the applied configuration is removed from the object."""
        uid = self.assertUID(self.request("PATCH", APPLY, self.config(), APPLY_PATCH).json())
        config = self.config()
        config["metadata"]["labels"] = {"app": "x"}
        reply = self.request("PATCH", APPLY, config, APPLY_PATCH)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), self.applied(uid, resource_version="2", labels={"app": "x"}))

    def test_apply_status(self) -> None:
        """An apply to /status sets the condition, keeps its lastTransitionTime and records a status manager."""
        created = self.create()
        self.clock.advance(60)
        config = {"apiVersion": APIREG, "kind": "APIService", "metadata": {"name": NAME},
                  "status": {"conditions": [{"type": "Available", "status": "False", "reason": "Down",
                                             "message": "m"}]}}
        reply = self.request("PATCH", f"{URL}/status?fieldManager=controller&force=true", config, APPLY_PATCH)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), {
            **created,
            "metadata": {**created["metadata"], "resourceVersion": "2", "managedFields": [
                managed("controller", {"f:status": {"f:conditions": {'k:{"type":"Available"}': {
                    ".": {}, "f:message": {}, "f:reason": {}, "f:status": {}, "f:type": {}}}}},
                    time=T1, operation="Apply", subresource="status"),
                *created["metadata"]["managedFields"]]},
            "status": {"conditions": [{"type": "Available", "status": "False", "lastTransitionTime": T0,
                                       "reason": "Down", "message": "m"}]}})

    def test_apply_dry_run_creates_nothing(self) -> None:
        """A dryRun=All apply of a missing object answers 201 and stores nothing."""
        reply = self.request("PATCH", f"{APPLY}&dryRun=All", self.config(), APPLY_PATCH)
        self.assertEqual(reply.code, 201)
        expected = self.applied(self.assertUID(reply.json()))
        del expected["metadata"]["resourceVersion"]
        self.assertEqual(reply.json(), expected)
        self.assertNotStored()

    def test_apply_external_name(self) -> None:
        """An apply creates a namespaced ExternalName in the URL's namespace."""
        url = f"{EXTERNALNAMES}/ext1?fieldManager=kubectl&fieldValidation=Strict&force=false"
        config = external_name(namespace="grafana")
        reply = self.request("PATCH", url, config, APPLY_PATCH)
        self.assertEqual(reply.code, 201)
        self.assertEqual(reply.json(), {
            "apiVersion": GRAFANA, "kind": "ExternalName",
            "metadata": {"name": "ext1", "namespace": "grafana", "uid": self.assertUID(reply.json()),
                         "creationTimestamp": T0, "generation": 1, "resourceVersion": "1",
                         "managedFields": [managed("kubectl", {"f:spec": {"f:host": {}}}, operation="Apply",
                                                   api_version=GRAFANA)]},
            "spec": {"host": "backend.example.com"}})


class DeleteTests(_WritesTestCase):
    """DELETE of one object."""

    def success(self, uid: str, name: str = NAME, group: str = "apiregistration.k8s.io",
                kind: str = "apiservices") -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": group, "kind": kind, "uid": uid}}

    def test_delete_returns_success_status(self) -> None:
        """A DELETE answers a Success Status naming the object and its uid, and removes it."""
        uid = self.assertUID(self.create())
        reply = self.request("DELETE", URL, content_type=None)
        self.assertEqual((reply.code, reply.json()), (200, self.success(uid)))
        self.assertNotStored()

    def test_kubectl_delete_body(self) -> None:
        """kubectl's body `{"propagationPolicy":"Background"}`, without kind, is accepted."""
        uid = self.assertUID(self.create())
        reply = self.request("DELETE", URL, {"propagationPolicy": "Background"})
        self.assertEqual((reply.code, reply.json()), (200, self.success(uid)))
        self.assertNotStored()

    def test_invalid_propagation_policy(self) -> None:
        """An unknown propagationPolicy is 422 Invalid and deletes nothing."""
        self.create()
        reply = self.request("DELETE", URL, {"propagationPolicy": "Sideways"})
        body = reply.json()
        self.assertEqual((reply.code, body["reason"], body["message"]), (
            422, "Invalid", 'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                            '"Sideways": supported values: "Foreground", "Background", "Orphan", "nil"'))
        self.assertEqual(self.get().code, 200)

    def test_invalid_propagation_policy_details(self) -> None:
        """The invalid propagationPolicy Status carries kube's DeleteOptions details and cause."""
        self.create()
        reply = self.request("DELETE", URL, {"propagationPolicy": "Sideways"})
        self.assertEqual((reply.code, reply.json()), (422, status(
            422, "Invalid", 'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                            '"Sideways": supported values: "Foreground", "Background", "Orphan", "nil"',
            {"group": "meta.k8s.io", "kind": "DeleteOptions", "causes": [{
                "reason": "FieldValueNotSupported",
                "message": 'Unsupported value: "Sideways": supported values: "Foreground", "Background", "Orphan", '
                           '"nil"',
                "field": "propagationPolicy"}]})))


    def test_uid_precondition_mismatch(self) -> None:
        """A uid precondition that does not match is 409 Conflict and deletes nothing."""
        uid = self.assertUID(self.create())
        reply = self.request("DELETE", URL, {"preconditions": {"uid": "other"}})
        self.assertEqual((reply.code, reply.json()), (409, status(
            409, "Conflict", f'Operation cannot be fulfilled on apiservices.apiregistration.k8s.io "{NAME}": '
                             f"Precondition failed: UID in precondition: other, UID in object meta: {uid}", DETAILS)))
        self.assertEqual(self.get().code, 200)

    def test_resource_version_precondition_mismatch(self) -> None:
        """A resourceVersion precondition that does not match is 409 Conflict and deletes nothing."""
        self.create()
        reply = self.request("DELETE", URL, {"preconditions": {"resourceVersion": "99"}})
        self.assertEqual((reply.code, reply.json()), (409, status(
            409, "Conflict", f'Operation cannot be fulfilled on apiservices.apiregistration.k8s.io "{NAME}": '
                             "Precondition failed: ResourceVersion in precondition: 99, ResourceVersion in object "
                             "meta: 1", DETAILS)))
        self.assertEqual(self.get().code, 200)

    def test_matching_preconditions(self) -> None:
        """Preconditions that match let the delete through."""
        uid = self.assertUID(self.create())
        reply = self.request("DELETE", URL, {"preconditions": {"uid": uid, "resourceVersion": "1"}})
        self.assertEqual((reply.code, reply.json()), (200, self.success(uid)))
        self.assertNotStored()

    def test_delete_missing(self) -> None:
        """A DELETE of an object that does not exist is 404 NotFound."""
        reply = self.request("DELETE", URL, {"propagationPolicy": "Background"})
        self.assertEqual((reply.code, reply.json()), (404, status(
            404, "NotFound", f'apiservices.apiregistration.k8s.io "{NAME}" not found', DETAILS)))

    def test_dry_run_keeps_object(self) -> None:
        """dryRun=All, in the query or in DeleteOptions, answers Success and keeps the object."""
        created = self.create()
        uid = self.assertUID(created)
        for url, body in [(f"{URL}?dryRun=All", {"propagationPolicy": "Background"}), (URL, {"dryRun": ["All"]})]:
            reply = self.request("DELETE", url, body)
            self.assertEqual((reply.code, reply.json()), (200, self.success(uid)))
        self.assertEqual(self.get().json(), created)

    def test_dry_run_checks_resource_version_precondition(self) -> None:
        """A dry-run delete checks the resourceVersion precondition as a real one does (kube's DryRunnableStorage)."""
        self.create()
        reply = self.request("DELETE", f"{URL}?dryRun=All", {"preconditions": {"resourceVersion": "99"}})
        self.assertEqual(reply.code, 409)


    def test_delete_status_not_allowed(self) -> None:
        """DELETE on the status subresource is 405 MethodNotAllowed and deletes nothing."""
        self.create()
        reply = self.request("DELETE", f"{URL}/status", content_type=None)
        self.assertEqual((reply.code, reply.json()["reason"]), (405, "MethodNotAllowed"))
        self.assertEqual(self.get().code, 200)

    def test_delete_external_name(self) -> None:
        """A DELETE of an ExternalName names its group and plural in the Success Status."""
        uid = self.assertUID(self.create(EXTERNALNAMES, external_name()))
        reply = self.request("DELETE", f"{EXTERNALNAMES}/ext1", {"propagationPolicy": "Background"})
        self.assertEqual((reply.code, reply.json()),
                         (200, self.success(uid, "ext1", "service.grafana.app", "externalnames")))
        self.assertNotStored(f"{EXTERNALNAMES}/ext1")


class DeleteCollectionTests(_WritesTestCase):
    """DELETE of a collection."""

    def test_label_selector(self) -> None:
        """Only objects matching the labelSelector are deleted, and the answer lists them."""
        dev_a = self.create(EXTERNALNAMES, external_name("a", labels={"env": "dev"}))
        prod = self.create(EXTERNALNAMES, external_name("b", labels={"env": "prod"}))
        dev_c = self.create(EXTERNALNAMES, external_name("c", labels={"env": "dev"}))
        reply = self.request("DELETE", f"{EXTERNALNAMES}?labelSelector=env%3Ddev", content_type=None)
        self.assertEqual((reply.code, reply.json()), (200, {
            "kind": "ExternalNameList", "apiVersion": GRAFANA, "metadata": {"resourceVersion": "5"},
            "items": [dev_a, dev_c]}))
        remaining = self.get(EXTERNALNAMES).json()
        self.assertEqual(remaining["items"], [prod])

    def test_dry_run(self) -> None:
        """A dryRun=All deletecollection lists what it would delete and deletes nothing."""
        created = self.create()
        reply = self.request("DELETE", f"{APISERVICES}?dryRun=All", content_type=None)
        self.assertEqual((reply.code, reply.json()), (200, {
            "kind": "APIServiceList", "apiVersion": APIREG, "metadata": {"resourceVersion": "1"},
            "items": [created]}))
        self.assertEqual(self.get().json(), created)


class KubectlRoundTripTests(_WritesTestCase):
    """The request sequences of kubectl-wire.md §3, end to end."""

    def test_client_side_apply(self) -> None:
        """`kubectl apply` creates with the last-applied annotation, then sends a merge patch of the change."""
        config = apiservice()
        first = json.dumps({**config, "metadata": {"annotations": {}, "name": NAME}}, separators=(",", ":"),
                           sort_keys=True) + "\n"
        body = apiservice()
        body["metadata"]["annotations"] = {LAST_APPLIED: first}
        query = "fieldManager=kubectl-client-side-apply&fieldValidation=Strict"
        self.assertEqual(self.request("GET", URL, content_type=None, agent=KUBECTL_AGENT).code, 404)
        created = self.request("POST", f"{APISERVICES}?{query}", body, agent=KUBECTL_AGENT)
        self.assertEqual(created.code, 201)
        self.assertEqual(created.json()["metadata"]["annotations"], {LAST_APPLIED: first})
        self.assertEqual(created.json()["metadata"]["managedFields"], [managed(
            "kubectl-client-side-apply",
            {"f:metadata": {"f:annotations": {".": {}, f"f:{LAST_APPLIED}": {}}}, **SPEC_FIELDS})])
        self.clock.advance(60)
        second = first.replace('"versionPriority":10', '"versionPriority":20')
        self.assertEqual(self.request("GET", URL, content_type=None, agent=KUBECTL_AGENT).code, 200)
        reply = self.request("PATCH", f"{URL}?{query}", {"metadata": {"annotations": {LAST_APPLIED: second}},
                                                          "spec": {"versionPriority": 20}},
                             MERGE_PATCH, KUBECTL_AGENT)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), {
            **created.json(),
            "metadata": {**created.json()["metadata"], "annotations": {LAST_APPLIED: second}, "generation": 2,
                         "resourceVersion": "2", "managedFields": [managed(
                             "kubectl-client-side-apply",
                             {"f:metadata": {"f:annotations": {".": {}, f"f:{LAST_APPLIED}": {}}}, **SPEC_FIELDS},
                             time=T1)]},
            "spec": {**created.json()["spec"], "versionPriority": 20}})

    def test_replace(self) -> None:
        """`kubectl replace` GETs the object and PUTs the file with the fetched resourceVersion."""
        created = self.create(f"{APISERVICES}?fieldManager=kubectl-create&fieldValidation=Strict",
                              agent=KUBECTL_AGENT)
        self.clock.advance(60)
        fetched = self.request("GET", URL, content_type=None, agent=KUBECTL_AGENT).json()
        body = apiservice(versionPriority=20)
        body["metadata"]["resourceVersion"] = fetched["metadata"]["resourceVersion"]
        reply = self.request("PUT", f"{URL}?fieldManager=kubectl-replace&fieldValidation=Strict", body,
                             agent=KUBECTL_AGENT)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), {
            **created,
            "metadata": {**created["metadata"], "generation": 2, "resourceVersion": "2", "managedFields": [
                managed("kubectl-create", {"f:spec": {".": {}, "f:group": {}, "f:groupPriorityMinimum": {},
                                                      "f:version": {}}}),
                managed("kubectl-replace", {"f:spec": {"f:versionPriority": {}}}, time=T1)]},
            "spec": {**created["spec"], "versionPriority": 20}})
        stale = self.request("PUT", f"{URL}?fieldManager=kubectl-replace&fieldValidation=Strict", body,
                             agent=KUBECTL_AGENT)
        self.assertEqual((stale.code, stale.json()), (409, status(409, "Conflict", CONFLICT_MESSAGE, DETAILS)))

    def test_server_side_apply_twice(self) -> None:
        """`kubectl apply --server-side` twice: 201 for the create, then 200 with nothing written."""
        config = apiservice()
        first = self.request("PATCH", APPLY, config, APPLY_PATCH, KUBECTL_AGENT)
        self.assertEqual(first.code, 201)
        self.clock.advance(60)
        second = self.request("PATCH", APPLY, config, APPLY_PATCH, KUBECTL_AGENT)
        self.assertEqual((second.code, second.json()), (200, first.json()))
        self.assertEqual(second.json()["metadata"]["managedFields"],
                         [managed("kubectl", APPLIED_SPEC_FIELDS, operation="Apply")])
        self.assertEqual(self.store.current_resource_version(), 1)
