"""Counters on a Redis Cluster: several seeds, a pool sized for the load, fail-open."""

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, by_ip, guard


async def orders(request: Request) -> JSONResponse:
    return JSONResponse([])


# --8<-- [start:cluster]
# Several seeds: one node down at start-up does not leave the store unreachable.
# max_connections: store calls in flight per worker process (see "Pool size").
CLUSTER = "redis+cluster://redis-a:6379,redis-b:6379,redis-c:6379?max_connections=200"

app = guard(
    Starlette(routes=[Route("/orders", orders)]),
    Middleware(
        RateLimitMiddleware,
        name="ip",
        limit="10/second; 1000/hour",
        storage=os.environ.get("RATELIMIT_CLUSTER", CLUSTER),
        store_timeout=0.25,  # seconds per call; the first connection has connect_timeout
        on_store_error="fail-open",  # a dead primary's keys go uncounted, the others do not
        key=by_ip(trusted_proxies=["10.0.0.0/8"]),
    ),
)
# --8<-- [end:cluster]
