"""The orders API: a small FastAPI service that the demo serves and the docs wrap.

Public, read and write routes with path, query and body parameters, kept in
memory. `make demo` serves it on http://127.0.0.1:8000; each layer's guide
shows how to put that layer in front of it.

The demo's telemetry: Prometheus-format metrics on `/metrics` (through the
OpenTelemetry Prometheus exporter), and its traces printed on the console
when `APIGUARD_DEMO_TRACES=console` is set (`APIGUARD_DEMO_TRACES=console
make demo`).
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query, Response, status
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.middleware import Middleware

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    Principal,
    RateLimitMiddleware,
    Rules,
    TracingMiddleware,
    ValidationMiddleware,
    by_principal,
    guard,
)
from apiguard.openapi import guarded_openapi


class LineIn(BaseModel):
    """One line of an order as the client sends it."""

    sku: Annotated[str, Field(pattern=r"^[A-Z0-9-]{3,32}$")]
    quantity: Annotated[int, Field(gt=0, le=1000)]
    unit_price: Annotated[Decimal, Field(gt=0, max_digits=10, decimal_places=2)]


class OrderIn(BaseModel):
    """An order as the client sends it."""

    customer_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=100)]
    note: Annotated[str | None, Field(max_length=500)] = None


class NotFound(BaseModel):
    """The app's own 404 body (FastAPI's `HTTPException`)."""

    detail: str


#: The 404 each route on one order may answer, so that the schema documents it.
MISSING = {404: {"model": NotFound, "description": "No order with this id."}}


class Order(OrderIn):
    """An order as the service keeps it."""

    id: int
    status: Literal["open", "cancelled"] = "open"
    created_at: datetime
    total: Decimal


def create_app() -> FastAPI:
    """The orders API, unguarded: the layers' guides wrap this."""
    app = FastAPI(title="Orders", version="1.0")
    orders: dict[int, Order] = {}
    ids = itertools.count(1)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/orders")
    async def list_orders(
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
        state: Literal["open", "cancelled"] | None = None,
    ) -> list[Order]:
        found = [o for o in orders.values() if state is None or o.status == state]
        return found[offset : offset + limit]

    @app.get("/orders/{order_id}", responses=MISSING)
    async def get_order(order_id: int) -> Order:
        order = orders.get(order_id)
        if order is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no order {order_id}")
        return order

    @app.post("/orders", status_code=status.HTTP_201_CREATED)
    async def create_order(order: OrderIn) -> Order:
        total = sum((line.unit_price * line.quantity for line in order.lines), Decimal("0"))
        created = Order(
            **order.model_dump(), id=next(ids), created_at=datetime.now(UTC), total=total
        )
        orders[created.id] = created
        return created

    @app.post("/orders/{order_id}/cancel", responses=MISSING)
    async def cancel_order(order_id: int) -> Order:
        order = await get_order(order_id)
        order.status = "cancelled"
        return order

    @app.delete("/orders/{order_id}", status_code=status.HTTP_204_NO_CONTENT, responses=MISSING)
    async def delete_order(order_id: int) -> None:
        if orders.pop(order_id, None) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no order {order_id}")

    return app


# Demo API keys: `curl -H 'X-API-Key: demo-writer-4b8d1e6f' localhost:8000/orders`.
# A real service loads its keys from a secret store, or looks them up (see the
# authentication guide); these are public and for the demo only.
DEMO_KEYS = {
    "demo-reader-7f3a9c2e": Principal(id="demo-reader", scopes=["orders:read"], plan="free"),
    "demo-writer-4b8d1e6f": Principal(
        id="demo-writer", scopes=["orders:read", "orders:write"], plan="pro"
    ),
}


def demo_telemetry() -> tuple[TracerProvider | None, MeterProvider]:
    """The demo's OpenTelemetry SDK: metrics for Prometheus, traces on the console on request."""
    # The reader registers with prometheus_client's registry, which /metrics serves.
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    tracer_provider = None
    if os.environ.get("APIGUARD_DEMO_TRACES") == "console":
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return tracer_provider, meter_provider


def demo_app() -> FastAPI:
    """The orders API with a Prometheus `/metrics` endpoint."""
    api = create_app()

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return api


TRACER_PROVIDER, METER_PROVIDER = demo_telemetry()
UNGUARDED = ["GET /health", "GET /metrics"]

#: Multiplies the demo's limits: the fuzzing test (schemathesis, from one
#: address) sets ORDERS_LIMIT_SCALE=100 so that it explores more than 429s.
SCALE = int(os.environ.get("ORDERS_LIMIT_SCALE", "1"))


def per_minute(count: int) -> str:
    """`count` requests a minute, scaled."""
    return f"{count * SCALE}/minute"


# The demo: the orders API behind apiguard's layers, on the in-memory defaults.
app = guard(
    demo_app(),
    # Spans, metrics and the audit log of refusals; usage per plan.
    Middleware(
        TracingMiddleware,
        tracer_provider=TRACER_PROVIDER,
        meter_provider=METER_PROVIDER,
        exclude=UNGUARDED,
        consumer="plan",
    ),
    # Per client address; writes are tighter; health checks are never limited.
    Middleware(
        RateLimitMiddleware,
        name="ip",
        limit=per_minute(100),
        routes={"POST /orders": per_minute(20)},
        exempt=UNGUARDED,
    ),
    # Who is calling: demo API keys; health, metrics and the API docs are public.
    Middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(keys=DEMO_KEYS)],
        public=[*UNGUARDED, "GET /docs", "GET /docs/oauth2-redirect", "GET /openapi.json"],
        scopes={
            "GET /orders": ["orders:read"],
            "GET /orders/{order_id}": ["orders:read"],
            "POST /orders": ["orders:write"],
            "POST /orders/{order_id}/cancel": ["orders:write"],
            "DELETE /orders/{order_id}": ["orders:write"],
        },
    ),
    # Quotas per caller, by the plan their key carries.
    Middleware(
        RateLimitMiddleware,
        name="plan",
        key=by_principal(),
        plans={"free": per_minute(60), "pro": per_minute(600)},
        exempt=UNGUARDED,
    ),
    # Bodies of 64 KiB at most; orders checked against OrderIn before FastAPI runs.
    Middleware(
        ValidationMiddleware, max_body_bytes=65_536, routes={"POST /orders": Rules(body=OrderIn)}
    ),
)

# The schema at /openapi.json documents the guards: the API key scheme and
# each route's scopes, the refusals (401, 403, 413, 415, 422, 429, ...) in
# problem details with their headers, the RateLimit fields.
app.openapi = guarded_openapi(app)  # type: ignore[method-assign]
