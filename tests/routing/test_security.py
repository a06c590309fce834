"""Route resolution cannot be steered around a route's policy (security review findings)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Host, Mount, Route, Router, WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import APIKeyAuth, AuthMiddleware, ConfigError, Principal, guard
from apiguard.routing import RoutePolicies
from tests.auth._helpers import websocket

pytestmark = pytest.mark.anyio

KEYS = {
    "k-user-0000000001": Principal(id="bob"),
    "k-admin-000000001": Principal(id="root", scopes=["admin"]),
}
BOB = {"x-api-key": "k-user-0000000001"}


async def _text(request: Request) -> Response:
    return PlainTextResponse(f"{request.url.path} as {request.user.display_name or '-'}")


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")


async def test_long_host_headers_do_not_share_a_cache_entry() -> None:
    """Two >512-byte hosts sharing a prefix resolve apart, however often seen."""
    app = guard(
        Starlette(
            routes=[
                Host("{tenant}.example.com", Router([Route("/report", _text)])),
                Route("/report", _text),  # every other host: a credential needed
            ]
        ),
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys=KEYS)],
            public=["GET {tenant}.example.com/report"],
        ),
    )
    pad = "a" * 520
    async with _client(app) as client:
        for _ in range(3):  # seen enough times to be cached
            public = await client.get("/report", headers={"host": pad + ".example.com"})
            assert public.status_code == 200
        other = await client.get("/report", headers={"host": pad + ".evil.test"})
    assert other.status_code == 401


@pytest.mark.parametrize("path", ["/admin/stats", "/admin/users/1"])
async def test_a_layer_wrapping_the_app_directly_resolves_with_its_router(path: str) -> None:
    """AuthMiddleware(app) without guard(): a mount's scopes still cover every path under it."""

    async def admin(scope: Any, receive: Any, send: Any) -> None:  # a mounted ASGI app
        await PlainTextResponse(f"ADMIN {scope['path']}")(scope, receive, send)

    starlette = Starlette(routes=[Route("/", _text), Mount("/admin", admin)])
    wrapped = AuthMiddleware(
        starlette, authenticators=[APIKeyAuth(keys=KEYS)], scopes={"/admin/{path}": ["admin"]}
    )
    async with _client(wrapped) as client:
        refused = await client.get(path, headers=BOB)
        allowed = await client.get(path, headers={"x-api-key": "k-admin-000000001"})
    assert refused.status_code == 403
    assert allowed.status_code == 200


async def _feed(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(f"feed for {websocket.user.display_name}")
    await websocket.close()


@pytest.mark.parametrize("key", ["/ws", "WEBSOCKET /ws"])
async def test_websocket_routes_are_keyed_websocket(key: str) -> None:
    """`"WEBSOCKET /ws"` (and `"/ws"`) apply to WebSocket connections."""
    app = guard(
        Starlette(routes=[WebSocketRoute("/ws", _feed)]),
        Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], scopes={key: ["admin"]}),
    )
    sent = await websocket(app, [(b"x-api-key", BOB["x-api-key"].encode())])
    assert sent[0]["type"] == "websocket.close"  # refused before the app: bob lacks 'admin'
    assert not any(m["type"] == "websocket.send" for m in sent)


@pytest.mark.parametrize("key", ["GET /ws", "POST /ws"])
def test_websocket_routes_refuse_http_methods_at_startup(key: str) -> None:
    """A key like "GET /ws" could never apply: a start-up error naming the WEBSOCKET form."""
    app = Starlette(routes=[WebSocketRoute("/ws", _feed)])
    RoutePolicies("scopes", {"WEBSOCKET /ws": 1, "/ws": 2}, 0).bind(app.router)
    with pytest.raises(ConfigError, match=rf"'{key}' is a WebSocket route: use 'WEBSOCKET /ws'"):
        RoutePolicies("scopes", {key: 1}, 0).bind(app.router)
