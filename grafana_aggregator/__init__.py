"""grafana-aggregator: one TLS address and one discovery document in front of many API servers."""

__version__ = "0.1.0"
