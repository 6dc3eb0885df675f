# -*- test-case-name: tests.test_metrics -*-
"""Prometheus metrics with kube-apiserver's and kube-aggregator's names, the access log, and `/metrics`.

`Metrics` owns a private `CollectorRegistry` (never prometheus_client's global one), so every test
and every server instance sees only its own series.  `RequestAccounting` turns one HTTP request into
the request metrics and exactly one access-log event; `MetricsResource` serves the exposition text.

Counters and histograms are exposed without prometheus_client's `_created` series, as Go's client
(and so kube-apiserver) exposes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from attrs import define
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..apimachinery.requestinfo import RequestInfo, request_info
from ..apimachinery.resource import ApiResource

#: k8s.io/apiserver's `apiserver_request_duration_seconds` buckets (dense around 1 s for the latency SLOs).
REQUEST_DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0,
    15.0, 20.0, 30.0, 45.0, 60.0,
)

#: Paths whose requests (and subpaths) are left out of the access log unless asked for.
HEALTH_PROBE_PATHS = ("/healthz", "/livez", "/readyz")

#: Values of the `component` label.
COMPONENT_LOCAL = "apiserver"
COMPONENT_PROXIED = "aggregator"

#: The `verb` label values kube-apiserver reports; anything else is reported as `other`.
_VALID_VERBS = frozenset({
    "APPLY", "CONNECT", "CREATE", "DELETE", "DELETECOLLECTION", "GET", "LIST", "PATCH", "POST", "PROXY", "PUT",
    "UPDATE", "WATCH",
})
#: Kubernetes verbs that do not count against the mutating in-flight limit.
_READ_ONLY_VERBS = frozenset({"get", "list", "watch"})
#: The reason counted when an APIService turns unavailable without a condition reason.
UNKNOWN_REASON = "UnknownReason"


def request_scope(info: RequestInfo) -> str:
    """The `scope` label kube-apiserver computes: resource, namespace, cluster, or "" for non-resource requests."""
    if info.name or info.verb == "create":
        return "resource"
    if info.namespace:
        return "namespace"
    if info.is_resource_request:
        return "cluster"
    return ""


def request_verb(method: str, info: RequestInfo) -> str:
    """The upper-case `verb` label kube-apiserver reports (GET/HEAD become LIST or WATCH where they are ones)."""
    if info.is_resource_request and info.verb == "watch":
        return "WATCH"
    if info.is_resource_request and info.verb == "deletecollection":
        return "DELETECOLLECTION"
    verb = method.upper()
    if verb in ("GET", "HEAD"):
        return "LIST" if request_scope(info) in ("cluster", "namespace") else "GET"
    return verb if verb in _VALID_VERBS else "other"


class _APIServiceAvailability(Collector):
    """A custom collector for the two kube-aggregator availability series.

    They share the family name `aggregator_unavailable_apiservice` once prometheus_client strips a
    counter's `_total`, which its own Gauge and Counter refuse to register side by side.
    """

    def __init__(self) -> None:
        self.unavailable: dict[str, bool] = {}
        self.transitions: dict[tuple[str, str], int] = {}

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "aggregator_unavailable_apiservice",
            "Whether an APIService is unavailable (1) or available (0), by APIService name.",
            labels=["name"],
        )
        for name, unavailable in sorted(self.unavailable.items()):
            gauge.add_metric([name], 1.0 if unavailable else 0.0)
        counter = CounterMetricFamily(
            "aggregator_unavailable_apiservice",
            "Transitions of an APIService to unavailable, by APIService name and the reason of the new condition.",
            labels=["name", "reason"],
        )
        for (name, reason), count in sorted(self.transitions.items()):
            counter.add_metric([name, reason], float(count))
        return [gauge, counter]


@define
class _WithoutCreated(Collector):
    """A view of a registry that leaves out the `_created` samples of counters and histograms."""

    _registry: CollectorRegistry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            trimmed = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            trimmed.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield trimmed


class Metrics:
    """Every metric grafana-aggregator exposes, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._availability = _APIServiceAvailability()
        self.registry.register(self._availability)
        registry = self.registry
        self.requests = Counter(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, group, version, resource, subresource, scope,"
            " component, and HTTP response code.",
            ["verb", "group", "version", "resource", "subresource", "scope", "component", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope"
            " and component.",
            ["verb", "group", "version", "resource", "subresource", "scope", "component"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "grafana_aggregator_proxy_upstream_duration_seconds",
            "Time from sending a proxied request to its APIService's backend until the response ended.",
            ["apiservice"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "grafana_aggregator_proxy_upstream_errors_total",
            "Proxied requests that failed to reach or to be answered by the APIService's backend, by reason.",
            ["apiservice", "reason"],
            registry=registry,
        )
        self.unreachable_here = Counter(
            "grafana_aggregator_replica_unreachable_requests_total",
            "Requests this replica answered 503 because its own probe cannot reach the APIService's backend"
            " (another replica may reach it).",
            ["apiservice"],
            registry=registry,
        )
        self.bundled_conflicts = Counter(
            "grafana_aggregator_bundled_api_conflicts_total",
            "Starts at which a bundled group-version was not installed because a remote APIService of its name "
            "exists (grafanaAPIServerWithExperimentalAPIs).",
            ["apiservice"],
            registry=registry,
        )
        self.leader = Gauge(
            "grafana_aggregator_replica_leader",
            "1 while this replica is the leader among the replicas sharing one etcd (it writes the statuses), else 0.",
            registry=registry,
        )
        self.leader_changes = Counter(
            "grafana_aggregator_replica_leadership_changes_total",
            "Times this replica became or stopped being the leader.",
            registry=registry,
        )
        self.longrunning = Gauge(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource,"
            " scope and component.",
            ["verb", "group", "version", "resource", "scope", "component"],
            registry=registry,
        )
        self.inflight = Gauge(
            "apiserver_current_inflight_requests",
            "Number of requests currently being served (long-running requests excluded), by request kind.",
            ["request_kind"],
            registry=registry,
        )
        for kind in ("readOnly", "mutating"):
            self.inflight.labels(request_kind=kind).set(0)
        self.storage_duration = Histogram(
            "grafana_aggregator_storage_operation_duration_seconds",
            "Duration of storage operations in seconds, by operation and resource.",
            ["operation", "resource"],
            registry=registry,
        )
        self.probe_duration = Histogram(
            "grafana_aggregator_availability_probe_duration_seconds",
            "Duration of APIService availability probes in seconds, by APIService and result.",
            ["apiservice", "result"],
            registry=registry,
        )

    def set_apiservice_available(self, name: str, available: bool, reason: str) -> None:
        """Record an APIService's availability; a turn from available to unavailable counts once under `reason`.

        As in kube-aggregator, an APIService first seen unavailable (or seen again after being forgotten)
        sets the gauge without counting, since it was never seen available.
        """
        was_available = self._availability.unavailable.get(name) is False
        self._availability.unavailable[name] = not available
        if was_available and not available:
            key = (name, reason or UNKNOWN_REASON)
            self._availability.transitions[key] = self._availability.transitions.get(key, 0) + 1

    def forget_apiservice(self, name: str) -> None:
        """Drop a deleted APIService's gauge series (its counter keeps counting, as a counter must)."""
        self._availability.unavailable.pop(name, None)

    def upstream_meter(self, apiservice: str) -> UpstreamMeter:
        """The metrics of one APIService's backend, for its proxy (the labelled children resolved once)."""
        return UpstreamMeter(self, apiservice)

    def observe_storage(self, operation: str, resource: str, seconds: float) -> None:
        """Record how long one storage operation (get, list, create, update, delete, watch) took."""
        self.storage_duration.labels(operation=operation, resource=resource).observe(seconds)

    def observe_probe(self, apiservice: str, result: str, seconds: float) -> None:
        """Record how long one availability probe of an APIService took and how it ended."""
        self.probe_duration.labels(apiservice=apiservice, result=result).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition (format 0.0.4) of every metric, and its content type."""
        return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE_PLAIN_0_0_4


class UpstreamMeter:
    """The proxy metrics of one APIService's backend, their labelled children resolved once (or on first use)."""

    def __init__(self, metrics: Metrics, apiservice: str):
        self._metrics = metrics
        self._apiservice = apiservice
        self._duration = metrics.upstream_duration.labels(apiservice=apiservice)
        self._errors: dict[str, Any] = {}

    def observe(self, seconds: float) -> None:
        """Record how long one proxied request to the backend took to get its response headers."""
        self._duration.observe(seconds)

    def count_error(self, reason: str) -> None:
        """Count one proxied request that failed upstream (`timeout`, `unreachable`, `redirect`)."""
        child = self._errors.get(reason)
        if child is None:
            child = self._errors[reason] = self._metrics.upstream_errors.labels(apiservice=self._apiservice,
                                                                                reason=reason)
        child.inc()


@define
class Ticket:
    """What `RequestAccounting.begin` learnt about a request, handed back to `end`."""

    method: str
    path: str
    query: str
    info: RequestInfo
    verb: str
    scope: str
    started: float
    long_running: bool
    request_kind: str | None
    upstream: str | None = None
    longrunning_labels: tuple[str, ...] | None = None
    ended: bool = False
    #: The request's _Kind (its labels and their children), when `begin` classified it.
    kind: Any = None


class _Kind:
    """One kind of request (a method and a RequestInfo): its metric labels and their children, resolved once."""

    __slots__ = ("method", "info", "verb", "scope", "requests", "durations")

    def __init__(self, method: str, info: RequestInfo):
        self.method = method
        self.info = info
        self.verb = request_verb(method, info)
        self.scope = request_scope(info)
        #: apiserver_request_total children by (component, code), request_duration_seconds ones by component.
        self.requests: dict[tuple[str, int], Any] = {}
        self.durations: dict[str, Any] = {}


#: Labelled children remembered by RequestAccounting before it starts over (label values are bounded anyway).
_CHILDREN_LIMIT = 10000


class RequestAccounting:
    """Request metrics and the access log: `begin` when a request arrives, `end` once when it is over."""

    def __init__(self, metrics: Metrics, clock: IReactorTime, log: Logger, log_health_probes: bool = False):
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._log_health_probes = log_health_probes
        # Labelled children by metric and label values: prometheus-client's labels() is slow for a per-request path.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        #: The _Kind of recent (method, RequestInfo) pairs, by method and the RequestInfo's identity.
        self._kinds: dict[tuple[str, int], _Kind] = {}

    def _kind(self, method: str, info: RequestInfo) -> _Kind:
        key = (method, id(info))
        kind = self._kinds.get(key)
        if kind is None or kind.info is not info:
            if len(self._kinds) >= _CHILDREN_LIMIT:
                self._kinds.clear()
            kind = self._kinds[key] = _Kind(method, info)
        return kind

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _CHILDREN_LIMIT:
                self._children.clear()
            child = self._children[key] = metric.labels(*values)
        return child

    def begin(self, method: str, path: str, query: str, long_running: bool, info: RequestInfo | None = None) -> Ticket:
        """Classify a request (unless its RequestInfo is given) and count it as in flight or as long-running."""
        if info is None:
            info = request_info(method, path, query)
        kind = self._kind(method, info)
        ticket = Ticket(
            method=method.upper(),
            path=path,
            query=query,
            info=info,
            verb=kind.verb,
            scope=kind.scope,
            started=self._clock.seconds(),
            long_running=long_running,
            request_kind=None if long_running else ("readOnly" if info.verb in _READ_ONLY_VERBS else "mutating"),
            kind=kind,
        )
        if ticket.request_kind is not None:
            self._child(self._metrics.inflight, ticket.request_kind).inc()
        else:
            self._start_longrunning(ticket, COMPONENT_LOCAL)
        return ticket

    def mark_proxied(self, ticket: Ticket, upstream: str) -> None:
        """Note that the request goes to an APIService's backend, moving an open watch to component=aggregator."""
        if ticket.ended or ticket.upstream is not None:
            return
        ticket.upstream = upstream
        if ticket.longrunning_labels is not None:
            self._metrics.longrunning.labels(*ticket.longrunning_labels).dec()
            self._start_longrunning(ticket, COMPONENT_PROXIED)

    def end(self, ticket: Ticket, code: int, sent_bytes: int, user: str, upstream: str | None,
            impersonator: str = "") -> None:
        """Count the finished request, release its gauges and log it; later calls for the same ticket do nothing.

        `user` is who the request acted as; `impersonator` who authenticated, when that was someone else.
        """
        if ticket.ended:
            return
        ticket.ended = True
        upstream = upstream if upstream is not None else ticket.upstream
        component = COMPONENT_PROXIED if upstream is not None else COMPONENT_LOCAL
        elapsed = max(0.0, self._clock.seconds() - ticket.started)
        info = ticket.info
        kind: _Kind | None = ticket.kind
        requests = kind.requests.get((component, code)) if kind is not None else None
        duration = kind.durations.get(component) if kind is not None else None
        if requests is None or duration is None:
            labels = (ticket.verb, info.api_group, info.api_version, info.resource, info.subresource, ticket.scope,
                      component)
            requests = self._child(self._metrics.requests, *labels, str(code))
            duration = self._child(self._metrics.request_duration, *labels)
            if kind is not None:
                kind.requests[component, code] = requests
                kind.durations[component] = duration
        requests.inc()
        duration.observe(elapsed)
        if ticket.request_kind is not None:
            self._child(self._metrics.inflight, ticket.request_kind).dec()
        if ticket.longrunning_labels is not None:
            self._metrics.longrunning.labels(*ticket.longrunning_labels).dec()
        if not self._log_health_probes and _is_health_probe(ticket.path):
            return
        self._log.info(
            "{method} {path} {code} {bytes}B {latency_ms}ms user={user}",
            method=ticket.method,
            path=ticket.path,
            query=ticket.query,
            code=code,
            bytes=sent_bytes,
            latency_ms=round(elapsed * 1000, 3),
            user=user,
            impersonator=impersonator,
            verb=info.verb,
            upstream=upstream,
            log_access=True,
        )

    def _start_longrunning(self, ticket: Ticket, component: str) -> None:
        info = ticket.info
        labels = (ticket.verb, info.api_group, info.api_version, info.resource, ticket.scope, component)
        self._metrics.longrunning.labels(*labels).inc()
        ticket.longrunning_labels = labels


def _is_health_probe(path: str) -> bool:
    if not path.startswith(HEALTH_PROBE_PATHS):
        return False
    return any(path == probe or path.startswith(probe + "/") for probe in HEALTH_PROBE_PATHS)


class MetricsResource(ApiResource):
    """`/metrics`: the Prometheus exposition of a `Metrics`, for GET and HEAD."""

    isLeaf = True

    def __init__(self, metrics: Metrics):
        super().__init__()
        self._metrics = metrics

    async def handle(self, request: IRequest) -> None:
        """Answer with the exposition text."""
        body, content_type = self._metrics.render()
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-cache, private")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()
