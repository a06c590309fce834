"""Counters behind Redis Sentinel: every sentinel listed, the service and its database."""

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, by_ip, guard


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


# --8<-- [start:sentinel]
# Every sentinel, the service they monitor (mymaster) and the database (0).
SENTINEL = (
    "redis+sentinel://sentinel-a:26379,sentinel-b:26379,sentinel-c:26379/mymaster/0"
    "?connect_timeout=5"  # a far-away deployment: the first connection may take longer
)

app = guard(
    Starlette(routes=[Route("/orders", orders)]),
    Middleware(
        RateLimitMiddleware,
        name="ip",
        limit="10/second; 1000/hour",
        storage=os.environ.get("RATELIMIT_SENTINEL", SENTINEL),
        store_timeout=0.25,
        on_store_error="fail-closed",  # 503 + Retry-After while no primary answers
        key=by_ip(trusted_proxies=["10.0.0.0/8"]),
    ),
)
# --8<-- [end:sentinel]
