"""What a request asks for, in Kubernetes terms (verb, group, version, resource, namespace, name).

This mirrors k8s.io/apiserver's RequestInfoFactory: authorization, metrics and the access log all
describe a request with these fields.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote

from attrs import frozen

_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_API_PREFIXES = ("api", "apis")
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_SPECIAL_VERBS = ("proxy", "watch")


@frozen
class RequestInfo:
    """The Kubernetes view of one request; `is_resource_request` is false for /version, /apis/<g> and such."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()


def request_info(method: str, path: str, query: str = "") -> RequestInfo:
    """Classify a request from its method, its path (without query) and its raw query string."""
    method = method.upper()
    non_resource = RequestInfo(is_resource_request=False, path=path, verb=method.lower())
    segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
    if len(segments) < 3 or segments[0] not in _API_PREFIXES:
        return non_resource
    prefix, rest = segments[0], segments[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    if not rest:
        return non_resource

    verb = _METHOD_VERBS.get(method, "")
    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            return non_resource
        verb, rest = rest[0], rest[1:]

    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""

    if verb == "get" and not name:
        params = parse_qs(query, keep_blank_values=True)
        watch = params.get("watch")
        verb = "watch" if watch is not None and watch[0].lower() not in ("0", "false") else "list"
        name = _exact_name(params.get("fieldSelector", [""])[0])
    if verb == "delete" and not name:
        verb = "deletecollection"
    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(rest),
    )


def _exact_name(field_selector: str) -> str:
    """The name a field selector pins with metadata.name=X (or ==X), if it does."""
    for term in field_selector.split(","):
        for operator in ("==", "="):
            key, sep, value = term.partition(operator)
            if sep and key.strip() == "metadata.name" and not value.startswith("=") and "!" not in key:
                value = value.strip()
                return value if value not in ("", ".", "..") and "/" not in value and "%" not in value else ""
    return ""
