"""Who is asking, and may they: authentication into `UserInfo`, and the built-in authorization policy.

Authenticators run in kube-apiserver's order — front-proxy request headers, x509 client certificate,
bearer token — as a union: the first that recognises the request wins; if none does and one of them
rejected a credential, the request is refused (401); otherwise it is anonymous, when anonymous
access is on.  Client certificates are requested but not verified during the TLS handshake (as
kube-apiserver does); each authenticator verifies the presented chain against its own CA bundle.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from attrs import field, frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import Interface, implementer

from ..apimachinery.requestinfo import RequestInfo
from ..config.settings import RequestHeaderSettings

_log = Logger()
_SHA256 = hashes.SHA256()

ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
AUTHENTICATED_GROUP = "system:authenticated"
MASTERS_GROUP = "system:masters"
CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"


@frozen
class UserInfo:
    """An authenticated (or anonymous) caller, as Kubernetes' user.Info."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(factory=dict, hash=False)

    @property
    def is_anonymous(self) -> bool:
        """True for the user of a request that carried no credential."""
        return self.name == ANONYMOUS_USER


ANONYMOUS = UserInfo(name=ANONYMOUS_USER, groups=(UNAUTHENTICATED_GROUP,))


class AuthenticationError(Exception):
    """A credential was presented and is not acceptable (bad signature, unknown token, …)."""


@frozen
class Credentials:
    """What a request brings to authentication: its headers and the client certificate chain (leaf first)."""

    headers: Headers
    peer_chain: Sequence[x509.Certificate] = ()
    connection: object | None = None


class IAuthenticator(Interface):
    """Turns a request's credentials into a user."""

    def authenticate(credentials: Credentials) -> UserInfo | None:
        """Return the user, None when this authenticator does not apply, or raise AuthenticationError."""


def load_ca_bundle(path: str) -> list[x509.Certificate]:
    """Read every certificate of a PEM bundle; an empty or malformed bundle is an error naming the file."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise ValueError(f"{path}: not a PEM certificate bundle ({error})") from None
    return certificates


class ChainVerifier:
    """Verifies client certificate chains against one CA bundle, for client authentication.

    Like Go's x509.Verify with ExtKeyUsageClientAuth: the chain must lead to a CA of the bundle, every
    certificate must be within its validity dates, and a leaf that lists extended key usages must
    list clientAuth.  Results are cached per TLS connection until the leaf expires, so a keep-alive
    connection pays for verification once.
    """

    def __init__(self, cas: Iterable[x509.Certificate], clock: Callable[[], float] = time.time):
        self._store = crypto.X509Store()
        self._count = 0
        for ca in cas:
            self._store.add_cert(crypto.X509.from_cryptography(ca))
            self._count += 1
        self._clock = clock
        self._cache: weakref.WeakKeyDictionary[object, tuple[bytes, float, str | None]] = weakref.WeakKeyDictionary()

    def verify(self, chain: Sequence[x509.Certificate], connection: object | None = None) -> None:
        """Raise AuthenticationError unless the chain (leaf first) is trusted for client authentication."""
        leaf = chain[0]
        fingerprint = leaf.fingerprint(_SHA256)
        now = self._clock()
        if connection is not None:
            try:
                cached = self._cache.get(connection)
            except TypeError:
                cached = None
            if cached is not None and cached[0] == fingerprint and now < cached[1]:
                if cached[2] is not None:
                    raise AuthenticationError(cached[2])
                return
        problem = self._check(chain)
        if connection is not None:
            try:
                self._cache[connection] = (fingerprint, leaf.not_valid_after_utc.timestamp(), problem)
            except TypeError:
                pass
        if problem is not None:
            raise AuthenticationError(problem)

    def _check(self, chain: Sequence[x509.Certificate]) -> str | None:
        leaf = chain[0]
        try:
            context = crypto.X509StoreContext(
                self._store,
                crypto.X509.from_cryptography(leaf),
                [crypto.X509.from_cryptography(c) for c in chain[1:]],
            )
            context.verify_certificate()
        except crypto.X509StoreContextError as error:
            return f"x509: certificate {_describe(leaf)} is not trusted: {error}"
        try:
            usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return None
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
            return f"x509: certificate {_describe(leaf)} specifies an incompatible key usage (no clientAuth)"
        return None


def _describe(certificate: x509.Certificate) -> str:
    return f"with subject {certificate.subject.rfc4514_string()!r}"


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _organizations(certificate: x509.Certificate) -> tuple[str, ...]:
    return tuple(str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))


@implementer(IAuthenticator)
class X509Authenticator:
    """A client certificate signed by the client CA authenticates as its CN, in the groups of its O values."""

    def __init__(self, verifier: ChainVerifier):
        self._verifier = verifier

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        if not credentials.peer_chain:
            return None
        self._verifier.verify(credentials.peer_chain, credentials.connection)
        leaf = credentials.peer_chain[0]
        name = _common_name(leaf)
        if not name:
            raise AuthenticationError("x509: the client certificate has no common name; the user name comes from CN")
        digest = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
        return UserInfo(name=name, groups=_organizations(leaf), extra={CREDENTIAL_ID_KEY: (f"X509SHA256={digest}",)})


@implementer(IAuthenticator)
class RequestHeaderAuthenticator:
    """Identity asserted by a trusted front proxy in X-Remote-* headers.

    Trusted only when the client certificate chains to the request-header CA and, when allowed names
    are configured, its CN is exactly one of them.  A request from such a proxy without a user name
    header is not recognised here (it then falls through to the x509 authenticator).
    """

    def __init__(self, verifier: ChainVerifier, settings: RequestHeaderSettings):
        self._verifier = verifier
        self._settings = settings

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        if not credentials.peer_chain:
            return None
        self._verifier.verify(credentials.peer_chain, credentials.connection)
        common_name = _common_name(credentials.peer_chain[0])
        allowed = self._settings.allowed_names
        if allowed and common_name not in allowed:
            raise AuthenticationError(
                f"x509: subject with cn={common_name} is not in the allowed list of front proxies"
            )
        headers = credentials.headers
        name = _first_value(headers, self._settings.username_headers)
        if not name:
            return None
        uid = _first_value(headers, self._settings.uid_headers)
        groups: list[str] = []
        for header in self._settings.group_headers:
            groups.extend(v for v in header_values(headers, header) if v)
        extra: dict[str, list[str]] = {}
        prefixes = [p.lower() for p in self._settings.extra_headers_prefixes]
        for raw_name, values in headers.getAllRawHeaders():
            lower = raw_name.decode("latin-1").lower()
            for prefix in prefixes:
                if lower.startswith(prefix) and len(lower) > len(prefix):
                    key = _unescape_extra_key(lower[len(prefix):])
                    extra.setdefault(key, []).extend(v.decode("utf-8", "replace") for v in values)
                    break
        return UserInfo(name=name, uid=uid, groups=tuple(groups), extra={k: tuple(v) for k, v in extra.items()})


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of a request header as text; bytes that are not UTF-8 are replaced, never an error (a 500)."""
    return [value.decode("utf-8", "replace") for value in headers.getRawHeaders(name.encode("latin-1"), [])]


def _first_value(headers: Headers, names: Sequence[str]) -> str:
    for header in names:
        for value in header_values(headers, header):
            if value:
                return value
    return ""


def _unescape_extra_key(encoded: str) -> str:
    try:
        return unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return encoded


class TokenFileError(ValueError):
    """The static token file is malformed; the message names the file and line."""


def parse_token_file(path: str) -> dict[str, UserInfo]:
    """Read a kube-apiserver static token file: `token,user,uid[,"group1,group2"]` per line."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    users: dict[str, UserInfo] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 3:
            raise TokenFileError(f"{path}, line {number}: expected token,user,uid[,groups] but found {len(row)} column(s)")
        token, name, uid = (cell.strip() for cell in row[:3])
        if not token or not name:
            raise TokenFileError(f"{path}, line {number}: the token and the user name must not be empty")
        if token in users:
            raise TokenFileError(f"{path}, line {number}: duplicate token (for user {name!r})")
        groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        users[token] = UserInfo(name=name, uid=uid, groups=groups)
    return users


@implementer(IAuthenticator)
class TokenAuthenticator:
    """`Authorization: Bearer <token>` against a fixed set of tokens (the token file and the kubeconfig's).

    An `Authorization` value once found valid is remembered with its user (the tokens never change
    for the life of the authenticator), so a caller's later requests cost one dictionary lookup.
    """

    def __init__(self, tokens: Mapping[str, UserInfo]):
        self._by_digest = {hashlib.sha256(t.encode()).digest(): (t, u) for t, u in tokens.items()}
        self._accepted: dict[bytes, UserInfo] = {}

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        raw = credentials.headers.getRawHeaders(b"authorization")
        if not raw:
            return None
        accepted = self._accepted.get(raw[0])
        if accepted is not None:
            return accepted
        scheme, _, token = raw[0].decode("utf-8", "replace").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        entry = self._by_digest.get(hashlib.sha256(token.encode()).digest())
        if entry is None or not hmac.compare_digest(entry[0].encode(), token.encode()):
            raise AuthenticationError("invalid bearer token")
        if len(self._accepted) >= _ACCEPTED_LIMIT:
            self._accepted.clear()
        self._accepted[raw[0]] = entry[1]
        return entry[1]


#: Remembered valid `Authorization` values (their spellings of the tokens), and authenticated users; emptied when full.
_ACCEPTED_LIMIT = 1024


class Authenticator:
    """The union of authenticators, then anonymous; every recognised user also gets system:authenticated."""

    def __init__(self, authenticators: Sequence[IAuthenticator], anonymous: bool):
        self._authenticators = list(authenticators)
        self._anonymous = anonymous
        #: The user with system:authenticated, by the identity of the user an authenticator returned (kept alive
        #: alongside, so that the identity is not reused): an authenticator that returns the same user object
        #: for a caller (the token authenticator) gets the same answer without building it again.
        self._completed: dict[int, tuple[UserInfo, UserInfo]] = {}

    def authenticate(self, credentials: Credentials) -> UserInfo | None:
        """The caller, or None when the request must be answered 401."""
        errors: list[str] = []
        for authenticator in self._authenticators:
            try:
                user = authenticator.authenticate(credentials)
            except AuthenticationError as error:
                errors.append(str(error))
                continue
            if user is not None:
                return self._complete(user)
        if errors:
            _log.info("authentication failed: {errors}", errors="; ".join(errors))
            return None
        return ANONYMOUS if self._anonymous else None

    def _complete(self, user: UserInfo) -> UserInfo:
        known = self._completed.get(id(user))
        if known is not None and known[0] is user:
            return known[1]
        groups = user.groups if AUTHENTICATED_GROUP in user.groups else (*user.groups, AUTHENTICATED_GROUP)
        completed = UserInfo(name=user.name, uid=user.uid, groups=groups, extra=user.extra)
        if len(self._completed) >= _ACCEPTED_LIMIT:
            self._completed.clear()
        self._completed[id(user)] = (user, completed)
        return completed


#: Non-resource paths every caller may read, anonymous ones included (kube's system:public-info-viewer).
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
#: Non-resource paths any authenticated caller may read (kube's system:discovery and system:basic-user).
DISCOVERY_PATHS = ("/api", "/apis", "/openapi")
#: The verbs of a read of a non-resource path (kube names a HEAD request's verb `head`).
READ_VERBS = ("get", "head")
AUTHENTICATION_GROUP = "authentication.k8s.io"
AUTHORIZATION_GROUP = "authorization.k8s.io"


@frozen
class ResourceRule:
    """Verbs granted on resources, matched as RBAC matches a PolicyRule (`*` matches anything)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def matches(self, info: RequestInfo) -> bool:
        """Whether the rule grants a resource request."""
        if not info.is_resource_request:
            return False
        if "*" not in self.verbs and info.verb not in self.verbs:
            return False
        if "*" not in self.api_groups and info.api_group not in self.api_groups:
            return False
        if self.resource_names and info.name not in self.resource_names:
            return False
        combined = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        return any(r == "*" or r == combined or (info.subresource != "" and r == f"*/{info.subresource}")
                   for r in self.resources)


@frozen
class NonResourceRule:
    """Verbs granted on non-resource paths: an exact path, a prefix ending in `*`, or `*` for every path."""

    verbs: tuple[str, ...]
    urls: tuple[str, ...]

    def matches(self, info: RequestInfo) -> bool:
        """Whether the rule grants a non-resource request."""
        if info.is_resource_request:
            return False
        if "*" not in self.verbs and info.verb not in self.verbs:
            return False
        return any(url == "*" or url == info.path or (url.endswith("*") and info.path.startswith(url[:-1]))
                   for url in self.urls)


@frozen
class Rules:
    """What a set of callers may do: the rules `authorize` applies and a SelfSubjectRulesReview lists."""

    resource: tuple[ResourceRule, ...] = ()
    non_resource: tuple[NonResourceRule, ...] = ()

    def __add__(self, other: Rules) -> Rules:
        return Rules(self.resource + other.resource, self.non_resource + other.non_resource)

    def grants(self, info: RequestInfo) -> bool:
        """Whether any rule grants the request."""
        rules: tuple[ResourceRule | NonResourceRule, ...] = self.resource + self.non_resource
        return any(rule.matches(info) for rule in rules)


def _paths(paths: Sequence[str]) -> tuple[str, ...]:
    """Each path and everything below it, as RBAC spells that."""
    return tuple(url for path in paths for url in (path, path + "/*"))


#: system:masters may do anything (kube's privileged group; cluster-admin's rules).
MASTERS_RULES = Rules((ResourceRule(("*",), ("*",), ("*",)),), (NonResourceRule(("*",), ("*",)),))
#: Every authenticated caller may review itself and read discovery (kube's system:basic-user and system:discovery).
AUTHENTICATED_RULES = Rules(
    (ResourceRule(("create",), (AUTHENTICATION_GROUP,), ("selfsubjectreviews",)),
     ResourceRule(("create",), (AUTHORIZATION_GROUP,), ("selfsubjectaccessreviews", "selfsubjectrulesreviews"))),
    (NonResourceRule(READ_VERBS, _paths(DISCOVERY_PATHS)),),
)
#: Every caller, anonymous ones included, may read health and /version (kube's system:public-info-viewer).
PUBLIC_RULES = Rules((), (NonResourceRule(READ_VERBS, _paths(PUBLIC_PATHS)),))


#: The rules of recent sets of groups (the policy depends on nothing else); emptied when full.
_RULES_BY_GROUPS: dict[tuple[str, ...], Rules] = {}


def rules_for(user: UserInfo) -> Rules:
    """Every rule that applies to the user, by its groups: the policy is these rules and nothing else."""
    rules = _RULES_BY_GROUPS.get(user.groups)
    if rules is None:
        rules = _rules_for_groups(user)
        if len(_RULES_BY_GROUPS) >= _ACCEPTED_LIMIT:
            _RULES_BY_GROUPS.clear()
        _RULES_BY_GROUPS[user.groups] = rules
    return rules


def _rules_for_groups(user: UserInfo) -> Rules:
    rules = Rules()
    if MASTERS_GROUP in user.groups:
        rules += MASTERS_RULES
    if AUTHENTICATED_GROUP in user.groups:
        rules += AUTHENTICATED_RULES
    return rules + PUBLIC_RULES


@frozen
class Decision:
    """An authorization verdict, with kube's message for a refusal."""

    allowed: bool
    reason: str = ""


_ALLOWED = Decision(True)


def authorize(user: UserInfo, info: RequestInfo) -> Decision:
    """The built-in policy: system:masters may do anything; others what `rules_for` grants them."""
    if MASTERS_GROUP in user.groups:
        # MASTERS_RULES grant every resource and every non-resource request: no rule needs reading.
        return _ALLOWED
    if rules_for(user).grants(info):
        return _ALLOWED
    return Decision(False, forbidden_message(user, info))


#: kube's responsewriters sanitise the refusal text it builds (user names and paths can hold anything).
_SANITIZE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def forbidden_message(user: UserInfo, info: RequestInfo) -> str:
    """kube-apiserver's wording of a refusal (its `forbiddenMessage`, sanitised, inside `NewForbidden`)."""
    if not info.is_resource_request:
        return "forbidden: " + f'User "{user.name}" cannot {info.verb} path "{info.path}"'.translate(_SANITIZE)
    resource = info.resource + (f"/{info.subresource}" if info.subresource else "")
    qualified = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
    if info.name:
        qualified += f' "{info.name}"'
    scope = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
    reason = (f'User "{user.name}" cannot {info.verb} resource "{resource}" '
              f'in API group "{info.api_group}" {scope}')
    return f"{qualified} is forbidden: " + reason.translate(_SANITIZE)


def forbidden_details(info: RequestInfo) -> dict[str, Any] | None:
    """The `details` of a 403 Status for a resource request (kube names the resource as `kind`)."""
    if not info.is_resource_request:
        return None
    details: dict[str, Any] = {}
    if info.name:
        details["name"] = info.name
    if info.api_group:
        details["group"] = info.api_group
    details["kind"] = info.resource
    return details
