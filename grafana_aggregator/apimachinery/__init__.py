"""Kubernetes API machinery re-implemented for Twisted: Status errors, request info, JSON responses."""
