"""Beside FastAPI's native telemetry: one span per request, FastAPI's, enriched by apiguard."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.middleware import Middleware

from apiguard import APIKeyAuth, AuthMiddleware, Principal, TracingMiddleware, guard

exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])

# --8<-- [start:app]
# FastAPI traces and measures every request once an SDK is configured; apiguard
# adds its attributes (and the route, for requests it refuses before routing)
# to FastAPI's span, and leaves http.server.request.duration to FastAPI.
app = FastAPI(telemetry={"tracer_provider": tracer_provider, "meter_provider": meter_provider})


@app.get("/orders/{order_id}")
async def read_order(order_id: int) -> dict[str, int]:
    return {"id": order_id}


guard(
    app,
    Middleware(TracingMiddleware, tracer_provider=tracer_provider, meter_provider=meter_provider),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys={"k-partner-0001": Principal(id="partner")})],
    ),
)
# --8<-- [end:app]
