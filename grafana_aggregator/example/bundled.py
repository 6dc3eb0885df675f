# -*- test-case-name: tests.test_bundled -*-
"""The example group bundled into the aggregator (feature toggle `grafanaAPIServerWithExperimentalAPIs`): the same
`example.grafana.app/v0alpha1` resources the example server serves (`dummy`, `dummy/<name>/sub`, `runtime`),
mounted under the aggregator's routing table as a local group-version."""

from __future__ import annotations

import datetime

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from ..apimachinery.strategy import LocalGroupVersion
from .server import GROUP, VERSION, ExampleApisResource, example_group_version

#: The bundled group's Local APIService: its name, and the priorities Grafana gives its own groups.
NAME = f"{VERSION}.{GROUP}"
GROUP_PRIORITY_MINIMUM = 15000
VERSION_PRIORITY = 1


class BundledExampleResource(ExampleApisResource):
    """Everything under `/apis/example.grafana.app/v0alpha1`, reached through the aggregator's routing table
    (which has already matched the group and version)."""

    def _route(self, request: IRequest, segments: list[str]) -> bytes:
        return self._group_version(request, segments)


def bundled_example(clock: IReactorTime, started: datetime.datetime) -> tuple[LocalGroupVersion, IResource]:
    """The bundled group-version and its handler."""
    return example_group_version(), BundledExampleResource(clock, started)
