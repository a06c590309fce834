"""The telemetry guide's examples: OTLP to a stand-in collector, the audit log, FastAPI's spans."""

from __future__ import annotations

import importlib
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


class _OTLPReceiver:
    """A stand-in collector: an HTTP server that decodes what OTLP/HTTP exporters post."""

    def __init__(self) -> None:
        import http.server
        import threading

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        received = self.received = {"spans": [], "metrics": []}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    received["spans"] += [
                        span.name
                        for resource in request.resource_spans
                        for scope in resource.scope_spans
                        for span in scope.spans
                    ]
                elif self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest.FromString(body)
                    received["metrics"] += [
                        metric.name
                        for resource in request.resource_metrics
                        for scope in resource.scope_metrics
                        for metric in scope.metrics
                    ]
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_tracing_collector_recipe_exports_over_otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector recipe's exporters post real OTLP/HTTP to the endpoint in the environment."""
    receiver = _OTLPReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    try:
        module = importlib.reload(importlib.import_module("examples.tracing_collector"))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(module.app), base_url="http://api.example.com"
        ) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/orders/7")).status_code == 401
            ok = await client.get("/orders/7", headers={"x-api-key": "k-partner-0001"})
            assert ok.status_code == 200
        module.tracer_provider.force_flush()
        module.meter_provider.force_flush()
        module.tracer_provider.shutdown()
        module.meter_provider.shutdown()
    finally:
        receiver.close()
    assert receiver.received["spans"] == ["GET /orders/{order_id}", "GET /orders/{order_id}"]
    assert "http.server.request.duration" in receiver.received["metrics"]
    assert "apiguard.refusals" in receiver.received["metrics"]


async def test_tracing_audit_writes_json_lines() -> None:
    import io
    import json
    import logging

    module = importlib.import_module("examples.tracing_audit")
    stream = io.StringIO()
    module.handler.setStream(stream)
    audit = logging.getLogger("apiguard.audit")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(module.app), base_url="http://api.example.com"
        ) as client:
            assert (await client.get("/orders/1")).status_code == 401
    finally:
        audit.removeHandler(module.handler)
        audit.setLevel(logging.NOTSET)
        audit.propagate = True
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "apiguard.refusal"
    assert (record["route"], record["status"], record["reason"]) == (
        "/orders/{order_id}",
        401,
        "missing_credential",
    )


async def test_tracing_fastapi_has_one_span_per_request() -> None:
    module = importlib.import_module("examples.tracing_fastapi")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(module.app), base_url="http://api.example.com"
    ) as client:
        assert (await client.get("/orders/1")).status_code == 401
        ok = await client.get("/orders/1", headers={"x-api-key": "k-partner-0001"})
        assert ok.status_code == 200
    spans = [s for s in module.exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert [(s.instrumentation_scope.name, s.name) for s in spans] == [
        ("fastapi", "GET /orders/{order_id}"),
        ("fastapi", "GET /orders/{order_id}"),
    ]
    assert spans[0].attributes["apiguard.reject.reason"] == "missing_credential"
