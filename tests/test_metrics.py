# -*- test-case-name: tests.test_metrics -*-
"""Tests for L{grafana_aggregator.web.metrics}: metric values after known traffic, the access log and `/metrics`.

Values are read back from the exposition text with prometheus_client's own parser, so the tests
check what a scraper sees.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.web.metrics import (
    REQUEST_DURATION_BUCKETS,
    Metrics,
    MetricsResource,
    RequestAccounting,
    request_scope,
    request_verb,
)
from grafana_aggregator.apimachinery.requestinfo import request_info

Labels = tuple[tuple[str, str], ...]


def samples(metrics: Metrics, name: str) -> dict[Labels, float]:
    """Every sample called `name` in the exposition text, keyed by its sorted labels."""
    text = metrics.render()[0].decode("utf-8")
    found: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> Labels:
    """A sample key from keyword labels."""
    return tuple(sorted(values.items()))


def request_labels(verb: str, group: str, version: str, resource: str, scope: str,
                   component: str = "apiserver", subresource: str = "") -> dict[str, str]:
    """The request metric labels, without `code` or `le`."""
    return {"verb": verb, "group": group, "version": version, "resource": resource, "subresource": subresource,
            "scope": scope, "component": component}


def classify(method: str, path: str, query: str = "") -> tuple[str, str]:
    """The (verb, scope) labels of a request."""
    info = request_info(method, path, query)
    return request_verb(method, info), request_scope(info)


class ClassificationTests(SynchronousTestCase):
    """The verb and scope labels are computed as kube-apiserver computes them."""

    def test_cluster_list(self) -> None:
        """A GET of a collection across namespaces is LIST with cluster scope."""
        self.assertEqual(classify("GET", "/apis/dashboard.grafana.app/v1/dashboards"), ("LIST", "cluster"))

    def test_namespaced_list(self) -> None:
        """A GET of a namespaced collection is LIST with namespace scope."""
        self.assertEqual(classify("GET", "/api/v1/namespaces/default/pods"), ("LIST", "namespace"))

    def test_get_named_object(self) -> None:
        """A GET of a named object is GET with resource scope, namespaced or not."""
        self.assertEqual(
            (classify("GET", "/api/v1/namespaces/default/pods/web"), classify("GET", "/api/v1/nodes/n1")),
            (("GET", "resource"), ("GET", "resource")),
        )

    def test_head_is_get(self) -> None:
        """A HEAD is reported as GET or LIST, never HEAD."""
        self.assertEqual(
            (classify("HEAD", "/api/v1/nodes/n1"), classify("HEAD", "/api/v1/nodes"), classify("HEAD", "/version")),
            (("GET", "resource"), ("LIST", "cluster"), ("GET", "")),
        )

    def test_create(self) -> None:
        """A POST to a collection is POST with resource scope, as kube's CleanScope treats create."""
        self.assertEqual(classify("POST", "/api/v1/namespaces/default/pods"), ("POST", "resource"))

    def test_watch_query(self) -> None:
        """A GET with watch=true is WATCH with the scope of the collection."""
        self.assertEqual(
            (classify("GET", "/api/v1/namespaces/ns/pods", "watch=true"), classify("GET", "/api/v1/pods", "watch=1")),
            (("WATCH", "namespace"), ("WATCH", "cluster")),
        )

    def test_watch_false_is_list(self) -> None:
        """A GET with watch=false is a LIST."""
        self.assertEqual(classify("GET", "/api/v1/pods", "watch=false"), ("LIST", "cluster"))

    def test_watch_path(self) -> None:
        """The legacy /watch/ path prefix is WATCH too."""
        self.assertEqual(classify("GET", "/api/v1/watch/namespaces/ns/pods"), ("WATCH", "namespace"))

    def test_watch_single_object_by_field_selector(self) -> None:
        """A watch pinned to one name by fieldSelector has resource scope."""
        self.assertEqual(classify("GET", "/api/v1/namespaces/ns/pods", "watch=true&fieldSelector=metadata.name%3Dweb"),
                         ("WATCH", "resource"))

    def test_delete_collection(self) -> None:
        """A DELETE of a collection is DELETECOLLECTION."""
        self.assertEqual(classify("DELETE", "/api/v1/namespaces/ns/pods"), ("DELETECOLLECTION", "namespace"))

    def test_mutations_of_named_objects(self) -> None:
        """PUT, PATCH and DELETE of a named object keep the method name with resource scope."""
        path = "/apis/apps/v1/namespaces/ns/deployments/web"
        self.assertEqual([classify(method, path) for method in ("PUT", "PATCH", "DELETE")],
                         [("PUT", "resource"), ("PATCH", "resource"), ("DELETE", "resource")])

    def test_non_resource(self) -> None:
        """Non-resource paths have the empty scope and the method as verb."""
        self.assertEqual(
            [classify("GET", "/version"), classify("GET", "/apis/apps"), classify("POST", "/healthz")],
            [("GET", ""), ("GET", ""), ("POST", "")],
        )

    def test_unknown_method_is_other(self) -> None:
        """A method outside kube's verb list is reported as other."""
        self.assertEqual(classify("OPTIONS", "/api/v1/pods"), ("other", "cluster"))


class MetricsTests(SynchronousTestCase):
    """Metrics exposes kube's metric names from a registry of its own."""

    def test_private_registry(self) -> None:
        """Counts in one Metrics are invisible to another and to prometheus_client's global registry."""
        first, second = Metrics(), Metrics()
        first.upstream_meter("v1.a").count_error("timeout")
        self.assertEqual(
            (samples(first, "grafana_aggregator_proxy_upstream_errors_total"),
             samples(second, "grafana_aggregator_proxy_upstream_errors_total"),
             REGISTRY.get_sample_value("grafana_aggregator_proxy_upstream_errors_total",
                                       {"apiservice": "v1.a", "reason": "timeout"})),
            ({labels(apiservice="v1.a", reason="timeout"): 1.0}, {}, None),
        )

    def test_render_content_type(self) -> None:
        """render() returns the Prometheus 0.0.4 text format and its content type."""
        body, content_type = Metrics().render()
        self.assertEqual((content_type, body.startswith(b"# HELP aggregator_unavailable_apiservice ")),
                         ("text/plain; version=0.0.4; charset=utf-8", True))

    def test_no_created_series(self) -> None:
        """Counters and histograms are exposed without _created series, as kube-apiserver exposes them."""
        metrics = Metrics()
        metrics.upstream_meter("v1.a").count_error("timeout")
        metrics.observe_storage("get", "dashboards", 0.01)
        self.assertNotIn(b"_created", metrics.render()[0])

    def test_inflight_starts_at_zero(self) -> None:
        """Both in-flight request kinds are exposed as 0 before any request."""
        self.assertEqual(samples(Metrics(), "apiserver_current_inflight_requests"),
                         {labels(request_kind="readOnly"): 0.0, labels(request_kind="mutating"): 0.0})

    def test_apiservice_gauge(self) -> None:
        """The gauge is 1 for an unavailable APIService and 0 for an available one."""
        metrics = Metrics()
        metrics.set_apiservice_available("v1.a.grafana.app", True, "Passed")
        metrics.set_apiservice_available("v1.b.grafana.app", False, "MissingEndpoints")
        self.assertEqual(samples(metrics, "aggregator_unavailable_apiservice"),
                         {labels(name="v1.a.grafana.app"): 0.0, labels(name="v1.b.grafana.app"): 1.0})

    def test_counter_counts_transitions_to_unavailable(self) -> None:
        """The counter goes up once per available-to-unavailable turn, under the new reason."""
        metrics = Metrics()
        for available, reason in [(True, "Passed"), (False, "FailedDiscoveryCheck"), (False, "FailedDiscoveryCheck"),
                                  (False, "MissingEndpoints"), (True, "Passed"), (False, "MissingEndpoints")]:
            metrics.set_apiservice_available("v1.a", available, reason)
        self.assertEqual(
            (samples(metrics, "aggregator_unavailable_apiservice_total"),
             samples(metrics, "aggregator_unavailable_apiservice")),
            ({labels(name="v1.a", reason="FailedDiscoveryCheck"): 1.0,
              labels(name="v1.a", reason="MissingEndpoints"): 1.0},
             {labels(name="v1.a"): 1.0}),
        )

    def test_first_sight_unavailable_is_not_counted(self) -> None:
        """An APIService never seen available sets the gauge to 1 without counting a transition."""
        metrics = Metrics()
        metrics.set_apiservice_available("v1.a", False, "ServiceNotFound")
        self.assertEqual(
            (samples(metrics, "aggregator_unavailable_apiservice"),
             samples(metrics, "aggregator_unavailable_apiservice_total")),
            ({labels(name="v1.a"): 1.0}, {}),
        )

    def test_empty_reason_is_unknown_reason(self) -> None:
        """A transition without a condition reason is counted under UnknownReason."""
        metrics = Metrics()
        metrics.set_apiservice_available("v1.a", True, "Passed")
        metrics.set_apiservice_available("v1.a", False, "")
        self.assertEqual(samples(metrics, "aggregator_unavailable_apiservice_total"),
                         {labels(name="v1.a", reason="UnknownReason"): 1.0})

    def test_forget_apiservice(self) -> None:
        """Forgetting an APIService removes its gauge series and keeps its counter."""
        metrics = Metrics()
        metrics.set_apiservice_available("v1.a", True, "Passed")
        metrics.set_apiservice_available("v1.a", False, "MissingEndpoints")
        metrics.set_apiservice_available("v1.b", True, "Passed")
        metrics.forget_apiservice("v1.a")
        metrics.forget_apiservice("v1.never-seen")
        self.assertEqual(
            (samples(metrics, "aggregator_unavailable_apiservice"),
             samples(metrics, "aggregator_unavailable_apiservice_total")),
            ({labels(name="v1.b"): 0.0}, {labels(name="v1.a", reason="MissingEndpoints"): 1.0}),
        )

    def test_upstream_metrics(self) -> None:
        """Upstream durations and errors are recorded per APIService through its meter."""
        metrics = Metrics()
        a, b = metrics.upstream_meter("v1.a"), metrics.upstream_meter("v1.b")
        a.observe(0.02)
        a.observe(0.3)
        a.count_error("timeout")
        a.count_error("timeout")
        b.count_error("unreachable")
        self.assertEqual(
            (samples(metrics, "grafana_aggregator_proxy_upstream_duration_seconds_count"),
             samples(metrics, "grafana_aggregator_proxy_upstream_duration_seconds_sum"),
             samples(metrics, "grafana_aggregator_proxy_upstream_errors_total")),
            ({labels(apiservice="v1.a"): 2.0, labels(apiservice="v1.b"): 0.0},
             {labels(apiservice="v1.a"): 0.32, labels(apiservice="v1.b"): 0.0},
             {labels(apiservice="v1.a", reason="timeout"): 2.0, labels(apiservice="v1.b", reason="unreachable"): 1.0}),
        )

    def test_meters_of_one_apiservice_share_its_series(self) -> None:
        """Two meters of the same APIService (its proxy rebuilt) add to the same series."""
        metrics = Metrics()
        metrics.upstream_meter("v1.a").count_error("redirect")
        metrics.upstream_meter("v1.a").count_error("redirect")
        metrics.upstream_meter("v1.a").observe(1.0)
        self.assertEqual(
            (samples(metrics, "grafana_aggregator_proxy_upstream_errors_total"),
             samples(metrics, "grafana_aggregator_proxy_upstream_duration_seconds_count")),
            ({labels(apiservice="v1.a", reason="redirect"): 2.0}, {labels(apiservice="v1.a"): 1.0}),
        )

    def test_meter_resolves_its_children_once(self) -> None:
        """A meter looks up its labelled children once, not on every request."""
        metrics = Metrics()
        meter = metrics.upstream_meter("v1.a")
        looked_up: list[dict[str, str]] = []
        for metric in (metrics.upstream_duration, metrics.upstream_errors):
            original = metric.labels

            def counting(*args: str, _original: Any = original, **kwargs: str) -> Any:
                looked_up.append(kwargs)
                return _original(*args, **kwargs)

            self.patch(metric, "labels", counting)
        for _ in range(3):
            meter.observe(0.1)
            meter.count_error("timeout")
        self.assertEqual(looked_up, [{"apiservice": "v1.a", "reason": "timeout"}])

    def test_storage_and_probe_histograms(self) -> None:
        """Storage operations and availability probes are counted by their labels."""
        metrics = Metrics()
        metrics.observe_storage("list", "dashboards", 0.5)
        metrics.observe_storage("list", "dashboards", 0.25)
        metrics.observe_storage("create", "folders", 0.125)
        metrics.observe_probe("v1.a", "success", 0.5)
        metrics.observe_probe("v1.a", "failure", 5.0)
        self.assertEqual(
            (samples(metrics, "grafana_aggregator_storage_operation_duration_seconds_count"),
             samples(metrics, "grafana_aggregator_storage_operation_duration_seconds_sum"),
             samples(metrics, "grafana_aggregator_availability_probe_duration_seconds_count")),
            ({labels(operation="list", resource="dashboards"): 2.0, labels(operation="create", resource="folders"): 1.0},
             {labels(operation="list", resource="dashboards"): 0.75,
              labels(operation="create", resource="folders"): 0.125},
             {labels(apiservice="v1.a", result="success"): 1.0, labels(apiservice="v1.a", result="failure"): 1.0}),
        )


class RequestAccountingTests(SynchronousTestCase):
    """RequestAccounting turns requests into request metrics and one access-log event each."""

    def setUp(self) -> None:
        self.metrics = Metrics()
        self.clock = Clock()
        self.clock.advance(1000)
        self.accounting = RequestAccounting(self.metrics, self.clock, Logger(namespace="test.access"))

    def test_request_counter_and_histogram(self) -> None:
        """Finished requests are counted by labels and code, and their clock durations fill kube's buckets."""
        for method, path, query, seconds, code in [
            ("GET", "/api/v1/namespaces/ns/pods", "", 0.01, 200),
            ("GET", "/api/v1/namespaces/ns/pods", "limit=5", 0.3, 200),
            ("GET", "/api/v1/namespaces/ns/pods/web", "", 0.02, 404),
            ("POST", "/api/v1/namespaces/ns/pods", "", 2.5, 201),
        ]:
            ticket = self.accounting.begin(method, path, query, long_running=False)
            self.clock.advance(seconds)
            self.accounting.end(ticket, code, 10, "alice", None)
        lst = request_labels("LIST", "", "v1", "pods", "namespace")
        get = request_labels("GET", "", "v1", "pods", "resource")
        post = request_labels("POST", "", "v1", "pods", "resource")
        buckets = samples(self.metrics, "apiserver_request_duration_seconds_bucket")
        self.assertEqual(
            (samples(self.metrics, "apiserver_request_total"),
             samples(self.metrics, "apiserver_request_duration_seconds_count"),
             {le: buckets[labels(**lst, le=le)] for le in ("0.005", "0.025", "0.4", "60.0", "+Inf")},
             len([key for key in buckets if dict(key)["verb"] == "LIST"])),
            ({labels(**lst, code="200"): 2.0, labels(**get, code="404"): 1.0, labels(**post, code="201"): 1.0},
             {labels(**lst): 2.0, labels(**get): 1.0, labels(**post): 1.0},
             {"0.005": 0.0, "0.025": 1.0, "0.4": 2.0, "60.0": 2.0, "+Inf": 2.0},
             len(REQUEST_DURATION_BUCKETS) + 1),
        )

    def test_histogram_sum_is_clock_time(self) -> None:
        """The duration observed is the time the injected clock moved between begin and end."""
        ticket = self.accounting.begin("GET", "/version", "", long_running=False)
        self.clock.advance(1.5)
        self.accounting.end(ticket, 200, 10, "alice", None)
        self.assertEqual(samples(self.metrics, "apiserver_request_duration_seconds_sum"),
                         {labels(**request_labels("GET", "", "", "", "")): 1.5})

    def test_proxied_request_component(self) -> None:
        """A request ended with an upstream is counted under component=aggregator."""
        ticket = self.accounting.begin("GET", "/apis/dashboard.grafana.app/v1/namespaces/org-1/dashboards/d", "",
                                       long_running=False)
        self.accounting.end(ticket, 200, 10, "alice", "v1.dashboard.grafana.app")
        self.assertEqual(samples(self.metrics, "apiserver_request_total"),
                         {labels(**request_labels("GET", "dashboard.grafana.app", "v1", "dashboards", "resource",
                                                  component="aggregator"), code="200"): 1.0})

    def test_subresource_label(self) -> None:
        """A subresource request carries its subresource label."""
        ticket = self.accounting.begin("PUT", "/apis/apiregistration.k8s.io/v1/apiservices/v1.a/status", "",
                                       long_running=False)
        self.accounting.end(ticket, 200, 10, "alice", None)
        self.assertEqual(samples(self.metrics, "apiserver_request_total"),
                         {labels(**request_labels("PUT", "apiregistration.k8s.io", "v1", "apiservices", "resource",
                                                  subresource="status"), code="200"): 1.0})

    def test_inflight_up_and_down(self) -> None:
        """In-flight gauges count open requests by kind and return to zero when they end."""
        read = self.accounting.begin("GET", "/api/v1/pods", "", long_running=False)
        write = self.accounting.begin("POST", "/api/v1/namespaces/ns/pods", "", long_running=False)
        delete = self.accounting.begin("DELETE", "/api/v1/namespaces/ns/pods/web", "", long_running=False)
        during = samples(self.metrics, "apiserver_current_inflight_requests")
        self.accounting.end(write, 201, 10, "alice", None)
        self.accounting.end(read, 200, 10, "alice", None)
        middle = samples(self.metrics, "apiserver_current_inflight_requests")
        self.accounting.end(delete, 200, 10, "alice", None)
        self.assertEqual(
            (during, middle, samples(self.metrics, "apiserver_current_inflight_requests")),
            ({labels(request_kind="readOnly"): 1.0, labels(request_kind="mutating"): 2.0},
             {labels(request_kind="readOnly"): 0.0, labels(request_kind="mutating"): 1.0},
             {labels(request_kind="readOnly"): 0.0, labels(request_kind="mutating"): 0.0}),
        )

    def test_watch_is_long_running(self) -> None:
        """An open watch raises the long-running gauge and not the in-flight one, and ending it lowers it."""
        ticket = self.accounting.begin("GET", "/api/v1/namespaces/ns/pods", "watch=true", long_running=True)
        during = (samples(self.metrics, "apiserver_longrunning_requests"),
                  samples(self.metrics, "apiserver_current_inflight_requests"))
        self.clock.advance(30)
        self.accounting.end(ticket, 200, 4096, "alice", None)
        key = labels(verb="WATCH", group="", version="v1", resource="pods", scope="namespace", component="apiserver")
        self.assertEqual(
            (during, samples(self.metrics, "apiserver_longrunning_requests"),
             samples(self.metrics, "apiserver_request_total")),
            (({key: 1.0}, {labels(request_kind="readOnly"): 0.0, labels(request_kind="mutating"): 0.0}),
             {key: 0.0},
             {labels(**request_labels("WATCH", "", "v1", "pods", "namespace"), code="200"): 1.0}),
        )

    def test_mark_proxied_moves_watch(self) -> None:
        """Marking an open watch as proxied moves it to component=aggregator for the rest of its life."""
        ticket = self.accounting.begin("GET", "/apis/a.grafana.app/v1/things", "watch=1", long_running=True)
        self.accounting.mark_proxied(ticket, "v1.a.grafana.app")
        during = samples(self.metrics, "apiserver_longrunning_requests")
        self.accounting.end(ticket, 200, 10, "alice", None)
        local = labels(verb="WATCH", group="a.grafana.app", version="v1", resource="things", scope="cluster",
                       component="apiserver")
        proxied = labels(verb="WATCH", group="a.grafana.app", version="v1", resource="things", scope="cluster",
                         component="aggregator")
        self.assertEqual(
            (during, samples(self.metrics, "apiserver_longrunning_requests"),
             samples(self.metrics, "apiserver_request_total")),
            ({local: 0.0, proxied: 1.0}, {local: 0.0, proxied: 0.0},
             {labels(**request_labels("WATCH", "a.grafana.app", "v1", "things", "cluster", component="aggregator"),
                     code="200"): 1.0}),
        )

    def test_end_twice_counts_once(self) -> None:
        """A second end() for the same ticket changes nothing and logs nothing."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ticket = self.accounting.begin("POST", "/api/v1/namespaces/ns/pods", "", long_running=False)
        self.accounting.end(ticket, 201, 10, "alice", None)
        self.accounting.end(ticket, 500, 10, "alice", None)
        self.assertEqual(
            (samples(self.metrics, "apiserver_request_total"),
             samples(self.metrics, "apiserver_current_inflight_requests"), len(events)),
            ({labels(**request_labels("POST", "", "v1", "pods", "resource"), code="201"): 1.0},
             {labels(request_kind="readOnly"): 0.0, labels(request_kind="mutating"): 0.0}, 1),
        )

    def test_access_log_event(self) -> None:
        """Each finished request emits one access-log event with named fields."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ticket = self.accounting.begin("GET", "/apis/a.grafana.app/v1/namespaces/ns/things", "limit=2",
                                       long_running=False)
        self.clock.advance(0.25)
        self.accounting.end(ticket, 200, 512, "alice", "v1.a.grafana.app")
        event = events[0]
        self.assertEqual(
            (len(events), {key: event[key] for key in ("method", "path", "query", "code", "bytes", "latency_ms",
                                                       "user", "verb", "upstream", "log_access", "log_namespace")},
             event["log_format"]),
            (1, {"method": "GET", "path": "/apis/a.grafana.app/v1/namespaces/ns/things", "query": "limit=2",
                 "code": 200, "bytes": 512, "latency_ms": 250.0, "user": "alice", "verb": "list",
                 "upstream": "v1.a.grafana.app", "log_access": True, "log_namespace": "test.access"},
             "{method} {path} {code} {bytes}B {latency_ms}ms user={user}"),
        )

    def test_local_request_logs_no_upstream(self) -> None:
        """A locally served request is logged with upstream None."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        ticket = self.accounting.begin("DELETE", "/api/v1/namespaces/ns/pods", "", long_running=False)
        self.accounting.end(ticket, 200, 0, "bob", None)
        self.assertEqual([(event["verb"], event["upstream"], event["latency_ms"]) for event in events],
                         [("deletecollection", None, 0.0)])

    def test_health_probes_not_logged(self) -> None:
        """Health probes and their subpaths are counted but not logged; look-alike paths are logged."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for path in ("/healthz", "/livez", "/readyz", "/readyz/etcd", "/healthz/", "/healthzz", "/version"):
            self.accounting.end(self.accounting.begin("GET", path, "", long_running=False), 200, 2, "kubelet", None)
        self.assertEqual(
            ([event["path"] for event in events],
             samples(self.metrics, "apiserver_request_total")),
            (["/healthzz", "/version"], {labels(**request_labels("GET", "", "", "", ""), code="200"): 7.0}),
        )

    def test_health_probes_logged_when_asked(self) -> None:
        """With log_health_probes=True, health probes are logged too."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        accounting = RequestAccounting(self.metrics, self.clock, Logger(), log_health_probes=True)
        for path in ("/healthz", "/readyz/etcd"):
            accounting.end(accounting.begin("GET", path, "", long_running=False), 200, 2, "kubelet", None)
        self.assertEqual([event["path"] for event in events], ["/healthz", "/readyz/etcd"])


class MetricsResourceTests(SynchronousTestCase):
    """MetricsResource serves the exposition text over HTTP."""

    def setUp(self) -> None:
        self.metrics = Metrics()
        self.metrics.set_apiservice_available("v1.a", False, "MissingEndpoints")
        self.client = StubTreq(MetricsResource(self.metrics))

    def test_get(self) -> None:
        """GET answers 200 with the text format content type and the current values."""
        response = self.successResultOf(self.client.get("https://agg.test/metrics"))
        body = self.successResultOf(response.content())
        gauge = [sample for family in text_string_to_metric_families(body.decode("utf-8"))
                 for sample in family.samples if sample.name == "aggregator_unavailable_apiservice"]
        self.assertEqual(
            (response.code, response.headers.getRawHeaders("content-type"), body, [(s.labels, s.value) for s in gauge]),
            (200, ["text/plain; version=0.0.4; charset=utf-8"], self.metrics.render()[0], [({"name": "v1.a"}, 1.0)]),
        )

    def test_head(self) -> None:
        """HEAD answers 200 with the content type and no body."""
        response = self.successResultOf(self.client.head("https://agg.test/metrics"))
        self.assertEqual(
            (response.code, response.headers.getRawHeaders("content-type"),
             self.successResultOf(response.content())),
            (200, ["text/plain; version=0.0.4; charset=utf-8"], b""),
        )

    def test_other_methods_not_allowed(self) -> None:
        """POST answers a 405 MethodNotAllowed Status."""
        response = self.successResultOf(self.client.post("https://agg.test/metrics", data=b"x"))
        self.assertEqual(
            (response.code, response.headers.getRawHeaders("content-type"),
             json.loads(self.successResultOf(response.content()))),
            (405, ["application/json"],
             {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": "the server does not allow this method on the requested resource",
              "reason": "MethodNotAllowed", "details": {}, "code": 405}),
        )
