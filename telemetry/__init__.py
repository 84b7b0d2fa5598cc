"""Observability: Prometheus metrics, the JSON logger, request and trace context, and optional
OpenTelemetry spans.
"""
