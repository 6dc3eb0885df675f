# -*- test-case-name: tests.test_reviews -*-
"""The self-review kinds: what `kubectl auth can-i` (with `--list`) and `kubectl auth whoami` create.

- `authorization.k8s.io/v1` SelfSubjectAccessReview: may the caller do this?  Answered by `authorize`.
- `authorization.k8s.io/v1` SelfSubjectRulesReview: what may the caller do?  Answered by `rules_for`.
- `authentication.k8s.io/v1` (and `v1beta1`, which kubectl 1.27 asks for) SelfSubjectReview: who is the
  caller?  Its user as the request acts as it (after impersonation).

Nothing is stored; a review (JSON, YAML or kube's protobuf) is decoded into kube's Go types
(`reviewtypes`: a wrongly typed field is kube's 400 naming the Go field), validated with kube's
messages (422), answered for the user the request acts as, and returned as kube returns it.  Every
authenticated caller may create these reviews, as kube's system:basic-user grants.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from ..apimachinery.apply import update_managed_fields
from ..apimachinery.fielderrors import FieldError, invalid
from ..apimachinery.gotypes import json_kind
from ..apimachinery.negotiation import decode_object, media_type
from ..apimachinery.pruning import prune_unknown_fields
from ..apimachinery.requestinfo import RequestInfo
from ..apimachinery.status import StatusError
from ..apimachinery.strategy import KindInfo, LocalGroupVersion, Object, Strategy, rfc3339
from .auth import AUTHENTICATION_GROUP, AUTHORIZATION_GROUP, NonResourceRule, ResourceRule, UserInfo, authorize, rules_for
from .reviewtypes import (
    NON_RESOURCE_RULE,
    RESOURCE_RULE,
    SELF_SUBJECT_ACCESS_REVIEW,
    SELF_SUBJECT_RULES_REVIEW,
    USER_INFO,
    PROTOBUF,
    DecodeError,
    GoType,
    decode,
    decode_protobuf,
    go_object_meta,
    go_quoted,
    kind_schema,
    meta_is_empty,
    self_subject_review_type,
    unwrap,
)

# --------------------------------------------------------------------------------------------------------------
# The kinds


def invalid_review(group: str, errors: list[FieldError]) -> StatusError:
    """kube's 422 for a review: its REST names the internal object's (empty) kind, so the message starts `.<group>`."""
    listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    return StatusError(422, f'.{group} "" is invalid: {listed}', "Invalid", {
        "group": group, "causes": [{"reason": e.reason, "message": e.message, "field": e.path} for e in errors]})


class ReviewKind(Strategy):
    """A review kind: its Go type and how a decoded review is answered for the caller."""

    go_type: GoType

    @property
    def zero(self) -> Object:
        """The empty object of the kind, as the field manager compares a new object to."""
        obj = decode({}, self.go_type)
        obj.update(apiVersion=self.info.api_version, kind=self.info.kind)
        return obj

    def answer(self, review: Object, user: UserInfo, now: datetime.datetime, manager: str) -> Object:
        """The object returned for a decoded review (apiVersion and kind set, namespace cleared)."""
        raise NotImplementedError


def _with_type_meta(info: KindInfo, obj: Object) -> Object:
    return {"kind": info.kind, "apiVersion": info.api_version, **{k: v for k, v in obj.items()
                                                                   if k not in ("kind", "apiVersion")}}


def attributes_of(spec: Mapping[str, Any]) -> RequestInfo:
    """The authorization attributes of a SelfSubjectAccessReview's spec (kube's ResourceAttributesFrom and
    NonResourceAttributesFrom; an empty version means every version)."""
    resource = spec.get("resourceAttributes")
    if resource is not None:
        return RequestInfo(is_resource_request=True, path="", verb=resource.get("verb", ""),
                           api_group=resource.get("group", ""), api_version=resource.get("version", "") or "*",
                           namespace=resource.get("namespace", ""), resource=resource.get("resource", ""),
                           subresource=resource.get("subresource", ""), name=resource.get("name", ""))
    non_resource = spec.get("nonResourceAttributes") or {}
    return RequestInfo(is_resource_request=False, path=non_resource.get("path", ""), verb=non_resource.get("verb", ""))


class SelfSubjectAccessReviewKind(ReviewKind):
    """`selfsubjectaccessreviews`: may the caller do what the spec describes?"""

    go_type = SELF_SUBJECT_ACCESS_REVIEW
    info = KindInfo(group=AUTHORIZATION_GROUP, version="v1", kind="SelfSubjectAccessReview",
                    plural="selfsubjectaccessreviews", singular="selfsubjectaccessreview", namespaced=False,
                    has_status=False, verbs=("create",),
                    schema=kind_schema(SELF_SUBJECT_ACCESS_REVIEW, AUTHORIZATION_GROUP, "v1", "SelfSubjectAccessReview"),
                    description=SELF_SUBJECT_ACCESS_REVIEW.description)

    def validate(self, obj: Object) -> list[FieldError]:
        """kube's ValidateSelfSubjectAccessReview: exactly one kind of attributes, and no metadata."""
        errors: list[FieldError] = []
        spec = obj.get("spec", {})
        resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if resource is not None and non_resource is not None:
            shown = (f"authorization.NonResourceAttributes{{Path:{go_quoted(non_resource.get('path', ''))}, "
                     f"Verb:{go_quoted(non_resource.get('verb', ''))}}}")
            errors.append(FieldError("FieldValueInvalid", "spec.nonResourceAttributes",
                                     f"Invalid value: {shown}: cannot be specified in combination with "
                                     f"resourceAttributes"))
        if resource is None and non_resource is None:
            errors.append(invalid("spec.resourceAttributes", "null",
                                  "exactly one of nonResourceAttributes or resourceAttributes must be specified"))
        meta = obj.get("metadata", {})
        if not meta_is_empty(meta):
            errors.append(FieldError("FieldValueInvalid", "metadata",
                                     f"Invalid value: {go_object_meta(meta)}: must be empty"))
        return errors

    def answer(self, review: Object, user: UserInfo, now: datetime.datetime, manager: str) -> Object:
        obj = update_managed_fields(self.zero, _with_type_meta(self.info, review), manager, "Update", rfc3339(now),
                                    self.info.api_version)
        errors = self.validate(obj)
        if errors:
            raise invalid_review(self.info.group, errors)
        decision = authorize(user, attributes_of(obj["spec"]))
        # Nothing here denies explicitly: a refusal is "no opinion" (allowed and denied both false), as RBAC's.
        obj["status"] = {"allowed": decision.allowed}
        return obj


def _resource_rule(rule: ResourceRule) -> dict[str, Any]:
    return decode({"verbs": list(rule.verbs), "apiGroups": list(rule.api_groups), "resources": list(rule.resources),
                   "resourceNames": list(rule.resource_names)}, RESOURCE_RULE)


def _non_resource_rule(rule: NonResourceRule) -> dict[str, Any]:
    return decode({"verbs": list(rule.verbs), "nonResourceURLs": list(rule.urls)}, NON_RESOURCE_RULE)


class SelfSubjectRulesReviewKind(ReviewKind):
    """`selfsubjectrulesreviews`: everything the caller may do (the same in every namespace here)."""

    go_type = SELF_SUBJECT_RULES_REVIEW
    info = KindInfo(group=AUTHORIZATION_GROUP, version="v1", kind="SelfSubjectRulesReview",
                    plural="selfsubjectrulesreviews", singular="selfsubjectrulesreview", namespaced=False,
                    has_status=False, verbs=("create",),
                    schema=kind_schema(SELF_SUBJECT_RULES_REVIEW, AUTHORIZATION_GROUP, "v1", "SelfSubjectRulesReview"),
                    description=SELF_SUBJECT_RULES_REVIEW.description)

    def answer(self, review: Object, user: UserInfo, now: datetime.datetime, manager: str) -> Object:
        if not review.get("spec", {}).get("namespace"):
            raise StatusError(400, "no namespace on request", "BadRequest")
        rules = rules_for(user)
        return {"kind": self.info.kind, "apiVersion": self.info.api_version, "metadata": {},
                "spec": {}, "status": {"resourceRules": [_resource_rule(r) for r in rules.resource],
                                       "nonResourceRules": [_non_resource_rule(r) for r in rules.non_resource],
                                       "incomplete": False}}


class SelfSubjectReviewKind(ReviewKind):
    """`selfsubjectreviews`: the caller's user, as the request acts as it."""

    def __init__(self, version: str):
        self.go_type = self_subject_review_type(version)
        self.info = KindInfo(group=AUTHENTICATION_GROUP, version=version, kind="SelfSubjectReview",
                             plural="selfsubjectreviews", singular="selfsubjectreview", namespaced=False,
                             has_status=False, verbs=("create",),
                             schema=kind_schema(self.go_type, AUTHENTICATION_GROUP, version, "SelfSubjectReview"),
                             description=self.go_type.description)

    def answer(self, review: Object, user: UserInfo, now: datetime.datetime, manager: str) -> Object:
        user_info: dict[str, Any] = {"username": user.name, "uid": user.uid, "groups": list(user.groups),
                                     "extra": {key: list(values) for key, values in user.extra.items()}}
        return {"kind": self.info.kind, "apiVersion": self.info.api_version,
                "metadata": {"creationTimestamp": rfc3339(now)},
                "status": {"userInfo": decode(user_info, USER_INFO)}}


def review_group_versions() -> list[LocalGroupVersion]:
    """The review group-versions: authorization.k8s.io/v1, authentication.k8s.io/v1 and v1beta1 (kubectl 1.27
    asks for v1beta1 only; kube 1.27 to 1.29 serve it)."""
    return [
        LocalGroupVersion(AUTHORIZATION_GROUP, "v1", (SelfSubjectAccessReviewKind(), SelfSubjectRulesReviewKind())),
        LocalGroupVersion(AUTHENTICATION_GROUP, "v1", (SelfSubjectReviewKind("v1"),)),
        LocalGroupVersion(AUTHENTICATION_GROUP, "v1beta1", (SelfSubjectReviewKind("v1beta1"),)),
    ]


# --------------------------------------------------------------------------------------------------------------
# A request body into a review, with kube's errors


#: The kinds kube's scheme knows in the review groups, by group and version (a body may name any of them).
KNOWN_KINDS: Mapping[str, Mapping[str, frozenset[str]]] = {
    AUTHORIZATION_GROUP: dict.fromkeys(("v1", "v1beta1"), frozenset({
        "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SubjectAccessReview", "LocalSubjectAccessReview"})),
    AUTHENTICATION_GROUP: {"v1": frozenset({"SelfSubjectReview", "TokenReview", "TokenRequest"}),
                           "v1beta1": frozenset({"SelfSubjectReview", "TokenReview"}),
                           "v1alpha1": frozenset({"SelfSubjectReview"})},
}
#: kube's internal package of each group, as its conversion errors name the types.
_INTERNAL_PACKAGES = {AUTHORIZATION_GROUP: "authorization", AUTHENTICATION_GROUP: "authentication"}
_TYPE_META_STRUCT = 'struct { APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }'


def _summary(data: bytes) -> str:
    """kube's summarizeData: the body, cut at 30 bytes."""
    text = data[:30].decode("utf-8", "replace")
    return text + " ..." if len(data) > 30 else text


def _unrecognized(info: KindInfo, detail: str, data: bytes) -> StatusError:
    return StatusError(400, f"the object provided is unrecognized (must be of type {info.kind}): {detail} "
                            f"({_summary(data)})", "BadRequest")


def _not_handled(info: KindInfo, kind: str, version: str, detail: str) -> StatusError:
    return StatusError(400, f'{kind} in version "{version}" cannot be handled as a {info.kind}: {detail}', "BadRequest")


def _group_version(api_version: str) -> tuple[str, str] | None:
    """schema.ParseGroupVersion: `v1`, `group/version` or nothing; None when malformed."""
    if not api_version:
        return "", ""
    if api_version.count("/") == 0:
        return "", api_version
    if api_version.count("/") == 1:
        group, version = api_version.split("/")
        return group, version
    return None


def _type_meta(info: KindInfo, api_version: str, kind: str) -> tuple[str, str, str]:
    """The group, version and kind a body names, defaulted from the URL as kube's decoders default them."""
    parsed = _group_version(api_version)
    group, version = parsed if parsed is not None else ("", "")
    if not version and not group:
        group, version = info.group, info.version
    elif not version and group == info.group:
        version = info.version
    return group, version, kind or info.kind


def _check_kind(info: KindInfo, group: str, version: str, kind: str) -> None:
    """kube's scheme must know the kind in that group-version, and be able to convert it to the URL's kind."""
    group_version = f"{group}/{version}" if group else version
    if kind not in KNOWN_KINDS.get(group, {}).get(version, frozenset()):
        raise _not_handled(info, kind, version, f'no kind "{kind}" is registered for version "{group_version}" in '
                                                f'scheme "pkg/api/legacyscheme/scheme.go:30"')
    if kind != info.kind:
        internal = _INTERNAL_PACKAGES.get(info.group, info.group)
        raise _not_handled(info, kind, version, f"converting ({version}.{kind}) to ({internal}.{info.kind}): "
                                                f"unknown conversion")


def _check_group_version(info: KindInfo, group: str, version: str) -> None:
    if (group, version) != (info.group, info.version):
        group_version = f"{group}/{version}" if group else version
        raise StatusError(400, f"the API version in the data ({group_version}) does not match the expected API "
                               f"version ({info.api_version})", "BadRequest")


def _finish(review: Object) -> Object:
    review.pop("apiVersion", None)
    review.pop("kind", None)
    metadata = review.get("metadata")
    if isinstance(metadata, dict):
        # A cluster-scoped kind: kube clears the namespace a body gives.
        metadata.pop("namespace", None)
    return review


def decode_protobuf_review(kind: ReviewKind, data: bytes) -> Object:
    """A protobuf create body (kubectl 1.32 and later send these) as the review it holds, with kube's errors.

    Unknown fields are skipped without a word, as kube skips them in protobuf.
    """
    info = kind.info
    try:
        api_version, body_kind, message = unwrap(data)
    except DecodeError as error:
        raise _unrecognized(info, str(error), data) from None
    group, version, body_kind = _type_meta(info, api_version, body_kind)
    _check_kind(info, group, version, body_kind)
    try:
        review = decode(decode_protobuf(message, kind.go_type), kind.go_type)
    except DecodeError as error:
        raise _not_handled(info, body_kind, version, str(error)) from None
    _check_group_version(info, group, version)
    return _finish(review)


def decode_review(kind: ReviewKind, data: bytes, content_type: str | None, field_validation: str) -> tuple[Object, list[str]]:
    """A create body as the review it holds, decoded as kube decodes it, and the warnings about its fields.

    field_validation is `Ignore`, `Warn` or `Strict`, for unknown and duplicate fields of JSON and YAML bodies.
    """
    info = kind.info
    if media_type(content_type) == PROTOBUF:
        return decode_protobuf_review(kind, data), []
    if not data.strip():
        raise _unrecognized(info, "couldn't get version/kind; json parse error: unexpected end of JSON input", data)
    try:
        decoded = decode_object(data, content_type)
    except StatusError as error:
        if error.code != 400:
            raise
        raise _unrecognized(info, error.message, data) from None
    value = decoded.value if decoded.value is not None else {}
    if not isinstance(value, dict):
        raise _unrecognized(info, f"couldn't get version/kind; json parse error: json: cannot unmarshal "
                                  f"{json_kind(value)} into Go value of type {_TYPE_META_STRUCT}", data)
    for key in ("apiVersion", "kind"):
        if value.get(key) is not None and not isinstance(value.get(key), str):
            raise _unrecognized(info, f"couldn't get version/kind; json parse error: json: cannot unmarshal "
                                      f"{json_kind(value[key])} into Go struct field .{key} of type string", data)
    group, version, body_kind = _type_meta(info, value.get("apiVersion") or "", value.get("kind") or "")
    _check_kind(info, group, version, body_kind)
    try:
        review = decode(value, kind.go_type)
    except DecodeError as error:
        raise _not_handled(info, body_kind, version, str(error)) from None
    problems = [f'unknown field "{path}"' for path in prune_unknown_fields(value, info.schema)]
    problems += [f'duplicate field "{name}"' for name in decoded.duplicates]
    if problems and field_validation == "Strict":
        raise _not_handled(info, body_kind, version, "strict decoding error: " + ", ".join(problems))
    _check_group_version(info, group, version)
    return _finish(review), problems if field_validation == "Warn" else []
