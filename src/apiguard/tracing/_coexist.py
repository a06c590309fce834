"""Living with the telemetry a service already runs (DESIGN.md contract 11).

Three peers may have started a SERVER span for the request before the layer
runs, and two of them record the HTTP metrics:

- FastAPI's native telemetry (0.165+), instrumentation scope `fastapi`:
  records them when its `metrics` option is on and a meter provider is set.
- Starlette's `OpenTelemetryMiddleware` (1.10), scope `starlette`: never.
- `opentelemetry-instrumentation-asgi` (and its FastAPI and Starlette
  instrumentations), scope `opentelemetry.instrumentation.asgi`: always
  (`http.server.duration`, or `http.server.request.duration`, as
  `OTEL_SEMCONV_STABILITY_OPT_IN` says).

How the layer knows: the current span (an SDK span tells its instrumentation
scope) and the scope keys FastAPI and Starlette set while their telemetry
runs (`"fastapi.telemetry"`, `"starlette.opentelemetry"`). Anything else that
started a span is assumed to record the HTTP metrics, so that none is counted
twice; `http_metrics="on"` says otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import trace as trace_api
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Span, SpanKind

from apiguard._types import Scope
from apiguard.tracing._providers import global_meter_provider, is_noop_meter_provider

__all__ = ["HTTP_INSTRUMENTATIONS", "fill_fastapi_route", "metrics_recorded_outside", "outer_span"]

#: Instrumentation scopes of HTTP server instrumentations: a span of theirs
#: is the request's, whatever its kind (otel-asgi starts an INTERNAL span
#: when a span is already current, and records the metrics all the same).
HTTP_INSTRUMENTATIONS: Final = frozenset(
    {
        "fastapi",
        "starlette",
        "opentelemetry.instrumentation.asgi",
        "opentelemetry.instrumentation.fastapi",
        "opentelemetry.instrumentation.starlette",
    }
)
_RECORD_NO_METRICS: Final = frozenset({"starlette"})
_FASTAPI_KEY: Final = "fastapi.telemetry"
_STARLETTE_KEY: Final = "starlette.opentelemetry"


def _scope_name(span: Span) -> str | None:
    scope = getattr(span, "instrumentation_scope", None)
    name = getattr(scope, "name", None)
    return name if isinstance(name, str) else None


def outer_span(span: Span) -> bool:
    """Whether `span`, current when the request reaches the layer, is the request's server span.

    A local span that is a SERVER span or comes from an HTTP server
    instrumentation is; so is a local span that is not recording (the outer
    instrumentation sampled the request out: a span of the layer's own would
    only be a second, orphaned one). A remote parent (context extracted by
    some middleware outside) is not: the layer starts the server span.
    """
    context = span.get_span_context()
    if not context.is_valid or context.is_remote:
        return False
    if not span.is_recording():
        return True
    return (
        getattr(span, "kind", None) is SpanKind.SERVER or _scope_name(span) in HTTP_INSTRUMENTATIONS
    )


def metrics_recorded_outside(scope: Scope, span: Span | None) -> bool:
    """Whether an outer instrumentation records this request's HTTP server metrics."""
    if scope.get(_FASTAPI_KEY) is not None and _fastapi_meters(scope):
        return True
    if span is None:
        return False
    name = _scope_name(span)
    if name is None:
        # A span that cannot tell (not recording, another SDK): the scope keys can.
        return not (scope.get(_STARLETTE_KEY) and scope.get(_FASTAPI_KEY) is None)
    if name == "fastapi":
        return _fastapi_meters(scope)
    return name not in _RECORD_NO_METRICS


def _fastapi_meters(scope: Scope) -> bool:
    """Whether FastAPI's native telemetry records this request's metrics (its own rule)."""
    native = getattr(scope.get("app"), "_native_telemetry", None)
    config = getattr(native, "config", None)
    if not isinstance(config, Mapping):
        return True  # a FastAPI that cannot tell: assume it records
    if not config.get("metrics", True):
        return False
    provider: Any = config.get("meter_provider")
    if provider is None:
        provider = global_meter_provider()
        return provider is not None and not is_noop_meter_provider(provider)
    return not isinstance(provider, NoOpMeterProvider)


def fill_fastapi_route(scope: Scope, route: str) -> None:
    """Give FastAPI's telemetry the route when its router never picked one (a refusal).

    FastAPI records `http.route` on its span and its duration metric only
    when its router selects a route; a request refused by a layer never gets
    there. Its per-request record is found in the scope while its telemetry
    runs; it is filled only where empty, before FastAPI ends the span.
    """
    telemetry = scope.get(_FASTAPI_KEY)
    if telemetry is not None and getattr(telemetry, "route", "") is None:
        with contextlib.suppress(AttributeError):  # a FastAPI that changed its record
            telemetry.route = route


def current_span() -> Span:
    """The span current in the OpenTelemetry context (the API's invalid span if none)."""
    return trace_api.get_current_span()
