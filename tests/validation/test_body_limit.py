"""How the layer's limit combines with Starlette's and FastAPI's own `max_body_size`.

Starlette 1.10 and FastAPI 0.165 put their app-wide limit outside every user
middleware: it wraps `receive` (raising when the body grows past it) and
`send` (replacing any response with its own plain-text 413 when the declared
Content-Length is over it). A route's own `max_body_size` sits inside the
router, after the layer, and sees the replayed body.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from apiguard import ValidationMiddleware, guard
from tests.validation._apps import drive

pytestmark = pytest.mark.anyio

BODY = b'{"a": "' + b"x" * 4990 + b'"}'  # 5,000 bytes


async def endpoint(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


def starlette_app(app_limit: int | None, layer_limit: int, route_limit: int | None = None) -> Any:
    route = Route("/d", endpoint, methods=["POST"], max_body_size=route_limit)
    return guard(
        Starlette(routes=[route], max_body_size=app_limit),
        Middleware(ValidationMiddleware, max_body_bytes=layer_limit),
    )


def fastapi_app(app_limit: int | None, layer_limit: int, route_limit: int | None = None) -> Any:
    app = FastAPI(max_body_size=app_limit)

    @app.post("/d", max_body_size=route_limit)
    async def d(payload: dict[str, str]) -> dict[str, int]:
        return {"keys": len(payload)}

    return guard(app, Middleware(ValidationMiddleware, max_body_bytes=layer_limit))


APPS = [pytest.param(starlette_app, id="starlette"), pytest.param(fastapi_app, id="fastapi")]


def headers(framing: str, content_type: bytes = b"application/json") -> list[tuple[bytes, bytes]]:
    if framing == "length":
        return [(b"content-type", content_type), (b"content-length", b"%d" % len(BODY))]
    return [(b"content-type", content_type), (b"transfer-encoding", b"chunked")]


@pytest.mark.parametrize("make", APPS)
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_layer_limit_below_the_app_limit_answers_problem_details(
    make: Any, framing: str
) -> None:
    """The recommended set-up: the layer refuses first, in problem details."""
    answer = await drive(
        make(100_000, 1000), "POST", "/d", headers(framing), [BODY[:2000], BODY[2000:]]
    )
    assert answer.status == 413
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("make", APPS)
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_app_limit_below_the_layer_limit_answers_plain_text(make: Any, framing: str) -> None:
    """The app-wide limit is outside the layer: its plain-text 413 reaches the client."""
    answer = await drive(
        make(1000, 100_000), "POST", "/d", headers(framing), [BODY[:2000], BODY[2000:]]
    )
    assert answer.status == 413
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.body == b"Content Too Large"


@pytest.mark.parametrize("make", APPS)
async def test_app_limit_replaces_any_answer_when_the_declared_length_is_over_it(
    make: Any,
) -> None:
    """Over the app's limit by Content-Length, even the layer's 415 becomes a plain 413."""
    answer = await drive(
        make(1000, 100_000), "POST", "/d", headers("length", b"text/plain"), [BODY]
    )
    assert answer.status == 413
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("make", APPS)
async def test_route_limit_inside_the_layer_sees_the_replayed_body(make: Any) -> None:
    """A route's own max_body_size runs after the layer, on the body it replays."""
    answer = await drive(make(None, 100_000, 1000), "POST", "/d", headers("length"), [BODY])
    assert answer.status == 413
    assert answer.headers["content-type"] != "application/problem+json"


@pytest.mark.parametrize("make", APPS)
async def test_within_every_limit_the_body_reaches_the_endpoint(make: Any) -> None:
    answer = await drive(make(100_000, 100_000, 100_000), "POST", "/d", headers("length"), [BODY])
    assert answer.status == 200
