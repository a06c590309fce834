"""WebSocket routes have a key form of their own: `"WEBSOCKET /live"`.

A page and a live feed often share a path (`@app.get("/live")` and
`@app.websocket("/live")`): `"GET /live"` names the page only,
`"WEBSOCKET /live"` the feed only, `"/live"` both.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import APIKeyAuth, AuthMiddleware, ConfigError, Principal, guard
from apiguard.routing import RoutePolicies
from tests.auth._helpers import websocket
from tests.routing._drive import call

pytestmark = pytest.mark.anyio

KEYS = {
    "k-reader-00000001": Principal(id="reader", scopes=["read"]),
    "k-admin-000000001": Principal(id="root", scopes=["admin"]),
}
READER = [(b"x-api-key", b"k-reader-00000001")]
ACCEPTED = ["websocket.accept", "websocket.send", "websocket.close"]


async def _page(request: Request) -> Response:
    return PlainTextResponse("page")


async def _feed(socket: WebSocket) -> None:
    await socket.accept()
    await socket.send_text("feed")
    await socket.close()


def _app(**options: Any) -> Starlette:
    return guard(
        Starlette(routes=[Route("/live", _page), WebSocketRoute("/live", _feed)]),
        Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], **options),
    )


async def _get(app: Any, path: str = "/live") -> int:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return (await client.get(path)).status_code


async def test_a_get_key_names_the_page_not_the_websocket_on_its_path() -> None:
    """`public=["GET /live"]`: the page is public, the feed still needs a credential."""
    app = _app(public=["GET /live"])
    assert await _get(app) == 200
    refused = await websocket(app, [], "/live")
    assert [m["type"] for m in refused] == ["websocket.close"]


async def test_a_websocket_key_names_the_websocket_not_the_page() -> None:
    """`public=["WEBSOCKET /live"]`: the feed is public, the page still needs a credential."""
    app = _app(public=["WEBSOCKET /live"])
    assert await _get(app) == 401
    assert [m["type"] for m in await websocket(app, [], "/live")] == ACCEPTED


async def test_a_key_without_a_method_names_both() -> None:
    """`public=["/live"]`: the page and the feed."""
    app = _app(public=["/live"])
    assert await _get(app) == 200
    assert [m["type"] for m in await websocket(app, [], "/live")] == ACCEPTED


async def test_a_websocket_key_wins_over_the_method_less_one() -> None:
    """`"/live"` public, `"WEBSOCKET /live"` scoped: the feed needs the scope."""
    app = _app(public=["/live"], scopes={"WEBSOCKET /live": ["admin"]})
    assert await _get(app) == 200
    refused = await websocket(app, READER, "/live")
    assert [m["type"] for m in refused] == ["websocket.close"]


@pytest.mark.parametrize("key", ["GET /ws", "HEAD /ws", "POST /ws"])
def test_an_http_method_on_a_websocket_route_names_the_new_form(key: str) -> None:
    """A key that could never apply is a start-up error saying what to write."""
    app = Starlette(routes=[WebSocketRoute("/ws", _feed)])
    with pytest.raises(ConfigError, match=r"scopes: route '[A-Z]+ /ws' is a WebSocket route"):
        RoutePolicies("scopes", {key: 1}, 0).bind(app)
    with pytest.raises(ConfigError, match=r"use 'WEBSOCKET /ws'"):
        RoutePolicies("scopes", {key: 1}, 0).bind(app)


def test_a_websocket_key_on_an_http_route_is_a_startup_error() -> None:
    """`"WEBSOCKET /live"` where only a page is: refused, naming the methods it takes."""
    app = Starlette(routes=[Route("/page", _page)])
    with pytest.raises(ConfigError, match=r"'WEBSOCKET /page' is not a WebSocket route \(only"):
        RoutePolicies("scopes", {"WEBSOCKET /page": 1}, 0).bind(app)


def test_websocket_and_method_less_keys_bind_where_they_apply() -> None:
    """Both routes on one path, a mount taking both: every sensible key binds."""
    app = Starlette(
        routes=[
            Route("/live", _page),
            WebSocketRoute("/live", _feed),
            Mount("/static", app=_page),
        ]
    )
    RoutePolicies(
        "scopes",
        {
            "GET /live": 1,
            "WEBSOCKET /live": 2,
            "/live": 3,
            "WEBSOCKET /static/{path}": 4,
            "POST /static/{path}": 5,
        },
        0,
    ).bind(app)


async def _plain(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await PlainTextResponse("plain")(scope, receive, send)
    else:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})


@pytest.mark.parametrize(
    ("key", "page", "feed"),
    [("GET /live", 200, "websocket.close"), ("WEBSOCKET /live", 401, "websocket.accept")],
)
async def test_the_templates_of_a_plain_app_tell_the_two_apart(
    key: str, page: int, feed: str
) -> None:
    """Without a router, the option's own templates keep the page and the feed apart."""
    app = guard(
        _plain, Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], public=[key])
    )
    assert await _get(app) == page
    assert (await websocket(app, [], "/live"))[0]["type"] == feed


@pytest.mark.parametrize("method", ["WEBSOCKET", "websocket", "WebSocket"])
async def test_an_http_request_with_a_websocket_method_gets_no_websocket_policy(
    method: str,
) -> None:
    """`WEBSOCKET` is a pseudo-method: an HTTP request sending it is not a WebSocket."""
    app = guard(
        Starlette(routes=[Mount("/legacy", app=_plain)]),
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys=KEYS)],
            public=["WEBSOCKET /legacy/{path}"],
        ),
    )
    status, _, _ = await call(app, method, "/legacy/x")
    assert status == 401
    assert (await websocket(app, [], "/legacy/x"))[0]["type"] == "websocket.accept"
