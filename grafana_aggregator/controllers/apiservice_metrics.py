"""Keeps kube-aggregator's `aggregator_unavailable_apiservice` metrics in step with the APIServices' conditions."""

from __future__ import annotations

from typing import Protocol

from ..registry.apiservice import APISERVICES, available_condition
from ..storage import WatchEvent
from ..storage.informer import Informer


class AvailabilityMetrics(Protocol):
    """Where the availability of each APIService is recorded (`web.metrics.Metrics`)."""

    def set_apiservice_available(self, name: str, available: bool, reason: str) -> None:
        """Record an APIService's availability and the reason of its condition."""

    def forget_apiservice(self, name: str) -> None:
        """Drop a deleted APIService's gauge."""


def follow_apiservice_availability(informer: Informer, metrics: AvailabilityMetrics) -> None:
    """Record every APIService's Available condition as the informer sees it change."""

    def changed(event: WatchEvent) -> None:
        if event.collection != APISERVICES:
            return
        if event.type == "DELETED":
            metrics.forget_apiservice(event.name)
            return
        condition = available_condition(event.object) or {}
        metrics.set_apiservice_available(event.name, condition.get("status") == "True", condition.get("reason", ""))

    informer.add_listener(changed)
