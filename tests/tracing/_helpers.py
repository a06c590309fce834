"""An SDK set-up with in-memory exporters, the apps the tracing tests drive, a raw driver."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    Principal,
    RateLimitMiddleware,
    Rules,
    TracingMiddleware,
    ValidationMiddleware,
    guard,
)

READER_KEY = "k-reader-0001"
WRITER_KEY = "k-writer-0002"
KEYS = {
    READER_KEY: Principal(id="ada", scopes=["orders:read"], plan="free"),
    WRITER_KEY: Principal(id="grace", scopes=["orders:read", "orders:write"], plan="pro"),
}


class Telemetry:
    """A tracer and a meter provider of the SDK, exporting to memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.kind is SpanKind.SERVER]

    def span(self) -> ReadableSpan:
        """The one server span so far (fails if there are several)."""
        (span,) = self.server_spans()
        return span

    def metrics(self) -> dict[tuple[str, str], list[Any]]:
        """(instrumentation scope, metric name) -> data points."""
        found: dict[tuple[str, str], list[Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = list(metric.data.data_points)
                    found.setdefault((scope.scope.name, metric.name), []).extend(points)
        return found

    def points(self, name: str, scope: str | None = None) -> list[Any]:
        """The data points of metric `name` (from every scope, or one)."""
        return [
            point
            for (where, metric), points in self.metrics().items()
            if metric == name and (scope is None or where == scope)
            for point in points
        ]

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


class OrderIn(BaseModel):
    sku: str
    quantity: int


class Boom(Exception):
    """An endpoint's own exception."""


async def get_order(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["order_id"]})


async def create_order(request: Request) -> Response:
    return JSONResponse(await request.json(), status_code=201)


async def unavailable(request: Request) -> Response:
    return JSONResponse({"detail": "down"}, status_code=503)


async def boom(request: Request) -> Response:
    raise Boom("the endpoint failed")


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def routes() -> list[Route]:
    return [
        Route("/health", health),
        Route("/orders/{order_id:int}", get_order),
        Route("/orders", create_order, methods=["POST"]),
        Route("/unavailable", unavailable),
        Route("/boom", boom),
    ]


def orders_app(
    telemetry: Telemetry | None,
    *,
    limit: str = "1000/minute",
    storage: str = "memory://",
    on_store_error: str = "fail-open",
    keys: Mapping[str, Principal] = KEYS,
    **options: Any,
) -> Starlette:
    """The guarded orders app: tracing, an IP limit, API keys, validation."""
    providers = telemetry.providers if telemetry is not None else {}
    return guard(
        Starlette(routes=routes()),
        Middleware(TracingMiddleware, **{**providers, **options}),
        Middleware(
            RateLimitMiddleware,
            name="ip",
            limit=limit,
            storage=storage,
            on_store_error=on_store_error,
            store_timeout=0.05,
        ),
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys=keys)],
            public=["GET /health", "GET /unavailable", "GET /boom"],
            scopes={"POST /orders": ["orders:write"]},
        ),
        Middleware(
            ValidationMiddleware,
            max_body_bytes=256,
            routes={"POST /orders": Rules(body=OrderIn)},
        ),
    )


def client(app: Any, **options: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app, raise_app_exceptions=False, client=options.pop("peer", ("203.0.113.9", 4000))
    )
    return httpx.AsyncClient(transport=transport, base_url="http://api.example.com", **options)


async def call(
    app: Any,
    method: str = "GET",
    path: str = "/orders/42",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    query: bytes = b"",
    client: tuple[str, int] = ("203.0.113.9", 4000),
) -> int:
    """One request straight into the ASGI app (fast, and the method exactly as given)."""
    status = 0
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"api.example.com"), *(headers or [])],
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return status


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def point_attributes(points: list[Any]) -> Iterator[dict[str, Any]]:
    for point in points:
        yield dict(point.attributes)
