"""What is left of the request's time, as the endpoint reads it."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request
from starlette.middleware import Middleware

from apiguard import TimeoutMiddleware, guard
from apiguard.resilience import Deadline, request_deadline
from apiguard.testing import FrozenClock
from tests._layers import DeadlineLayer
from tests.resilience._apps import Watch, client

pytestmark = pytest.mark.anyio


def app_reporting(**layer: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/left")
    async def left(
        request: Request, deadline: Annotated[Deadline, Depends(request_deadline)]
    ) -> dict[str, Any]:
        return {
            "at": deadline.at,
            "remaining": deadline.remaining(),
            "state": request.state.apiguard.remaining(),
            "bound": deadline.bound(60.0),
            "expired": deadline.expired,
        }

    @app.get("/outbound")
    async def outbound(deadline: Annotated[Deadline, Depends(request_deadline)]) -> dict[str, str]:
        try:
            async with deadline.timeout():
                await asyncio.sleep(30)  # a slow upstream
        except TimeoutError:
            return {"upstream": "timed out within the request's deadline"}
        return {"upstream": "answered"}  # pragma: no cover

    if layer:
        guard(app, Middleware(TimeoutMiddleware, **layer))
    return app


async def test_the_endpoint_reads_what_is_left() -> None:
    with FrozenClock(monotonic=1000.0):
        async with client(app_reporting(timeout=2.5)) as http:
            seen = (await http.get("/left")).json()
    assert seen == {
        "at": 1002.5,
        "remaining": 2.5,
        "state": 2.5,
        "bound": 2.5,
        "expired": False,
    }


async def test_without_a_timeout_there_is_no_deadline() -> None:
    async with client(app_reporting()) as http:
        seen = (await http.get("/left")).json()
    assert seen == {"at": None, "remaining": None, "state": None, "bound": 60.0, "expired": False}


async def test_an_outbound_call_is_bounded_by_the_deadline() -> None:
    """A deadline without a timer of its own: the endpoint's bound is what ends the wait."""
    app = DeadlineLayer(app_reporting(), seconds=0.3)
    async with client(app) as http:
        clock = Watch()
        response = await http.get("/outbound")
    assert clock.elapsed < 10  # the upstream would take 30 s
    assert response.json() == {"upstream": "timed out within the request's deadline"}


def test_a_deadline_view_has_a_readable_repr() -> None:
    from apiguard.context import RequestContext

    assert repr(Deadline(RequestContext())) == "Deadline(remaining=None)"
