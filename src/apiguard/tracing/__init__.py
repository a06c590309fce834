"""Telemetry: OpenTelemetry spans and metrics for every request, every guard decision shown.

[`TracingMiddleware`][apiguard.TracingMiddleware] needs only the OpenTelemetry
API; the SDK and exporters are the user's choice (`pip install apiguard[otel]`
gathers the ones the docs use). See the telemetry guide for every span
attribute, metric and audit field.
"""

from __future__ import annotations

from apiguard.tracing.middleware import TracingMiddleware

__all__ = ["TracingMiddleware"]
