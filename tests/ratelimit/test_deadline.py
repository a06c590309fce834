"""The request's deadline bounds the limiter's store call (a frozen redis-server)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from apiguard import RateLimitMiddleware, TimeoutMiddleware
from apiguard.storage import RemoteStore
from tests._layers import DeadlineLayer
from tests._servers import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


Limited = Callable[..., RateLimitMiddleware]


@pytest.fixture
async def limited(own_redis: RedisServer) -> AsyncIterator[Limited]:
    """Makes limiters on the test's own redis-server; closes their connections after."""
    made: list[RateLimitMiddleware] = []

    def make(**options: Any) -> RateLimitMiddleware:
        settings = {"limit": "100/minute", "storage": own_redis.url, "store_timeout": 5.0}
        settings.update(options)
        layer = RateLimitMiddleware(Starlette(routes=[Route("/", ok)]), **settings)
        made.append(layer)
        return layer

    yield make
    own_redis.thaw()
    for layer in made:
        await layer.aclose()


async def get(app: Any) -> tuple[httpx.Response, float]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        started = time.monotonic()
        response = await http.get("/")
        return response, time.monotonic() - started


def breaker_failures(layer: RateLimitMiddleware) -> int:
    store = layer.store
    assert isinstance(store, RemoteStore)
    return store.breaker.failures


@pytest.mark.parametrize(("mode", "status"), [("fail-open", 200), ("fail-closed", 503)])
async def test_a_frozen_store_call_ends_at_the_deadline(
    own_redis: RedisServer, limited: Limited, mode: str, status: int
) -> None:
    """Store timeout 5 s, deadline 0.3 s: the call ends at 0.3 s and the fail mode answers."""
    layer = limited(on_store_error=mode)
    app = DeadlineLayer(layer, seconds=0.3)
    assert (await get(app))[0].status_code == 200  # connected while the store answers
    own_redis.freeze()
    response, elapsed = await get(app)
    assert response.status_code == status
    assert elapsed < 3.0  # well under the 5 s store timeout
    (decision,) = app.contexts[-1].decisions_of("ratelimit")
    assert decision.reason == "deadline"
    # The request ran out of time; the store is not counted as failing for it.
    assert breaker_failures(layer) == 0


async def test_a_deadline_already_passed_makes_no_store_call(
    own_redis: RedisServer, limited: Limited
) -> None:
    layer = limited()
    app = DeadlineLayer(layer, seconds=0.0)
    response, _ = await get(app)
    assert response.status_code == 200
    assert app.contexts[-1].decisions_of("ratelimit")[0].reason == "deadline"
    assert own_redis.query("DBSIZE") == 0  # nothing was counted


async def test_without_a_deadline_the_store_timeout_bounds_the_call(
    own_redis: RedisServer, limited: Limited
) -> None:
    layer = limited(store_timeout=0.3)
    assert (await get(layer))[0].status_code == 200
    own_redis.freeze()
    response, elapsed = await get(layer)
    assert response.status_code == 200
    assert elapsed < 3.0
    assert breaker_failures(layer) == 1


async def test_behind_an_outer_timeout_the_client_gets_its_504_on_time(
    own_redis: RedisServer, limited: Limited
) -> None:
    app = TimeoutMiddleware(limited(on_store_error="fail-closed"), timeout=0.3)
    assert (await get(app))[0].status_code == 200
    own_redis.freeze()
    response, elapsed = await get(app)
    assert response.status_code in (503, 504)  # whichever timer fired first: never a hang
    assert elapsed < 3.0
