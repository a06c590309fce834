"""The apps the benchmarks put layers in front of, and reference layers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import Decision, get_context
from apiguard.routing import RoutePolicies

ORDER = {"id": 42, "status": "open", "total": "25.00"}
NEW_ORDER = {
    "customer_email": "ada@example.com",
    "lines": [
        {"sku": "BOOK-1", "quantity": 2, "unit_price": "12.50"},
        {"sku": "PEN-22", "quantity": 10, "unit_price": "1.20"},
    ],
    "note": "leave at the door",
}


async def get_order(request: Request) -> Response:
    return JSONResponse({**ORDER, "id": request.path_params["order_id"]})


async def create_order(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"id": 43, "lines": len(body["lines"])}, status_code=201)


def starlette_app(**options: Any) -> Starlette:
    """The bare Starlette app: GET /orders/{id}, POST /orders."""
    return Starlette(
        routes=[
            Route("/health", lambda r: JSONResponse({"status": "ok"})),
            Route("/orders/{order_id:int}", get_order),
            Route("/orders", create_order, methods=["POST"]),
        ],
        **options,
    )


class LineIn(BaseModel):
    sku: str
    quantity: int
    unit_price: str


class OrderIn(BaseModel):
    customer_email: str
    lines: list[LineIn]
    note: str | None = None


def fastapi_app() -> FastAPI:
    """The bare FastAPI app with the same routes, the POST body a pydantic model."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/orders/{order_id}")
    async def read_order(order_id: int) -> dict[str, Any]:
        return {**ORDER, "id": order_id}

    @app.post("/orders", status_code=201)
    async def new_order(order: OrderIn) -> dict[str, Any]:
        return {"id": 43, "lines": len(order.lines)}

    return app


class PassThrough:
    """The cheapest possible pure-ASGI middleware: the reference floor."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class NoopMiddleware:
    """A layer built on apiguard's core that decides nothing.

    It does what every real layer does before its own work: lets non-HTTP
    scopes through on the first line, gets the request context, looks up its
    per-route policy (resolving the route once per request) and records its
    decision.
    """

    def __init__(self, app: Any, *, routes: dict[str, str] | None = None) -> None:
        self.app = app
        self.routes: RoutePolicies[str] = RoutePolicies("routes", routes, "default")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.routes.lookup(scope)
        get_context(scope).record(Decision("noop", "allow", policy=policy))
        await self.app(scope, receive, send)
