"""A module-level app for `uvicorn --workers 2`, its keys in APIGUARD_TEST_REDIS.

POST /orders counts its runs in Redis (`runs`), writes the pid of the worker
running it under `pid:<key>`, and, when the request sends `X-Hold: 1`, waits
until the test sets `release` in Redis, so that duplicates reach the other
worker while it runs.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import IdempotencyMiddleware, guard

REDIS = os.environ["APIGUARD_TEST_REDIS"]
PID = str(os.getpid()).encode()
_clients: dict[int, Any] = {}


def _redis() -> Any:
    loop = id(asyncio.get_running_loop())
    if loop not in _clients:
        _clients[loop] = redis.Redis.from_url(REDIS)
    return _clients[loop]


async def create(request: Request) -> Response:
    store = _redis()
    run = await store.incr("runs")
    key = request.headers.get("idempotency-key", "")
    await store.set(f"pid:{key}", os.getpid())
    if request.headers.get("x-hold") == "1":
        for _ in range(600):  # 30 s at most
            if await store.get("release"):
                break
            await asyncio.sleep(0.05)
    return JSONResponse({"run": run, "pid": os.getpid()}, status_code=201)


async def health(request: Request) -> Response:
    return JSONResponse({"pid": os.getpid()})


class WorkerHeader:
    """Says which worker process answered, rejections included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-worker-pid", PID)]}
            await send(message)

        await self.app(scope, receive, tagged)


app = guard(
    Starlette(routes=[Route("/orders", create, methods=["POST"]), Route("/health", health)]),
    Middleware(WorkerHeader),
    Middleware(
        IdempotencyMiddleware,
        storage=REDIS,
        lease=float(os.environ.get("APIGUARD_TEST_LEASE", "30")),
        store_timeout=10.0,  # a real server under a burst, on a machine that may be loaded
    ),
)
