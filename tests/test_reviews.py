"""The self-review APIs (`kubectl auth can-i`, `can-i --list`, `auth whoami`) through the served tree.

Most tests use the tree of tests.test_impersonation (the real AuthenticatingRoot and `build_tree`,
token users admin in system:masters and alice outside it); the wiring tests build the whole daemon
with `tap.make_service` on a memory reactor and talk to its Site.
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml
from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.config.settings import load_settings
from grafana_aggregator.identity.kubeconfig import ensure_admin_token
from grafana_aggregator.identity.reviewtypes import (
    SELF_SUBJECT_ACCESS_REVIEW,
    DecodeError,
    decode,
    go_object_meta,
)
from grafana_aggregator.tap import load_runtime, make_service

from .test_impersonation import Aggregator, status

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSRR = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
SSR = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
KUBECTL = (b"User-Agent", b"kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0")


def access_review(spec: dict[str, Any], **top: Any) -> bytes:
    """A SelfSubjectAccessReview body as kubectl sends it."""
    return json.dumps({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                       "metadata": {"creationTimestamp": None}, "spec": spec, "status": {"allowed": False},
                       **top}).encode()


def invalid(message: str, causes: list[tuple[str, str]]) -> dict[str, Any]:
    """kube's 422 of a review (its REST names the internal object's empty kind)."""
    listed = message
    return status(422, f'.authorization.k8s.io "" is invalid: {listed}', "Invalid", {
        "group": "authorization.k8s.io",
        "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]})


class SelfSubjectAccessReviewTests(SynchronousTestCase):
    """`kubectl auth can-i`: POST selfsubjectaccessreviews, answered by the built-in authorizer for the caller."""

    def setUp(self) -> None:
        self.aggregator = Aggregator(self)

    def review(self, token: str | None, body: bytes, *headers: tuple[bytes, bytes]) -> tuple[int, Any]:
        return self.aggregator.call("POST", SSAR, token, body, headers)

    def test_master_may_create_apiservices(self) -> None:
        """The whole answer for a master, as kube returns it: the review, its managedFields, `allowed: true`."""
        code, body = self.review("admintoken", access_review(
            {"resourceAttributes": {"namespace": "default", "verb": "create", "group": "apiregistration.k8s.io",
                                    "resource": "apiservices"}}), KUBECTL)
        self.assertEqual((code, body), (201, {
            "kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"managedFields": [{
                "manager": "kubectl", "operation": "Update", "apiVersion": "authorization.k8s.io/v1",
                "time": "1970-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:resourceAttributes": {".": {}, "f:group": {}, "f:namespace": {},
                                                                  "f:resource": {}, "f:verb": {}}}}}]},
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "group": "apiregistration.k8s.io",
                                            "resource": "apiservices"}},
            "status": {"allowed": True}}))

    def test_others_may_not(self) -> None:
        """A caller outside system:masters is answered `allowed: false` (no opinion: not denied, no reason)."""
        code, body = self.review("alicetoken", access_review(
            {"resourceAttributes": {"verb": "create", "group": "apiregistration.k8s.io", "resource": "apiservices"}}))
        self.assertEqual((code, body["status"]), (201, {"allowed": False}))

    def test_the_answer_is_the_authorizers(self) -> None:
        """Resource and non-resource questions get what the authorizer would decide for the caller."""
        cases = [
            ("alicetoken", {"nonResourceAttributes": {"path": "/apis", "verb": "get"}}, True),
            ("alicetoken", {"nonResourceAttributes": {"path": "/openapi/v3/apis/x/v1", "verb": "get"}}, True),
            ("alicetoken", {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}}, False),
            ("alicetoken", {"resourceAttributes": {"verb": "create", "group": "authorization.k8s.io",
                                                   "resource": "selfsubjectrulesreviews"}}, True),
            ("alicetoken", {"resourceAttributes": {"verb": "impersonate", "resource": "users", "name": "bob"}}, False),
            ("admintoken", {"resourceAttributes": {"verb": "impersonate", "resource": "users", "name": "bob"}}, True),
            ("admintoken", {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}}, True),
            ("admintoken", {"resourceAttributes": {"verb": "*", "group": "*", "resource": "*"}}, True),
        ]
        for token, spec, allowed in cases:
            code, body = self.review(token, access_review(spec))
            self.assertEqual((code, body["status"]), (201, {"allowed": allowed}), (token, spec))

    def test_impersonated_caller_is_reviewed(self) -> None:
        """With impersonation the review answers for the impersonated user."""
        code, body = self.review("admintoken", access_review(
            {"resourceAttributes": {"verb": "list", "group": "apiregistration.k8s.io", "resource": "apiservices"}}),
            (b"Impersonate-User", b"bob"))
        self.assertEqual((code, body["status"]), (201, {"allowed": False}))

    def test_anonymous_is_unauthorized(self) -> None:
        """Anonymous callers may not create reviews: the root's 401."""
        code, body = self.review(None, access_review({"nonResourceAttributes": {"path": "/apis", "verb": "get"}}))
        self.assertEqual((code, body["reason"]), (401, "Unauthorized"))

    def test_neither_attributes(self) -> None:
        """A spec without attributes is kube's 422 on spec.resourceAttributes."""
        code, body = self.review("alicetoken", access_review({}))
        self.assertEqual((code, body), (422, invalid(
            'spec.resourceAttributes: Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes '
            'must be specified',
            [("spec.resourceAttributes", 'Invalid value: "null": exactly one of nonResourceAttributes or '
                                         'resourceAttributes must be specified')])))

    def test_both_attributes(self) -> None:
        """Both kinds of attributes (even empty ones) are kube's 422 on spec.nonResourceAttributes."""
        code, body = self.review("alicetoken", access_review(
            {"resourceAttributes": {}, "nonResourceAttributes": {"path": "/x", "verb": "get"}}))
        message = ('Invalid value: authorization.NonResourceAttributes{Path:"/x", Verb:"get"}: cannot be specified in '
                   'combination with resourceAttributes')
        self.assertEqual((code, body), (422, invalid(f"spec.nonResourceAttributes: {message}",
                                                     [("spec.nonResourceAttributes", message)])))

    def test_metadata_must_be_empty(self) -> None:
        """Metadata other than managedFields (and the namespace, cleared) is refused, printed as Go prints it."""
        code, body = self.review("alicetoken", access_review({"nonResourceAttributes": {"path": "/apis"}},
                                                             metadata={"name": "x", "namespace": "ns"}))
        self.assertEqual(code, 422)
        self.assertTrue(body["message"].startswith(
            '.authorization.k8s.io "" is invalid: metadata: Invalid value: v1.ObjectMeta{Name:"x", GenerateName:"", '
            'Namespace:"", SelfLink:"", UID:"", ResourceVersion:"", Generation:0, CreationTimestamp:time.Date(1, '
            'time.January, 1, 0, 0, 0, 0, time.UTC), DeletionTimestamp:<nil>, DeletionGracePeriodSeconds:(*int64)(nil), '
            'Labels:map[string]string(nil), Annotations:map[string]string(nil), OwnerReferences:[]v1.OwnerReference(nil), '
            'Finalizers:[]string(nil), ManagedFields:[]v1.ManagedFieldsEntry{v1.ManagedFieldsEntry{Manager:"unknown", '
            'Operation:"Update", APIVersion:"authorization.k8s.io/v1", Time:time.Date(1970, time.January, 1, 0, 0, 0, '
            '0, time.Local), FieldsType:"FieldsV1", FieldsV1:(*v1.FieldsV1)('), body["message"])
        self.assertTrue(body["message"].endswith(', Subresource:""}}}: must be empty'), body["message"])
        self.assertEqual(body["details"]["causes"][0]["field"], "metadata")

    def test_empty_metadata_values_are_empty(self) -> None:
        """Empty labels, a null timestamp and a namespace (cleared for a cluster-scoped kind) leave metadata empty."""
        code, body = self.review("alicetoken", access_review(
            {"nonResourceAttributes": {"path": "/apis", "verb": "get"}},
            metadata={"labels": {}, "creationTimestamp": None, "namespace": "default"}))
        self.assertEqual((code, body["status"]), (201, {"allowed": True}))
        self.assertEqual(set(body["metadata"]), {"managedFields"})

    def test_wrongly_typed_field(self) -> None:
        """A field of the wrong JSON type is kube's 400 naming the Go struct field and type."""
        code, body = self.review("alicetoken", access_review({"resourceAttributes": "pods"}))
        self.assertEqual((code, body), (400, status(
            400, 'SelfSubjectAccessReview in version "v1" cannot be handled as a SelfSubjectAccessReview: json: cannot '
                 'unmarshal string into Go struct field SelfSubjectAccessReviewSpec.spec.resourceAttributes of type '
                 'v1.ResourceAttributes', "BadRequest")))
        code, body = self.review("alicetoken", access_review({"resourceAttributes": {"verb": 5}}))
        self.assertEqual((code, body["message"]), (400, 'SelfSubjectAccessReview in version "v1" cannot be handled as a '
                                                        'SelfSubjectAccessReview: json: cannot unmarshal number into '
                                                        'Go struct field ResourceAttributes.spec.resourceAttributes.verb '
                                                        'of type string'))

    def test_bodies_that_are_not_reviews(self) -> None:
        """Empty, malformed, non-object, wrong-kind and wrong-version bodies are kube's 400s, never a 500."""
        unrecognized = "the object provided is unrecognized (must be of type SelfSubjectAccessReview): "
        cases = [
            (b"", unrecognized + "couldn't get version/kind; json parse error: unexpected end of JSON input ()"),
            (b"[1]", unrecognized + "couldn't get version/kind; json parse error: json: cannot unmarshal array into "
                                    'Go value of type struct { APIVersion string "json:\\"apiVersion,omitempty\\""; '
                                    'Kind string "json:\\"kind,omitempty\\"" } ([1])'),
            (b'{"kind": 7}', unrecognized + "couldn't get version/kind; json parse error: json: cannot unmarshal "
                                            'number into Go struct field .kind of type string ({"kind": 7})'),
            (b'{"kind": "Pod", "apiVersion": "v1"}',
             'Pod in version "v1" cannot be handled as a SelfSubjectAccessReview: no kind "Pod" is registered for '
             'version "v1" in scheme "pkg/api/legacyscheme/scheme.go:30"'),
            (b'{"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1"}',
             'SelfSubjectRulesReview in version "v1" cannot be handled as a SelfSubjectAccessReview: converting '
             '(v1.SelfSubjectRulesReview) to (authorization.SelfSubjectAccessReview): unknown conversion'),
            (b'{"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1beta1", "spec": {}}',
             "the API version in the data (authorization.k8s.io/v1beta1) does not match the expected API version "
             "(authorization.k8s.io/v1)"),
        ]
        for data, message in cases:
            code, body = self.review("alicetoken", data)
            self.assertEqual((code, body), (400, status(400, message, "BadRequest")), data)
        code, body = self.review("alicetoken", b"{not json")
        self.assertEqual(code, 400)
        self.assertTrue(body["message"].startswith(unrecognized + "couldn't get version/kind; json parse error: "),
                        body["message"])

    def test_type_meta_defaults_to_the_url(self) -> None:
        """A body without kind and apiVersion is the kind the URL names, as kube's decoder defaults it."""
        code, body = self.review("alicetoken", b'{"spec": {"nonResourceAttributes": {"path": "/apis", "verb": "get"}}}')
        self.assertEqual((code, body["kind"], body["apiVersion"], body["status"]),
                         (201, "SelfSubjectAccessReview", "authorization.k8s.io/v1", {"allowed": True}))

    def test_field_validation(self) -> None:
        """Unknown and duplicate fields: a Warning by default, nothing with Ignore, the 400 with Strict."""
        data = b'{"spec": {"nonResourceAttributes": {"path": "/apis", "verb": "get", "verb": "get"}, "extra": 1}}'
        response = self.aggregator.request("POST", SSAR, "alicetoken", data)
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders("warning"),
                         ['299 - "unknown field \\"spec.extra\\""', '299 - "duplicate field \\"spec.nonResourceAttributes.verb\\""'])
        self.assertNotIn("extra", json.loads(response.body)["spec"])
        response = self.aggregator.request("POST", SSAR + "?fieldValidation=Ignore", "alicetoken", data)
        self.assertEqual((response.code, response.headers.getRawHeaders("warning")), (201, None))
        code, body = self.aggregator.call("POST", SSAR + "?fieldValidation=Strict", "alicetoken", data)
        self.assertEqual((code, body["message"]), (400, 'SelfSubjectAccessReview in version "v1" cannot be handled as a '
                                                        'SelfSubjectAccessReview: strict decoding error: unknown field '
                                                        '"spec.extra", duplicate field "spec.nonResourceAttributes.verb"'))
        code, body = self.aggregator.call("POST", SSAR + "?fieldValidation=Sloppy", "alicetoken", data)
        self.assertEqual((code, body["reason"]), (400, "BadRequest"))

    def test_dry_run(self) -> None:
        """dryRun=All answers the same (nothing is stored anyway); another dryRun value is refused."""
        data = access_review({"nonResourceAttributes": {"path": "/apis", "verb": "get"}})
        code, body = self.aggregator.call("POST", SSAR + "?dryRun=All", "alicetoken", data)
        self.assertEqual((code, body["status"]), (201, {"allowed": True}))
        code, body = self.aggregator.call("POST", SSAR + "?dryRun=Yes", "alicetoken", data)
        self.assertEqual((code, body["message"]), (400, 'dryRun: Unsupported value: "Yes": supported values: "All"'))

    def test_field_manager(self) -> None:
        """?fieldManager= names the managedFields entry; an over-long one is refused."""
        data = access_review({"nonResourceAttributes": {"path": "/apis", "verb": "get"}})
        _, body = self.aggregator.call("POST", SSAR + "?fieldManager=my-tool", "alicetoken", data)
        self.assertEqual(body["metadata"]["managedFields"][0]["manager"], "my-tool")
        code, _ = self.aggregator.call("POST", SSAR + "?fieldManager=" + "x" * 129, "alicetoken", data)
        self.assertEqual(code, 422)

    def test_yaml_in_and_out(self) -> None:
        """A YAML body is accepted and a YAML answer given when asked for."""
        data = yaml.safe_dump({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                               "spec": {"nonResourceAttributes": {"path": "/apis", "verb": "get"}}}).encode()
        response = self.aggregator.request("POST", SSAR, "alicetoken", data, [(b"Accept", b"application/yaml")],
                                           content_type=b"application/yaml")
        self.assertEqual((response.code, response.headers.getRawHeaders("content-type")), (201, ["application/yaml"]))
        self.assertEqual(yaml.safe_load(response.body)["status"], {"allowed": True})

    def test_media_types(self) -> None:
        """An Accept nothing here can produce is 406; a body in another format than JSON, YAML or protobuf is 415."""
        data = access_review({"nonResourceAttributes": {"path": "/apis", "verb": "get"}})
        response = self.aggregator.request("POST", SSAR, "alicetoken", data, [(b"Accept", b"text/html")])
        self.assertEqual(response.code, 406)
        response = self.aggregator.request("POST", SSAR, "alicetoken", data, content_type=b"text/plain")
        self.assertEqual((response.code, json.loads(response.body)), (415, status(
            415, "the body of the request was in an unknown format - accepted media types include: application/json, "
                 "application/yaml, application/vnd.kubernetes.protobuf", "UnsupportedMediaType")))

    def test_paths_and_methods(self) -> None:
        """Only POST to a review collection creates; other methods are 405, other paths 404."""
        data = access_review({"nonResourceAttributes": {"path": "/apis", "verb": "get"}})
        for method, path, code in [
            ("GET", SSAR, 405), ("DELETE", SSAR, 405), ("PUT", SSAR, 405), ("POST", SSAR + "/x", 404),
            ("POST", SSAR + "/", 404), ("POST", "/apis/authorization.k8s.io/v1/namespaces/ns/selfsubjectaccessreviews", 404),
            ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", 404),
            ("POST", "/apis/authorization.k8s.io/v1", 405), ("POST", "/apis/authorization.k8s.io/v2/x", 404),
        ]:
            got, body = self.aggregator.call(method, path, "admintoken", data)
            self.assertEqual((got, body["kind"]), (code, "Status"), (method, path))


def delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (the lengths in these tests are below 128)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def envelope(api_version: str, kind: str, message: bytes) -> bytes:
    """kube's protobuf envelope: `k8s\\0`, then runtime.Unknown with empty contentEncoding and contentType."""
    type_meta = delimited(1, api_version.encode()) + delimited(2, kind.encode())
    size = bytes([len(message)]) if len(message) < 128 else bytes([len(message) & 0x7F | 0x80, len(message) >> 7])
    return b"k8s\x00" + delimited(1, type_meta) + b"\x12" + size + message + b"\x1a\x00\x22\x00"


#: What kubectl 1.33.1 sends for `kubectl auth can-i create apiservices` (captured with -v=10).
KUBECTL_CAN_I = bytes.fromhex(
    "6b387300 0a320a17 617574686f72697a 6174696f6e2e6b38 732e696f2f763112 1753656c66537562 6a65637441636365"
    "7373526576696577 125c0a100a001200 1a0022002a003200 380042001 23e0a3c 0a0764656661756c 7412066372656174"
    "651a166170697265 6769737472617469 6f6e2e6b38732e69 6f22002a0b617069 7365727669636573 32003a001a080800"
    "12001a0020001a00 2200".replace(" ", ""))
PROTOBUF = b"application/vnd.kubernetes.protobuf"


class ProtobufTests(SynchronousTestCase):
    """kubectl 1.32 and later send the reviews in kube's protobuf and ask for protobuf answers."""

    def setUp(self) -> None:
        self.aggregator = Aggregator(self)

    def post(self, path: str, token: str, data: bytes, accept: bytes = PROTOBUF + b",application/json") -> Any:
        return self.aggregator.request("POST", path, token, data, [(b"Accept", accept), KUBECTL],
                                       content_type=PROTOBUF)

    def test_kubectl_can_i(self) -> None:
        """kubectl 1.33's own bytes are understood and answered in protobuf, `allowed` set for a master."""
        response = self.post(SSAR, "admintoken", KUBECTL_CAN_I)
        self.assertEqual((response.code, response.headers.getRawHeaders("content-type")), (201, [PROTOBUF.decode()]))
        prefix = envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", b"")[:-6]
        self.assertTrue(response.body.startswith(prefix), response.body)
        # The message ends with the status (allowed, reason, evaluationError, denied), then the envelope's tail.
        self.assertTrue(response.body.endswith(delimited(3, b"\x08\x01\x12\x00\x1a\x00\x20\x00") + b"\x1a\x00\x22\x00"),
                        response.body)
        response = self.post(SSAR, "alicetoken", KUBECTL_CAN_I)
        self.assertTrue(response.body.endswith(delimited(3, b"\x08\x00\x12\x00\x1a\x00\x20\x00") + b"\x1a\x00\x22\x00"))

    def test_decoded_as_kube_decodes(self) -> None:
        """The protobuf review is the same review as its JSON: the answer in JSON shows it."""
        response = self.post(SSAR, "admintoken", KUBECTL_CAN_I, accept=b"application/json")
        body = json.loads(response.body)
        self.assertEqual((response.code, body["spec"], body["status"]), (201, {"resourceAttributes": {
            "namespace": "default", "verb": "create", "group": "apiregistration.k8s.io", "resource": "apiservices"}},
            {"allowed": True}))
        self.assertEqual(body["metadata"]["managedFields"][0]["manager"], "kubectl")

    def test_whoami_bytes(self) -> None:
        """A SelfSubjectReview answer, byte for byte as gogo-protobuf marshals it (every non-pointer field)."""
        request = envelope("authentication.k8s.io/v1", "SelfSubjectReview", b"")
        response = self.post(SSR, "alicetoken", request)
        meta = b"".join(bytes([n << 3 | 2, 0]) for n in range(1, 7)) + b"\x38\x00" + delimited(8, b"\x08\x00\x10\x00")
        user_info = (delimited(1, b"alice") + delimited(2, b"1001") + delimited(3, b"dev")
                     + delimited(3, b"system:authenticated"))
        message = delimited(1, meta) + delimited(2, delimited(1, user_info))
        self.assertEqual((response.code, response.body),
                         (201, envelope("authentication.k8s.io/v1", "SelfSubjectReview", message)))

    def test_rules_answer(self) -> None:
        """`can-i --list` in protobuf: the rules as repeated messages, incomplete false."""
        request = envelope("authorization.k8s.io/v1", "SelfSubjectRulesReview", delimited(2, delimited(1, b"default")))
        response = self.post(SSRR, "alicetoken", request, accept=b"application/json")
        self.assertEqual((response.code, json.loads(response.body)["status"]["resourceRules"][0]),
                         (201, {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
                                "resources": ["selfsubjectreviews"]}))
        response = self.post(SSRR, "alicetoken", envelope("authorization.k8s.io/v1", "SelfSubjectRulesReview", b""))
        self.assertEqual((response.code, json.loads(response.body)["message"]), (400, "no namespace on request"))

    def test_malformed_protobuf(self) -> None:
        """Bodies that are not kube protobuf, or do not fit the kind, are kube's 400s."""
        unrecognized = "the object provided is unrecognized (must be of type SelfSubjectAccessReview): "
        handled = 'SelfSubjectAccessReview in version "v1" cannot be handled as a SelfSubjectAccessReview: '
        spec_as_number = envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", b"\x10\x01")
        cases = [
            (b"", unrecognized + "empty data ()"),
            (b'{"kind": "x"}', unrecognized + "provided data does not appear to be a protobuf message, expected "
                                              'prefix [107 56 115 0] ({"kind": "x"})'),
            (KUBECTL_CAN_I[:60], unrecognized + "unexpected EOF (" + KUBECTL_CAN_I[:30].decode("utf-8", "replace")
             + " ...)"),
            (spec_as_number, handled + "proto: wrong wireType = 0 for field Spec"),
            (envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", b"\x12\x05\x0a\x09"),
             handled + "unexpected EOF"),
            (envelope("v1", "Pod", b""), 'Pod in version "v1" cannot be handled as a SelfSubjectAccessReview: no kind '
                                         '"Pod" is registered for version "v1" in scheme '
                                         '"pkg/api/legacyscheme/scheme.go:30"'),
        ]
        for data, message in cases:
            response = self.post(SSAR, "alicetoken", data)
            self.assertEqual((response.code, json.loads(response.body)), (400, status(400, message, "BadRequest")),
                             data)

    def test_unknown_fields_are_skipped(self) -> None:
        """Fields the kind does not have are skipped silently in protobuf (no warning), as kube does."""
        message = b"\x78\x05" + delimited(2, delimited(2, delimited(1, b"/apis") + delimited(2, b"get")))
        response = self.post(SSAR, "alicetoken", envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", message),
                             accept=b"application/json")
        self.assertEqual((response.code, json.loads(response.body)["status"], response.headers.getRawHeaders("warning")),
                         (201, {"allowed": True}, None))

    def test_json_body_protobuf_answer(self) -> None:
        """The answer's form follows Accept, whatever the body's: a JSON review gets a protobuf answer if asked."""
        response = self.aggregator.request("POST", SSR, "alicetoken", b"{}", [(b"Accept", PROTOBUF)])
        self.assertEqual((response.code, response.headers.getRawHeaders("content-type")), (201, [PROTOBUF.decode()]))
        self.assertTrue(response.body.startswith(b"k8s\x00"))


class SelfSubjectRulesReviewTests(SynchronousTestCase):
    """`kubectl auth can-i --list`: POST selfsubjectrulesreviews, the caller's rules."""

    def setUp(self) -> None:
        self.aggregator = Aggregator(self)

    def rules(self, token: str) -> tuple[int, Any]:
        return self.aggregator.call("POST", SSRR, token, json.dumps({
            "kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": {"namespace": "default"},
            "status": {"resourceRules": None, "nonResourceRules": None, "incomplete": False}}).encode())

    def test_non_master_rules(self) -> None:
        """Someone outside system:masters may review itself, read discovery and the public paths: the whole answer."""
        code, body = self.rules("alicetoken")
        self.assertEqual((code, body), (201, {
            "kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {}, "spec": {},
            "status": {
                "resourceRules": [
                    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
                    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}],
                "nonResourceRules": [
                    {"verbs": ["get", "head"],
                     "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]},
                    {"verbs": ["get", "head"],
                     "nonResourceURLs": ["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*",
                                         "/version", "/version/*"]}],
                "incomplete": False}}))

    def test_master_rules(self) -> None:
        """A master's rules start with everything on everything."""
        code, body = self.rules("admintoken")
        self.assertEqual(code, 201)
        self.assertEqual(body["status"]["resourceRules"][0], {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        self.assertEqual(body["status"]["nonResourceRules"][0], {"verbs": ["*"], "nonResourceURLs": ["*"]})
        self.assertEqual(len(body["status"]["resourceRules"]), 3)

    def test_namespace_required(self) -> None:
        """A review without a namespace is kube's 400."""
        code, body = self.aggregator.call("POST", SSRR, "alicetoken", b'{"spec": {}}')
        self.assertEqual((code, body), (400, status(400, "no namespace on request", "BadRequest")))


class SelfSubjectReviewTests(SynchronousTestCase):
    """`kubectl auth whoami`: POST selfsubjectreviews in v1 (kubectl 1.28+) and v1beta1 (kubectl 1.27)."""

    def setUp(self) -> None:
        self.aggregator = Aggregator(self)

    def test_v1_answer(self) -> None:
        """The whole v1 answer: a creation time, and the caller's name, uid and groups (no empty extra)."""
        code, body = self.aggregator.call("POST", SSR, "admintoken", b'{"apiVersion": "authentication.k8s.io/v1", '
                                                                     b'"kind": "SelfSubjectReview"}')
        self.assertEqual((code, body), (201, {
            "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": "1970-01-01T00:00:00Z"},
            "status": {"userInfo": {"username": "admin", "uid": "0",
                                    "groups": ["system:masters", "system:authenticated"]}}}))

    def test_v1beta1_answer(self) -> None:
        """kubectl 1.27 asks v1beta1, and gets the same answer in that version."""
        self.aggregator.clock.advance(90)
        code, body = self.aggregator.call("POST", "/apis/authentication.k8s.io/v1beta1/selfsubjectreviews", "alicetoken",
                                          b'{"apiVersion": "authentication.k8s.io/v1beta1", "kind": "SelfSubjectReview", '
                                          b'"metadata": {"creationTimestamp": null}, "status": {"userInfo": {}}}')
        self.assertEqual((code, body), (201, {
            "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1beta1",
            "metadata": {"creationTimestamp": "1970-01-01T00:01:30Z"},
            "status": {"userInfo": {"username": "alice", "uid": "1001", "groups": ["dev", "system:authenticated"]}}}))

    def test_v1_body_to_v1beta1_is_refused(self) -> None:
        """A body of another version than the URL's is kube's 400."""
        code, body = self.aggregator.call("POST", "/apis/authentication.k8s.io/v1beta1/selfsubjectreviews", "alicetoken",
                                          b'{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}')
        self.assertEqual((code, body["message"]), (400, "the API version in the data (authentication.k8s.io/v1) does "
                                                        "not match the expected API version "
                                                        "(authentication.k8s.io/v1beta1)"))

    def test_wrongly_typed_status(self) -> None:
        """Even the ignored status must fit kube's types."""
        code, body = self.aggregator.call("POST", SSR, "alicetoken", b'{"status": {"userInfo": {"groups": [1]}}}')
        self.assertEqual((code, body["message"]), (400, 'SelfSubjectReview in version "v1" cannot be handled as a '
                                                        'SelfSubjectReview: json: cannot unmarshal number into Go '
                                                        'struct field UserInfo.status.userInfo.groups of type string'))


class GoTypesTests(SynchronousTestCase):
    """Decoding into the review kinds' Go types, as encoding/json decodes."""

    def test_first_error_in_body_order(self) -> None:
        """Of several wrongly typed fields, the first in the body is reported."""
        error = self.assertRaises(DecodeError, decode, {"status": {"allowed": "yes"}, "spec": []},
                                  SELF_SUBJECT_ACCESS_REVIEW)
        self.assertEqual(str(error), "json: cannot unmarshal string into Go struct field "
                                     "SubjectAccessReviewStatus.status.allowed of type bool")

    def test_integers_and_times(self) -> None:
        """int64 fields refuse fractions, times must be RFC 3339 strings."""
        error = self.assertRaises(DecodeError, decode, {"metadata": {"generation": 1.5}}, SELF_SUBJECT_ACCESS_REVIEW)
        self.assertEqual(str(error), "json: cannot unmarshal number 1.5 into Go struct field ObjectMeta.metadata."
                                     "generation of type int64")
        error = self.assertRaises(DecodeError, decode, {"metadata": {"creationTimestamp": "yesterday"}},
                                  SELF_SUBJECT_ACCESS_REVIEW)
        self.assertEqual(str(error), 'parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse '
                                     '"yesterday" as "2006"')
        for text, problem in (("2024-13-45T99:99:99Z", "second"), ("2024-02-30T00:00:00Z", "day"),
                              ("2024-13-01T00:00:00Z", "month")):
            error = self.assertRaises(DecodeError, decode, {"metadata": {"creationTimestamp": text}},
                                      SELF_SUBJECT_ACCESS_REVIEW)
            self.assertEqual(str(error), f'parsing time "{text}": {problem} out of range')

    def test_times_as_kube_writes_them(self) -> None:
        """Timestamps come back in UTC to the second; year 1 (Go's zero time) is null; year 0 still works."""
        meta = {"creationTimestamp": "2024-02-29T23:59:59.5+01:30", "deletionTimestamp": "0001-01-01T00:00:00Z",
                "managedFields": [{"time": "0000-03-01T00:00:00Z"}]}
        self.assertEqual(decode({"metadata": meta}, SELF_SUBJECT_ACCESS_REVIEW)["metadata"],
                         {"creationTimestamp": "2024-02-29T22:29:59Z",
                          "managedFields": [{"time": "0000-03-01T00:00:00Z"}]})

    def test_impossible_date_is_400(self) -> None:
        """A date Go refuses is kube's 400, not a server error."""
        aggregator = Aggregator(self)
        code, body = aggregator.call("POST", SSAR, "alicetoken",
                                     b'{"metadata": {"creationTimestamp": "2024-13-45T99:99:99Z"}}')
        self.assertEqual((code, body["message"]), (400, 'SelfSubjectAccessReview in version "v1" cannot be handled as '
                                                        'a SelfSubjectAccessReview: parsing time "2024-13-45T99:99:99Z": '
                                                        'second out of range'))

    def test_encoding_like_go(self) -> None:
        """Fields in Go's order, omitempty zero values left out, null pointers absent, empty pointers kept."""
        self.assertEqual(decode({"status": {"reason": ""}, "spec": {"resourceAttributes": {"verb": "get", "name": ""},
                                                                     "nonResourceAttributes": None},
                                 "kind": "K"}, SELF_SUBJECT_ACCESS_REVIEW),
                         {"kind": "K", "metadata": {},
                          "spec": {"resourceAttributes": {"verb": "get"}}, "status": {"allowed": False}})

    def test_object_meta_as_go_prints_it(self) -> None:
        """Labels sorted, strings quoted, timestamps as time.Date, nil pointers and slices typed."""
        self.assertEqual(go_object_meta({"generateName": 'a"b', "generation": 3, "labels": {"b": "2", "a": "1"},
                                         "finalizers": ["f"], "deletionTimestamp": "2024-05-06T07:08:09Z"}),
                         'v1.ObjectMeta{Name:"", GenerateName:"a\\"b", Namespace:"", SelfLink:"", UID:"", '
                         'ResourceVersion:"", Generation:3, CreationTimestamp:time.Date(1, time.January, 1, 0, 0, 0, 0, '
                         'time.UTC), DeletionTimestamp:time.Date(2024, time.May, 6, 7, 8, 9, 0, time.Local), '
                         'DeletionGracePeriodSeconds:(*int64)(nil), Labels:map[string]string{"a":"1", "b":"2"}, '
                         'Annotations:map[string]string(nil), OwnerReferences:[]v1.OwnerReference(nil), '
                         'Finalizers:[]string{"f"}, ManagedFields:[]v1.ManagedFieldsEntry(nil)}')


class DaemonWiringTests(SynchronousTestCase):
    """The daemon as `tap.make_service` builds it serves and advertises the review APIs."""

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        reactor = MemoryReactorClock()
        settings = load_settings(None, {"data-dir": os.path.join(folder, "data"), "ensure-kubectl-access": "true",
                                        "secure-port": "16443"})
        top = make_service(settings, load_runtime(settings), reactor)
        top.startService()
        self.addCleanup(top.stopService)
        reactor.advance(1)
        site = reactor.tcpServers[0][1].wrappedFactory
        self.client = StubTreq(site.resource)
        self.client._agent._serverFactory = site
        self.token, _ = ensure_admin_token(settings.storage_path)

    def get(self, path: str, accept: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **({"Accept": accept} if accept else {})}
        response = self.successResultOf(self.client.get("https://agg.test" + path, headers=headers))
        self.assertEqual(response.code, 200, path)
        return json.loads(self.successResultOf(self.client.content(response)))

    def test_local_apiservices_with_kube_priorities(self) -> None:
        """The review group-versions are Local APIServices with kube-apiserver's priorities."""
        items = self.get("/apis/apiregistration.k8s.io/v1/apiservices")["items"]
        specs = {i["metadata"]["name"]: (i["spec"]["groupPriorityMinimum"], i["spec"]["versionPriority"],
                                         i["status"]["conditions"][0]["reason"]) for i in items}
        self.assertEqual({name: specs.get(name) for name in ("v1.authentication.k8s.io", "v1beta1.authentication.k8s.io",
                                                             "v1.authorization.k8s.io")},
                         {"v1.authentication.k8s.io": (17700, 15, "Local"),
                          "v1beta1.authentication.k8s.io": (17700, 9, "Local"),
                          "v1.authorization.k8s.io": (17600, 15, "Local")})

    def test_legacy_discovery(self) -> None:
        """/apis lists the groups in kube's priority order, v1 preferred; each version lists its create-only kinds."""
        groups = self.get("/apis")["groups"]
        self.assertEqual([(g["name"], [v["version"] for v in g["versions"]], g["preferredVersion"]["version"])
                          for g in groups],
                         [("apiregistration.k8s.io", ["v1"], "v1"), ("authentication.k8s.io", ["v1", "v1beta1"], "v1"),
                          ("authorization.k8s.io", ["v1"], "v1"), ("apiextensions.k8s.io", ["v1"], "v1"),
                          ("service.grafana.app", ["v0alpha1"], "v0alpha1")])
        self.assertEqual(self.get("/apis/authentication.k8s.io/v1beta1"), {
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authentication.k8s.io/v1beta1",
            "resources": [{"name": "selfsubjectreviews", "singularName": "selfsubjectreview", "namespaced": False,
                           "kind": "SelfSubjectReview", "verbs": ["create"]}]})

    def test_aggregated_discovery(self) -> None:
        """Aggregated discovery lists the review kinds, cluster-scoped, with the one verb create."""
        items = self.get("/apis", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")["items"]
        authorization = [i for i in items if i["metadata"]["name"] == "authorization.k8s.io"][0]
        self.assertEqual(authorization["versions"], [{"version": "v1", "freshness": "Current", "resources": [
            {"resource": "selfsubjectaccessreviews", "singularResource": "selfsubjectaccessreview", "scope": "Cluster",
             "verbs": ["create"],
             "responseKind": {"group": "authorization.k8s.io", "version": "v1", "kind": "SelfSubjectAccessReview"}},
            {"resource": "selfsubjectrulesreviews", "singularResource": "selfsubjectrulesreview", "scope": "Cluster",
             "verbs": ["create"],
             "responseKind": {"group": "authorization.k8s.io", "version": "v1", "kind": "SelfSubjectRulesReview"}},
        ]}])

    def test_openapi_documents(self) -> None:
        """OpenAPI v3 documents the reviews: one POST per kind, the kind's schema with its spec and status."""
        index = self.get("/openapi/v3")["paths"]
        self.assertIn("apis/authorization.k8s.io/v1", index)
        self.assertIn("apis/authentication.k8s.io/v1beta1", index)
        document = self.get(index["apis/authorization.k8s.io/v1"]["serverRelativeURL"])
        self.assertEqual(sorted(document["paths"]), ["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                                     "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"])
        self.assertEqual(sorted(k for k in document["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"]
                                if k != "parameters"), ["post"])
        schema = [s for s in document["components"]["schemas"].values() if s.get("x-kubernetes-group-version-kind") ==
                  [{"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview", "version": "v1"}]][0]
        self.assertEqual(sorted(schema["properties"]), ["apiVersion", "kind", "metadata", "spec", "status"])
        self.assertEqual(schema["required"], ["spec"])
