"""The core: bare apps, a pure pass-through, and a no-op layer built on the core."""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware

from apiguard import guard
from benchmarks.apps import NEW_ORDER, NoopMiddleware, PassThrough, fastapi_app, starlette_app
from benchmarks.driver import ASGICase, Case, Request, post_json

GET = Request("GET", "/orders/42")
POST = post_json("/orders", NEW_ORDER)
ROUTES = {"GET /orders/{order_id}": "read", "POST /orders": "write"}


def cases() -> list[Case]:
    def with_layer(make: Any, *layers: Middleware) -> Any:
        return guard(make(), *layers)

    return [
        ASGICase("starlette GET", starlette_app(), GET),
        ASGICase(
            "starlette + pass-through GET",
            with_layer(starlette_app, Middleware(PassThrough)),
            GET,
            baseline="starlette GET",
        ),
        ASGICase(
            "starlette + noop layer GET",
            with_layer(starlette_app, Middleware(NoopMiddleware)),
            GET,
            baseline="starlette GET",
        ),
        ASGICase(
            "starlette + noop layer, per-route GET",
            with_layer(starlette_app, Middleware(NoopMiddleware, routes=ROUTES)),
            GET,
            baseline="starlette GET",
        ),
        ASGICase("starlette POST", starlette_app(), POST, expect=201),
        ASGICase(
            "starlette + noop layer, per-route POST",
            with_layer(starlette_app, Middleware(NoopMiddleware, routes=ROUTES)),
            POST,
            expect=201,
            baseline="starlette POST",
        ),
        ASGICase("fastapi GET", fastapi_app(), GET),
        ASGICase(
            "fastapi + noop layer, per-route GET",
            with_layer(fastapi_app, Middleware(NoopMiddleware, routes=ROUTES)),
            GET,
            baseline="fastapi GET",
        ),
        ASGICase("fastapi POST", fastapi_app(), POST, expect=201),
        ASGICase(
            "fastapi + noop layer, per-route POST",
            with_layer(fastapi_app, Middleware(NoopMiddleware, routes=ROUTES)),
            POST,
            expect=201,
            baseline="fastapi POST",
        ),
    ]


TITLE = "core: µs per request in process, and a no-op layer's cost"
