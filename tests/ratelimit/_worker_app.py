"""A module-level app for `uvicorn --workers 2`, limited through APIGUARD_TEST_REDIS."""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, guard
from apiguard._clock import clock

PID = str(os.getpid()).encode()

if "APIGUARD_TEST_WALL" in os.environ:
    # Every worker on the test's pinned wall clock: no window edge inside a test.
    _WALL = float(os.environ["APIGUARD_TEST_WALL"])
    clock.time = lambda: _WALL


async def whoami(request: Request) -> JSONResponse:
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
    Starlette(routes=[Route("/whoami", whoami), Route("/health", whoami)]),
    Middleware(WorkerHeader),
    Middleware(
        RateLimitMiddleware,
        limit=os.environ.get("APIGUARD_TEST_LIMIT", "50/hour"),
        strategy=os.environ.get("APIGUARD_TEST_STRATEGY", "fixed-window"),
        storage=os.environ["APIGUARD_TEST_REDIS"],
        exempt=["/health"],
        store_timeout=10.0,  # a real server under a burst, on a machine that may be loaded
    ),
)
