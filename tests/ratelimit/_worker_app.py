"""A module-level app for `uvicorn --workers 2`, limited through APIGUARD_TEST_REDIS."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, guard
from tests.ratelimit._helpers import WorkerHeader

PID = str(os.getpid()).encode()


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


app = guard(
    Starlette(routes=[Route("/whoami", whoami), Route("/health", whoami)]),
    Middleware(WorkerHeader),
    Middleware(
        RateLimitMiddleware,
        limit=os.environ.get("APIGUARD_TEST_LIMIT", "50/hour"),
        strategy=os.environ.get("APIGUARD_TEST_STRATEGY", "fixed-window"),
        storage=os.environ["APIGUARD_TEST_REDIS"],
        exempt=["/health"],
        store_timeout=2.0,
    ),
)
