"""Rate limiting by client address: 100 a minute, with a tighter limit on writes."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, guard
from apiguard.ratelimit import RoutePolicy


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


# --8<-- [start:layer]
app = guard(
    Starlette(
        routes=[
            Route("/health", health),
            Route("/orders", orders, methods=["GET", "POST"]),
            Route("/reports", orders),
        ]
    ),
    Middleware(
        RateLimitMiddleware,
        name="ip",
        limit="100/minute",  # every route, per client address (by_ip() by default)
        routes={
            "POST /orders": "10/minute",  # its own counter, per client
            "GET /reports": RoutePolicy(cost=10),  # draws 10 of the 100
        },
        exempt=["/health"],
    ),
)
# --8<-- [end:layer]
