"""Observability: trace context carried by the events, and OpenTelemetry tracing (optional)."""
