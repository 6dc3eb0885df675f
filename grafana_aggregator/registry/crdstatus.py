# -*- test-case-name: tests.test_registry_crd -*-
"""The status of a CustomResourceDefinition as kube's controllers write it, as pure functions of the CRDs.

Follows k8s.io/apiextensions-apiserver (Kubernetes 1.36): pkg/controller/status/naming_controller.go
(accepted names, `NamesAccepted`), pkg/controller/establish (`Established`), pkg/controller/finalizer
(`Terminating`), pkg/apihelpers (SetCRDCondition) and the storedVersions upkeep of the strategy.  Time
is passed in, so lastTransitionTime follows the caller's clock.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable
from typing import Any

from ..apimachinery.strategy import Object, rfc3339

NAMES_ACCEPTED = "NamesAccepted"
ESTABLISHED = "Established"
TERMINATING = "Terminating"
#: The finalizer that makes deleting a CRD delete its instances first.
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"

NO_CONFLICTS = ("NoConflicts", "no conflicts found")
NOT_ACCEPTED = ("NotAccepted", "not all names are accepted")
INSTALLING = ("Installing", "the initial names have been accepted")
INITIAL_NAMES_ACCEPTED = ("InitialNamesAccepted", "the initial names have been accepted")
#: The Terminating conditions of the finalizer controller: (status, reason, message).
INSTANCE_DELETION_PENDING = ("True", "InstanceDeletionPending",
                             "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon")
INSTANCE_DELETION_IN_PROGRESS = ("True", "InstanceDeletionInProgress", "CustomResource deletion is in progress")
INSTANCE_DELETION_COMPLETED = ("False", "InstanceDeletionCompleted", "removed all instances")
NEVER_ESTABLISHED = ("False", "NeverEstablished", "resource was never established")
OVERLAPPING_BUILT_IN_RESOURCE = ("False", "OverlappingBuiltInResource",
                                 "instances overlap with built-in resources in storage")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _status(obj: Object) -> dict[str, Any]:
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    return status


def conditions(obj: Object) -> list[dict[str, Any]]:
    """The status conditions that are objects."""
    found = _dict(obj.get("status")).get("conditions")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def find_condition(obj: Object, condition_type: str) -> dict[str, Any] | None:
    """FindCRDCondition."""
    for condition in conditions(obj):
        if condition.get("type") == condition_type:
            return condition
    return None


def is_condition_true(obj: Object, condition_type: str) -> bool:
    """IsCRDConditionTrue."""
    condition = find_condition(obj, condition_type)
    return condition is not None and condition.get("status") == "True"


def new_condition(condition_type: str, status: str, reason: str, message: str) -> dict[str, Any]:
    """A CustomResourceDefinitionCondition without its lastTransitionTime (set_condition stamps it)."""
    return {"type": condition_type, "status": status, "reason": reason, "message": message}


def set_condition(obj: Object, condition: dict[str, Any], now: datetime.datetime) -> None:
    """SetCRDCondition: append a new type; else take status, reason and message, and move lastTransitionTime to
    now only when the status changes (or it was never set)."""
    stamped = dict(condition, lastTransitionTime=rfc3339(now))
    status = _status(obj)
    if not isinstance(status.get("conditions"), list):
        status["conditions"] = []
    existing = find_condition(obj, str(condition.get("type")))
    if existing is None:
        status["conditions"].append(stamped)
        return
    if existing.get("status") != condition.get("status") or not existing.get("lastTransitionTime"):
        existing["lastTransitionTime"] = stamped["lastTransitionTime"]
    for key in ("status", "reason", "message"):
        existing[key] = condition.get(key, "")


def is_condition_equivalent(left: dict[str, Any] | None, right: dict[str, Any] | None) -> bool:
    """IsCRDConditionEquivalent: same type, status, reason and message (the time is not compared)."""
    if left is None or right is None:
        return left is right
    return all(left.get(key, "") == right.get(key, "") for key in ("type", "status", "reason", "message"))


def stored_versions(obj: Object) -> list[str]:
    """status.storedVersions."""
    found = _dict(obj.get("status")).get("storedVersions")
    return [v for v in found if isinstance(v, str)] if isinstance(found, list) else []


def add_storage_version(obj: Object) -> None:
    """The strategy's storedVersions upkeep: the version marked `storage: true` joins status.storedVersions."""
    versions = _dict(obj.get("spec")).get("versions")
    for version in versions if isinstance(versions, list) else []:
        if isinstance(version, dict) and version.get("storage") is True:
            name = version.get("name")
            if isinstance(name, str) and name not in stored_versions(obj):
                status = _status(obj)
                status["storedVersions"] = stored_versions(obj) + [name]
            return


def _names(obj: Object, where: str) -> dict[str, Any]:
    source = _dict(obj.get("spec")) if where == "spec" else _dict(obj.get("status"))
    return _dict(source.get("names" if where == "spec" else "acceptedNames"))


def _text(names: dict[str, Any], key: str) -> str:
    value = names.get(key)
    return value if isinstance(value, str) else ""


def _list(names: dict[str, Any], key: str) -> list[str]:
    value = names.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def names_in_use(group: str, crds: Iterable[Object]) -> tuple[set[str], set[str]]:
    """getAcceptedNamesForGroup: the resource names (plural, singular, short names) and the kinds (kind,
    listKind) the CRDs of a group have been granted, the empty name included as kube's sets do."""
    resources: set[str] = set()
    kinds: set[str] = set()
    for crd in crds:
        if _text(_dict(crd.get("spec")), "group") != group:
            continue
        accepted = _names(crd, "status")
        resources.update((_text(accepted, "plural"), _text(accepted, "singular"), *_list(accepted, "shortNames")))
        kinds.update((_text(accepted, "kind"), _text(accepted, "listKind")))
    return resources, kinds


def _conflict(requested: str, accepted: str, used: set[str]) -> str:
    """equalToAcceptedOrFresh: "" when the name may be granted, else kube's message."""
    if requested == accepted or requested not in used:
        return ""
    return f'"{requested}" is already in use'


def _aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message as is, several (deduplicated) in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def _copy_names(names: dict[str, Any]) -> dict[str, Any]:
    """CustomResourceDefinitionNames as the v1 type serializes it: empty fields omitted."""
    return {key: copy.deepcopy(value) for key, value in names.items() if value not in ("", None, [])}


def calculate_names(crd: Object, crds: Iterable[Object]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """calculateNamesAndConditions: the accepted names, the NamesAccepted condition and the Established condition
    of a CRD, given every CRD in the store (the CRD itself may be among them; its given form is used)."""
    name = _dict(crd.get("metadata")).get("name")
    others = [crd if _dict(other.get("metadata")).get("name") == name else other for other in crds]
    resources, kinds = names_in_use(_text(_dict(crd.get("spec")), "group"), others)
    requested, accepted = _names(crd, "spec"), _names(crd, "status")
    new_names = dict(accepted)
    status, reason, message = "Unknown", "", ""

    def check(key: str, used: set[str], conflict_reason: str) -> None:
        nonlocal status, reason, message
        problem = _conflict(_text(requested, key), _text(accepted, key), used)
        if problem:
            status, reason, message = "False", conflict_reason, problem
        else:
            new_names[key] = _text(requested, key)

    check("plural", resources, "PluralConflict")
    check("singular", resources, "SingularConflict")
    requested_short, accepted_short = _list(requested, "shortNames"), _list(accepted, "shortNames")
    if requested_short != accepted_short:
        problems = [_conflict(short, "", resources) for short in requested_short if short not in accepted_short]
        problems = [problem for problem in problems if problem]
        if problems:
            status, reason, message = "False", "ShortNamesConflict", _aggregate(problems)
        else:
            new_names["shortNames"] = requested_short
    check("kind", kinds, "KindConflict")
    check("listKind", kinds, "ListKindConflict")
    new_names["categories"] = _list(requested, "categories")
    if status == "Unknown":
        status, reason, message = "True", *NO_CONFLICTS
    names_accepted = new_condition(NAMES_ACCEPTED, status, reason, message)

    established = new_condition(ESTABLISHED, "False", *NOT_ACCEPTED)
    old = find_condition(crd, ESTABLISHED)
    if old is not None:
        established = {key: old[key] for key in ("type", "status", "reason", "message") if key in old}
    if established.get("status") != "True" and status == "True":
        established = new_condition(ESTABLISHED, "False", *INSTALLING)
    return _copy_names(new_names), names_accepted, established


def naming_status(crd: Object, crds: Iterable[Object], now: datetime.datetime) -> dict[str, Any] | None:
    """The naming controller's sync: the new status of a CRD whose names are not all accepted yet, or None when
    there is nothing to write."""
    if _copy_names(_names(crd, "spec")) == _copy_names(_names(crd, "status")):
        return None
    accepted, names_condition, established = calculate_names(crd, crds)
    if accepted == _copy_names(_names(crd, "status")) and is_condition_equivalent(
            names_condition, find_condition(crd, NAMES_ACCEPTED)):
        return None
    updated = copy.deepcopy(crd)
    _status(updated)["acceptedNames"] = accepted
    set_condition(updated, names_condition, now)
    set_condition(updated, established, now)
    return _status(updated)


def establish_status(crd: Object, now: datetime.datetime) -> dict[str, Any] | None:
    """The establishing controller's sync: Established=True (InitialNamesAccepted) once the names are accepted,
    or None when there is nothing to write."""
    if not is_condition_true(crd, NAMES_ACCEPTED) or is_condition_true(crd, ESTABLISHED):
        return None
    updated = copy.deepcopy(crd)
    set_condition(updated, new_condition(ESTABLISHED, "True", *INITIAL_NAMES_ACCEPTED), now)
    return _status(updated)


def terminating_condition(status: str, reason: str, message: str) -> dict[str, Any]:
    """A Terminating condition of the finalizer controller (see the INSTANCE_* constants)."""
    return new_condition(TERMINATING, status, reason, message)


def deletion_failed_condition(reason: str, detail: str) -> dict[str, Any]:
    """Terminating=True after a failed cleanup step: reason InstanceDeletionFailed with `could not list instances:
    ...` or `could not issue all deletes: ...`, or InstanceDeletionCheck with `could not confirm zero
    CustomResources remaining: ...`."""
    return terminating_condition("True", reason, detail)


def cleanup_done_condition(crd: Object) -> dict[str, Any]:
    """The Terminating condition the finalizer writes before removing itself: instances removed when the CRD
    was Established, else `NeverEstablished`."""
    if is_condition_true(crd, ESTABLISHED):
        return terminating_condition(*INSTANCE_DELETION_COMPLETED)
    return terminating_condition(*NEVER_ESTABLISHED)
