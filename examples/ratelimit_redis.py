"""Many workers and hosts: one Redis for every process, and what happens when it fails."""

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, by_ip, guard


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


# --8<-- [start:redis]
app = guard(
    Starlette(routes=[Route("/orders", orders)]),
    Middleware(
        RateLimitMiddleware,
        name="ip",
        limit="10/second; 1000/hour",
        strategy="sliding-window-counter",
        storage=os.environ.get("RATELIMIT_REDIS", "redis://localhost:6379/0"),
        store_timeout=0.25,  # seconds; then the store's breaker spares the next requests
        on_store_error="fail-open",  # availability first: serve, unlimited, while Redis is down
        key=by_ip(trusted_proxies=["10.0.0.0/8"]),  # our load balancers
    ),
)
# --8<-- [end:redis]
