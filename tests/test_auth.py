"""Authentication (client certificates, front-proxy headers, bearer tokens, anonymous) and the authorization policy."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from grafana_aggregator.apimachinery.requestinfo import request_info
from grafana_aggregator.identity.auth import (
    ANONYMOUS,
    AuthenticationError,
    Authenticator,
    ChainVerifier,
    Credentials,
    RequestHeaderAuthenticator,
    TokenAuthenticator,
    TokenFileError,
    UserInfo,
    X509Authenticator,
    authorize,
    parse_token_file,
)
from grafana_aggregator.config.settings import RequestHeaderSettings
from grafana_aggregator.web.health import HealthChecks
from grafana_aggregator.web.site import build_site
from grafana_aggregator.web.root import AuthenticatingRoot, build_tree

from .support import NOW, CertificateAuthority, empty_apis, expired


def creds(chain: Sequence[x509.Certificate] = (), **headers: str | list[str]) -> Credentials:
    raw = Headers()
    for name, value in headers.items():
        raw.setRawHeaders(name.replace("_", "-"), value if isinstance(value, list) else [value])
    return Credentials(headers=raw, peer_chain=chain)


class ChainVerifierTests(SynchronousTestCase):
    """Client chains are checked against one CA bundle the way Go's x509.Verify checks client certificates."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.verifier = ChainVerifier([self.ca.certificate])

    def test_accepts_certificate_from_the_bundle(self) -> None:
        """A valid clientAuth certificate signed by the CA verifies."""
        self.verifier.verify([self.ca.issue("alice").certificate])

    def test_rejects_other_ca(self) -> None:
        """A certificate from another CA is not trusted, and the error names its subject."""
        other = CertificateAuthority("other").issue("mallory").certificate
        error = self.assertRaises(AuthenticationError, self.verifier.verify, [other])
        self.assertIn("CN=mallory", str(error))
        self.assertIn("is not trusted", str(error))

    def test_rejects_expired(self) -> None:
        """An expired certificate is rejected even when the CA signed it."""
        error = self.assertRaises(AuthenticationError, self.verifier.verify, [expired(self.ca, "old").certificate])
        self.assertIn("expired", str(error))

    def test_rejects_server_only_usage(self) -> None:
        """A leaf whose extended key usage lacks clientAuth cannot authenticate a client."""
        leaf = self.ca.issue("web", usages=[ExtendedKeyUsageOID.SERVER_AUTH]).certificate
        error = self.assertRaises(AuthenticationError, self.verifier.verify, [leaf])
        self.assertIn("incompatible key usage", str(error))

    def test_accepts_leaf_without_extended_key_usage(self) -> None:
        """A leaf with no extended key usage extension is acceptable (Go accepts it too)."""
        self.verifier.verify([self.ca.issue("plain", usages=None).certificate])

    def test_intermediate_from_the_chain_is_used(self) -> None:
        """An intermediate CA sent by the client completes the chain to the trusted root."""
        intermediate_ca = CertificateAuthority("intermediate")
        intermediate = self.ca.issue("intermediate", usages=None)
        # Re-issue the intermediate as a CA certificate signed by the root.
        from cryptography.hazmat.primitives import hashes

        builder = (
            x509.CertificateBuilder()
            .subject_name(intermediate_ca.certificate.subject)
            .issuer_name(self.ca.certificate.subject)
            .public_key(intermediate_ca.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(intermediate.certificate.not_valid_before_utc)
            .not_valid_after(intermediate.certificate.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        intermediate_cert = builder.sign(self.ca.key, hashes.SHA256())
        leaf = intermediate_ca.issue("deep").certificate
        self.verifier.verify([leaf, intermediate_cert])
        self.assertRaises(AuthenticationError, self.verifier.verify, [leaf])

    def test_result_is_cached_per_connection_until_expiry(self) -> None:
        """A connection's verdict is reused for its leaf, and checked again after the leaf expires or changes."""
        now = [NOW.timestamp()]
        checks: list[str] = []

        class CountingVerifier(ChainVerifier):
            def _check(self, chain: Sequence[x509.Certificate]) -> str | None:
                checks.append(_cn(chain[0]))
                return super()._check(chain)

        verifier = CountingVerifier([self.ca.certificate], clock=lambda: now[0])
        connection = type("Connection", (), {})()
        bad = CertificateAuthority("other").issue("mallory").certificate
        self.assertRaises(AuthenticationError, verifier.verify, [bad], connection)
        self.assertRaises(AuthenticationError, verifier.verify, [bad], connection)
        good = self.ca.issue("alice").certificate
        verifier.verify([good], connection)
        verifier.verify([good], connection)
        verifier.verify([good])
        self.assertEqual(checks, ["mallory", "alice", "alice"])
        now[0] = good.not_valid_after_utc.timestamp() + 1
        verifier.verify([good], connection)
        self.assertEqual(checks, ["mallory", "alice", "alice", "alice"])


def _cn(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)


class X509AuthenticatorTests(SynchronousTestCase):
    """A client certificate from the client CA authenticates as CN with groups O."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.authenticator = X509Authenticator(ChainVerifier([self.ca.certificate]))

    def test_common_name_and_organizations(self) -> None:
        """CN becomes the user name, each O a group, and the certificate hash the credential id."""
        leaf = self.ca.issue("alice", ["dev", "ops"]).certificate
        user = self.authenticator.authenticate(creds([leaf]))
        assert user is not None
        self.assertEqual((user.name, user.groups), ("alice", ("dev", "ops")))
        digest = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
        self.assertEqual(user.extra, {"authentication.kubernetes.io/credential-id": (f"X509SHA256={digest}",)})

    def test_no_certificate_does_not_apply(self) -> None:
        """Without a client certificate the authenticator stays out of the decision."""
        self.assertIsNone(self.authenticator.authenticate(creds()))

    def test_missing_common_name_is_an_error(self) -> None:
        """A trusted certificate without CN cannot name a user."""
        leaf = self.ca.issue("", ["dev"]).certificate
        self.assertRaises(AuthenticationError, self.authenticator.authenticate, creds([leaf]))


class RequestHeaderAuthenticatorTests(SynchronousTestCase):
    """Front-proxy identity headers count only from a proxy certificate of the request-header CA."""

    def setUp(self) -> None:
        self.proxy_ca = CertificateAuthority("front-proxy-ca")
        self.proxy = self.proxy_ca.issue("front-proxy-client").certificate
        self.settings = RequestHeaderSettings(client_ca_file="unused", allowed_names=("front-proxy-client",))
        self.authenticator = RequestHeaderAuthenticator(ChainVerifier([self.proxy_ca.certificate]), self.settings)

    def test_user_groups_uid_and_extra(self) -> None:
        """User, uid, every group line and percent-decoded lower-cased extra keys are read (AUTH-1, 8, 9)."""
        headers = Headers()
        headers.setRawHeaders("X-Remote-User", ["alice"])
        headers.setRawHeaders("X-Remote-Uid", ["u-1"])
        headers.setRawHeaders("X-Remote-Group", ["g1", "g2,not-split"])
        headers.setRawHeaders("X-Remote-Extra-Scopes", ["a", "b"])
        headers.setRawHeaders("X-Remote-Extra-Foo%2Fbar", ["v"])
        user = self.authenticator.authenticate(Credentials(headers=headers, peer_chain=[self.proxy]))
        self.assertEqual(user, UserInfo(name="alice", uid="u-1", groups=("g1", "g2,not-split"),
                                        extra={"scopes": ("a", "b"), "foo/bar": ("v",)}))

    def test_cert_from_other_ca_is_rejected(self) -> None:
        """A certificate from another CA cannot assert X-Remote-User (AUTH-3)."""
        other = CertificateAuthority("client-ca").issue("front-proxy-client").certificate
        self.assertRaises(AuthenticationError, self.authenticator.authenticate,
                          creds([other], X_Remote_User="admin"))

    def test_common_name_not_allowed(self) -> None:
        """A proxy certificate whose CN is not in the allowed names is refused (AUTH-2)."""
        evil = self.proxy_ca.issue("evil").certificate
        error = self.assertRaises(AuthenticationError, self.authenticator.authenticate,
                                  creds([evil], X_Remote_User="admin"))
        self.assertIn("cn=evil is not in the allowed list", str(error))

    def test_any_name_when_list_empty(self) -> None:
        """With no allowed names, any certificate from the request-header CA may assert identity (AUTH-6)."""
        authenticator = RequestHeaderAuthenticator(ChainVerifier([self.proxy_ca.certificate]), RequestHeaderSettings())
        user = authenticator.authenticate(creds([self.proxy_ca.issue("anyone").certificate], X_Remote_User="x"))
        self.assertEqual(user, UserInfo(name="x"))

    def test_server_usage_rejected(self) -> None:
        """A proxy certificate without clientAuth usage cannot assert identity (AUTH-4)."""
        leaf = self.proxy_ca.issue("front-proxy-client", usages=[ExtendedKeyUsageOID.SERVER_AUTH]).certificate
        self.assertRaises(AuthenticationError, self.authenticator.authenticate, creds([leaf], X_Remote_User="admin"))

    def test_expired_rejected(self) -> None:
        """An expired proxy certificate is rejected (AUTH-5)."""
        leaf = expired(self.proxy_ca, "front-proxy-client").certificate
        self.assertRaises(AuthenticationError, self.authenticator.authenticate, creds([leaf], X_Remote_User="admin"))

    def test_no_user_header_does_not_apply(self) -> None:
        """A trusted proxy without X-Remote-User leaves the request to the next authenticator (AUTH-7)."""
        self.assertIsNone(self.authenticator.authenticate(creds([self.proxy], X_Remote_Group="g")))

    def test_first_non_empty_user_header_wins(self) -> None:
        """Among several configured user headers the first non-empty value is the user."""
        settings = RequestHeaderSettings(username_headers=("X-First", "X-Second"))
        authenticator = RequestHeaderAuthenticator(ChainVerifier([self.proxy_ca.certificate]), settings)
        user = authenticator.authenticate(creds([self.proxy], X_First="", X_Second="bob"))
        assert user is not None
        self.assertEqual(user.name, "bob")


class TokenTests(SynchronousTestCase):
    """Static bearer tokens in kube-apiserver's file format."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_parse_file(self) -> None:
        """Each line gives token, user, uid and quoted comma-separated groups; comments and blanks are skipped."""
        tokens = parse_token_file(self.write('# admins\ntok1,alice,u1,"system:masters,dev"\n\ntok2,bob,u2\n'))
        self.assertEqual(tokens, {
            "tok1": UserInfo(name="alice", uid="u1", groups=("system:masters", "dev")),
            "tok2": UserInfo(name="bob", uid="u2"),
        })

    def test_malformed_lines(self) -> None:
        """Too few columns, an empty user and a duplicate token are errors naming the file and line."""
        for text, line in (("tok,alice\n", 1), ("a,b,c\n,bob,u\n", 2), ("t,a,1\nt,b,2\n", 2)):
            path = self.write(text)
            error = self.assertRaises(TokenFileError, parse_token_file, path)
            self.assertIn(f"{path}, line {line}", str(error))

    def test_bearer_token(self) -> None:
        """A known bearer token authenticates; an unknown one is an error; other schemes do not apply."""
        authenticator = TokenAuthenticator({"secret": UserInfo(name="alice")})
        self.assertEqual(authenticator.authenticate(creds(Authorization="Bearer secret")), UserInfo(name="alice"))
        self.assertEqual(authenticator.authenticate(creds(Authorization="bearer  secret ")), UserInfo(name="alice"))
        self.assertRaises(AuthenticationError, authenticator.authenticate, creds(Authorization="Bearer nope"))
        self.assertIsNone(authenticator.authenticate(creds(Authorization="Basic YTpi")))
        self.assertIsNone(authenticator.authenticate(creds(Authorization="Bearer ")))
        self.assertIsNone(authenticator.authenticate(creds()))


class UnionTests(SynchronousTestCase):
    """The authenticators together, in kube-apiserver's order, then anonymous."""

    def setUp(self) -> None:
        self.client_ca = CertificateAuthority("client-ca")
        self.proxy_ca = CertificateAuthority("proxy-ca")
        self.authenticator = Authenticator(
            [
                RequestHeaderAuthenticator(ChainVerifier([self.proxy_ca.certificate]), RequestHeaderSettings()),
                X509Authenticator(ChainVerifier([self.client_ca.certificate])),
                TokenAuthenticator({"tok": UserInfo(name="tokenuser", groups=("g",))}),
            ],
            anonymous=True,
        )

    def test_authenticated_group_added(self) -> None:
        """Every recognised user is also in system:authenticated."""
        user = self.authenticator.authenticate(creds(Authorization="Bearer tok"))
        self.assertEqual(user, UserInfo(name="tokenuser", groups=("g", "system:authenticated")))

    def test_anonymous_without_credentials(self) -> None:
        """No credential at all is the anonymous user in system:unauthenticated."""
        self.assertEqual(self.authenticator.authenticate(creds()), ANONYMOUS)
        self.assertEqual(ANONYMOUS.groups, ("system:unauthenticated",))

    def test_no_anonymous_when_disabled(self) -> None:
        """With anonymous access off, a request without credentials is refused."""
        self.assertIsNone(Authenticator([], anonymous=False).authenticate(creds()))

    def test_rejected_credential_is_not_anonymous(self) -> None:
        """A bad token or untrusted certificate is refused rather than treated as anonymous."""
        self.assertIsNone(self.authenticator.authenticate(creds(Authorization="Bearer wrong")))
        stranger = CertificateAuthority("stranger").issue("x").certificate
        self.assertIsNone(self.authenticator.authenticate(creds([stranger])))

    def test_good_token_wins_over_bad_certificate(self) -> None:
        """When one credential is rejected and another accepted, the request is authenticated."""
        stranger = CertificateAuthority("stranger").issue("x").certificate
        user = self.authenticator.authenticate(creds([stranger], Authorization="Bearer tok"))
        assert user is not None
        self.assertEqual(user.name, "tokenuser")

    def test_front_proxy_before_client_certificate(self) -> None:
        """A proxy certificate with X-Remote-User authenticates as the header's user, not the proxy's CN."""
        proxy = self.proxy_ca.issue("front-proxy-client").certificate
        user = self.authenticator.authenticate(creds([proxy], X_Remote_User="alice"))
        assert user is not None
        self.assertEqual(user.name, "alice")

    def test_client_ca_certificate_cannot_assert_headers(self) -> None:
        """A client-CA certificate sending X-Remote-User authenticates as its own CN (AUTH-3)."""
        client = self.client_ca.issue("bob").certificate
        user = self.authenticator.authenticate(creds([client], X_Remote_User="admin"))
        assert user is not None
        self.assertEqual(user.name, "bob")


class AuthorizationTests(SynchronousTestCase):
    """The built-in policy: masters do anything; users read discovery, version, OpenAPI and health."""

    masters = UserInfo(name="admin", groups=("system:masters", "system:authenticated"))
    user = UserInfo(name="alice", groups=("system:authenticated",))

    def decide(self, who: UserInfo, method: str, path: str, query: str = "") -> bool:
        return authorize(who, request_info(method, path, query)).allowed

    def test_matrix(self) -> None:
        """Each kind of caller gets exactly the paths and verbs the policy grants."""
        cases = [
            ("GET", "/healthz"), ("GET", "/livez"), ("GET", "/readyz/ping"), ("GET", "/version"),
            ("GET", "/api"), ("GET", "/apis"), ("GET", "/apis/apiregistration.k8s.io"),
            ("GET", "/apis/apiregistration.k8s.io/v1"), ("GET", "/openapi/v2"), ("GET", "/openapi/v3/apis/x/v1"),
            ("GET", "/apis/apiregistration.k8s.io/v1/apiservices"), ("POST", "/apis/apiregistration.k8s.io/v1/apiservices"),
            ("GET", "/metrics"), ("POST", "/version"), ("GET", "/versionx"),
        ]
        expected = {
            "masters": [True] * len(cases),
            "user": [True] * 10 + [False] * 5,
            "anonymous": [True] * 4 + [False] * 11,
        }
        for who, name in ((self.masters, "masters"), (self.user, "user"), (ANONYMOUS, "anonymous")):
            got = [self.decide(who, m, p) for m, p in cases]
            self.assertEqual(dict(zip(cases, got)), dict(zip(cases, expected[name])), name)

    def test_forbidden_messages(self) -> None:
        """Refusals are worded as kube-apiserver words them."""
        self.assertEqual(authorize(self.user, request_info("GET", "/metrics")).reason,
                         'forbidden: User "alice" cannot get path "/metrics"')
        self.assertEqual(
            authorize(self.user, request_info("GET", "/apis/apiregistration.k8s.io/v1/apiservices")).reason,
            'apiservices.apiregistration.k8s.io is forbidden: User "alice" cannot list resource "apiservices" '
            'in API group "apiregistration.k8s.io" at the cluster scope',
        )
        self.assertEqual(
            authorize(self.user, request_info(
                "DELETE", "/apis/service.grafana.app/v0alpha1/namespaces/ns/externalnames/x")).reason,
            'externalnames.service.grafana.app "x" is forbidden: User "alice" cannot delete resource "externalnames" '
            'in API group "service.grafana.app" in the namespace "ns"',
        )


class AuthenticatingRootTests(SynchronousTestCase):
    """Requests through the served tree get 401 and 403 Status answers exactly as kube sends them."""

    def setUp(self) -> None:
        self.ca = CertificateAuthority()
        self.chain: list[x509.Certificate] = []
        authenticator = Authenticator(
            [X509Authenticator(ChainVerifier([self.ca.certificate])),
             TokenAuthenticator({"admintoken": UserInfo(name="admin", groups=("system:masters",)),
                                 "usertoken": UserInfo(name="alice")})],
            anonymous=True,
        )
        tree = build_tree(health=HealthChecks(), emulated_version=(1, 33), apis=empty_apis())
        root = AuthenticatingRoot(tree, authenticator, peer_certificates=lambda request: self.chain)
        self.client = StubTreq(build_site(root).resource)

    def get(self, path: str, token: str | None = None) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.successResultOf(self.client.get(f"https://agg.test{path}", headers=headers))
        return response.code, self.successResultOf(self.client.json_content(response))

    def test_anonymous_apis_is_401(self) -> None:
        """An unauthenticated request to /apis gets the 401 Unauthorized Status."""
        self.assertEqual(self.get("/apis"), (401, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
        }))

    def test_anonymous_version(self) -> None:
        """Anonymous callers may read /version."""
        code, body = self.get("/version")
        self.assertEqual((code, body["minor"]), (200, "33"))  # type: ignore[index]

    def test_bad_token_is_401_even_for_health(self) -> None:
        """A rejected credential is refused everywhere, as kube's fail-on-error anonymous fallback does."""
        self.assertEqual(self.get("/version", token="wrong")[0], 401)

    def test_user_forbidden(self) -> None:
        """An authenticated user outside system:masters gets 403 with kube's message for other paths."""
        self.assertEqual(self.get("/metrics", token="usertoken"), (403, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'forbidden: User "alice" cannot get path "/metrics"', "reason": "Forbidden",
            "details": {}, "code": 403,
        }))
        code, body = self.get("/apis/apiregistration.k8s.io/v1/apiservices/v1.x", token="usertoken")
        self.assertEqual(code, 403)
        self.assertEqual(body["details"], {"name": "v1.x", "group": "apiregistration.k8s.io",  # type: ignore[index]
                                           "kind": "apiservices"})

    def test_user_reads_discovery(self) -> None:
        """An authenticated user may read /apis."""
        self.assertEqual(self.get("/apis", token="usertoken"),
                         (200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))

    def test_masters_unknown_path_is_404(self) -> None:
        """For a master, an unknown path is the NotFound Status."""
        self.assertEqual(self.get("/nothing/here", token="admintoken"), (404, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server could not find the requested resource", "reason": "NotFound",
            "details": {}, "code": 404,
        }))

    def test_client_certificate_masters(self) -> None:
        """A client certificate in O=system:masters reaches everything."""
        self.chain = [self.ca.issue("development", ["system:masters"]).certificate]
        self.assertEqual(self.get("/nothing")[0], 404)
        self.chain = [CertificateAuthority("other").issue("development", ["system:masters"]).certificate]
        self.assertEqual(self.get("/nothing")[0], 401)
