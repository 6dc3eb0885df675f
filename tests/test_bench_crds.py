"""The custom resources benchmark's objects and readings (bench/crds.py): a misread watch event or discovery document
would time the wrong moment, and a schema the server refused (or that did nothing) would measure no CR work."""

from __future__ import annotations

import copy
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from bench import sections
from bench.crds import (
    aggregated_groups,
    defaulted_and_pruned,
    established_marks,
    legacy_groups,
    widget,
    widget_crd,
)
from grafana_aggregator.apimachinery.structural import structural_errors
from grafana_aggregator.registry.customresource import CustomResourceStrategy
from grafana_aggregator.registry.customresourcedefinition import CustomResourceDefinitionStrategy

GROUP = "c0001.crds.bench"


def _event(kind: str, name: str, conditions: list[dict[str, str]] | None = None) -> bytes:
    crd: dict[str, Any] = {"kind": "CustomResourceDefinition", "metadata": {"name": name}}
    if conditions is not None:
        crd["status"] = {"conditions": conditions}
    return json.dumps({"type": kind, "object": crd}).encode()


class EstablishedMarksTests(SynchronousTestCase):
    """Lines of a CRD watch stream: the moment a bench CRD is first seen Established."""

    def test_established(self) -> None:
        """An ADDED or MODIFIED event of a bench CRD whose Established condition is True names it."""
        established = [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]
        self.assertEqual(established_marks(_event("MODIFIED", f"widgets.{GROUP}", established)),
                         [f"widgets.{GROUP}"])
        self.assertEqual(established_marks(_event("ADDED", f"widgets.{GROUP}", established)), [f"widgets.{GROUP}"])

    def test_not_yet(self) -> None:
        """A CRD without conditions, only NamesAccepted, or Established False is not established yet."""
        name = f"widgets.{GROUP}"
        self.assertEqual(established_marks(_event("ADDED", name)), [])
        self.assertEqual(established_marks(_event("MODIFIED", name, [{"type": "NamesAccepted", "status": "True"}])),
                         [])
        self.assertEqual(established_marks(_event("MODIFIED", name, [{"type": "Established", "status": "False"}])),
                         [])

    def test_other_events(self) -> None:
        """A deletion, another CRD, a bookmark or a line that is not JSON names nothing."""
        established = [{"type": "Established", "status": "True"}]
        self.assertEqual(established_marks(_event("DELETED", f"widgets.{GROUP}", established)), [])
        self.assertEqual(established_marks(_event("MODIFIED", "certificates.cert-manager.io", established)), [])
        self.assertEqual(established_marks(b'{"type":"BOOKMARK","object":{"metadata":{}}}'), [])
        self.assertEqual(established_marks(b'{"type":"MODIFIED"'), [])


class DiscoveryGroupsTests(SynchronousTestCase):
    """The groups a legacy or an aggregated `/apis` lists."""

    def test_legacy(self) -> None:
        body = json.dumps({"kind": "APIGroupList", "groups": [{"name": "a.bench"}, {"name": GROUP}]}).encode()
        self.assertEqual(legacy_groups(body), {"a.bench", GROUP})

    def test_aggregated(self) -> None:
        """Every item is listed; with_resources keeps the groups with a version that has resources (a remote
        group with an unknown backend is listed Stale, without any)."""
        body = json.dumps({"kind": "APIGroupDiscoveryList", "items": [
            {"metadata": {"name": "g1.discovery.bench"}, "versions": [{"version": "v0alpha1", "freshness": "Stale"}]},
            {"metadata": {"name": GROUP}, "versions": [{"version": "v1", "freshness": "Current",
                                                        "resources": [{"resource": "widgets"}]}]},
        ]}).encode()
        self.assertEqual(aggregated_groups(body), {"g1.discovery.bench", GROUP})
        self.assertEqual(aggregated_groups(body, with_resources=True), {GROUP})


class WidgetSchemaTests(SynchronousTestCase):
    """The bench's CRD is valid, and a create of its Widget does validation, defaulting and pruning work."""

    def test_crd_valid(self) -> None:
        """The server's CRD validation (with the structural schema rules) accepts the bench's CRD."""
        crd = widget_crd(GROUP)
        strategy = CustomResourceDefinitionStrategy(structural_errors)
        strategy.default(crd)
        strategy.prepare_for_create(crd)
        self.assertEqual(strategy.validate(crd), [])

    def test_widget_defaulted_pruned_valid(self) -> None:
        """A Widget as sent has an unknown field and two missing defaults; after defaulting and pruning it is what
        defaulted_and_pruned expects, and valid."""
        strategy = CustomResourceStrategy(widget_crd(GROUP), "v1")
        sent = widget(GROUP, "bench-crds", "w-0001")
        self.assertFalse(defaulted_and_pruned(sent))
        stored = copy.deepcopy(sent)
        strategy.default(stored)
        self.assertEqual(strategy.prune(stored), ["spec.colour"])
        self.assertTrue(defaulted_and_pruned(stored))
        self.assertEqual(strategy.validate(stored), [])

    def test_invalid_widget_refused(self) -> None:
        """The schema's enum and bounds are enforced: the creates are not skipping validation."""
        strategy = CustomResourceStrategy(widget_crd(GROUP), "v1")
        bad = widget(GROUP, "bench-crds", "w-0002")
        bad["spec"].update(mode="Sleeping", replicas=1000)
        self.assertEqual(len(strategy.validate(bad)), 2)


class SectionNamesTests(SynchronousTestCase):
    """`make bench` runs every section of bench/sections.py by name."""

    def test_crds_section(self) -> None:
        """The custom resources section is run by `make bench` and `--only crds`."""
        self.assertIn("crds", sections.NAMES)
        self.assertIs(sections.RUNNERS["crds"], sections.crds)
