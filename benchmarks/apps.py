"""The apps the benchmarks put layers in front of, and reference layers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import Decision, get_context
from apiguard.routing import RoutePolicies

ORDER = {"id": 42, "status": "open", "total": "25.00"}
#: The POST body of every benchmark: 302 bytes as `json.dumps` writes it
#: (the issue's figures are for a 302-byte JSON order), three order lines.
NEW_ORDER = {
    "customer_email": "ada.lovelace@example.com",
    "lines": [
        {"sku": "BOOK-1984", "quantity": 2, "unit_price": "12.50"},
        {"sku": "PEN-22", "quantity": 10, "unit_price": "1.20"},
        {"sku": "NOTEBOOK-A5", "quantity": 3, "unit_price": "4.75"},
    ],
    "note": "Please leave it at the door; ring twice, wait a minute.",
}
NEW_ORDER_BYTES = json.dumps(NEW_ORDER).encode()
assert len(NEW_ORDER_BYTES) == 302, len(NEW_ORDER_BYTES)


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


#: Never reached: the cost of counting, not of refusing.
HIGH_LIMIT = "1000000/minute"
BENCH_CLAIMS = {"sub": "partner", "aud": "orders", "iss": "https://id.example/", "plan": "pro"}


@dataclasses.dataclass(frozen=True)
class StackLayer:
    """One layer of the recommended stack, as the benchmarks build and measure it.

    `after` names the layer it needs in front of it (the principal limit
    needs a principal): measured alone, it runs behind that layer, and its
    cost is the difference from that layer alone, in the same round.
    """

    label: str
    middleware: Middleware
    after: str | None = None


def stack_layers(*, secret: bytes, storage: str = "memory://") -> dict[str, StackLayer]:
    """The recommended stack, every layer apiguard has, in DESIGN's order, by short name.

    Outermost first: tracing (no SDK unless one is set up), the shedder (a
    bound of 200 in flight), a rate limit by client address, authentication
    (HS256 tokens signed with `secret`, the plan read from the token), quotas
    by plan, validation (a model on `POST /orders`), a circuit breaker per
    route, retries and a timeout. A layer lands here as one line when
    it is built: `full_stack` then has it, and the stack suite measures it
    alone, on GET and POST, and in the stack. The IP filter and idempotency
    are measured apart (see `benchmarks.stack`).
    """
    from apiguard import (
        AuthMiddleware,
        CircuitBreakerMiddleware,
        ConcurrencyLimitMiddleware,
        JWTAuth,
        RateLimitMiddleware,
        RetryMiddleware,
        Rules,
        TimeoutMiddleware,
        TracingMiddleware,
        ValidationMiddleware,
        by_principal,
    )

    jwt = JWTAuth(
        key=secret,
        algorithms=["HS256"],
        audience=BENCH_CLAIMS["aud"],
        issuer=BENCH_CLAIMS["iss"],
        principal=lambda p: dataclasses.replace(p, plan=p.claims["plan"]),
    )
    plans = {"free": "100/minute", "pro": HIGH_LIMIT}
    return {
        "tracing": StackLayer("tracing, no SDK", Middleware(TracingMiddleware)),
        "shedder": StackLayer("shedder", Middleware(ConcurrencyLimitMiddleware, max_in_flight=200)),
        "ip-limit": StackLayer(
            "IP limit, memory",
            Middleware(RateLimitMiddleware, name="ip", limit=HIGH_LIMIT, storage=storage),
        ),
        "jwt": StackLayer(
            "JWT HS256, repeat token",
            Middleware(AuthMiddleware, authenticators=[jwt], public=["GET /health"]),
        ),
        "plan-limit": StackLayer(
            "principal limit, memory",
            Middleware(
                RateLimitMiddleware, name="plan", key=by_principal(), plans=plans, storage=storage
            ),
            after="jwt",
        ),
        "validation": StackLayer(
            "validation, body model",
            Middleware(ValidationMiddleware, routes={"POST /orders": Rules(body=OrderIn)}),
        ),
        "breaker": StackLayer("breaker, per route", Middleware(CircuitBreakerMiddleware)),
        "retry": StackLayer("retry", Middleware(RetryMiddleware)),
        "timeout": StackLayer("timeout", Middleware(TimeoutMiddleware, timeout=5.0)),
    }


def full_stack(
    *,
    secret: bytes,
    storage: str = "memory://",
    app: Any = None,
    only: Collection[str] | None = None,
) -> Any:
    """The recommended stack (`stack_layers`) over `app`, or the layers named in `only`.

    `only` keeps the stack's order: `only={"jwt", "plan-limit"}` is
    authentication and the principal limit, as they sit in the stack.
    """
    from apiguard import guard

    layers = stack_layers(secret=secret, storage=storage)
    unknown = set(only or ()) - set(layers)
    if unknown:
        raise ValueError(f"no such layers in the stack: {sorted(unknown)}")
    chosen = [layer.middleware for name, layer in layers.items() if only is None or name in only]
    return guard(app if app is not None else starlette_app(), *chosen)


def bench_token(secret: bytes) -> str:
    """A token the full stack accepts for an hour, signed with `secret`."""
    from apiguard.testing import SigningKey, mint_token

    return mint_token(SigningKey("HS256", None, secret), BENCH_CLAIMS, expires_in=3600)
