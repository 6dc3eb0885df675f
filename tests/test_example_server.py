# -*- test-case-name: tests.test_example_server -*-
"""The example.grafana.app/v0alpha1 backend: its tree through StubTreq, its options, and its wired service."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from treq.testing import StubTreq
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from grafana_aggregator import __version__
from grafana_aggregator.apimachinery.status import method_not_allowed
from grafana_aggregator.config.settings import RequestHeaderSettings
from grafana_aggregator.example.server import (
    DUMMY_NAMES,
    build_example_root,
    build_example_tree,
    dummy_uid,
)
from grafana_aggregator.example.tap import (
    RUNTIME_CONFIG_MALFORMED,
    RUNTIME_CONFIG_MISSING,
    ExampleSettings,
    Material,
    Options,
    build_authenticator,
    make_service,
)
from grafana_aggregator.web.health import HealthChecks
from grafana_aggregator.apimachinery.openapi import V2_PROTOBUF_ACCEPT, V2_PROTOBUF_CONTENT_TYPE, decode_openapi_v2_protobuf
from grafana_aggregator.web.site import build_site
from grafana_aggregator.tls.certificates import load_key_pair

from .support import CertificateAuthority, expired

BASE = "https://example.test"
GV = "/apis/example.grafana.app/v0alpha1"
STARTED = 1_700_000_000.0
STARTED_TEXT = "2023-11-14T22:13:20Z"
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
                "reason": "Unauthorized", "code": 401}
USER = {"X-Remote-User": "alice"}


def material(folder: str, cas: Sequence[x509.Certificate]) -> Material:
    """A Material with a throw-away serving pair and the given request-header CAs."""
    cert, key = CertificateAuthority("serving-ca").server().write(folder, "server")
    return Material(load_key_pair(cert, key), tuple(cas))


class ExampleServerTests(SynchronousTestCase):
    """The served tree, behind request-header authentication, with a front-proxy certificate injected."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority("front-proxy-ca")
        self.proxy = self.ca.issue("front-proxy-client")
        self.chain: list[x509.Certificate] = [self.proxy.certificate]
        self.clock = MemoryReactorClock()
        self.clock.advance(STARTED)
        self.client = self.build(RequestHeaderSettings())

    def build(self, requestheader: RequestHeaderSettings) -> StubTreq:
        health = HealthChecks()
        health.add("ping", lambda: None)
        started = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)
        tree = build_example_tree(health=health, clock=self.clock, started=started)
        folder = os.path.abspath(self.mktemp())
        authenticator = build_authenticator(ExampleSettings(requestheader=requestheader),
                                            material(folder, [self.ca.certificate]))
        root = build_example_root(tree, authenticator, peer_certificates=lambda request: self.chain)
        return StubTreq(build_site(root).resource)

    def request(self, method: str, path: str, headers: dict[str, Any] | None = None) -> Any:
        return self.successResultOf(self.client.request(method, BASE + path, headers=headers or {}))

    def get_json(self, path: str, headers: dict[str, Any] | None = None) -> tuple[int, Any]:
        response = self.request("GET", path, {**USER, **(headers or {})})
        return response.code, self.successResultOf(self.client.json_content(response))

    def get_text(self, path: str, headers: dict[str, Any] | None = None) -> tuple[int, str]:
        response = self.request("GET", path, headers)
        return response.code, self.successResultOf(self.client.text_content(response))

    def test_apis_legacy(self) -> None:
        """`/apis` lists example.grafana.app with v0alpha1 preferred."""
        version = {"groupVersion": "example.grafana.app/v0alpha1", "version": "v0alpha1"}
        self.assertEqual(self.get_json("/apis"), (200, {
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{"name": "example.grafana.app", "versions": [version], "preferredVersion": version}]}))

    def test_apis_aggregated_v2(self) -> None:
        """Asked for apidiscovery v2, `/apis` is an APIGroupDiscoveryList with dummy, dummy/sub and runtime."""
        response = self.request("GET", "/apis", {**USER, "Accept": AGGREGATED_V2 + ",application/json"})
        self.assertEqual(response.headers.getRawHeaders("content-type"), [AGGREGATED_V2])
        body = self.successResultOf(self.client.json_content(response))
        kind = {"group": "example.grafana.app", "version": "v0alpha1"}
        self.assertEqual(body, {
            "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": [{"metadata": {"name": "example.grafana.app"}, "versions": [{
                "version": "v0alpha1", "freshness": "Current",
                "resources": [
                    {"resource": "dummy", "responseKind": {**kind, "kind": "DummyResource"}, "scope": "Namespaced",
                     "singularResource": "dummy", "verbs": ["get", "list"],
                     "subresources": [{"subresource": "sub", "verbs": ["get"],
                                       "responseKind": {**kind, "kind": "DummySubresource"}}]},
                    {"resource": "runtime", "responseKind": {**kind, "kind": "RuntimeInfo"}, "scope": "Cluster",
                     "singularResource": "runtime", "verbs": ["list"]},
                ]}]}]})

    def test_apis_aggregated_v2beta1(self) -> None:
        """apidiscovery v2beta1 is offered too, for kubectl 1.27 and later clients that ask for it first."""
        response = self.request("GET", "/apis", {**USER, "Accept": AGGREGATED_V2BETA1})
        self.assertEqual(response.headers.getRawHeaders("content-type"), [AGGREGATED_V2BETA1])
        body = self.successResultOf(self.client.json_content(response))
        self.assertEqual((body["apiVersion"], body["items"][0]["metadata"]["name"]),
                         ("apidiscovery.k8s.io/v2beta1", "example.grafana.app"))

    def test_api_group(self) -> None:
        """`/apis/example.grafana.app` is the APIGroup; other groups are 404."""
        code, body = self.get_json("/apis/example.grafana.app")
        self.assertEqual((code, body["kind"], body["preferredVersion"]["version"]), (200, "APIGroup", "v0alpha1"))
        self.assertEqual(self.get_json("/apis/query.grafana.app")[0], 404)
        self.assertEqual(self.get_json("/apis/example.grafana.app/v1")[0], 404)

    def test_resource_list(self) -> None:
        """The APIResourceList names dummy [get list], dummy/sub [get] and the cluster-scoped runtime [list]."""
        self.assertEqual(self.get_json(GV), (200, {
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "example.grafana.app/v0alpha1",
            "resources": [
                {"name": "dummy", "singularName": "dummy", "namespaced": True, "kind": "DummyResource",
                 "verbs": ["get", "list"]},
                {"name": "dummy/sub", "singularName": "", "namespaced": True, "kind": "DummySubresource",
                 "verbs": ["get"]},
                {"name": "runtime", "singularName": "runtime", "namespaced": False, "kind": "RuntimeInfo",
                 "verbs": ["list"]},
            ]}))

    def test_dummy_list(self) -> None:
        """The list holds test1..test3 in the asked namespace, with stable uids, the start time and their labels."""
        code, body = self.get_json(GV + "/namespaces/team-a/dummy")
        self.assertEqual((code, body["kind"], body["apiVersion"], body["metadata"]),
                         (200, "DummyResourceList", "example.grafana.app/v0alpha1", {"resourceVersion": "1"}))
        self.assertEqual([item["metadata"]["name"] for item in body["items"]], list(DUMMY_NAMES))
        self.assertEqual(body["items"][1], {
            "kind": "DummyResource", "apiVersion": "example.grafana.app/v0alpha1",
            "metadata": {"name": "test2", "namespace": "team-a", "uid": dummy_uid("test2"), "resourceVersion": "1",
                         "creationTimestamp": STARTED_TEXT, "labels": {"app": "dummy", "name": "test2"}},
            "spec": "dummy: test2"})
        self.assertEqual(len({item["metadata"]["uid"] for item in body["items"]}), 3)
        self.assertEqual(self.get_json(GV + "/namespaces/other/dummy")[1]["items"][1]["metadata"]["uid"],
                         dummy_uid("test2"))

    def test_dummy_list_all_namespaces(self) -> None:
        """The all-namespaces list answers the objects of the default namespace."""
        code, body = self.get_json(GV + "/dummy")
        self.assertEqual((code, {item["metadata"]["namespace"] for item in body["items"]}), (200, {"default"}))

    def test_dummy_get(self) -> None:
        """One dummy object by name."""
        code, body = self.get_json(GV + "/namespaces/default/dummy/test3")
        self.assertEqual((code, body["spec"], body["metadata"]["namespace"]), (200, "dummy: test3", "default"))

    def test_dummy_get_unknown(self) -> None:
        """Another name is the 404 Status `dummy not found`."""
        self.assertEqual(self.get_json(GV + "/namespaces/default/dummy/test4"), (404, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "dummy not found",
            "reason": "NotFound", "details": {"name": "test4", "group": "example.grafana.app", "kind": "dummy"},
            "code": 404}))
        self.assertEqual(self.get_json(GV + "/namespaces/default/dummy/test4/sub")[0], 404)

    def test_sub_echoes_identity(self) -> None:
        """`dummy/<name>/sub` answers OK with the user, uid, groups and extra the front proxy asserted."""
        code, body = self.get_json(GV + "/namespaces/ns1/dummy/test1/sub", {
            "X-Remote-User": "alice", "X-Remote-Uid": "42", "X-Remote-Group": ["dev", "ops"],
            "X-Remote-Extra-Scopes": ["a", "b"], "X-Remote-Extra-Foo%2Fbar": "v"})
        self.assertEqual((code, body), (200, {
            "kind": "DummySubresource", "apiVersion": "example.grafana.app/v0alpha1", "status": "OK",
            "info": "subresource sub of dummy ns1/test1",
            "identity": {"user": "alice", "uid": "42", "groups": ["dev", "ops", "system:authenticated"],
                         "extra": {"scopes": ["a", "b"], "foo/bar": ["v"]}}}))

    def test_configured_header_names(self) -> None:
        """The user comes from the configured username header, not X-Remote-User."""
        self.client = self.build(RequestHeaderSettings(username_headers=("X-Proxy-User",)))
        code, body = self.get_json(GV + "/namespaces/ns1/dummy/test1/sub", {"X-Proxy-User": "bob"})
        self.assertEqual((code, body["identity"]["user"]), (200, "bob"))

    def test_runtime(self) -> None:
        """`runtime` is one RuntimeInfo object describing this process, named after the server, created at its start."""
        code, body = self.get_json(GV + "/runtime")
        self.assertEqual((code, body["kind"], body["apiVersion"], body["startupTime"]),
                         (200, "RuntimeInfo", "example.grafana.app/v0alpha1", int(STARTED * 1000)))
        self.assertEqual(set(body), {"kind", "apiVersion", "metadata", "startupTime", "buildVersion", "buildCommit",
                                     "enterpriseBuildCommit", "buildBranch", "buildStamp", "enterprise", "packaging"})
        self.assertEqual(body["metadata"], {"name": "example-apiserver", "creationTimestamp": STARTED_TEXT})
        self.assertEqual(self.get_json(GV + "/runtime/x")[0], 404)
        self.assertEqual(self.get_json(GV + "/namespaces/ns1/runtime")[0], 404)

    def test_custom_routes(self) -> None:
        """aaa, bbb and namespaces/<ns>/ccc answer text; other methods are 405."""
        self.assertEqual(self.get_text(GV + "/aaa", USER), (200, "Root level handler (aaa)"))
        self.assertEqual(self.get_text(GV + "/bbb", USER), (200, "Root level handler (bbb)"))
        self.assertEqual(self.get_text(GV + "/namespaces/team-a/ccc", USER), (200, "Custom namespace route ccc: team-a"))
        response = self.request("GET", GV + "/aaa", USER)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        for method, path in (("POST", "/aaa"), ("DELETE", "/bbb"), ("PUT", "/namespaces/team-a/ccc")):
            self.assertEqual(self.request(method, GV + path, USER).code, 405, (method, path))

    def test_writes_are_405(self) -> None:
        """Every write to dummy, dummy/sub and runtime is the MethodNotAllowed Status."""
        cases = [("POST", "/namespaces/ns/dummy"), ("DELETE", "/namespaces/ns/dummy"),
                 ("PUT", "/namespaces/ns/dummy/test1"), ("PATCH", "/namespaces/ns/dummy/test1"),
                 ("DELETE", "/namespaces/ns/dummy/test1"), ("POST", "/namespaces/ns/dummy/test1/sub"),
                 ("POST", "/runtime"), ("POST", "")]
        for method, path in cases:
            response = self.request(method, GV + path, USER)
            body = self.successResultOf(self.client.json_content(response))
            self.assertEqual((response.code, body["reason"]), (405, "MethodNotAllowed"), (method, path))
        body = self.successResultOf(self.client.json_content(self.request("POST", GV + "/namespaces/ns/dummy", USER)))
        self.assertEqual(body, method_not_allowed().to_status())

    def test_watch_is_405(self) -> None:
        """No kind supports watch: kube's MethodNotSupported Status."""
        code, body = self.get_json(GV + "/namespaces/ns/dummy?watch=true")
        self.assertEqual((code, body["reason"], body["message"]),
                         (405, "MethodNotAllowed", 'watch is not supported on resources of kind "dummy.example.grafana.app"'))
        self.assertEqual(self.get_json(GV + "/namespaces/ns/dummy?watch=false")[0], 200)

    def test_dummy_table(self) -> None:
        """`as=Table` lists dummy objects with Name and Age cells, as `kubectl get dummy` prints them."""
        self.clock.advance(300)
        code, body = self.get_json(GV + "/namespaces/ns/dummy", {"Accept": TABLE})
        self.assertEqual((code, body["kind"], body["apiVersion"]), (200, "Table", "meta.k8s.io/v1"))
        self.assertEqual([c["name"] for c in body["columnDefinitions"]], ["Name", "Age"])
        self.assertEqual([row["cells"] for row in body["rows"]], [["test1", "5m"], ["test2", "5m"], ["test3", "5m"]])
        self.assertEqual(body["rows"][0]["object"]["kind"], "PartialObjectMetadata")
        code, body = self.get_json(GV + "/namespaces/ns/dummy/test2?includeObject=Object", {"Accept": TABLE})
        self.assertEqual((code, body["rows"][0]["cells"], body["rows"][0]["object"]["spec"]),
                         (200, ["test2", "5m"], "dummy: test2"))

    def test_runtime_table(self) -> None:
        """`kubectl get runtime` gets a one-row Table: the server's name, its version and its age (uptime)."""
        self.clock.advance(3 * 3600 + 300)
        code, body = self.get_json(GV + "/runtime?limit=500", {"Accept": TABLE + ",application/json"})
        self.assertEqual((code, body["kind"], body["apiVersion"], body["metadata"]), (200, "Table", "meta.k8s.io/v1", {}))
        self.assertEqual([(c["name"], c["priority"]) for c in body["columnDefinitions"]],
                         [("Name", 0), ("Version", 0), ("Age", 0), ("Commit", 1), ("Packaging", 1)])
        self.assertEqual([row["cells"] for row in body["rows"]],
                         [["example-apiserver", __version__, "3h5m", "", "python"]])
        self.assertEqual(body["rows"][0]["object"], {
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"name": "example-apiserver", "creationTimestamp": STARTED_TEXT}})
        code, body = self.get_json(GV + "/runtime?includeObject=Object", {"Accept": TABLE})
        self.assertEqual((code, body["rows"][0]["object"]["kind"], body["rows"][0]["object"]["startupTime"]),
                         (200, "RuntimeInfo", int(STARTED * 1000)))
        code, body = self.get_json(GV + "/runtime?includeObject=Everything", {"Accept": TABLE})
        self.assertEqual((code, body["reason"], body["message"]),
                         (400, "BadRequest", 'includeObject: Unsupported value: "Everything"'))

    def test_yaml(self) -> None:
        """A YAML Accept gets YAML."""
        response = self.request("GET", GV + "/namespaces/ns/dummy/test1", {**USER, "Accept": "application/yaml"})
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/yaml"])
        self.assertIn("spec: 'dummy: test1'", self.successResultOf(self.client.text_content(response)))

    def test_unknown_paths_are_404(self) -> None:
        """Paths outside the served ones are the NotFound Status."""
        for path in ("/nothing", GV + "/widgets", GV + "/namespaces/ns", GV + "/namespaces/ns/dummy/test1/other",
                     GV + "/dummy/test1"):
            self.assertEqual(self.get_json(path)[0], 404, path)

    def test_openapi(self) -> None:
        """OpenAPI v3 has the group-version document and v2 is served as JSON or, when asked, protobuf."""
        code, index = self.get_json("/openapi/v3")
        self.assertEqual((code, list(index["paths"])), (200, ["apis/example.grafana.app/v0alpha1"]))
        code, document = self.get_json(index["paths"]["apis/example.grafana.app/v0alpha1"]["serverRelativeURL"])
        self.assertEqual(code, 200)
        item = document["paths"][GV + "/namespaces/{namespace}/dummy/{name}"]
        self.assertEqual(sorted(k for k in item if k != "parameters"), ["get"])
        self.assertEqual(sorted(k for k in document["paths"][GV + "/runtime"] if k != "parameters"), ["get"])
        self.assertIn("app.grafana.example.v0alpha1.DummyResource", document["components"]["schemas"])
        code, swagger = self.get_json("/openapi/v2")
        self.assertEqual((code, swagger["swagger"]), (200, "2.0"))
        response = self.request("GET", "/openapi/v2", {**USER, "Accept": V2_PROTOBUF_ACCEPT[0]})
        self.assertEqual(response.headers.getRawHeaders("content-type"), [V2_PROTOBUF_CONTENT_TYPE])
        decoded = decode_openapi_v2_protobuf(self.successResultOf(self.client.content(response)))
        self.assertIn(GV + "/namespaces/{namespace}/dummy", decoded["paths"])

    def test_health_and_version_for_anonymous(self) -> None:
        """Without a client certificate, /healthz, /livez, /readyz and /version answer; /version emulates 1.33."""
        self.chain = []
        for path in ("/healthz", "/livez", "/readyz"):
            self.assertEqual(self.get_text(path), (200, "ok"), path)
        response = self.request("GET", "/version")
        body = self.successResultOf(self.client.json_content(response))
        self.assertEqual((response.code, body["major"], body["minor"]), (200, "1", "33"))

    def test_anonymous_is_401(self) -> None:
        """Without a client certificate, discovery, resources and OpenAPI are the 401 Status, user header or not."""
        self.chain = []
        for path in ("/apis", GV, GV + "/namespaces/ns/dummy", "/openapi/v2", "/", "/nothing"):
            response = self.request("GET", path, USER)
            self.assertEqual((response.code, self.successResultOf(self.client.json_content(response))),
                             (401, UNAUTHORIZED), path)

    def test_anonymous_writes_to_health_are_401(self) -> None:
        """Anonymous callers may only read the public paths."""
        self.chain = []
        self.assertEqual(self.request("POST", "/healthz").code, 401)

    def test_certificate_without_user_is_anonymous(self) -> None:
        """A valid front-proxy certificate without a user header is anonymous: health only."""
        self.assertEqual(self.get_text("/healthz"), (200, "ok"))
        self.assertEqual(self.request("GET", "/apis").code, 401)

    def test_other_ca_is_401(self) -> None:
        """A certificate from another CA is refused, even for /healthz and with a user header."""
        self.chain = [CertificateAuthority("stranger").issue("front-proxy-client").certificate]
        self.assertEqual(self.get_json("/apis"), (401, UNAUTHORIZED))
        self.assertEqual(self.request("GET", "/healthz", USER).code, 401)

    def test_expired_certificate_is_401(self) -> None:
        """An expired certificate from the request-header CA is refused."""
        self.chain = [expired(self.ca, "front-proxy-client").certificate]
        self.assertEqual(self.get_json("/apis")[0], 401)

    def test_allowed_names(self) -> None:
        """With allowed names set, only a certificate with such a CN may assert a user."""
        self.client = self.build(RequestHeaderSettings(allowed_names=("front-proxy-client",)))
        self.assertEqual(self.get_json("/apis")[0], 200)
        self.chain = [self.ca.issue("evil").certificate]
        self.assertEqual(self.get_json("/apis"), (401, UNAUTHORIZED))

    def test_requests_logged(self) -> None:
        """Each request is logged at info level with its method, path and user."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.get_json(GV + "/namespaces/ns/dummy")
        logged = [(e.get("method"), e.get("path"), e.get("user")) for e in events
                  if e["log_level"].name == "info" and "user" in e]
        self.assertIn(("GET", GV + "/namespaces/ns/dummy", "alice"), logged)


def write_seed_pki(folder: str) -> tuple[str, CertificateAuthority]:
    """Write `data/grafana-aggregator/{ca,server}.{crt,key}` under folder, as hack/make-aggregator-pki.sh lays them out."""
    pki = os.path.join(folder, "data", "grafana-aggregator")
    ca = CertificateAuthority("grafana-aggregator-dev-ca")
    ca.write_ca(pki)
    ca.server().write(pki, "server")
    return pki, ca


def seed_argv(pwd: str) -> list[str]:
    """The seed's step 5 command line, with $PWD expanded."""
    return [
        "--runtime-config=example.grafana.app/v0alpha1=true",
        "--secure-port", "7443",
        "--tls-cert-file", f"{pwd}/data/grafana-aggregator/server.crt",
        "--tls-private-key-file", f"{pwd}/data/grafana-aggregator/server.key",
        f"--requestheader-client-ca-file={pwd}/data/grafana-aggregator/ca.crt",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        "-v", "10",
    ]


class OptionsTests(SynchronousTestCase):
    """`twistd grafana-example-apiserver` flags."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.cert_dir = os.path.join(self.folder, "certs")

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--cert-dir", self.cert_dir, *argv])
        return options

    def error(self, *argv: str) -> str:
        return str(self.assertRaises(usage.UsageError, self.parse, *argv))

    def test_seed_command_line(self) -> None:
        """The seed's exact flags parse, and load the serving certificate and the request-header CA."""
        _, ca = write_seed_pki(self.folder)
        options = Options()
        options.parseOptions(seed_argv(self.folder))
        settings = options.settings
        self.assertEqual((settings.group_versions, settings.secure_port, settings.bind_address, settings.verbosity),
                         ((("example.grafana.app", "v0alpha1"),), 7443, "127.0.0.1", 10))
        self.assertEqual(settings.requestheader, RequestHeaderSettings(
            client_ca_file=f"{self.folder}/data/grafana-aggregator/ca.crt", allowed_names=(),
            username_headers=("X-Remote-User",), uid_headers=("X-Remote-Uid",), group_headers=("X-Remote-Group",),
            extra_headers_prefixes=("X-Remote-Extra-",)))
        self.assertEqual(options.material.requestheader_ca, (ca.certificate,))
        self.assertEqual(options.material.serving.cert_file, f"{self.folder}/data/grafana-aggregator/server.crt")

    def test_runtime_config_missing(self) -> None:
        """Without --runtime-config, or with an empty one, the error is Grafana's."""
        self.assertEqual(self.error(), RUNTIME_CONFIG_MISSING)
        self.assertEqual(self.error("--runtime-config="), "missing --runtime-config={apiservers}")

    def test_runtime_config_malformed(self) -> None:
        """A value not of the form group/version=<bool> gets Grafana's message."""
        for value in ("example.grafana.app/v0alpha1", "example.grafana.app=true", "/v0alpha1=true",
                      "example.grafana.app/v0alpha1=yes", "example.grafana.app/v0alpha1=true,",
                      "a/b/c=true"):
            self.assertEqual(self.error(f"--runtime-config={value}"), RUNTIME_CONFIG_MALFORMED, value)
        self.assertEqual(RUNTIME_CONFIG_MALFORMED, "expected values in the form: group/version=true")

    def test_other_known_group_not_served(self) -> None:
        """Grafana's other standalone groups are refused with a clear message."""
        message = self.error("--runtime-config=example.grafana.app/v0alpha1=true,query.grafana.app/v0alpha1=true")
        self.assertEqual(message, "--runtime-config: query.grafana.app/v0alpha1 is not served by this example server "
                                  "(it serves only example.grafana.app/v0alpha1)")
        self.assertIn("example.grafana.app/v1 is not served by this example server",
                      self.error("--runtime-config=example.grafana.app/v1=true"))
        self.assertIn("unknown API group-version apps/v1", self.error("--runtime-config=apps/v1=true"))

    def test_nothing_enabled(self) -> None:
        """Disabled entries are accepted, but something must be enabled."""
        self.assertEqual(self.error("--runtime-config=example.grafana.app/v0alpha1=false,query.grafana.app/v0alpha1=0"),
                         "--runtime-config enables nothing; use --runtime-config=example.grafana.app/v0alpha1=true")
        options = self.parse("--runtime-config=query.grafana.app/v0alpha1=false,example.grafana.app/v0alpha1=T")
        self.assertEqual(options.settings.group_versions, (("example.grafana.app", "v0alpha1"),))

    def test_verbosity_spellings(self) -> None:
        """-v, --v and --verbosity all set the klog verbosity."""
        for argv in (["-v", "10"], ["-v10"], ["--v=3"], ["--v", "3"], ["--verbosity", "3"]):
            options = self.parse("--runtime-config=example.grafana.app/v0alpha1=true", *argv)
            self.assertEqual(options.settings.verbosity, int(argv[-1].lstrip("-v=")), argv)
        self.assertIn("is not a number",
                      self.error("--runtime-config=example.grafana.app/v0alpha1=true", "--v=loud"))

    def test_self_signed_into_cert_dir(self) -> None:
        """Without --tls-cert-file a self-signed pair is generated into --cert-dir and reused."""
        options = self.parse("--runtime-config=example.grafana.app/v0alpha1=true")
        self.assertEqual(options.material.serving.cert_file, os.path.join(self.cert_dir, "apiserver.crt"))
        again = self.parse("--runtime-config=example.grafana.app/v0alpha1=true")
        self.assertEqual(again.material.serving.chain, options.material.serving.chain)
        self.assertEqual(Options()["cert-dir"], "apiserver.local.config/certificates")

    def test_tls_flags_together(self) -> None:
        """--tls-cert-file without its key is refused."""
        pki, _ = write_seed_pki(self.folder)
        self.assertIn("--tls-cert-file and --tls-private-key-file must be given together",
                      self.error("--runtime-config=example.grafana.app/v0alpha1=true",
                                 "--tls-cert-file", os.path.join(pki, "server.crt")))

    def test_double_equals_hint(self) -> None:
        """The README typo `--requestheader-client-ca-file==…` names the file and points at the extra `=`."""
        pki, _ = write_seed_pki(self.folder)
        message = self.error("--runtime-config=example.grafana.app/v0alpha1=true",
                             f"--requestheader-client-ca-file=={pki}/ca.crt")
        self.assertIn(f"--requestheader-client-ca-file ={pki}/ca.crt: cannot be read", message)
        self.assertIn("was the flag written with '=='?", message)

    def test_repeated_and_comma_separated_headers(self) -> None:
        """Header flags accumulate, comma-separated or repeated, replacing the default."""
        options = self.parse("--runtime-config=example.grafana.app/v0alpha1=true",
                             "--requestheader-group-headers", "X-A", "--requestheader-group-headers", "X-B,X-C",
                             "--requestheader-allowed-names", "front-proxy-client,development")
        self.assertEqual(options.settings.requestheader.group_headers, ("X-A", "X-B", "X-C"))
        self.assertEqual(options.settings.requestheader.allowed_names, ("front-proxy-client", "development"))
        self.assertEqual(options.settings.requestheader.username_headers, ("X-Remote-User",))
        self.assertIn("is not an HTTP header name", self.error("--runtime-config=example.grafana.app/v0alpha1=true",
                                                               "--requestheader-username-headers", "X User"))

    def test_bad_bind_address_and_listen(self) -> None:
        """A bind address that is not an IP, or a --listen that is not an endpoint, is refused."""
        self.assertIn("is not an IP address", self.error("--runtime-config=example.grafana.app/v0alpha1=true",
                                                         "--bind-address", "localhost"))
        self.assertIn("is not a server endpoint description",
                      self.error("--runtime-config=example.grafana.app/v0alpha1=true", "--listen", "pigeon:7"))


class MakeServiceTests(SynchronousTestCase):
    """The wired service, on a memory reactor."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.reactor = MemoryReactorClock()
        self.ca = CertificateAuthority("front-proxy-ca")

    def test_listens_with_tls(self) -> None:
        """Starting the service listens on bind address and secure port with TLS around the site."""
        settings = ExampleSettings(secure_port=7443, bind_address="127.0.0.1")
        top = make_service(settings, self.reactor, material(self.folder, [self.ca.certificate]))
        top.startService()
        self.addCleanup(top.stopService)
        port, factory, _, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, interface), (7443, "127.0.0.1"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIsInstance(factory.wrappedFactory, Site)

    def test_readyz_fails_once_stopping(self) -> None:
        """The wired site answers /readyz ok, and not ok once the service stops."""
        top = make_service(ExampleSettings(), self.reactor, material(self.folder, [self.ca.certificate]))
        top.startService()
        site = self.reactor.tcpServers[0][1].wrappedFactory
        client = StubTreq(site.resource)
        response = self.successResultOf(client.get(BASE + "/readyz"))
        self.assertEqual(response.code, 200)
        top.stopService()
        response = self.successResultOf(client.get(BASE + "/readyz"))
        self.assertEqual(response.code, 500)

    def test_loads_material_when_not_given(self) -> None:
        """Without loaded material, make_service loads what the settings name (here a self-signed pair)."""
        cert_dir = os.path.join(self.folder, "certs")
        top = make_service(ExampleSettings(cert_dir=cert_dir), self.reactor)
        self.assertTrue(os.path.exists(os.path.join(cert_dir, "apiserver.crt")))
        self.assertEqual(top.getServiceNamed("https").name, "https")
