"""The per-request context, decisions, and the clock tests can freeze."""

from __future__ import annotations

import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import ConfigError, Decision, guard
from apiguard._clock import clock
from apiguard.context import STATE_KEY, get_context
from apiguard.testing import FrozenClock
from tests._layers import TagLayer

pytestmark = pytest.mark.anyio


async def endpoint(request: Request) -> Response:
    context = getattr(request.state, STATE_KEY)
    return JSONResponse(
        {
            "route": context.route.key if context.route else None,
            "tags": [d.policy for d in context.decisions_of("tag")],
        }
    )


async def test_endpoint_reads_the_layers_context_through_request_state() -> None:
    """request.state.apiguard is the context: route resolved once, decisions in order."""
    app = guard(
        Starlette(routes=[Route("/orders/{order_id:int}", endpoint)]),
        Middleware(TagLayer, name="a", routes={"/orders/{order_id}": "one"}),
        Middleware(TagLayer, name="b", routes={"GET /orders/{order_id}": "two"}),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        response = await client.get("/orders/5")
    assert response.json() == {"route": "/orders/{order_id}", "tags": ["one", "two"]}


def test_context_lives_in_scope_state_and_is_created_once() -> None:
    scope: dict[str, object] = {"type": "http"}
    first = get_context(scope)
    assert get_context(scope) is first
    assert scope["state"] == {STATE_KEY: first}


def test_decisions_are_frozen_records() -> None:
    decision = Decision(
        "ratelimit",
        "reject",
        name="ip",
        reason="quota-exceeded",
        status=429,
        limit=10,
        remaining=0,
        reset_after=3.0,
    )
    with pytest.raises(AttributeError):
        decision.outcome = "allow"  # type: ignore[misc]
    assert decision._replace(outcome="allow").outcome == "allow"
    assert decision.reason == "quota-exceeded"


def test_frozen_clock_moves_only_when_advanced() -> None:
    """Inside, the core clock is frozen; outside, it is real again."""
    with FrozenClock(wall=1_000.0, monotonic=50.0) as frozen:
        assert (clock.time(), clock.monotonic()) == (1_000.0, 50.0)
        frozen.advance(2.5)
        assert (clock.time(), clock.monotonic()) == (1_002.5, 52.5)
        with pytest.raises(ValueError, match="cannot go back"):
            frozen.advance(-1)
    assert abs(clock.time() - time.time()) < 5


def test_principal_is_a_starlette_user_with_frozen_scopes() -> None:
    from apiguard import Principal

    principal = Principal(
        id="partner", scopes=["orders:read", "orders:read"], plan="pro", claims={"sub": "partner"}
    )
    assert principal.scopes == frozenset({"orders:read"})
    assert (principal.is_authenticated, principal.display_name, principal.identity) == (
        True,
        "partner",
        "partner",
    )
    with pytest.raises(TypeError):
        principal.claims["sub"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": ""}, "id"),
        ({"id": "a", "scopes": "read write"}, "scopes"),
        ({"id": "a", "plan": 3}, "plan"),
    ],
)
def test_principal_rejects_bad_fields(kwargs: dict[str, object], message: str) -> None:
    from apiguard import Principal

    with pytest.raises(ConfigError, match=f"^Principal: {message}"):
        Principal(**kwargs)  # type: ignore[arg-type]


async def test_each_request_gets_its_own_context_under_lifespan_manager() -> None:
    """asgi-lifespan hands every request one state dict: contexts still never mix."""
    from asgi_lifespan import LifespanManager

    seen: list[object] = []

    async def endpoint(request: Request) -> Response:
        context = get_context(request.scope)
        seen.append(context)
        return JSONResponse({"decisions": len(context.decisions), "tags": len(seen)})

    app = guard(
        Starlette(routes=[Route("/orders/{order_id:int}", endpoint)]),
        Middleware(TagLayer, name="a", routes={"/orders/{order_id}": "one"}),
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = [(await client.get(f"/orders/{n}")).json() for n in range(60)]
    assert [a["decisions"] for a in answers] == [1] * 60
    assert len({id(context) for context in seen}) == 60  # all alive: ids are distinct
