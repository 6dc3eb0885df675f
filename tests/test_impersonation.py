"""Impersonation through the served tree: `Impersonate-*` headers checked, refused or applied as kube's filter does.

Requests go through the daemon's Site, the real AuthenticatingRoot and `build_tree`, with `/apis`
routed by a RoutingTable to the self-review handlers and to a remote group-version whose backend is
a fake resource behind StubTreq's in-memory agent, so what the backend sees is what a backend sees.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher
from twisted.internet.testing import EventLoggingObserver
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from grafana_aggregator.aggregation.remote_discovery import DiscoveryCache
from grafana_aggregator.aggregation.routing import ProxyMaker, RoutingTable
from grafana_aggregator.aggregation.upstream import Backend
from grafana_aggregator.apimachinery.requestinfo import RequestInfo
from grafana_aggregator.identity.auth import (
    Authenticator,
    Decision,
    TokenAuthenticator,
    UserInfo,
)
from grafana_aggregator.identity.impersonation import (
    impersonate,
    remove_impersonation_headers,
    requested,
    split_service_account,
)
from grafana_aggregator.identity.reviews import review_group_versions
from grafana_aggregator.apimachinery.status import StatusError
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.web.discovery import ApisResource
from grafana_aggregator.web.health import HealthChecks
from grafana_aggregator.web.metrics import Metrics, RequestAccounting
from grafana_aggregator.web.reviews import serve_reviews
from grafana_aggregator.web.root import AuthenticatingRoot, build_tree
from grafana_aggregator.web.site import Limits, build_site

from .test_proxy import EXTERNALNAME, Backend_, apiservice

TOKENS = {
    "admintoken": UserInfo(name="admin", uid="0", groups=("system:masters",)),
    "alicetoken": UserInfo(name="alice", uid="1001", groups=("dev",)),
    "oddtoken": UserInfo(name="o<d>&d", uid="1002"),
}
SUB = "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy/test1/sub"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
SSR_BODY = json.dumps({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                       "metadata": {"creationTimestamp": None}, "status": {"userInfo": {}}}).encode()


def status(code: int, message: str, reason: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class Aggregator:
    """The served tree with token authentication, the review APIs and one Available remote group-version."""

    def __init__(self, case: SynchronousTestCase):
        self.case = case
        self.clock = Clock()
        self.backend = Backend_()
        self.backend.body = b'{"kind":"DummySubresource"}'
        self.upstream = RequestTraversalAgent(self.backend)
        store = MemoryStore()
        for collection, namespace, obj in ((EXTERNALNAMES, "grafana", EXTERNALNAME), (APISERVICES, "", apiservice())):
            case.successResultOf(Deferred.fromCoroutine(
                store.create(collection, namespace, obj["metadata"]["name"], copy.deepcopy(obj))))
        informer = Informer(store, (APISERVICES, EXTERNALNAMES), self.clock)
        proxies = ProxyMaker(self.clock, self.agent_for)
        routing = RoutingTable(informer, serve_reviews(review_group_versions(), self.clock), DiscoveryCache(), proxies)
        informer.startService()
        case.addCleanup(informer.stopService)
        tree = build_tree(health=HealthChecks(), emulated_version=(1, 33), apis=ApisResource(routing, 33))
        root = AuthenticatingRoot(tree, Authenticator([TokenAuthenticator(TOKENS)], anonymous=True),
                                  peer_certificates=lambda request: [])
        self.metrics = Metrics()
        self.client = StubTreq(root)
        self.client._agent._serverFactory = build_site(
            root, Limits(), self.clock, RequestAccounting(self.metrics, self.clock, Logger("grafana_aggregator.access")))

    def agent_for(self, backend: Backend) -> IAgent:
        return self.upstream  # type: ignore[return-value]

    def request(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
                headers: Sequence[tuple[bytes, bytes]] = (), content_type: bytes = b"application/json") -> Any:
        """One request, with the token and the (repeatable) headers given; the response, its body read."""
        raw = Headers()
        if token is not None:
            raw.addRawHeader(b"Authorization", f"Bearer {token}".encode())
        for name, value in headers:
            raw.addRawHeader(name, value)
        if body is not None:
            raw.addRawHeader(b"Content-Type", content_type)
        pending = self.client.request(method, "https://agg.test" + path, headers=raw, data=body)
        self.client.flush()
        self.upstream.flush()
        self.client.flush()
        response = self.case.successResultOf(pending)
        response.body = self.case.successResultOf(self.client.content(response))
        return response

    def call(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
             headers: Sequence[tuple[bytes, bytes]] = ()) -> tuple[int, Any]:
        """One request; its code and decoded JSON answer."""
        response = self.request(method, path, token, body, headers)
        return response.code, json.loads(response.body)

    def whoami(self, token: str, headers: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
        """The userInfo a SelfSubjectReview answers for the caller with these headers."""
        code, body = self.call("POST", WHOAMI, token, SSR_BODY, headers)
        self.case.assertEqual(code, 201, body)
        return body["status"]["userInfo"]  # type: ignore[no-any-return]

    def backend_headers(self) -> Headers:
        return self.backend.requests[-1][2]


class ImpersonationThroughTheTreeTests(SynchronousTestCase):
    """What callers may impersonate, and what the request then acts as, through the served tree."""

    def setUp(self) -> None:
        self.aggregator = Aggregator(self)

    def test_non_master_cannot_impersonate_a_user(self) -> None:
        """A caller outside system:masters gets kube's 403 naming the user, and the backend is never asked."""
        code, body = self.aggregator.call("GET", SUB, "alicetoken", headers=[(b"Impersonate-User", b"bob")])
        self.assertEqual((code, body), (403, status(
            403, 'users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the '
                 'cluster scope', "Forbidden", {"name": "bob", "kind": "users"})))
        self.assertEqual(self.aggregator.backend.requests, [])

    def test_non_master_refused_for_the_user_first(self) -> None:
        """With a user, groups and extras requested, the refusal names the user (kube checks it first)."""
        code, body = self.aggregator.call("GET", SUB, "alicetoken", headers=[
            (b"Impersonate-Group", b"system:masters"), (b"Impersonate-User", b"bob"),
            (b"Impersonate-Extra-Scopes", b"all")])
        self.assertEqual((code, body["details"]), (403, {"name": "bob", "kind": "users"}))

    def test_non_master_cannot_impersonate_a_service_account(self) -> None:
        """A service account user is checked as `serviceaccounts` in its namespace."""
        code, body = self.aggregator.call("GET", SUB, "alicetoken",
                                          headers=[(b"Impersonate-User", b"system:serviceaccount:grafana:robot")])
        self.assertEqual((code, body), (403, status(
            403, 'serviceaccounts "robot" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in '
                 'API group "" in the namespace "grafana"', "Forbidden", {"name": "robot", "kind": "serviceaccounts"})))

    def test_anonymous_cannot_impersonate(self) -> None:
        """An anonymous caller asking to impersonate gets the 403 naming system:anonymous, as kube answers it."""
        code, body = self.aggregator.call("GET", "/version", headers=[(b"Impersonate-User", b"admin")])
        self.assertEqual((code, body["message"]), (403, 'users "admin" is forbidden: User "system:anonymous" cannot '
                                                        'impersonate resource "users" in API group "" at the cluster '
                                                        'scope'))

    def test_refusal_text_is_sanitised(self) -> None:
        """The caller's part of the refusal is HTML-escaped as kube's responsewriters escape it."""
        code, body = self.aggregator.call("GET", SUB, "oddtoken", headers=[(b"Impersonate-User", b"<x>")])
        self.assertEqual((code, body["message"]), (403, 'users "<x>" is forbidden: User "o&lt;d&gt;&amp;d" cannot '
                                                        'impersonate resource "users" in API group "" at the cluster '
                                                        'scope'))

    def test_group_without_user_is_400(self) -> None:
        """Groups without a user are kube's 400, listing the requests as Go prints its ObjectReferences."""
        code, body = self.aggregator.call("GET", SUB, "admintoken", headers=[
            (b"Impersonate-Group", b"g1"), (b"Impersonate-Group", b"g2")])
        self.assertEqual((code, body), (400, status(
            400, "requested [{Group  g1    } {Group  g2    }] without impersonating a user", "BadRequest")))

    def test_uid_or_extra_without_user_is_400(self) -> None:
        """A uid or an extra without a user is refused the same way, whoever asks."""
        code, body = self.aggregator.call("GET", SUB, "alicetoken", headers=[(b"Impersonate-Uid", b"42")])
        self.assertEqual((code, body["message"]),
                         (400, "requested [{UID  42  authentication.k8s.io/v1  }] without impersonating a user"))
        code, body = self.aggregator.call("GET", SUB, "admintoken", headers=[(b"Impersonate-Extra-Scopes", b"a")])
        self.assertEqual((code, body["message"]),
                         (400, "requested [{UserExtra  a  authentication.k8s.io/v1  scopes}] without impersonating "
                               "a user"))

    def test_backend_sees_the_impersonated_identity(self) -> None:
        """A master impersonating a user, groups, a uid and extras reaches the backend as exactly that user."""
        code, _ = self.aggregator.call("GET", SUB, "admintoken", headers=[
            (b"Impersonate-User", b"bob"), (b"Impersonate-Group", b"dev"), (b"Impersonate-Group", b"system:masters"),
            (b"Impersonate-Uid", b"u-7"), (b"Impersonate-Extra-Scopes", b"a"), (b"Impersonate-Extra-Scopes", b"b"),
            (b"Impersonate-Extra-Example.com%2FReason", b"audit")])
        self.assertEqual(code, 200)
        headers = self.aggregator.backend_headers()
        self.assertEqual(headers.getRawHeaders("x-remote-user"), ["bob"])
        self.assertEqual(headers.getRawHeaders("x-remote-uid"), ["u-7"])
        self.assertEqual(headers.getRawHeaders("x-remote-group"), ["dev", "system:masters", "system:authenticated"])
        self.assertEqual(headers.getRawHeaders("x-remote-extra-scopes"), ["a", "b"])
        self.assertEqual(headers.getRawHeaders("x-remote-extra-example.com%2Freason"), ["audit"])
        self.assertFalse([name for name, _ in headers.getAllRawHeaders() if name.lower().startswith(b"impersonate")])

    def test_impersonated_request_is_authorized_as_the_impersonated_user(self) -> None:
        """After impersonation, authorization judges the impersonated user: bob may not list apiservices."""
        code, body = self.aggregator.call("GET", "/apis/apiregistration.k8s.io/v1/apiservices", "admintoken",
                                          headers=[(b"Impersonate-User", b"bob")])
        self.assertEqual((code, body["message"]), (403, 'apiservices.apiregistration.k8s.io is forbidden: User "bob" '
                                                        'cannot list resource "apiservices" in API group '
                                                        '"apiregistration.k8s.io" at the cluster scope'))
        code, body = self.aggregator.call("GET", SUB, "admintoken", headers=[(b"Impersonate-User", b"bob")])
        self.assertEqual((code, body["message"]), (403, 'dummy.example.grafana.app "test1" is forbidden: User "bob" '
                                                        'cannot get resource "dummy/sub" in API group '
                                                        '"example.grafana.app" in the namespace "default"'))
        self.assertEqual(self.aggregator.backend.requests, [])

    def test_impersonated_master_is_authorized(self) -> None:
        """Impersonating a member of system:masters grants what masters may do."""
        code, _ = self.aggregator.call("GET", SUB, "admintoken", headers=[
            (b"Impersonate-User", b"bob"), (b"Impersonate-Group", b"system:masters")])
        self.assertEqual(code, 200)
        headers = self.aggregator.backend_headers()
        self.assertEqual((headers.getRawHeaders("x-remote-user"), headers.getRawHeaders("x-remote-group")),
                         (["bob"], ["system:masters", "system:authenticated"]))

    def test_impersonated_anonymous_is_forbidden_not_unauthorized(self) -> None:
        """A request impersonating system:anonymous is judged as anonymous, and refused with 403 (it did authenticate)."""
        code, body = self.aggregator.call("GET", "/apis", "admintoken", headers=[
            (b"Impersonate-User", b"system:anonymous")])
        self.assertEqual((code, body["message"]), (403, 'forbidden: User "system:anonymous" cannot get path "/apis"'))

    def test_groups_kube_adds(self) -> None:
        """system:authenticated is added unless anonymous or already decided; service accounts get their groups."""
        cases = [
            ([(b"Impersonate-User", b"bob")], {"username": "bob", "groups": ["system:authenticated"]}),
            ([(b"Impersonate-User", b"bob"), (b"Impersonate-Group", b"system:unauthenticated"),
              (b"Impersonate-Group", b"system:masters")],
             {"username": "bob", "groups": ["system:unauthenticated", "system:masters"]}),
            ([(b"Impersonate-User", b"bob"), (b"Impersonate-Group", b"system:authenticated"),
              (b"Impersonate-Group", b"dev")], {"username": "bob", "groups": ["system:authenticated", "dev"]}),
            ([(b"Impersonate-User", b"system:serviceaccount:grafana:robot")],
             {"username": "system:serviceaccount:grafana:robot",
              "groups": ["system:serviceaccounts", "system:serviceaccounts:grafana", "system:authenticated"]}),
            ([(b"Impersonate-User", b"system:serviceaccount:grafana:robot"), (b"Impersonate-Group", b"dev")],
             {"username": "system:serviceaccount:grafana:robot", "groups": ["dev", "system:authenticated"]}),
            ([(b"Impersonate-User", b"system:serviceaccount:Bad:robot")],
             {"username": "system:serviceaccount:Bad:robot", "groups": ["system:authenticated"]}),
        ]
        for headers, expected in cases:
            self.assertEqual(self.aggregator.whoami("admintoken", headers), expected, headers)

    def test_whoami_shows_impersonated_uid_and_extra(self) -> None:
        """A SelfSubjectReview answers the impersonated user with its uid and extras (keys lower-cased, decoded)."""
        self.assertEqual(self.aggregator.whoami("admintoken", [
            (b"Impersonate-User", b"bob"), (b"Impersonate-Uid", b"u-7"), (b"Impersonate-Extra-Scopes", b"a"),
            (b"Impersonate-Extra-Scopes", b"b"), (b"Impersonate-Extra-Example.com%2FReason", b"audit"),
            (b"Impersonate-Extra-Almost%zzEncoded", b"x")]), {
            "username": "bob", "uid": "u-7", "groups": ["system:authenticated"],
            "extra": {"scopes": ["a", "b"], "example.com/reason": ["audit"], "almost%zzencoded": ["x"]}})

    def test_access_log_names_both(self) -> None:
        """The access log line names the impersonated user and, apart, who authenticated."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.aggregator.call("GET", SUB, "admintoken", headers=[(b"Impersonate-User", b"bob")])
        access = [e for e in events if e.get("log_access")]
        self.assertEqual([(e["user"], e["impersonator"]) for e in access], [("bob", "admin")])
        self.aggregator.call("GET", SUB, "admintoken")
        access = [e for e in events if e.get("log_access")]
        self.assertEqual((access[-1]["user"], access[-1]["impersonator"]), ("admin", ""))

    def test_undecodable_header_bytes_are_not_a_server_error(self) -> None:
        """Header values that are not UTF-8 (an impersonated user, a token) are refused, never a 500."""
        code, body = self.aggregator.call("GET", SUB, "alicetoken", headers=[(b"Impersonate-User", b"b\xffb")])
        self.assertEqual((code, body["message"]), (403, 'users "b\ufffdb" is forbidden: User "alice" cannot '
                                                        'impersonate resource "users" in API group "" at the cluster '
                                                        'scope'))
        code, body = self.aggregator.call("GET", "/version", headers=[(b"Authorization", b"Bearer \xff\xfe")])
        self.assertEqual((code, body["reason"]), (401, "Unauthorized"))


class ImpersonationRulesTests(SynchronousTestCase):
    """The checks one by one, with an authorizer that grants only what a test says."""

    caller = UserInfo(name="dev", groups=("system:authenticated",))

    def headers(self, *pairs: tuple[str, str]) -> Headers:
        raw = Headers()
        for name, value in pairs:
            raw.addRawHeader(name.encode(), value.encode())
        return raw

    def refusal(self, allowed: set[str], *pairs: tuple[str, str]) -> StatusError:
        """The error of impersonating with only the given resources (`users`, `groups`, `uids`, `userextras/<key>`)."""

        def authorizer(user: UserInfo, info: RequestInfo) -> Decision:
            resource = info.resource + (f"/{info.subresource}" if info.subresource else "")
            return Decision(info.verb == "impersonate" and resource in allowed)

        return self.assertRaises(StatusError, impersonate, self.caller, self.headers(*pairs), authorizer)

    def test_no_headers_impersonate_nobody(self) -> None:
        """Without Impersonate-* headers the request acts as its caller."""
        self.assertIsNone(impersonate(self.caller, self.headers(("X-Other", "1"))))

    def test_each_kind_of_refusal(self) -> None:
        """Groups, uids and extras are each checked, with kube's group, resource and name in the refusal."""
        error = self.refusal({"users"}, ("Impersonate-User", "bob"), ("Impersonate-Group", "ops"))
        self.assertEqual((error.code, error.message, error.details), (403, 'groups "ops" is forbidden: User "dev" '
                         'cannot impersonate resource "groups" in API group "" at the cluster scope',
                         {"name": "ops", "kind": "groups"}))
        error = self.refusal({"users", "groups"}, ("Impersonate-User", "bob"), ("Impersonate-Uid", "u-1"))
        self.assertEqual((error.message, error.details), (
            'uids.authentication.k8s.io "u-1" is forbidden: User "dev" cannot impersonate resource "uids" in API '
            'group "authentication.k8s.io" at the cluster scope',
            {"name": "u-1", "group": "authentication.k8s.io", "kind": "uids"}))
        error = self.refusal({"users", "userextras/scopes"}, ("Impersonate-User", "bob"),
                             ("Impersonate-Extra-Scopes", "a"), ("Impersonate-Extra-Project", "p"))
        self.assertEqual((error.message, error.details), (
            'userextras.authentication.k8s.io "p" is forbidden: User "dev" cannot impersonate resource '
            '"userextras/project" in API group "authentication.k8s.io" at the cluster scope',
            {"name": "p", "group": "authentication.k8s.io", "kind": "userextras"}))

    def test_granted_pieces_are_applied(self) -> None:
        """When every piece is granted, the user is built from all of them."""
        user = impersonate(self.caller, self.headers(
            ("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "a"), ("Impersonate-Uid", "u-1")),
            lambda user, info: Decision(True))
        self.assertEqual(user, UserInfo(name="bob", uid="u-1", groups=("system:authenticated",),
                                        extra={"scopes": ("a",)}))

    def test_anonymous_gets_unauthenticated(self) -> None:
        """Impersonating system:anonymous gives system:unauthenticated (once), never system:authenticated."""
        granted = lambda user, info: Decision(True)  # noqa: E731
        self.assertEqual(impersonate(self.caller, self.headers(("Impersonate-User", "system:anonymous")), granted),
                         UserInfo(name="system:anonymous", groups=("system:unauthenticated",)))
        self.assertEqual(impersonate(self.caller, self.headers(("Impersonate-User", "system:anonymous"),
                                                               ("Impersonate-Group", "system:unauthenticated"),
                                                               ("Impersonate-Group", "dev")), granted),
                         UserInfo(name="system:anonymous", groups=("system:unauthenticated", "dev")))

    def test_requests_in_kube_order(self) -> None:
        """User, then groups, then extras (one per value), then the uid."""
        found = requested(self.headers(("Impersonate-Uid", "u"), ("Impersonate-Extra-K", "1"),
                                       ("Impersonate-Group", "g"), ("Impersonate-User", "bob"),
                                       ("Impersonate-Extra-K", "2")))
        self.assertEqual([(r.kind, r.name) for r in found],
                         [("User", "bob"), ("Group", "g"), ("UserExtra", "1"), ("UserExtra", "2"), ("UID", "u")])

    def test_empty_user_header_is_no_user(self) -> None:
        """An empty Impersonate-User names nobody: alone it is ignored, with a group it is the 400."""
        self.assertEqual(requested(self.headers(("Impersonate-User", ""))), [])
        error = self.assertRaises(StatusError, requested, self.headers(("Impersonate-User", ""),
                                                                       ("Impersonate-Group", "g")))
        self.assertEqual(error.code, 400)

    def test_service_account_names(self) -> None:
        """Only `system:serviceaccount:<DNS label>:<DNS subdomain>` is a service account."""
        self.assertEqual(split_service_account("system:serviceaccount:grafana:robot.one"), ("grafana", "robot.one"))
        for name in ("system:serviceaccount:grafana", "system:serviceaccount:a:b:c", "system:serviceaccount::robot",
                     "system:serviceaccount:Grafana:robot", "system:serviceaccount:grafana:", "bob"):
            self.assertIsNone(split_service_account(name), name)

    def test_headers_removed_once_applied(self) -> None:
        """Every Impersonate-* header is dropped, and nothing else."""
        headers = self.headers(("Impersonate-User", "bob"), ("Impersonate-Group", "g"), ("Impersonate-Uid", "u"),
                               ("impersonate-extra-scopes", "a"), ("X-Keep", "1"))
        remove_impersonation_headers(headers)
        self.assertEqual([name for name, _ in headers.getAllRawHeaders()], [b"X-Keep"])
