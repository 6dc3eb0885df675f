"""The `example.grafana.app/v0alpha1` aggregated API server (`twistd grafana-example-apiserver`).

A small backend to aggregate behind grafana-aggregator, after Grafana's `grafana apiserver
--runtime-config=example.grafana.app/v0alpha1=true`: the `dummy`, `dummy/sub` and `runtime`
resources, a few custom routes, discovery, OpenAPI and health.  Callers are identified only by
front-proxy (request-header) authentication; `dummy/sub` echoes the identity it saw.
"""
