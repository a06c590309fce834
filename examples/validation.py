"""Validation on a Starlette app: limits on every route, models and rules on some."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import Rules, ValidationMiddleware, guard
from apiguard.validation import validated


# --8<-- [start:models]
class LineIn(BaseModel):
    sku: Annotated[str, Field(pattern=r"^[A-Z0-9-]{3,32}$")]
    quantity: Annotated[int, Field(gt=0, le=1000)]


class OrderIn(BaseModel):
    customer_email: Annotated[str, Field(max_length=254)]
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=100)]


class OrderQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown parameters are a 422

    state: Literal["open", "cancelled"] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    sku: list[str] = []  # ?sku=A&sku=B: every value


class Tenant(BaseModel):
    x_tenant: Annotated[str, Field(pattern=r"^[a-z]{2,16}$")]  # header X-Tenant


# --8<-- [end:models]


# --8<-- [start:endpoints]
async def create_order(request: Request) -> JSONResponse:
    order: OrderIn = validated(request, "body")  # validated, not parsed again
    tenant: Tenant = validated(request, "headers")
    return JSONResponse({"tenant": tenant.x_tenant, "lines": len(order.lines)}, status_code=201)


async def list_orders(request: Request) -> JSONResponse:
    query: OrderQuery = validated(request, "query")
    return JSONResponse({"state": query.state, "limit": query.limit, "sku": query.sku})


# --8<-- [end:endpoints]


async def attach(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())}, status_code=201)


async def cancel(request: Request) -> JSONResponse:
    return JSONResponse({"status": "cancelled"})


routes = [
    Route("/orders", create_order, methods=["POST"]),
    Route("/orders", list_orders, methods=["GET"]),
    Route("/orders/{order_id:int}/attachments", attach, methods=["POST"]),
    Route("/orders/{order_id:int}/cancel", cancel, methods=["POST"]),
]

# --8<-- [start:layer]
app = guard(
    Starlette(routes=routes),
    Middleware(
        ValidationMiddleware,
        max_body_bytes=65_536,  # every route: 64 KiB of JSON at most
        routes={
            "POST /orders": Rules(body=OrderIn, headers=Tenant),
            "GET /orders": Rules(query=OrderQuery),
            "POST /orders/{order_id}/attachments": Rules(
                content_types=["application/pdf", "image/*"], max_body_bytes=5_000_000
            ),
            "POST /orders/{order_id}/cancel": Rules(no_body=True),
        },
    ),
)
# --8<-- [end:layer]
