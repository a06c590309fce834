"""guard(): outermost first, eager validation, start-up checks under a real server."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apiguard import ConfigError, guard
from apiguard.context import from_request
from tests._layers import TagLayer
from tests._lifespan import startup
from tests._servers import Uvicorn

pytestmark = pytest.mark.anyio

LAYERS = [
    Middleware(TagLayer, name="outer"),
    Middleware(TagLayer, name="middle"),
    Middleware(TagLayer, name="inner"),
]


async def decisions(request: Request) -> Response:
    context = from_request(request)
    return JSONResponse([[d.name, d.policy] for d in context.decisions])


def _starlette() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id:int}", decisions)])


def _fastapi() -> FastAPI:
    app = FastAPI()
    app.add_api_route("/items/{item_id:int}", decisions, methods=["GET"])
    return app


async def _get(app: Any, path: str = "/items/1") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        return await client.get(path)


@pytest.mark.parametrize("make_app", [_starlette, _fastapi])
async def test_layers_run_in_the_order_listed(make_app: Any) -> None:
    """guard() lists layers outermost first: the order a request meets them."""
    app = guard(make_app(), *LAYERS)
    response = await _get(app)
    assert [name for name, _ in response.json()] == ["outer", "middle", "inner"]


async def test_guard_matches_the_middleware_list_and_reverses_add_middleware() -> None:
    """Same order as Starlette(middleware=[...]); the reverse of add_middleware calls."""
    listed = Starlette(routes=_starlette().routes, middleware=LAYERS)
    added = _starlette()
    for layer in LAYERS:
        added.add_middleware(layer.cls, *layer.args, **layer.kwargs)
    guarded = guard(_starlette(), *LAYERS)
    order = [[n for n, _ in (await _get(app)).json()] for app in (listed, added, guarded)]
    assert order[0] == order[2] == ["outer", "middle", "inner"]
    assert order[1] == ["inner", "middle", "outer"]


async def test_guard_wraps_plain_asgi_apps() -> None:
    """Any other ASGI app is wrapped; its layers use the fallback route matcher."""
    seen: list[Any] = []

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        seen.extend([d.name, d.policy] for d in scope["state"]["apiguard"].decisions)
        await JSONResponse({})(scope, receive, send)

    wrapped = guard(
        plain,
        Middleware(TagLayer, name="a", routes={"/items/{i:int}": "items"}),
        Middleware(TagLayer, name="b"),
    )
    assert wrapped is not plain
    await _get(wrapped)
    assert seen == [["a", "items"], ["b", None]]


def test_guard_returns_the_app_itself() -> None:
    app = _fastapi()
    assert guard(app, *LAYERS) is app
    assert [m.kwargs["name"] for m in app.user_middleware] == ["outer", "middle", "inner"]


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Middleware(TagLayer, nme="x"), "TagLayer: unknown option 'nme'; did you mean 'name'"),
        (Middleware(TagLayer), "TagLayer: missing a required argument: 'name'"),
        (Middleware(TagLayer, name=""), "TagLayer: name '' is not a non-empty string"),
        (Middleware(TagLayer, name="x", routes={"get /x": "t"}), "routes: route key 'get /x'"),
        ("TagLayer", "layer 0 is 'TagLayer'"),
    ],
)
def test_options_are_validated_when_guard_is_called(layer: Any, message: str) -> None:
    """Starlette builds its stack lazily; guard() checks every layer's options at once."""
    app = _starlette()
    with pytest.raises(ConfigError, match=message):
        guard(app, layer)
    assert app.user_middleware == []


async def test_guard_after_start_is_refused() -> None:
    app = _starlette()
    assert (await startup(app))["type"] == "lifespan.startup.complete"
    with pytest.raises(ConfigError, match="already started"):
        guard(app, *LAYERS)


async def test_routes_added_after_guard_are_known() -> None:
    """Route keys are checked when the stack is built, so later routes count."""
    app = guard(Starlette(), Middleware(TagLayer, name="t", routes={"/late/{n:int}": "late"}))
    app.add_route("/late/{n:int}", decisions)
    response = await _get(app, "/late/3")
    assert response.json() == [["t", "late"]]


async def test_unknown_route_fails_the_first_request_in_process() -> None:
    """Without lifespan (an in-process client), the error surfaces on the first request."""
    app = guard(_starlette(), Middleware(TagLayer, name="t", routes={"/nope": "x"}))
    with pytest.raises(ConfigError, match="'/nope' is not a route of the app"):
        await _get(app)


async def test_unknown_route_fails_lifespan_startup() -> None:
    """Under a server, lifespan start-up fails with the error: the server refuses to start."""
    app = guard(_starlette(), Middleware(TagLayer, name="t", routes={"/nope": "x"}))
    answer = await startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "routes: route '/nope' is not a route of the app" in answer["message"]


@pytest.mark.slow
def test_uvicorn_refuses_to_start_with_an_unknown_route() -> None:
    """Under uvicorn's default `--lifespan auto` the server exits, naming the option."""
    server = Uvicorn("tests._startup_app:app")
    server.start(wait=False)
    assert server.proc is not None
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - the failure we test for
        server.stop()
        pytest.fail("uvicorn kept serving a misconfigured app")
    output = server.stop()
    assert server.proc.returncode != 0
    assert "routes: route '/helth' is not a route of the app; did you mean '/health'?" in output
    assert "Application startup failed" in output


def test_startup_error_finds_a_failed_check_in_a_chain() -> None:
    """What `apiguard routes` reads to tell that an app would not start."""
    from apiguard.compose import checked_at_startup, startup_error

    def fail() -> None:
        raise ConfigError("routes: route '/x' is not a route of the app")

    inner = checked_at_startup(Starlette(), fail)
    outer = checked_at_startup(inner)
    assert str(startup_error(outer)) == "routes: route '/x' is not a route of the app"
    assert startup_error(Starlette()) is None
