"""Metrics (and later tracing and alerting)."""

from atrium.observability.metrics import GatewayMetrics

__all__ = ["GatewayMetrics"]
