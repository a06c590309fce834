"""Run in a process of its own: the global SDK is set up after the app is built.

Prints one JSON line: what the layer recorded before and after the global
providers were set, and whether its fast reads of the API's globals agree
with the public getters.
"""

from __future__ import annotations

import asyncio
import json

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apiguard import TracingMiddleware, guard
from apiguard.tracing._providers import global_meter_provider, global_tracer_provider
from tests.tracing._helpers import call


async def main() -> dict[str, object]:
    app = guard(
        Starlette(routes=[Route("/x/{n}", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware),
    )
    report: dict[str, object] = {
        "unset": [global_tracer_provider() is None, global_meter_provider() is None],
        "before": await call(app, "GET", "/x/1"),
    }
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    report["spans_before"] = len(exporter.get_finished_spans())
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    report["agree"] = [
        global_tracer_provider() is trace.get_tracer_provider(),
        global_meter_provider() is metrics.get_meter_provider(),
    ]
    report["after"] = await call(app, "GET", "/x/2")
    report["spans_after"] = [span.name for span in exporter.get_finished_spans()]
    data = reader.get_metrics_data()
    report["metrics_after"] = sorted(
        metric.name
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
