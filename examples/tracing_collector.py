"""Send traces and metrics to an OpenTelemetry collector over OTLP/HTTP.

The exporters read `OTEL_EXPORTER_OTLP_ENDPOINT` (default
`http://localhost:4318`); the collector's configuration is in the telemetry
guide. Install with `pip install apiguard[otel]`.
"""

from __future__ import annotations

# --8<-- [start:sdk]
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def telemetry(service: str) -> tuple[TracerProvider, MeterProvider]:
    """An SDK that batches spans and exports metrics every 15 s, both over OTLP/HTTP."""
    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=15_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return tracer_provider, meter_provider


# --8<-- [end:sdk]

# --8<-- [start:layer]
from fastapi import FastAPI  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from apiguard import APIKeyAuth, AuthMiddleware, Principal, TracingMiddleware, guard  # noqa: E402

tracer_provider, meter_provider = telemetry("orders")
app = FastAPI(telemetry={"tracing": False, "metrics": False})  # apiguard traces here


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/orders/{order_id}")
async def read_order(order_id: int) -> dict[str, int]:
    return {"id": order_id}


guard(
    app,
    Middleware(
        TracingMiddleware,  # outermost: it sees every request, the refused ones too
        tracer_provider=tracer_provider,  # or leave both out to use the global providers
        meter_provider=meter_provider,
        exclude=["GET /health"],
        trusted_proxies=["10.0.0.0/8"],
        consumer="plan",
    ),
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys={"k-partner-0001": Principal(id="partner", plan="pro")})],
        public=["GET /health"],
    ),
)
# --8<-- [end:layer]
