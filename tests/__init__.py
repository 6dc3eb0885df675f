"""Tests for grafana-aggregator."""
