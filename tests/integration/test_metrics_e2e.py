"""`/metrics` of the real daemon after known traffic: request counts by verb and resource, and APIService availability."""

from __future__ import annotations


import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from . import test_shutdown

APISERVICE = {
    "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
    "metadata": {"name": "v0alpha1.example.grafana.app"},
    "spec": {"group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 1000,
             "versionPriority": 15, "insecureSkipTLSVerify": True,
             "service": {"name": "nowhere", "namespace": "grafana", "port": 9}},
}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in an exposition text."""
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


class MetricsTests(TestCase):
    """Counters and gauges reflect what was done to the daemon."""

    timeout = 60
    setUp = test_shutdown.ShutdownTests.setUp
    start = test_shutdown.ShutdownTests.start

    async def test_values_after_traffic(self) -> None:
        """Three lists of APIServices are counted as such; an unreachable APIService shows as unavailable."""
        _, url = await self.start()
        for _ in range(3):
            response = await self.client.get(url + "/apis/apiregistration.k8s.io/v1/apiservices", headers=self.headers)
            await treq.content(response)
        created = await self.client.post(url + "/apis/apiregistration.k8s.io/v1/apiservices", json=APISERVICE,
                                         headers=self.headers)
        self.assertEqual(created.code, 201)
        text = ""
        for _ in range(50):
            response = await self.client.get(url + "/metrics", headers=self.headers)
            text = (await treq.content(response)).decode()
            gauge = [v for labels, v in samples(text, "aggregator_unavailable_apiservice")
                     if labels.get("name") == "v0alpha1.example.grafana.app"]
            if gauge == [1.0]:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(response.code, 200)
        lists = [v for labels, v in samples(text, "apiserver_request_total")
                 if labels.get("verb") == "LIST" and labels.get("resource") == "apiservices"
                 and labels.get("code") == "200"]
        self.assertEqual(lists, [3.0])
        creates = [v for labels, v in samples(text, "apiserver_request_total")
                   if labels.get("verb") == "POST" and labels.get("resource") == "apiservices"]
        self.assertEqual(creates, [1.0])
        self.assertEqual(gauge, [1.0])
        local = [v for labels, v in samples(text, "aggregator_unavailable_apiservice")
                 if labels.get("name") == "v1.apiregistration.k8s.io"]
        self.assertEqual(local, [0.0])

    async def test_metrics_need_authentication(self) -> None:
        """Without credentials /metrics is a 401, like every path but health and version."""
        _, url = await self.start()
        response = await self.client.get(url + "/metrics")
        self.assertEqual(response.code, 401)
