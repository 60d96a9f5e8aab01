"""Observability: Prometheus metrics, the trace context events carry, and tracing (optional)."""
