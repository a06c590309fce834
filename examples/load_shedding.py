"""Bounded in-flight work with an adaptive limit, a bulkhead for reports, and priorities."""

import asyncio

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import ConcurrencyLimitMiddleware, HealthMiddleware, TracingMiddleware, guard
from apiguard.resilience import AdaptiveLimit


class Load:
    """What the endpoints wait on: the tests hold them to fill the bound."""

    gate = asyncio.Event()
    gate.set()


async def orders(request: Request) -> JSONResponse:
    await Load.gate.wait()
    return JSONResponse({"orders": []})


async def report(request: Request) -> JSONResponse:
    await Load.gate.wait()
    return JSONResponse({"report": "ready"}, status_code=201)


async def search(request: Request) -> JSONResponse:
    await Load.gate.wait()
    return JSONResponse({"hits": []})


# --8<-- [start:layers]
app = guard(
    Starlette(
        routes=[
            Route("/orders", orders),
            Route("/reports", report, methods=["POST"]),
            Route("/search", search),
        ]
    ),
    Middleware(TracingMiddleware),
    Middleware(HealthMiddleware),  # probes never meet the shedder
    Middleware(
        ConcurrencyLimitMiddleware,
        max_in_flight=200,  # the ceiling of the adaptive limit
        adaptive=AdaptiveLimit(min_limit=8, tolerance=0.1),
        max_queue=20,  # absorb a burst for 100 ms at most
        max_wait=0.1,
        routes={"POST /reports": 4},  # a bulkhead: reports never take more than 4 slots
        priorities={"GET /search": "low"},  # shed first
        retry_after=2,
    ),
)
# --8<-- [end:layers]
