"""A layer resolves against the router it was bound to, wherever its app is mounted.

A layer wrapped directly around an app (`AuthMiddleware(app, ...)`), or put
by `guard()` around a plain ASGI app, runs below the Mount of whatever app
the result is mounted in: by then the outer app has set `scope["app"]`, and
its router knows the mounted app only as one mount. Every per-route policy
must still apply as it does when the app is served on its own.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    Principal,
    RateLimitMiddleware,
    Rules,
    ValidationMiddleware,
    get_context,
    guard,
)
from apiguard.routing import RouteMatch, resolve, resolver_for
from apiguard.routing._resolver import resolve_with
from apiguard.testing import FrozenClock
from tests._layers import TagLayer
from tests.auth._helpers import websocket

pytestmark = pytest.mark.anyio

KEYS = {
    "k-reader-00000001": Principal(id="reader", scopes=["read"]),
    "k-admin-000000001": Principal(id="root", scopes=["admin"]),
}
GET_HEAD = frozenset({"GET", "HEAD"})
READER = {"x-api-key": "k-reader-00000001"}
ADMIN = {"x-api-key": "k-admin-000000001"}


async def _text(request: Request) -> Response:
    user = getattr(request.scope.get("user"), "display_name", "")
    return PlainTextResponse(f"{request.url.path} as {user or '-'}")


async def _feed(socket: WebSocket) -> None:
    await socket.accept()
    await socket.send_text(f"feed for {socket.user.display_name}")
    await socket.close()


def _inner() -> Starlette:
    return Starlette(
        routes=[
            Route("/admin/stats", _text),
            Route("/public", _text),
            Route("/orders", _text, methods=["GET", "POST"]),
            WebSocketRoute("/feed", _feed),
        ]
    )


def _auth(app: Any) -> AuthMiddleware:
    return AuthMiddleware(
        app,
        authenticators=[APIKeyAuth(keys=KEYS)],
        public=["GET /public"],
        scopes={"/admin/stats": ["admin"], "/feed": ["admin"]},
    )


def _outer(kind: str, mounted: Any) -> Any:
    if kind == "starlette":
        return Starlette(routes=[Route("/", _text), Mount("/api", app=mounted)])
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.mount("/api", mounted)
    return app


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=("203.0.113.9", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


OUTER = ["starlette", "fastapi"]


@pytest.mark.parametrize("outer", OUTER)
async def test_scopes_of_a_wrapped_then_mounted_app_still_apply(outer: str) -> None:
    """A reader key gets 403 on a route that needs `admin`, mounted or not."""
    app = _outer(outer, _auth(_inner()))
    async with _client(app) as client:
        refused = await client.get("/api/admin/stats", headers=READER)
        allowed = await client.get("/api/admin/stats", headers=ADMIN)
    assert refused.status_code == 403
    assert allowed.status_code == 200


@pytest.mark.parametrize("outer", OUTER)
async def test_public_route_of_a_wrapped_then_mounted_app_needs_no_credential(outer: str) -> None:
    """A public route answers 200 without a credential, mounted or not."""
    app = _outer(outer, _auth(_inner()))
    async with _client(app) as client:
        public = await client.get("/api/public")
        private = await client.get("/api/orders")
    assert (public.status_code, public.text) == (200, "/api/public as -")
    assert private.status_code == 401


@pytest.mark.parametrize("outer", OUTER)
async def test_websocket_scopes_of_a_wrapped_then_mounted_app_still_apply(outer: str) -> None:
    """A reader's handshake on an `admin` WebSocket route is refused before the app."""
    app = _outer(outer, _auth(_inner()))
    refused = await websocket(app, [(b"x-api-key", READER["x-api-key"].encode())], "/api/feed")
    allowed = await websocket(app, [(b"x-api-key", ADMIN["x-api-key"].encode())], "/api/feed")
    assert [m["type"] for m in refused] == ["websocket.close"]
    assert [m["type"] for m in allowed] == ["websocket.accept", "websocket.send", "websocket.close"]


async def test_a_route_rate_limit_of_a_wrapped_then_mounted_app_still_applies() -> None:
    """`routes={"POST /orders": "1/minute"}` limits POST /api/orders once mounted."""
    limited = RateLimitMiddleware(_inner(), limit="100/minute", routes={"POST /orders": "1/minute"})
    app = _outer("starlette", limited)
    with FrozenClock():
        async with _client(app) as client:
            first = await client.post("/api/orders")
            second = await client.post("/api/orders")
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["violated-policies"] == ["default-1"]


class _Order(BaseModel):
    sku: str


async def test_a_validation_rule_of_a_wrapped_then_mounted_app_still_applies() -> None:
    """A body model on `POST /orders` refuses a bad body with 422 once mounted."""
    validated = ValidationMiddleware(_inner(), routes={"POST /orders": Rules(body=_Order)})
    app = _outer("fastapi", validated)
    async with _client(app) as client:
        refused = await client.post("/api/orders", json={"quantity": 1})
        accepted = await client.post("/api/orders", json={"sku": "BOOK-1"})
    assert refused.status_code == 422
    assert accepted.status_code == 200


# --- guard() around a plain ASGI app, then mounted ------------------------------------


async def _plain(scope: Any, receive: Any, send: Any) -> None:
    """A plain ASGI app (no router): answers every path, HTTP and WebSocket."""
    if scope["type"] == "http":
        await PlainTextResponse(f"plain {scope['path']}")(scope, receive, send)
    else:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})


def _guarded_plain() -> Any:
    return guard(
        _plain,
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys=KEYS)],
            public=["GET /open"],
            scopes={"/admin/{rest:path}": ["admin"]},
        ),
    )


@pytest.mark.parametrize("outer", OUTER)
async def test_guard_around_a_plain_app_then_mounted_keeps_its_policies(outer: str) -> None:
    """The option's own templates answer for a plain app, under a mount too."""
    app = _outer(outer, _guarded_plain())
    async with _client(app) as client:
        refused = await client.get("/api/admin/users", headers=READER)
        allowed = await client.get("/api/admin/users", headers=ADMIN)
        public = await client.get("/api/open")
    assert refused.status_code == 403
    assert allowed.status_code == 200
    assert public.status_code == 200


async def test_guard_around_a_plain_app_then_mounted_keeps_websocket_policies() -> None:
    """A WebSocket handshake to the plain app's admin templates needs `admin`."""
    app = _outer("starlette", _guarded_plain())
    refused = await websocket(app, [(b"x-api-key", READER["x-api-key"].encode())], "/api/admin/ws")
    allowed = await websocket(app, [(b"x-api-key", ADMIN["x-api-key"].encode())], "/api/admin/ws")
    assert [m["type"] for m in refused] == ["websocket.close"]
    assert allowed[0]["type"] == "websocket.accept"


class _Hiding:
    """A middleware that keeps its app where apiguard cannot follow it (not in `.app`)."""

    def __init__(self, app: Any) -> None:
        self._inner = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._inner(scope, receive, send)


async def test_a_layer_inside_an_app_resolves_with_it_when_the_chain_hides_the_router() -> None:
    """No router below the layer, but it runs inside scope["app"]: that app's router answers."""
    app = Starlette(
        routes=[Route("/items/{item_id:int}", _tags), Route("/items/{name}", _tags)],
        middleware=[
            Middleware(TagLayer, name="t", routes={"/items/{item_id}": "by-id"}),
            Middleware(_Hiding),
        ],
    )
    async with _client(app) as client:
        by_id = await client.get("/items/7")
        by_name = await client.get("/items/abc")  # the templates alone would say by-id
    assert by_id.text == "t=by-id"
    assert by_name.text == "t=None"


# --- layers bound to different routers, one request -----------------------------------


async def _tags(request: Request) -> Response:
    decisions = get_context(request.scope).decisions_of("tag")
    return PlainTextResponse(" ".join(f"{d.name}={d.policy}" for d in decisions))


async def test_layers_bound_to_different_routers_each_see_their_own_route() -> None:
    """Outer, wrapping and inner layers resolve against their own routers, in one request."""
    inner = guard(
        Starlette(routes=[Route("/items/{item_id:int}", _tags)]),
        Middleware(TagLayer, name="inside", routes={"/items/{item_id}": "item"}),
    )
    wrapped = TagLayer(inner, name="around", routes={"/items/{item_id}": "item"})
    outer = guard(
        Starlette(routes=[Mount("/api", app=wrapped)]),
        Middleware(TagLayer, name="outer", routes={"/api/items/{item_id}": "api-item"}),
    )
    async with _client(outer) as client:
        first = await client.get("/api/items/7")
        second = await client.get("/api/items/7")  # the cached path answers the same
    assert first.text == "outer=api-item around=item inside=item"
    assert second.text == first.text


def test_the_context_slot_is_keyed_by_resolver() -> None:
    """Resolvers alternating on one request's context: each answers its own route."""
    inner = Starlette(routes=[Route("/items/{item_id:int}", _tags)])
    outer = Starlette(routes=[Mount("/api", app=inner)])
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/api/items/7",
        "root_path": "",
        "headers": [],
        "app": outer,
    }
    context = get_context(scope)
    mine, theirs = resolver_for(inner.router), resolver_for(outer.router)
    for _ in range(2):
        scope["root_path"] = ""  # as the outer app sees the request
        assert resolve(scope) == RouteMatch("/api/items/{item_id}", None, GET_HEAD)
        assert context.route_resolver is theirs
        scope["root_path"] = "/api"  # as Mount hands it to the inner app
        assert resolve_with(scope, mine) == RouteMatch("/items/{item_id}", None, GET_HEAD)
        assert context.route_resolver is mine


def test_an_outer_layer_sees_through_a_wrapped_mount() -> None:
    """The outer router resolves into a mounted app wrapped in middleware: its templates."""
    inner = _inner()
    outer = Starlette(routes=[Mount("/api", app=_auth(TagLayer(inner, name="t")))])
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/admin/stats",
        "root_path": "",
        "headers": [],
    }
    match = resolver_for(outer.router).resolve(scope)
    assert match is not None
    assert match.key == "/api/admin/stats"
