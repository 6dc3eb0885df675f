"""The twistd dropin: names the module that builds the daemon, and nothing else (it must stay cheap to import)."""

from twisted.application.service import ServiceMaker

grafana_aggregator = ServiceMaker(
    "grafana-aggregator",
    "grafana_aggregator.tap",
    "A Kubernetes-style API aggregator: serves apiregistration.k8s.io and proxies registered API groups.",
    "grafana-aggregator",
)
