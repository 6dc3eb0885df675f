# -*- test-case-name: tests.test_apply -*-
"""Tests for L{grafana_aggregator.apimachinery.apply}: server-side apply and managedFields as kube-apiserver keeps them.

The scenarios are kubectl's: `apply --server-side`, re-apply, `edit`, client-side apply, `--force-conflicts`; every
case compares whole objects, managedFields included, and conflicts by their exact message and causes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.apply import (
    fields_v1, parse_fields_v1, path_string, server_side_apply, update_managed_fields,
)
from grafana_aggregator.apimachinery.status import StatusError

V = "apiregistration.k8s.io/v1"
T1, T2, T3, T4 = "2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z", "2024-05-03T10:00:00Z", "2024-05-04T10:00:00Z"
CONDITIONS = {"status.conditions": ("type",)}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _service(spec: dict[str, Any], labels: dict[str, str] | None = None, **more: Any) -> dict[str, Any]:
    """An APIService manifest."""
    metadata: dict[str, Any] = {"name": "v1.example.com"}
    if labels is not None:
        metadata["labels"] = labels
    obj = {"apiVersion": V, "kind": "APIService", "metadata": metadata, "spec": spec}
    obj.update(more)
    return obj


def _entry(manager: str, operation: str, fields: dict[str, Any], time: str | None = None,
           api_version: str = V, subresource: str = "") -> dict[str, Any]:
    """A managedFields entry, keys in kube's order."""
    entry: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": api_version}
    if time is not None:
        entry["time"] = time
    entry["fieldsType"] = "FieldsV1"
    entry["fieldsV1"] = fields
    if subresource:
        entry["subresource"] = subresource
    return entry


def _with(obj: dict[str, Any], managed: list[dict[str, Any]] | None = None, **metadata: Any) -> dict[str, Any]:
    """A copy of obj with managedFields (and other metadata) set; None removes managedFields."""
    result = copy.deepcopy(obj)
    result["metadata"].update(metadata)
    result["metadata"].pop("managedFields", None)
    if managed is not None:
        result["metadata"]["managedFields"] = managed
    return result


def _stored(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as storage returns it: with a uid."""
    return _with(obj, obj["metadata"].get("managedFields"), uid="6f1c")


SPEC = {"group": "example.com", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
        "service": {"name": "api", "namespace": "example"}}
SPEC_FIELDS: dict[str, Any] = {"f:group": {}, "f:groupPriorityMinimum": {}, "f:service": {"f:name": {}, "f:namespace": {}},
               "f:version": {}, "f:versionPriority": {}}


class FieldsV1Tests(SynchronousTestCase):
    """fields_v1 and parse_fields_v1 write and read structured-merge-diff's FieldsV1 format."""

    def test_round_trip(self) -> None:
        """Field and key elements sort as structured-merge-diff sorts them and `.` marks owned parents."""
        paths = [((0, "spec"), (0, "b")), ((0, "spec"), (0, "a")), ((0, "metadata"), (0, "labels")),
                 ((0, "metadata"), (0, "labels"), (0, "app")),
                 ((0, "status"), (0, "conditions"), (1, (("type", (1, "Ready")),))),
                 ((0, "status"), (0, "conditions"), (1, (("type", (1, "Ready")),)), (0, "status")),
                 ((0, "status"), (0, "conditions"), (1, (("type", (1, "Available")),)))]
        encoded = {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:a": {}, "f:b": {}},
                   "f:status": {"f:conditions": {'k:{"type":"Available"}': {},
                                                 'k:{"type":"Ready"}': {".": {}, "f:status": {}}}}}
        self.assertEqual(json.dumps(fields_v1(paths)), json.dumps(encoded))
        self.assertEqual(parse_fields_v1(encoded), frozenset(paths))

    def test_parse_details(self) -> None:
        """Key fields are sorted, values and indices read, unknown kinds skipped, an empty object is a leaf."""
        self.assertEqual(parse_fields_v1({'k:{"port":80,"protocol":"TCP"}': {}, "v:true": {}, "i:3": {},
                                          "x:ignored": {}, "f:a": {"x:ignored": {}}}),
                         frozenset({((1, (("port", (0, 80)), ("protocol", (1, "TCP")))),), ((2, (2, True)),),
                                    ((3, 3),), ((0, "a"),)}))
        bad_fields: list[dict[str, Any]] = [{"f": {}}, {"fx": {}}, {"f:a": []}, {"k:[1]": {}}]
        for bad in bad_fields:
            self.assertRaises(ValueError, parse_fields_v1, bad)

    def test_path_string(self) -> None:
        """Paths print as conflicts print them."""
        cases = [(((0, "spec"), (0, "versionPriority")), ".spec.versionPriority"),
                 (((0, "status"), (0, "conditions"), (1, (("type", (1, "Available")),)), (0, "status")),
                  '.status.conditions[type="Available"].status'),
                 (((0, "ports"), (1, (("port", (0, 80)), ("protocol", (1, "TCP"))))), '.ports[port=80,protocol="TCP"]'),
                 (((0, "a"), (2, (2, False)), (3, 2)), ".a[=false][2]")]
        self.assertEqual([path_string(p) for p, _ in cases], [s for _, s in cases])


class ServerSideApplyTests(SynchronousTestCase):
    """server_side_apply merges, prunes, owns and conflicts as kube-apiserver's field manager does."""

    def apply(self, live: dict[str, Any] | None, applied: dict[str, Any], manager: str = "kubectl",
              force: bool = False, now: str = T1, **kwargs: Any) -> dict[str, Any]:
        """Apply to the APIService endpoint (status is reset there)."""
        return server_side_apply(live, applied, manager, force, now, V, ("status",), **kwargs)

    def assertConflict(self, call: Any, message: str, causes: list[tuple[str, str]]) -> None:
        """The call fails with a 409 Conflict with exactly this message and these (message, field) causes."""
        error = self.assertRaises(StatusError, call)
        self.assertEqual((error.code, error.reason, error.message), (409, "Conflict", message))
        self.assertEqual(error.details, {"causes": [{"reason": "FieldManagerConflict", "message": m, "field": f}
                                                    for m, f in causes]})

    def test_create(self) -> None:
        """Applying a new object creates it, the manager owning every applied field but the identity metadata."""
        manifest = _service(SPEC, labels={"app": "x"})
        self.assertEqual(self.apply(None, manifest), _with(manifest, [_entry("kubectl", "Apply", {
            "f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": SPEC_FIELDS}, T1)]))

    def test_reapply_unchanged_is_a_no_op(self) -> None:
        """Re-applying the same manifest changes nothing, not even the entry's time."""
        live = _stored(self.apply(None, _service(SPEC)))
        self.assertEqual(self.apply(live, _service(SPEC), now=T2), live)

    def test_reapply_changed_value(self) -> None:
        """Changing an own field changes the object and the entry's time, not the owned set."""
        live = _stored(self.apply(None, _service(SPEC)))
        result = self.apply(live, _service({**SPEC, "versionPriority": 20}), now=T2)
        self.assertEqual(result, _with(live, [_entry("kubectl", "Apply", {"f:spec": SPEC_FIELDS}, T2)],
                                       ) | {"spec": {**SPEC, "versionPriority": 20}})

    def test_fields_removed_from_manifest_are_removed(self) -> None:
        """Fields, maps and label keys the manager no longer applies leave the object."""
        live = _stored(self.apply(None, _service(SPEC, labels={"app": "x", "tier": "api"})))
        spec = {k: v for k, v in SPEC.items() if k not in ("service", "versionPriority")}
        result = self.apply(live, _service(spec, labels={"app": "x"}), now=T2)
        expected = _with(_service(spec, labels={"app": "x"}), [_entry("kubectl", "Apply", {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:group": {}, "f:groupPriorityMinimum": {}, "f:version": {}}}, T2)], uid="6f1c")
        self.assertEqual(result, expected)

    def test_removed_field_kept_when_another_manager_owns_it(self) -> None:
        """A field another applier also applied stays when one of them stops applying it."""
        live = _stored(self.apply(None, _service(SPEC)))
        live = _stored(self.apply(live, _service({"versionPriority": 15}), manager="helm", now=T2))
        spec = {k: v for k, v in SPEC.items() if k != "versionPriority"}
        result = self.apply(live, _service(spec), now=T3)
        self.assertEqual(result, _with(live, [
            _entry("helm", "Apply", {"f:spec": {"f:versionPriority": {}}}),
            _entry("kubectl", "Apply", {"f:spec": {k: v for k, v in SPEC_FIELDS.items() if k != "f:versionPriority"}},
                   T1)]))

    def test_same_value_is_shared(self) -> None:
        """Applying the value a field already has is no conflict: both managers own it, the object is unchanged."""
        live = _stored(self.apply(None, _service(SPEC)))
        result = self.apply(live, _service({"group": "example.com"}), manager="helm", now=T2)
        self.assertEqual(result, _with(live, [_entry("helm", "Apply", {"f:spec": {"f:group": {}}}),
                                              _entry("kubectl", "Apply", {"f:spec": SPEC_FIELDS}, T1)]))

    def test_conflict_with_client_side_apply(self) -> None:
        """Changing a field an Update manager owns is a conflict naming the manager and its apiVersion."""
        live = _stored(_with(_service(SPEC), [_entry("kubectl-client-side-apply", "Update",
                                                     {"f:spec": SPEC_FIELDS}, T1)]))
        self.assertConflict(lambda: self.apply(live, _service({**SPEC, "versionPriority": 20}), now=T2),
                            'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using '
                            f"{V}: .spec.versionPriority",
                            [(f'conflict with "kubectl-client-side-apply" using {V}', ".spec.versionPriority")])

    def test_conflicts_with_several_managers(self) -> None:
        """Several conflicts are listed per manager (sorted), in field order; causes follow the same order."""
        live = _stored(_with(_service(SPEC, labels={"app": "x"}), [
            _entry("kubectl-edit", "Update", {"f:spec": {"f:service": {"f:name": {}}, "f:version": {}}}, T2),
            _entry("helm", "Apply", {"f:metadata": {"f:labels": {"f:app": {}}}}, T1)]))
        changed = _service({**SPEC, "version": "v2", "service": {"name": "other"}}, labels={"app": "y"})
        self.assertConflict(lambda: self.apply(live, changed, now=T3),
                            'Apply failed with 3 conflicts: conflicts with "helm":\n- .metadata.labels.app\n'
                            f'conflicts with "kubectl-edit" using {V}:\n- .spec.version\n- .spec.service.name',
                            [('conflict with "helm"', ".metadata.labels.app"),
                             (f'conflict with "kubectl-edit" using {V}', ".spec.version"),
                             (f'conflict with "kubectl-edit" using {V}', ".spec.service.name")])

    def test_force_takes_ownership(self) -> None:
        """With force, conflicting fields move to the applier and managers left with nothing disappear."""
        live = _stored(_with(_service(SPEC, labels={"app": "x"}), [
            _entry("kubectl-edit", "Update", {"f:spec": {"f:versionPriority": {}}}, T2),
            _entry("helm", "Apply", {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:group": {}}}, T1)]))
        result = self.apply(live, _service({**SPEC, "versionPriority": 20}, labels={"app": "y"}), force=True, now=T3)
        self.assertEqual(result, _with(_service({**SPEC, "versionPriority": 20}, labels={"app": "y"}), [
            _entry("helm", "Apply", {"f:spec": {"f:group": {}}}, T1),
            _entry("kubectl", "Apply", {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": SPEC_FIELDS}, T3)],
            uid="6f1c"))

    def test_kubectl_edit_then_apply(self) -> None:
        """After `kubectl edit` changed a field, re-applying the old value conflicts; forcing restores it."""
        live = _stored(self.apply(None, _service(SPEC)))
        edited = copy.deepcopy(live)
        edited["spec"]["versionPriority"] = 99
        live = _stored(update_managed_fields(live, edited, "kubectl-edit", "Update", T2, V))
        self.assertEqual(live["metadata"]["managedFields"], [
            _entry("kubectl", "Apply", {"f:spec": {k: v for k, v in SPEC_FIELDS.items() if k != "f:versionPriority"}},
                   T1),
            _entry("kubectl-edit", "Update", {"f:spec": {"f:versionPriority": {}}}, T2)])
        self.assertConflict(lambda: self.apply(live, _service(SPEC), now=T3),
                            'Apply failed with 1 conflict: conflict with "kubectl-edit" using '
                            f"{V}: .spec.versionPriority",
                            [(f'conflict with "kubectl-edit" using {V}', ".spec.versionPriority")])
        self.assertEqual(self.apply(live, _service(SPEC), force=True, now=T3),
                         _with(_service(SPEC), [_entry("kubectl", "Apply", {"f:spec": SPEC_FIELDS}, T3)], uid="6f1c"))

    def test_apply_without_a_field_another_manager_changed(self) -> None:
        """Dropping from the manifest a field someone else took over leaves it to them, without conflict."""
        live = _stored(self.apply(None, _service(SPEC)))
        edited = copy.deepcopy(live)
        edited["spec"]["versionPriority"] = 99
        live = _stored(update_managed_fields(live, edited, "kubectl-edit", "Update", T2, V))
        spec = {k: v for k, v in SPEC.items() if k != "versionPriority"}
        self.assertEqual(self.apply(live, _service(spec), now=T3), live)

    def test_client_side_apply_then_server_side_apply(self) -> None:
        """kubectl may take over fields whose value still matches its last-applied annotation, and rewrites it."""
        manifest = _service(SPEC)
        annotation = json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n"
        created = _with(manifest, annotations={LAST_APPLIED: annotation})
        live = _stored(update_managed_fields(None, created, "kubectl-client-side-apply", "Update", T1, V))
        applied = _service({**SPEC, "versionPriority": 20})
        result = self.apply(live, applied, now=T2)
        new_annotation = json.dumps(applied, sort_keys=True, separators=(",", ":")) + "\n"
        self.assertEqual(result, _with(applied, [
            _entry("kubectl", "Apply", {"f:spec": SPEC_FIELDS}, T2),
            _entry("kubectl-client-side-apply", "Update", {
                "f:metadata": {"f:annotations": {".": {}, f"f:{LAST_APPLIED}": {}}},
                "f:spec": {".": {}, **{k: v if k != "f:service" else {".": {}, **v} for k, v in SPEC_FIELDS.items()
                                       if k != "f:versionPriority"}}}, T1)],
            annotations={LAST_APPLIED: new_annotation}, uid="6f1c"))

    def test_last_applied_does_not_cover_edited_fields(self) -> None:
        """A field edited since the last client-side apply still conflicts for kubectl."""
        manifest = _service(SPEC)
        annotation = json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n"
        live = _stored(update_managed_fields(None, _with(manifest, annotations={LAST_APPLIED: annotation}),
                                             "kubectl-client-side-apply", "Update", T1, V))
        edited = copy.deepcopy(live)
        edited["spec"]["groupPriorityMinimum"] = 5
        live = _stored(update_managed_fields(live, edited, "kubectl-edit", "Update", T2, V))
        applied = _service({**SPEC, "versionPriority": 20, "groupPriorityMinimum": 6})
        self.assertConflict(lambda: self.apply(live, applied, now=T3),
                            'Apply failed with 1 conflict: conflict with "kubectl-edit" using '
                            f"{V}: .spec.groupPriorityMinimum",
                            [(f'conflict with "kubectl-edit" using {V}', ".spec.groupPriorityMinimum")])
        self.assertConflict(lambda: self.apply(live, applied, manager="other", now=T3),
                            "Apply failed with 2 conflicts: conflicts with "
                            f'"kubectl-client-side-apply" using {V}:\n- .spec.versionPriority\n'
                            f'conflicts with "kubectl-edit" using {V}:\n- .spec.groupPriorityMinimum',
                            [(f'conflict with "kubectl-client-side-apply" using {V}', ".spec.versionPriority"),
                             (f'conflict with "kubectl-edit" using {V}', ".spec.groupPriorityMinimum")])

    def test_existing_object_without_managed_fields(self) -> None:
        """Fields of an object nobody tracked yet belong to `before-first-apply`, and changing them conflicts."""
        live = _stored(_service(SPEC, labels={"app": "x"}))
        before = _entry("before-first-apply", "Update", {
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {".": {}, **{k: v if k != "f:service" else {".": {}, **v} for k, v in SPEC_FIELDS.items()}}},
            T2)
        self.assertEqual(self.apply(live, _service({"group": "example.com"}), now=T2),
                         _with(live, [_entry("kubectl", "Apply", {"f:spec": {"f:group": {}}}), before]))
        self.assertConflict(lambda: self.apply(live, _service({"group": "other.com"}), now=T2),
                            'Apply failed with 1 conflict: conflict with "before-first-apply" using '
                            f"{V}: .spec.group",
                            [(f'conflict with "before-first-apply" using {V}', ".spec.group")])

    def test_reset_fields_are_ignored(self) -> None:
        """Applied status is neither applied nor owned on the main resource; live status stays."""
        live = _stored(self.apply(None, _service(SPEC)))
        live["status"] = {"conditions": [{"type": "Available", "status": "True"}]}
        applied = _service(SPEC, status={"conditions": [{"type": "Available", "status": "False"}]})
        self.assertEqual(self.apply(live, applied, now=T2), live)

    def test_identity_metadata_is_never_owned(self) -> None:
        """name, namespace, uid, resourceVersion and the like are applied but owned by nobody."""
        manifest = _service({"group": "g"})
        manifest["metadata"].update(namespace="ns", uid="u", resourceVersion="5", generation=2,
                                    creationTimestamp="2024-01-01T00:00:00Z", annotations={"a": "b"})
        self.assertEqual(self.apply(None, manifest), _with(manifest, [_entry("kubectl", "Apply", {
            "f:metadata": {"f:annotations": {"f:a": {}}}, "f:spec": {"f:group": {}}}, T1)]))

    def test_empty_manifest_removes_all_owned_fields(self) -> None:
        """Applying a manifest with nothing but the identity removes everything the manager owned."""
        live = _stored(self.apply(None, _service(SPEC, labels={"app": "x"})))
        bare = {"apiVersion": V, "kind": "APIService", "metadata": {"name": "v1.example.com"}}
        self.assertEqual(self.apply(live, bare, now=T2), {**bare, "metadata": {"name": "v1.example.com", "uid": "6f1c"}})

    def test_null_and_empty_values(self) -> None:
        """A null keeps a non-empty live map, empty maps and nulls are owned as leaves, a scalar can be nulled."""
        live = _stored(self.apply(None, _service({"group": "g", "service": {"name": "a"}})))
        result = _stored(self.apply(live, _service({"service": None, "caBundle": {}}), manager="m", now=T2))
        self.assertEqual(result["spec"], {"group": "g", "service": {"name": "a"}, "caBundle": {}})
        self.assertEqual(result["metadata"]["managedFields"][1],
                         _entry("m", "Apply", {"f:spec": {"f:caBundle": {}, "f:service": {}}}, T2))
        result = self.apply(result, _service({"group": None, "service": {"name": "a"}}), now=T3)
        self.assertEqual(result["spec"], {"group": None, "service": {"name": "a"}, "caBundle": {}})
        self.assertEqual(result["metadata"]["managedFields"], [
            _entry("m", "Apply", {"f:spec": {"f:caBundle": {}, "f:service": {}}}, T2),
            _entry("kubectl", "Apply", {"f:spec": {"f:group": {}, "f:service": {"f:name": {}}}}, T3)])

    def test_subresource_entries(self) -> None:
        """Applies through a subresource are separate entries, named with the subresource in conflicts."""
        live = _stored(self.apply(None, _service(SPEC)))
        status = {"conditions": [{"type": "Available", "status": "True"}]}
        result = server_side_apply(live, _service({}, status=status), "controller", False, T2, V, ("spec",),
                                   list_map_keys=CONDITIONS, subresource="status")
        entry = _entry("controller", "Apply", {"f:status": {"f:conditions": {
            'k:{"type":"Available"}': {".": {}, "f:status": {}, "f:type": {}}}}}, T2, subresource="status")
        self.assertEqual(result, _with(live, [live["metadata"]["managedFields"][0], entry]) | {"status": status})
        self.assertConflict(
            lambda: server_side_apply(_stored(result), _service({}, status={"conditions": [
                {"type": "Available", "status": "False"}]}), "other", False, T3, V, ("spec",),
                list_map_keys=CONDITIONS, subresource="status"),
            'Apply failed with 1 conflict: conflict with "controller" with subresource "status": '
            '.status.conditions[type="Available"].status',
            [('conflict with "controller" with subresource "status"', '.status.conditions[type="Available"].status')])

    def test_version_and_kind_must_match(self) -> None:
        """An applied object of another apiVersion or kind is a 400 naming its GroupVersionKind."""
        for applied, gvk in [({"apiVersion": "v1", "kind": "APIService"}, "/v1, Kind=APIService"),
                             ({"apiVersion": V, "kind": "Other"}, f"{V}, Kind=Other"),
                             ({"kind": "APIService"}, "/, Kind=APIService")]:
            live = _stored(self.apply(None, _service(SPEC)))
            error = self.assertRaises(StatusError, self.apply, live, {**applied, "metadata": {"name": "x"}})
            self.assertEqual((error.code, error.reason, error.message),
                             (400, "BadRequest", f"invalid object type: {gvk}"))
        error = self.assertRaises(StatusError, self.apply, None, _service(SPEC), kind="Other")
        self.assertEqual(error.message, f"invalid object type: {V}, Kind=APIService")

    def test_invalid_applied_objects(self) -> None:
        """managedFields in the manifest is a 400; bad list-map items fail as typed conversion fails (500)."""
        error = self.assertRaises(StatusError, self.apply, None, _with(_service(SPEC), []))
        self.assertEqual((error.code, error.reason, error.message),
                         (400, "BadRequest", "metadata.managedFields must be nil"))
        prefix = f"failed to create typed patch object (/v1.example.com; {V}, Kind=APIService): "
        cases = [
            ([{"type": "A"}, {"type": "A"}], '.status.conditions: duplicate entries for key [type="A"]'),
            ([{"status": "x"}], '.status.conditions: element 0: associative list with keys has an element that '
                                'omits all key fields ["type"] (and doesn\'t have default values for any key fields)'),
            ([{"type": "A"}, "x", None], ".status.conditions: element 1: associative list with keys may not have "
                                         "non-map elements"),
            ([None], ".status.conditions: element 0: associative list with keys may not have a null element"),
        ]
        for conditions, message in cases:
            error = self.assertRaises(StatusError, server_side_apply, None, _service({}, status={
                "conditions": conditions}), "m", False, T1, V, list_map_keys=CONDITIONS)
            self.assertEqual((error.code, error.reason, error.message), (500, "InternalError", prefix + message))
        error = self.assertRaises(StatusError, server_side_apply, None, _service({"a": [{"k": 1}, {"k": 1}]}, status={
            "conditions": [{"type": "A"}, {"type": "A"}]}), "m", False, T1, V,
            list_map_keys={**CONDITIONS, "spec.a": ("k",)})
        self.assertEqual(error.message, prefix + "errors:\n  .spec.a: duplicate entries for key [k=1]\n"
                                                 '  .status.conditions: duplicate entries for key [type="A"]')

    def test_invalid_live_managed_fields(self) -> None:
        """managedFields that cannot be decoded make the apply fail with a 500."""
        live = _stored(_with(_service(SPEC), [{"manager": "x", "operation": "Patch", "apiVersion": V,
                                               "fieldsType": "FieldsV1", "fieldsV1": {}}]))
        error = self.assertRaises(StatusError, self.apply, live, _service(SPEC))
        self.assertEqual((error.code, error.reason, error.message),
                         (500, "InternalError", "failed to decode managed fields: operation must be `Apply` or "
                                                "`Update`"))


class ListMapApplyTests(SynchronousTestCase):
    """List-maps merge per key, other lists are atomic."""

    def apply(self, live: dict[str, Any] | None, status: dict[str, Any], manager: str,
              now: str = T1, force: bool = False) -> dict[str, Any]:
        """Apply a status through the status subresource (spec reset there)."""
        return server_side_apply(live, _service({}, status=status), manager, force, now, V, ("spec",),
                                 list_map_keys=CONDITIONS)

    def test_items_of_two_managers_merge(self) -> None:
        """Each manager owns its items; the applied order wins for shared items, others keep their place."""
        first = _stored(self.apply(None, {"conditions": [{"type": "A", "status": "True"},
                                                         {"type": "B", "status": "True"}]}, "one"))
        second = self.apply(first, {"conditions": [{"type": "C", "status": "False"},
                                                   {"type": "A", "status": "True", "reason": "Fine"}]}, "two", T2)
        self.assertEqual(second["status"], {"conditions": [{"type": "C", "status": "False"},
                                                           {"type": "A", "status": "True", "reason": "Fine"},
                                                           {"type": "B", "status": "True"}]})
        self.assertEqual(second["metadata"]["managedFields"], [
            _entry("one", "Apply", {"f:status": {"f:conditions": {
                'k:{"type":"A"}': {".": {}, "f:status": {}, "f:type": {}},
                'k:{"type":"B"}': {".": {}, "f:status": {}, "f:type": {}}}}}, T1),
            _entry("two", "Apply", {"f:status": {"f:conditions": {
                'k:{"type":"A"}': {".": {}, "f:reason": {}, "f:status": {}, "f:type": {}},
                'k:{"type":"C"}': {".": {}, "f:status": {}, "f:type": {}}}}}, T2)])

    def test_item_no_longer_applied_is_removed(self) -> None:
        """An item the manager stops applying goes, unless another manager owns it."""
        live = _stored(self.apply(None, {"conditions": [{"type": "A", "status": "True"},
                                                        {"type": "B", "status": "True"}]}, "one"))
        live = _stored(self.apply(live, {"conditions": [{"type": "B", "status": "True"}]}, "two", T2))
        result = self.apply(live, {"conditions": []}, "one", T3)
        self.assertEqual(result["status"], {"conditions": [{"type": "B", "status": "True"}]})
        self.assertEqual([e["manager"] for e in result["metadata"]["managedFields"]], ["two"])

    def test_conflict_inside_item(self) -> None:
        """Changing a field of another manager's item conflicts at the item's key path."""
        live = _stored(self.apply(None, {"conditions": [{"type": "Available", "status": "True"}]}, "one"))
        error = self.assertRaises(StatusError, self.apply, live,
                                  {"conditions": [{"type": "Available", "status": "False"}]}, "two", T2)
        self.assertEqual(error.message, 'Apply failed with 1 conflict: conflict with "one": '
                                        '.status.conditions[type="Available"].status')

    def test_atomic_lists_are_replaced_and_owned_whole(self) -> None:
        """A list that is not a list-map is one field: replaced by the applier, conflicting as a whole."""
        live = _stored(server_side_apply(None, _service({"hosts": ["a", "b"]}), "one", False, T1, V))
        self.assertEqual(live["metadata"]["managedFields"][0]["fieldsV1"], {"f:spec": {"f:hosts": {}}})
        error = self.assertRaises(StatusError, server_side_apply, live, _service({"hosts": ["a"]}), "two", False,
                                  T2, V)
        self.assertEqual(error.message, 'Apply failed with 1 conflict: conflict with "one": .spec.hosts')
        self.assertEqual(server_side_apply(live, _service({"hosts": ["c"]}), "one", False, T2, V)["spec"],
                         {"hosts": ["c"]})


class UpdateManagedFieldsTests(SynchronousTestCase):
    """update_managed_fields records Update operations as kube's FieldManager does."""

    def test_create_owns_everything_set(self) -> None:
        """On create the manager owns every field, new maps marked with `.`, identity metadata excepted."""
        obj = _service({"group": "g", "service": {"name": "a"}}, labels={"app": "x"})
        self.assertEqual(update_managed_fields(None, obj, "kubectl-create", "Update", T1, V), _with(obj, [
            _entry("kubectl-create", "Update", {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                                                "f:spec": {".": {}, "f:group": {}, "f:service": {
                                                    ".": {}, "f:name": {}}}}, T1)]))

    def test_update_takes_changed_fields(self) -> None:
        """The writer gains what it changed or added; others lose those and whatever was removed."""
        live = _stored(update_managed_fields(None, _service({"a": 1, "b": 2, "c": {"d": 3}}), "one", "Update", T1, V))
        new = copy.deepcopy(live)
        new["spec"] = {"a": 10, "c": {"d": 3, "e": 4}, "f": 5}
        result = update_managed_fields(live, new, "two", "Update", T2, V)
        self.assertEqual(result["metadata"]["managedFields"], [
            _entry("one", "Update", {"f:spec": {".": {}, "f:c": {".": {}, "f:d": {}}}}, T1),
            _entry("two", "Update", {"f:spec": {"f:a": {}, "f:c": {"f:e": {}}, "f:f": {}}}, T2)])

    def test_no_change_keeps_entries(self) -> None:
        """A write that changes nothing adds no entry and keeps every time."""
        live = _stored(update_managed_fields(None, _service({"a": 1}), "one", "Update", T1, V))
        self.assertEqual(update_managed_fields(live, copy.deepcopy(live), "two", "Update", T2, V), live)
        self.assertEqual(update_managed_fields(live, copy.deepcopy(live), "one", "Update", T2, V), live)

    def test_same_manager_accumulates(self) -> None:
        """A manager's new fields add to those it had, and its time moves on."""
        live = _stored(update_managed_fields(None, _service({"a": 1}), "one", "Update", T1, V))
        new = copy.deepcopy(live)
        new["spec"]["b"] = 2
        self.assertEqual(update_managed_fields(live, new, "one", "Update", T2, V)["metadata"]["managedFields"],
                         [_entry("one", "Update", {"f:spec": {".": {}, "f:a": {}, "f:b": {}}}, T2)])

    def test_removing_everything_drops_entries(self) -> None:
        """Managers left with no field lose their entry; with none left managedFields goes."""
        live = _stored(update_managed_fields(None, _service({"a": 1}), "one", "Update", T1, V))
        new = copy.deepcopy(live)
        del new["spec"]
        self.assertEqual(update_managed_fields(live, new, "two", "Update", T2, V),
                         {"apiVersion": V, "kind": "APIService", "metadata": {"name": "v1.example.com", "uid": "6f1c"}})

    def test_untracked_object_stays_untracked(self) -> None:
        """An existing object without managedFields is not tracked by updates."""
        live = _stored(_service({"a": 1}))
        new = copy.deepcopy(live)
        new["spec"]["a"] = 2
        self.assertEqual(update_managed_fields(live, new, "two", "Update", T2, V), new)

    def test_sent_managed_fields(self) -> None:
        """Sent managedFields replace the stored ones; an empty list resets them; null or bad ones are ignored."""
        live = _stored(update_managed_fields(None, _service({"a": 1}), "one", "Update", T1, V))
        replaced = _with(live, [_entry("mine", "Apply", {"f:spec": {"f:a": {}}}, T1)])
        self.assertEqual(update_managed_fields(live, replaced, "two", "Update", T2, V), replaced)
        reset = _with(live, [])
        self.assertEqual(update_managed_fields(live, reset, "two", "Update", T2, V), _with(live))
        for sent in (None, [{"operation": "Bad"}]):
            self.assertEqual(update_managed_fields(live, _with(live, sent), "two", "Update", T2, V), live)
            self.assertEqual(update_managed_fields(live, _with(live, sent), "two", "Update", T2, V), live)

    def test_subresource_ignores_sent_managed_fields(self) -> None:
        """Through a subresource the stored managedFields count and the entry names the subresource."""
        live = _stored(update_managed_fields(None, _service({"a": 1}), "one", "Update", T1, V))
        new = _with(live, [])
        new["status"] = {"ready": True}
        result = update_managed_fields(live, new, "ctl", "Update", T2, V, subresource="status", reset_fields=("spec",))
        self.assertEqual(result["metadata"]["managedFields"], [
            live["metadata"]["managedFields"][0],
            _entry("ctl", "Update", {"f:status": {".": {}, "f:ready": {}}}, T2, subresource="status")])

    def test_reset_fields_are_not_owned(self) -> None:
        """Changes under reset fields neither give nor take ownership."""
        live = _stored(update_managed_fields(None, _service({"a": 1}), "one", "Update", T1, V))
        new = copy.deepcopy(live)
        new["spec"]["a"] = 2
        new["status"] = {"x": 1}
        result = update_managed_fields(live, new, "two", "Update", T2, V, reset_fields=("spec", "status"))
        self.assertEqual(result, new)

    def test_unknown_manager(self) -> None:
        """A write without a manager is recorded as `unknown`."""
        result = update_managed_fields(None, _service({"a": 1}), "", "Update", T1, V)
        self.assertEqual(result["metadata"]["managedFields"],
                         [_entry("unknown", "Update", {"f:spec": {".": {}, "f:a": {}}}, T1)])

    def test_invalid_list_map_keeps_stored_managed_fields(self) -> None:
        """If the object cannot be typed (duplicate-free keys missing), the stored managedFields are kept."""
        live = _stored(update_managed_fields(None, _service({"a": 1}), "one", "Update", T1, V))
        new = copy.deepcopy(live)
        new["status"] = {"conditions": [{"status": "x"}]}
        result = update_managed_fields(live, new, "two", "Update", T2, V, list_map_keys=CONDITIONS)
        self.assertEqual(result, new)
        bare = _with(new)
        self.assertEqual(update_managed_fields(None, bare, "two", "Update", T2, V, list_map_keys=CONDITIONS), bare)

    def test_update_managers_are_capped(self) -> None:
        """Past ten Update managers, the oldest of a version merge into `ancient-changes`."""
        live = _stored(_with(_service({f"f{i}": i for i in range(10)}), [
            _entry(f"m{i}", "Update", {"f:spec": {f"f:f{i}": {}}}, f"2024-05-01T10:00:0{i}Z") for i in range(10)]))
        new = copy.deepcopy(live)
        new["spec"]["late"] = True
        result = update_managed_fields(live, new, "late", "Update", T2, V)
        self.assertEqual(result["metadata"]["managedFields"], [
            _entry("ancient-changes", "Update", {"f:spec": {"f:f0": {}, "f:f1": {}}}, "2024-05-01T10:00:01Z"),
            *[_entry(f"m{i}", "Update", {"f:spec": {f"f:f{i}": {}}}, f"2024-05-01T10:00:0{i}Z") for i in range(2, 10)],
            _entry("late", "Update", {"f:spec": {"f:late": {}}}, T2)])
