"""Observability: what the server tells its operators (Prometheus metrics)."""
