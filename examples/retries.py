"""Retries of idempotent requests, each attempt with its own budget, within one deadline."""

import itertools

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RetryMiddleware, TimeoutMiddleware, guard
from apiguard.resilience import RetryBudget

# A flaky dependency: every third call fails with 503.
calls = itertools.count(1)


async def inventory(request: Request) -> JSONResponse:
    if next(calls) % 3 == 1:
        return JSONResponse({"error": "upstream busy"}, status_code=503)
    return JSONResponse({"sku": request.path_params["sku"], "stock": 7})


async def search(request: Request) -> JSONResponse:
    query = await request.json()
    return JSONResponse({"query": query, "hits": []})


# --8<-- [start:layers]
app = guard(
    Starlette(
        routes=[
            Route("/inventory/{sku}", inventory),
            Route("/search", search, methods=["POST"]),
        ]
    ),
    Middleware(TimeoutMiddleware, name="request", timeout=10.0),  # the whole request
    Middleware(
        RetryMiddleware,
        attempts=3,  # the first and two retries
        routes={"POST /search": True},  # a POST known to be safe to repeat
        budget=RetryBudget(ratio=0.2, min_per_second=1.0),  # 20 % + 1/s, over 10 s
    ),
    Middleware(TimeoutMiddleware, name="attempt", timeout=2.0),  # each attempt
)
# --8<-- [end:layers]
