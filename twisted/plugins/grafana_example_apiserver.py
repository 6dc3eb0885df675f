"""The twistd dropin of the example backend: names the module that builds it, and nothing else (cheap to import)."""

from twisted.application.service import ServiceMaker

grafana_example_apiserver = ServiceMaker(
    "grafana-example-apiserver",
    "grafana_aggregator.example.tap",
    "The example.grafana.app/v0alpha1 aggregated API server, to run behind grafana-aggregator.",
    "grafana-example-apiserver",
)
