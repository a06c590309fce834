"""Apps for the policy report's tests, importable as `tests.report._apps:<name>`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    IPFilterMiddleware,
    Principal,
    RateLimitMiddleware,
    guard,
)

KEYS = APIKeyAuth(keys={"k-report-0001": Principal(id="ops")})


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def live(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


class Anything:
    """An ASGI endpoint: its route takes every method."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("ok")(scope, receive, send)


def routes() -> list[Any]:
    return [
        Route("/orders", ok, methods=["GET", "POST"]),
        Route("/status", ok),
        WebSocketRoute("/live", live),
    ]


def limiter(**options: Any) -> Middleware:
    return Middleware(RateLimitMiddleware, name="ip", limit="100/minute", **options)


#: Rate limited, but no authentication layer at all: every route is unguarded.
unguarded = guard(Starlette(routes=routes()), limiter())

#: The same routes, /status and the feed declared public, the rest behind a key.
declared = guard(
    Starlette(routes=routes()),
    limiter(exempt=["GET /status"]),
    Middleware(AuthMiddleware, authenticators=[KEYS], public=["GET /status", "WEBSOCKET /live"]),
)

#: A guarded API mounted under /api, beside outer routes that nothing guards.
api = guard(
    Starlette(routes=[Route("/items/{item_id:int}", ok), Route("/items", ok, methods=["POST"])]),
    Middleware(AuthMiddleware, authenticators=[KEYS], scopes={"POST /items": ["items:write"]}),
)
mounted = guard(
    Starlette(routes=[Route("/status", ok), WebSocketRoute("/live", live), Mount("/api", api)]),
    Middleware(IPFilterMiddleware, deny=["192.0.2.0/24"]),
)

#: A per-route key naming a template the app does not have: it would not start.
misconfigured = guard(
    Starlette(routes=routes()),
    Middleware(AuthMiddleware, authenticators=[KEYS], public=["GET /stauts"]),
)

#: A limiter on a Redis store at the address in REPORT_REDIS (nothing need listen there).
redis_store = guard(
    Starlette(routes=routes()),
    limiter(storage=os.environ.get("REPORT_REDIS", "redis://127.0.0.1:1/0")),
    Middleware(AuthMiddleware, authenticators=[KEYS], public=["/status", "/live"]),
)

#: What the app's lifespan did, for the --lifespan test.
events: list[str] = []


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    events.append("startup")
    yield
    events.append("shutdown")


with_lifespan = guard(
    Starlette(routes=routes(), lifespan=_lifespan),
    Middleware(AuthMiddleware, authenticators=[KEYS]),
)


def make_app() -> Starlette:
    """A factory, for --factory."""
    return guard(Starlette(routes=routes()), Middleware(AuthMiddleware, authenticators=[KEYS]))


#: A layer added without guard(): its options are checked only when the stack is built.
unvalidated = Starlette(routes=routes())
unvalidated.add_middleware(RateLimitMiddleware, limit="ten a minute")


def _hiding(app: Any) -> Any:
    """A hand-written middleware that keeps its app in a closure, not as `.app`."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)

    return middleware


#: Every route unguarded, behind a wrapper the report cannot see through.
hidden = _hiding(Starlette(routes=routes()))

#: The guarded API mounted under /api, after outer routes that answer some of its paths:
#: GET /api/items/{item_id} and every method of /api/items never reach the API's layers.
shadowed = Starlette(
    routes=[
        Route("/api/items/{item_id}", ok),
        Route("/api/items", Anything()),
        Mount("/api", api),
    ]
)
