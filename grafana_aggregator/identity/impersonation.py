# -*- test-case-name: tests.test_impersonation -*-
"""Impersonation: `Impersonate-*` headers turn the authenticated caller into someone else, as kube's filter does.

`Impersonate-User` names the user (a `system:serviceaccount:<namespace>:<name>` user is a service
account), `Impersonate-Group` (repeatable) its groups, `Impersonate-Uid` its uid and
`Impersonate-Extra-<key>` (the key percent-encoded, the header repeatable) its extra values.  Each
of them is a separate request the caller must be authorized for, in the order kube checks them:
verb `impersonate` on `users` (or `serviceaccounts`), `groups`, `userextras/<key>` and `uids`.  The
first refusal is kube's 403 naming what could not be impersonated; a group, uid or extra without a
user is a 400.  The impersonated user gets `system:authenticated` unless it is `system:anonymous`
(which gets `system:unauthenticated`) or its groups already say which it is, and service accounts
get their groups when none are given.  The request then acts as that user for everything after
authentication: authorization, admission, the access log and the identity sent to backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import unquote

from attrs import frozen
from twisted.web.http_headers import Headers

from ..apimachinery.requestinfo import RequestInfo
from ..apimachinery.status import StatusError
from ..apimachinery.validation import name_is_dns_label, name_is_dns_subdomain
from .auth import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    AUTHENTICATION_GROUP,
    UNAUTHENTICATED_GROUP,
    Decision,
    UserInfo,
    authorize,
    forbidden_details,
    forbidden_message,
    header_values,
)

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"
EXTRA_HEADER_PREFIX = "Impersonate-Extra-"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
#: The apiVersion kube gives the requests for an extra value and a uid (the others are core/v1 kinds).
_AUTHENTICATION_V1 = f"{AUTHENTICATION_GROUP}/v1"

Authorizer = Callable[[UserInfo, RequestInfo], Decision]


@frozen
class ImpersonationRequest:
    """One thing a request asks to impersonate, as kube's v1.ObjectReference of it.

    kind is `User`, `ServiceAccount`, `Group`, `UserExtra` (field_path holds the extra's key) or `UID`.
    """

    kind: str
    name: str
    namespace: str = ""
    api_version: str = ""
    field_path: str = ""

    @property
    def resource(self) -> str:
        return {"User": "users", "ServiceAccount": "serviceaccounts", "Group": "groups", "UserExtra": "userextras",
                "UID": "uids"}[self.kind]

    def attributes(self) -> RequestInfo:
        """What the caller must be authorized for: verb `impersonate` on this name."""
        group, _, version = self.api_version.rpartition("/")
        return RequestInfo(is_resource_request=True, path="", verb="impersonate", api_group=group,
                           api_version=version or "v1", namespace=self.namespace, resource=self.resource,
                           subresource=self.field_path, name=self.name)

    def go_string(self) -> str:
        """The reference as Go's %v prints an ObjectReference (kind, namespace, name, uid, apiVersion,
        resourceVersion, fieldPath), which kube's 400 message shows."""
        return f"{{{self.kind} {self.namespace} {self.name}  {self.api_version}  {self.field_path}}}"


def split_service_account(name: str) -> tuple[str, str] | None:
    """The namespace and name of a `system:serviceaccount:<namespace>:<name>` user, or None for any other user."""
    if not name.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    parts = name[len(SERVICE_ACCOUNT_PREFIX):].split(":")
    if len(parts) != 2:
        return None
    namespace, account = parts
    if name_is_dns_label(namespace, False) or name_is_dns_subdomain(account, False):
        return None
    return namespace, account


def _first(headers: Headers, name: str) -> str:
    values = header_values(headers, name)
    return values[0] if values else ""


def _extra_key(header_name: str) -> str:
    """The extra's key from its header name: lower-cased, then percent-decoded (kept as is when malformed)."""
    encoded = header_name[len(EXTRA_HEADER_PREFIX):].lower()
    try:
        return unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return encoded


def _is_extra_header(name: str) -> bool:
    return name.lower().startswith(EXTRA_HEADER_PREFIX.lower())


_PREFIX = b"impersonate-"


def asks_to_impersonate(headers: Headers) -> bool:
    """Whether any header is an `Impersonate-*` one (most requests have none: then nothing more is read)."""
    return any(raw_name[:12].lower() == _PREFIX for raw_name, _ in headers.getAllRawHeaders())


def requested(headers: Headers) -> list[ImpersonationRequest]:
    """Everything the headers ask to impersonate, in kube's order; a 400 when they name no user but other things."""
    found: list[ImpersonationRequest] = []
    user = _first(headers, USER_HEADER)
    if user:
        account = split_service_account(user)
        if account is not None:
            found.append(ImpersonationRequest("ServiceAccount", account[1], namespace=account[0]))
        else:
            found.append(ImpersonationRequest("User", user))
    groups = header_values(headers, GROUP_HEADER)
    found.extend(ImpersonationRequest("Group", group) for group in groups)
    extras = False
    for raw_name, values in headers.getAllRawHeaders():
        name = raw_name.decode("latin-1")
        if not _is_extra_header(name):
            continue
        extras = True
        key = _extra_key(name)
        found.extend(ImpersonationRequest("UserExtra", value.decode("utf-8", "replace"),
                                          api_version=_AUTHENTICATION_V1, field_path=key) for value in values)
    uid = _first(headers, UID_HEADER)
    if uid:
        found.append(ImpersonationRequest("UID", uid, api_version=_AUTHENTICATION_V1))
    if (groups or extras or uid) and not user:
        listed = " ".join(request.go_string() for request in found)
        raise StatusError(400, f"requested [{listed}] without impersonating a user", "BadRequest")
    return found


def impersonated_user(requests: Sequence[ImpersonationRequest], groups_given: bool) -> UserInfo:
    """The user the requests describe, with the groups kube adds."""
    name, uid = "", ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for request in requests:
        if request.kind == "ServiceAccount":
            name = f"{SERVICE_ACCOUNT_PREFIX}{request.namespace}:{request.name}"
            if not groups_given:
                groups = [SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{request.namespace}"]
        elif request.kind == "User":
            name = request.name
        elif request.kind == "Group":
            groups.append(request.name)
        elif request.kind == "UserExtra":
            extra.setdefault(request.field_path, []).append(request.name)
        elif request.kind == "UID":
            uid = request.name
    if name != ANONYMOUS_USER:
        if AUTHENTICATED_GROUP not in groups and UNAUTHENTICATED_GROUP not in groups:
            groups.append(AUTHENTICATED_GROUP)
    elif UNAUTHENTICATED_GROUP not in groups:
        groups.append(UNAUTHENTICATED_GROUP)
    return UserInfo(name=name, uid=uid, groups=tuple(groups), extra={k: tuple(v) for k, v in extra.items()})


def impersonate(caller: UserInfo, headers: Headers, authorizer: Authorizer = authorize) -> UserInfo | None:
    """Who the request acts as: None when it impersonates nobody, else the impersonated user.

    Raises kube's 400 for a group, uid or extra without a user, and its 403 for the first thing the
    caller may not impersonate.
    """
    if not asks_to_impersonate(headers):
        return None
    requests = requested(headers)
    if not requests:
        return None
    for request in requests:
        attributes = request.attributes()
        if not authorizer(caller, attributes).allowed:
            raise StatusError(403, forbidden_message(caller, attributes), "Forbidden",
                              forbidden_details(attributes) or {})
    return impersonated_user(requests, bool(header_values(headers, GROUP_HEADER)))


def remove_impersonation_headers(headers: Headers) -> None:
    """Drop every `Impersonate-*` header once it has been applied, as kube does, so nothing later sees them."""
    for name in (USER_HEADER, GROUP_HEADER, UID_HEADER):
        headers.removeHeader(name)
    for raw_name, _ in list(headers.getAllRawHeaders()):
        if _is_extra_header(raw_name.decode("latin-1")):
            headers.removeHeader(raw_name)
